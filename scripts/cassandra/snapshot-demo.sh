#!/usr/bin/env bash
# Puts real data into a running node (started by node.sh or ring.sh), snapshots it and lists
# what the snapshot directory holds: a smoke test of node + CQL + nodetool, and a way to see
# the on-disk layout medusa backs up.
#
#   snapshot-demo.sh <nodedir> [--rf N] [--rows N] [--tag TAG] [--keyspace KS]
#
# Keyspace KS (medusa_demo), table users (id int PRIMARY KEY, name, email, city, age) with
#   a legacy secondary index (users_email_2i: its SSTables go to the .users_email_2i/ folder),
#   a SASI index (users_name_sasi: SI_*.db components), and on 5.0 an SAI index
#   (users_city_sai: SAI+* components); table events (a clustering key, no index).
# Rows are written at QUORUM, then `nodetool flush` and `nodetool snapshot -t TAG KS`; the
# listing is "size<TAB>path" of every file under the snapshot folders of KS on this node.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NODE="$SCRIPT_DIR/node.sh"

die() { printf '[cassandra/snapshot-demo] ERROR: %s\n' "$*" >&2; exit 1; }
[ $# -ge 1 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }
dir="$(cd "$1" && pwd)"; shift
rf=1 rows=1000 tag="demo-$(date +%s)" ks=medusa_demo
while [ $# -gt 0 ]; do
    case "$1" in
        --rf) rf="$2"; shift 2 ;;
        --rows) rows="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --keyspace) ks="$2"; shift 2 ;;
        *) die "unknown option '$1'" ;;
    esac
done
[[ "$ks" =~ ^[a-z_][a-z0-9_]*$ ]] || die "keyspace name '$ks' is not a plain CQL identifier"
# shellcheck disable=SC1091
. "$dir/node.env"
"$NODE" status "$dir" >/dev/null || die "node in $dir is not running"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
{
    echo "CREATE KEYSPACE IF NOT EXISTS $ks WITH replication = {'class': 'NetworkTopologyStrategy', 'datacenter1': $rf};"
    echo "CREATE TABLE IF NOT EXISTS $ks.users (id int PRIMARY KEY, name text, email text, city text, age int);"
    echo "CREATE TABLE IF NOT EXISTS $ks.events (user_id int, at timestamp, kind text, payload blob, PRIMARY KEY (user_id, at)) WITH CLUSTERING ORDER BY (at DESC);"
    echo "CREATE INDEX IF NOT EXISTS users_email_2i ON $ks.users (email);"
    echo "CREATE CUSTOM INDEX IF NOT EXISTS users_name_sasi ON $ks.users (name) USING 'org.apache.cassandra.index.sasi.SASIIndex';"
    if [ "${NODE_VERSION%%.*}" -ge 5 ]; then
        echo "CREATE INDEX IF NOT EXISTS users_city_sai ON $ks.users (city) USING 'sai';"
    fi
} > "$work/schema.cql"
awk -v n="$rows" -v ks="$ks" 'BEGIN {
    split("Paris Oslo Lima Kyiv Rome", c, " ");
    print "CONSISTENCY QUORUM;";
    for (i = 0; i < n; i++) {
        printf "INSERT INTO %s.users (id, name, email, city, age) VALUES (%d, %cuser%d%c, %cu%d@example.org%c, %c%s%c, %d);\n", ks, i, 39, i, 39, 39, i, 39, 39, c[i % 5 + 1], 39, 20 + i % 50;
        printf "INSERT INTO %s.events (user_id, at, kind, payload) VALUES (%d, %d, %clogin%c, 0x%08x);\n", ks, i % 100, 1700000000000 + i, 39, 39, i;
    }
}' > "$work/rows.cql"

cql() { "$SCRIPT_DIR/cqlsh" "$NODE_ADDRESS" "$NODE_NATIVE_PORT" "$@" 2> >(grep -v '^WARNING: cqlsh was built against' >&2); }
t0=$SECONDS
cql -f "$work/schema.cql" > /dev/null
cql -f "$work/rows.cql" > /dev/null
count="$(cql -e "CONSISTENCY QUORUM; SELECT count(*) FROM $ks.users;" | awk '/^ *[0-9]+ *$/ {print $1}')"
[ "$count" = "$rows" ] || die "read back $count rows of $ks.users at QUORUM, wrote $rows"
hit="$(cql -e "SELECT id FROM $ks.users WHERE email = 'u7@example.org';" | awk '/^ *7 *$/' | wc -l)"
[ "$hit" = 1 ] || die "secondary index query did not find row 7"
echo "wrote and read back $rows rows at QUORUM in $((SECONDS - t0)) s"

"$NODE" nodetool "$dir" flush "$ks"
"$NODE" nodetool "$dir" snapshot -t "$tag" "$ks" >/dev/null
echo "snapshot $tag of $ks on $NODE_ADDRESS (Cassandra $NODE_VERSION):"
found=0
while IFS= read -r -d '' snap; do
    found=1
    table_dir="$(dirname "$(dirname "$snap")")"
    echo "== $(basename "$table_dir")/snapshots/$tag"
    (cd "$snap" && find . -type f -printf '%s\t%P\n' | sort -k2)
done < <(find "$dir/data/data/$ks" -mindepth 3 -maxdepth 3 -type d -path "*/snapshots/$tag" -print0 | sort -z)
[ "$found" = 1 ] || die "no snapshot folder $tag under $dir/data/data/$ks"
