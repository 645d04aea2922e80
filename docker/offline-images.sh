#!/usr/bin/env bash
# offline-images.sh [COMPOSE_FILE] - the images docker/ pulls, made here
# when no registry is reachable, each only when it is not present (with
# registry access, pull the real ones first and this does nothing):
#   debian:bookworm-slim  debootstrap --variant=minbase bookworm from this
#                         machine's own apt mirror (read from its apt
#                         sources now, never written in the repository),
#                         then docker import;
#   the rabbitmq image    docker/standin/rabbitmq.Dockerfile (Debian's
#                         rabbitmq-server, management plugin), tagged with
#                         the compose file's image name;
#   the prometheus image  docker/standin/prometheus.Dockerfile, likewise.
# Root (debootstrap) and a running Docker daemon. DOCKER names the client
# (default: Debian's /usr/bin/docker, else the one on PATH).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
compose=${1:-$here/docker-compose.yml}
docker=${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}
say() { printf 'offline-images: %s\n' "$*"; }
fail() {
    say "FAIL: $*" >&2
    exit 1
}
present() { "$docker" image inspect "$1" >/dev/null 2>&1; }

# compose_image SERVICE: the image the compose file names for it, or "".
compose_image() {
    python3 - "$compose" "$1" <<'PY'
import sys, yaml
print(yaml.safe_load(open(sys.argv[1]))["services"].get(sys.argv[2], {}).get("image", ""))
PY
}

# The Debian mirror apt uses here: the first source of a bookworm suite in
# /etc/apt/sources.list and sources.list.d (one-line or deb822 format) whose
# suite is bookworm itself (not -security or -updates).
apt_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && printf '%s\0' "$f"
    done | xargs -0r python3 -c '
import re, sys
for path in sys.argv[1:]:
    text = open(path).read()
    if path.endswith(".sources"):
        for stanza in re.split(r"\n\s*\n", text):
            f = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.M))
            if f.get("Enabled", "yes") != "no" and "deb" in f.get("Types", "").split() \
                    and "bookworm" in f.get("Suites", "").split():
                print(f["URIs"].split()[0]); sys.exit()
    else:
        for line in text.splitlines():
            w = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
            if len(w) >= 3 and w[0] == "deb" and w[2] == "bookworm":
                print(w[1]); sys.exit()
sys.exit(1)'
}

base=debian:bookworm-slim
if present "$base"; then
    say "$base present"
else
    command -v debootstrap >/dev/null || fail "debootstrap missing (apt-get install debootstrap)"
    [ "$(id -u)" = 0 ] || fail "debootstrap needs root"
    mirror=$(apt_mirror) || fail "no bookworm source in /etc/apt/sources.list{,.d}"
    keyring=()
    [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] &&
        keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
    rootfs=$(mktemp -d /var/tmp/bookworm-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    say "$base absent: debootstrap --variant=minbase bookworm from $mirror"
    start=$SECONDS
    debootstrap --variant=minbase "${keyring[@]}" bookworm "$rootfs" "$mirror" \
        >"$rootfs.log" 2>&1 || { tail -n 20 "$rootfs.log"; rm -f "$rootfs.log"; fail "debootstrap"; }
    rm -f "$rootfs.log"
    # Slim as the registry's image is: no package cache or lists (images run
    # apt-get update first), no documentation, manual pages or translations,
    # now or from later installs. Its sources.list is the mirror it came from.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
    find "$rootfs"/usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
        'path-exclude /usr/share/locale/*' >"$rootfs"/etc/dpkg/dpkg.cfg.d/docker-slim
    # As the registry's image does too: apt keeps no package cache (38 MB
    # each, pkgcache.bin and srcpkgcache.bin, in every layer that installs)
    # and fetches no translations.
    clean='"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true";'
    printf '%s\n' "DPkg::Post-Invoke { $clean };" "APT::Update::Post-Invoke { $clean };" \
        'Dir::Cache::pkgcache "";' 'Dir::Cache::srcpkgcache "";' \
        >"$rootfs"/etc/apt/apt.conf.d/docker-clean
    echo 'Acquire::Languages "none";' >"$rootfs"/etc/apt/apt.conf.d/docker-no-languages
    tar -C "$rootfs" -c . | "$docker" import - "$base" >/dev/null
    say "$base imported in $((SECONDS - start)) s ($(cat "$rootfs"/etc/apt/sources.list))"
fi

standin() { # standin SERVICE DOCKERFILE
    local image
    image=$(compose_image "$1")
    if [ -z "$image" ]; then
        say "no image for a service $1 in $compose"
        return
    elif present "$image"; then
        say "$image present"
        return
    fi
    say "$image absent: building the stand-in $(basename "$2")"
    local start=$SECONDS log
    log=$(mktemp)
    if ! "$docker" build -t "$image" -f "$2" "$(dirname "$2")" >"$log" 2>&1; then
        tail -n 30 "$log"
        rm -f "$log"
        fail "docker build -f $2"
    fi
    rm -f "$log"
    say "$image built in $((SECONDS - start)) s"
}
standin rabbitmq "$here/standin/rabbitmq.Dockerfile"
standin prometheus "$here/standin/prometheus.Dockerfile"
