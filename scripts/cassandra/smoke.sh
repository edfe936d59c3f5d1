#!/usr/bin/env bash
# End-to-end check of the scripts in this folder, per Cassandra version: start one node in a
# temporary folder, write indexed rows with cqlsh and read them back (snapshot-demo.sh), run the
# nodetool commands medusa and the tests use, stop the node. Leaves no node running (a trap
# kills the node on any failure) and removes its folder unless KEEP=1.
#
#   scripts/cassandra/smoke.sh [version...]     default: 5.0.9 4.1.10 (install.sh first)
#
# Prints one line per check and a closing "N passed, N failed"; exit 1 if any failed.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NODE="$SCRIPT_DIR/node.sh"
versions=("$@")
[ "${#versions[@]}" -gt 0 ] || versions=(5.0.9 4.1.10)

pass=0 fail=0
dir=""
cleanup() {
    if [ -n "$dir" ] && [ -d "$dir" ]; then
        "$NODE" stop "$dir" --kill >/dev/null 2>&1 || true
        [ "${KEEP:-0}" = 1 ] || rm -rf "$dir"
    fi
}
trap cleanup EXIT

check() { # name command... (output kept in $out)
    local name="$1"; shift
    if out="$("$@" 2>&1)"; then
        pass=$((pass + 1)); printf 'ok    %s\n' "$name"
    else
        fail=$((fail + 1)); printf 'FAIL  %s\n' "$name"; printf '%s\n' "$out" | tail -n 15 | sed 's/^/      /'
    fi
}
matches() { # pattern command...: the command succeeds and its output matches the pattern
    local pattern="$1" o rc=0; shift
    o="$("$@" 2>&1)" || rc=$?
    printf '%s\n' "$o"
    [ "$rc" = 0 ] && grep -Eq "$pattern" <<< "$o"
}
expect() { # name pattern command...
    local name="$1"; shift
    check "$name" matches "$@"
}
snapshot_folders() { # nodedir: t1 is gone everywhere, t2 is there for medusa_demo.users
    local d="$1"
    if compgen -G "$d/data/data/*/*/snapshots/t1" >/dev/null; then echo "t1 still there"; return 1; fi
    compgen -G "$d/data/data/medusa_demo/users-*/snapshots/t2" || { echo "t2 missing"; return 1; }
}

for v in "${versions[@]}"; do
    dir="$(mktemp -d "${TMPDIR:-/tmp}/cassandra-smoke-$v.XXXXXX")"
    nt=("$NODE" nodetool "$dir")
    echo "== Cassandra $v in $dir"
    if ! check "$v start" "$NODE" start "$dir" 1 --version "$v"; then
        cleanup; dir=""; continue
    fi
    echo "      $(printf '%s\n' "$out" | grep '^started')"
    check "$v cqlsh + snapshot-demo (2i, SASI, SAI on 5.0)" "$SCRIPT_DIR/snapshot-demo.sh" "$dir" --rows 200 --tag smoke
    expect "$v nodetool status" '^UN +127\.0\.0\.1' "${nt[@]}" status
    expect "$v nodetool ring" '127\.0\.0\.1 +rack1 +Up +Normal' "${nt[@]}" ring
    expect "$v nodetool describering" 'TokenRange\(start_token' "${nt[@]}" describering medusa_demo
    check "$v nodetool flush" "${nt[@]}" flush medusa_demo
    expect "$v nodetool snapshot -t" 'Snapshot directory: t1' "${nt[@]}" snapshot -t t1
    expect "$v nodetool snapshot -kt" 'Snapshot directory: t2' "${nt[@]}" snapshot -kt medusa_demo.users -t t2
    expect "$v nodetool listsnapshots" '^t2 +medusa_demo +users' "${nt[@]}" listsnapshots
    check "$v nodetool clearsnapshot -t" "${nt[@]}" clearsnapshot -t t1
    check "$v snapshot t1 gone, t2 kept" snapshot_folders "$dir"
    expect "$v nodetool getendpoints" '^127\.0\.0\.1$' "${nt[@]}" getendpoints medusa_demo users 7
    check "$v nodetool compact" "${nt[@]}" compact medusa_demo
    check "$v nodetool drain" "${nt[@]}" drain
    expect "$v nodetool statusbinary after drain" 'not running' "${nt[@]}" statusbinary
    check "$v stop" "$NODE" stop "$dir"
    cleanup; dir=""
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
