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

# The image, built once here so that its build and size show in this log (tests/image.rs builds
# it again, from the layer cache, and runs it).
echo "[test] scripts/image.sh build"
image_log="$(mktemp)"
if bash scripts/image.sh build >"$image_log" 2>&1; then
    grep '^\[image\]' "$image_log" || true
    echo "[test] image size: $(bash scripts/image.sh size) bytes"
else
    echo "[test] the image build failed (tests/image.rs reports it too):"
    tail -30 "$image_log"
fi
rm -f "$image_log"

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
