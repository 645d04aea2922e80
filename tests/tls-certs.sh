#!/usr/bin/env bash
# tls-certs.sh DIR - fresh test certificates in DIR, made with openssl (P-256
# keys, valid two days, nothing reused between runs):
#
#   ca.pem, ca-key.pem              the test CA
#   server.pem, server-key.pem      signed by it, for localhost and 127.0.0.1
#                                   (the bridge's HTTPS listener, the broker's
#                                   TLS listener)
#   client.pem, client-key.pem      signed by it, a client certificate (the
#                                   bridge towards the broker)
#   client-b.pem, client-b-key.pem  signed by it, CN client-b, SAN DNS b.example
#                                   and email b@example.org (the HTTPS
#                                   listener's client certificates)
#   other-ca.pem, other-ca-key.pem  a CA that signed none of them ("wrong CA")
#   other.pem, other-key.pem        signed by the other CA, for 127.0.0.1
#   other-client.pem, -key.pem      signed by the other CA, a client certificate
set -euo pipefail

dir=${1:?usage: tls-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
command -v openssl >/dev/null || { echo "tls-certs.sh: openssl missing (make deps)" >&2; exit 1; }

days=2
newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)

# ca NAME CN
ca() {
    openssl req -x509 "${newkey[@]}" -keyout "$1-key.pem" -out "$1.pem" -days "$days" \
        -subj "/CN=$2" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# leaf NAME CA CN EXTENSIONS...
leaf() {
    local name=$1 ca=$2 cn=$3
    shift 3
    openssl req "${newkey[@]}" -keyout "$name-key.pem" -out "$name.csr" -subj "/CN=$cn" 2>/dev/null
    printf '%s\n' "$@" >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA "$ca.pem" -CAkey "$ca-key.pem" -CAcreateserial \
        -out "$name.pem" -days "$days" -extfile "$name.ext" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

ca ca "ingest-bridge test CA"
ca other-ca "another CA"
leaf server ca localhost "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    "extendedKeyUsage=serverAuth" "basicConstraints=CA:FALSE"
leaf client ca ingest-bridge "extendedKeyUsage=clientAuth" "basicConstraints=CA:FALSE"
leaf other other-ca localhost "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    "extendedKeyUsage=serverAuth" "basicConstraints=CA:FALSE"
leaf client-b ca client-b "subjectAltName=DNS:b.example,email:b@example.org" \
    "extendedKeyUsage=clientAuth" "basicConstraints=CA:FALSE"
leaf other-client other-ca ingest-bridge "extendedKeyUsage=clientAuth" "basicConstraints=CA:FALSE"
# The broker (its own user on a real system) reads the keys; they are
# throw-away test keys.
chmod 644 ./*.pem
