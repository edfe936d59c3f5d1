#!/usr/bin/env bash
# Runs the whole test suite: installs the test tools (scripts/install-test-deps.sh), points the
# tests at them, then `cargo test --release --workspace`, then a short run of every fuzz target
# (scripts/fuzz-smoke.sh). Extra arguments go to cargo test, e.g.
# a test-name filter (`scripts/test.sh s3s_fs`), `--exclude medusa-tests` or `-- --nocapture`.
# (`-p` does not narrow `--workspace`: for one package, run cargo yourself after
# install-test-deps.sh.)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

bash scripts/install-test-deps.sh

# Read by tests/harness/src/services.rs (tools_dir()).
export MEDUSA_RS_TOOLS="${MEDUSA_RS_TOOLS:-$REPO_ROOT/.tools}"
echo "[test] MEDUSA_RS_TOOLS=$MEDUSA_RS_TOOLS"

# The integration tests run the real binaries (medusa-sidecar, medusa-restore-init).
echo "[test] cargo build --release --workspace --bins"
cargo build --release --workspace --bins

echo "[test] cargo test --release --workspace --no-fail-fast $*"
start=$SECONDS
status=0
cargo test --release --workspace --no-fail-fast "$@" || status=$?
echo "[test] cargo test finished with exit code $status in $((SECONDS - start)) s"

# Every fuzz target for a short while (the parsers of outside input; see README "Reliability").
fuzz_status=0
bash scripts/fuzz-smoke.sh || fuzz_status=$?
echo "[test] fuzz smoke finished with exit code $fuzz_status"
[ "$status" -ne 0 ] || status=$fuzz_status
exit "$status"
