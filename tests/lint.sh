#!/usr/bin/env bash
# lint.sh - the files no compiler reads: YAML (yamllint, .yamllint), every
# shell script (shellcheck), the man page (groff -ww: a warning fails),
# the relative links of the Markdown files (README.md, docker/, tests/),
# that the man page describes every key of bridge/config_keys.c's tables, and
# docker/'s monitoring: the alerting rules (promtool check rules, their unit
# tests) and that each query of the rules and of the Grafana dashboard names
# only metrics bridge/base/metrics.c exports.
# The Dockerfile has no linter here (hadolint is not packaged by Debian);
# tests/docker/check.sh checks what it says instead.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECK_NAME=lint
# shellcheck source=tests/lib/check.sh
. tests/lib/check.sh
for tool in yamllint shellcheck groff promtool python3; do
    command -v "$tool" >/dev/null || fail "$tool missing: make deps"
done

# Our files, never what a build or a broker node left under build/.
ours() { find . -path ./build -prune -o -path ./.git -prune -o -type f "$@" -print | sort; }

mapfile -t yaml < <(ours \( -name '*.yml' -o -name '*.yaml' -o -name .yamllint \))
[ ${#yaml[@]} -gt 0 ] || fail "no YAML files found"
yamllint --strict "${yaml[@]}" || fail "yamllint"
ok "yamllint --strict, ${#yaml[@]} files"

# Shell scripts by their #! line, whatever their name, and sourced *.sh.
# shellcheck disable=SC2016 # $1 is the inner shell's argument
mapfile -t scripts < <(ours \( -name '*.sh' -o -perm -u+x -exec sh -c \
    'head -n 1 "$1" | grep -Eq "^#!(/usr)?/bin/(env )?(ba)?sh"' _ {} \; \))
[ ${#scripts[@]} -ge 5 ] || fail "found only ${#scripts[@]} shell scripts: ${scripts[*]}"
shellcheck -x "${scripts[@]}" || fail "shellcheck"
ok "shellcheck, ${#scripts[@]} scripts: ${scripts[*]#./}"

man=bridge/ingest-bridge.8
warnings=$(groff -man -Tutf8 -ww -z "$man" 2>&1)
[ -z "$warnings" ] || fail "groff: $warnings"
ok "groff -man -ww $man: no warnings"

# Every relative link of the Markdown front doors (README.md, docker/,
# tests/, the generated RESULTS.md files) names a file that exists and, with
# a #fragment, a heading of that file (GitHub's anchor for it).
mapfile -t docs < <(ls README.md docker/README.md tests/README.md tests/*/RESULTS.md 2>/dev/null)
[ ${#docs[@]} -gt 0 ] || fail "no Markdown files found"
out=$(python3 - "${docs[@]}" 2>&1 <<'EOF'
import os, re, sys

def anchors(path):
    seen, found, fence = {}, set(), False
    for line in open(path, encoding="utf-8"):
        if line.startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"#{1,6} +(.*?) *#* *$", line)
        if m:
            a = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            k = seen.get(a, 0)
            seen[a] = k + 1
            found.add(a if k == 0 else f"{a}-{k}")
    return found

bad, n = [], 0
for doc in sys.argv[1:]:
    text = re.sub(r"^```.*?^```", "", open(doc, encoding="utf-8").read(), flags=re.S | re.M)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        n += 1
        path, _, frag = target.partition("#")
        full = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
        if not os.path.exists(full):
            bad.append(f"{doc}: ({target}): no {full}")
        elif frag and (not full.endswith(".md") or frag not in anchors(full)):
            bad.append(f"{doc}: ({target}): no heading #{frag} in {full}")
if bad:
    sys.exit("\n".join(bad))
print(f"{n} relative links in {len(sys.argv) - 1} files, each to a file and heading that exist")
EOF
) || fail "Markdown links: $out"
ok "Markdown links: $out"

# Each key table of bridge/config_keys.c against the man page's subsection
# of that section: every key there as a ".TP / .B key" item.
tables=bridge/config_keys.c
check_keys() { # check_keys TABLE SUBSECTION_TITLE
    local keys key text n=0
    keys=$(sed -n "/^static const struct key_def $1\[/,/^};/p" "$tables" |
        sed -n 's/^ *\[[A-Z_]*\] = {"\([a-z_]*\)".*/\1/p')
    [ -n "$keys" ] || fail "no keys found in $tables's $1"
    text=$(T=".SS \"$2\"" awk '$0 == ENVIRON["T"] {on = 1; next} /^\.S[SH] / {on = 0} on' "$man")
    [ -n "$text" ] || fail "$man: no subsection $2"
    for key in $keys; do
        grep -A1 -x '\.TP' <<<"$text" | grep -qx "\\.B $key" || fail "$man: $2 does not describe key $key"
        n=$((n + 1))
    done
    ok "$man describes the $n keys of $2"
}
check_keys http_keys '[http]'
check_keys amqp_keys '[amqp]'
check_keys log_keys '[log]'
check_keys route_keys '[route \fIname\fP]'

out=$(promtool check rules docker/alerts.yml 2>&1) || fail "promtool check rules: $out"
ok "promtool check rules docker/alerts.yml: $(grep -o '[0-9]* rules found' <<<"$out")"
out=$(promtool test rules docker/alerts.test.yml 2>&1) || fail "promtool test rules: $out"
ok "promtool test rules docker/alerts.test.yml: $(grep -c 'alertname:' docker/alerts.test.yml) cases"

# The metric names of the rules' and the dashboard's queries against the
# families bridge/base/metrics.c writes (a histogram's with _bucket, _sum and
# _count), Prometheus's own `up` allowed in the rules. Each query names one.
out=$(python3 - bridge/base/metrics.c docker/alerts.yml docker/grafana-dashboard.json 2>&1 <<'EOF'
import json, re, sys, yaml
src = open(sys.argv[1]).read()
families = set(re.findall(r'(?:family\(f, |single\(f, |route_counter\(f, m, )"(bridge_\w+)"', src))
hist = re.findall(r'"(bridge_\w+)";\s*family\(f, name, "histogram"', src)
if len(families) < 10 or not hist:
    sys.exit(f"{sys.argv[1]}: found only {sorted(families)}, histograms {hist}")
exported = families | {h + s for h in hist for s in ("", "_bucket", "_sum", "_count")}

def queries(node, path):
    if isinstance(node, dict):
        if node.get("type") == "query" and "query" in node:  # a dashboard variable
            q = node["query"]
            yield path + ".query", q["query"] if isinstance(q, dict) else q
        for k, v in node.items():
            if k == "expr" and isinstance(v, str):
                yield f"{path}.{k}", v
            else:
                yield from queries(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from queries(v, f"{path}[{i}]")

bad, n = [], 0
for path, allowed in ((sys.argv[2], {"up"}), (sys.argv[3], set())):
    doc = yaml.safe_load(open(path)) if path.endswith(".yml") else json.load(open(path))
    for where, q in queries(doc, path):
        n += 1
        named = set(re.findall(r"\bbridge_\w+", q)) | (allowed & set(re.findall(r"\w+", q)))
        unknown = sorted(named - exported - allowed)
        if unknown or not named:
            bad.append(f"{where}: {unknown or 'names no bridge metric'}: {q}")
if bad:
    sys.exit("\n".join(bad))
print(f"{n} queries, every metric one of the {len(families)} families exported")
EOF
) || fail "monitoring queries: $out"
ok "docker/alerts.yml and docker/grafana-dashboard.json: $out"
# The rooms' doors (tests/includes.sh, also in make check).
out=$(tests/includes.sh 2>&1) || fail "includes: $out"
ok "includes: ${out#includes: ok: }"
say "$checks checks passed"
