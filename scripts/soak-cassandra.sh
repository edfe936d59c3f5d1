#!/usr/bin/env bash
# The real-Cassandra soak: every scenario of tests/it/cassandra.rs over Cassandra 4.1 and 5.0 and
# over `local` and S3 (s3s-fs), the ones CI runs (5.0, local) included. Too slow for CI (each ring
# scenario starts nine nodes, one node scenario restarts its node four times); run it by hand:
#
#   scripts/soak-cassandra.sh                  # the whole matrix
#   scripts/soak-cassandra.sh ring_4_1         # a name filter (a substring of cassandra::...)
#
# Installs what the scenarios need (scripts/install-test-deps.sh, then Cassandra 4.1.10 beside
# 5.0.9), builds the binaries, and runs the scenarios one at a time (they share the nodes'
# addresses): each prints its steps' times and its nodes' start times.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
export MEDUSA_RS_TOOLS="${MEDUSA_RS_TOOLS:-$REPO_ROOT/.tools}"

bash scripts/install-test-deps.sh
bash scripts/cassandra/install.sh 5.0.9 4.1.10
cargo build --release --workspace --bins

start=$SECONDS
cargo test --release -p medusa-tests --test it -- --include-ignored --test-threads 1 --nocapture \
    "${1:-cassandra::}"
echo "[soak-cassandra] matrix done in $((SECONDS - start)) s"
