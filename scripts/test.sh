#!/usr/bin/env bash
# Runs the whole test suite: the lint gate (below; a finding stops the run before the slow
# parts), installs the test tools (scripts/install-test-deps.sh), points the tests at them, then
# `cargo test --release --workspace`, then k8ssandra-operator's own reconcilers against the
# sidecars (scripts/operator-test.sh), then a short run of every fuzz target
# (scripts/fuzz-smoke.sh). Extra arguments go to cargo test, e.g.
# a test-name filter (`scripts/test.sh s3s_fs`), `--exclude medusa-tests` or `-- --nocapture`.
# (`-p` does not narrow `--workspace`: for one package, run cargo yourself after
# install-test-deps.sh.)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

# --- the lint gate: what it checks, and what it cannot check here ---
#   rustfmt   `cargo fmt --check` on the workspace and on the fuzz crate (its own workspace).
#   clippy    `cargo clippy --workspace --all-targets --release -- -D warnings`: every target of
#             the workspace (libraries, binaries, tests, benches). Not the fuzz crate: it is
#             outside the workspace and needs libFuzzer; scripts/fuzz-smoke.sh builds it below.
#             Clippy shares the release profile's build scripts and proc macros with the build,
#             but checks the dependencies' libraries once more (metadata only), so a cold run
#             takes a few minutes; its time is printed.
#   deny      cargo-deny (deny.toml): `licenses` (permissive only), `bans` (openssl, native-tls,
#             serde_yaml refused; `*` requirements refused; duplicate versions are warnings),
#             `sources` (crates.io only). All three need only the crates' manifests (from
#             crates.io, like the build), so they run here.
#             `advisories` (RustSec vulnerabilities, unmaintained and yanked crates) needs the
#             advisory database, which cargo-deny clones from GitHub: the build machines cannot
#             reach it, so the check runs (with --offline) only when a database is already on
#             the machine (in $CARGO_HOME/advisory-dbs), and is reported as skipped otherwise.
lint_fail() {
    echo "[test] LINT GATE FAILED: $*"
    exit 1
}
echo "[test] lint: cargo fmt --check (workspace and fuzz/)"
cargo fmt --all --check || lint_fail "cargo fmt --all --check (run cargo fmt --all)"
cargo fmt --check --manifest-path fuzz/Cargo.toml || lint_fail "fuzz/ is not formatted (cargo fmt --manifest-path fuzz/Cargo.toml)"

bash scripts/install-test-deps.sh

echo "[test] lint: cargo clippy --workspace --all-targets --release -- -D warnings"
start=$SECONDS
cargo clippy --workspace --all-targets --release -- -D warnings || lint_fail "cargo clippy"
echo "[test] lint: clippy clean in $((SECONDS - start)) s"

echo "[test] lint: cargo deny check licenses bans sources"
start=$SECONDS
cargo deny check --hide-inclusion-graph licenses bans sources || lint_fail "cargo deny (deny.toml)"
if compgen -G "${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/*/" >/dev/null; then
    echo "[test] lint: cargo deny check advisories (the database on this machine, not refreshed)"
    cargo deny --offline check advisories || lint_fail "cargo deny check advisories"
else
    echo "[test] lint: cargo deny check advisories SKIPPED: no advisory database here (GitHub is unreachable)"
fi
echo "[test] lint: cargo deny done in $((SECONDS - start)) s"

# Read by tests/harness/src/services.rs (tools_dir()).
export MEDUSA_RS_TOOLS="${MEDUSA_RS_TOOLS:-$REPO_ROOT/.tools}"
echo "[test] MEDUSA_RS_TOOLS=$MEDUSA_RS_TOOLS"

# The integration tests run the real binaries (medusa-sidecar, medusa-restore-init).
echo "[test] cargo build --release --workspace --bins"
cargo build --release --workspace --bins

# The image, built once here so that its build and size show in this log (tests/it/image.rs builds
# it again, from the layer cache, and runs it).
echo "[test] scripts/image.sh build"
image_log="$(mktemp)"
if bash scripts/image.sh build >"$image_log" 2>&1; then
    grep '^\[image\]' "$image_log" || true
    echo "[test] image size: $(bash scripts/image.sh size) bytes"
else
    echo "[test] the image build failed (tests/it/image.rs reports it too):"
    tail -30 "$image_log"
fi
rm -f "$image_log"

echo "[test] cargo test --release --workspace --no-fail-fast $*"
start=$SECONDS
status=0
cargo test --release --workspace --no-fail-fast "$@" || status=$?
echo "[test] cargo test finished with exit code $status in $((SECONDS - start)) s"

# k8ssandra-operator's own medusa reconcilers (Go, tests/operator) against the sidecars just
# built, for the newest operator release and an older one, with one restore onto a real
# Cassandra node that must boot. Needs Go; modules come from the Go module proxy.
echo "[test] scripts/operator-test.sh (OPERATOR_TEST_CASSANDRA=1)"
start=$SECONDS
op_status=0
OPERATOR_TEST_CASSANDRA=1 bash scripts/operator-test.sh || op_status=$?
echo "[test] operator suite finished with exit code $op_status in $((SECONDS - start)) s"
[ "$status" -ne 0 ] || status=$op_status

# Every fuzz target for a short while (the parsers of outside input; see README "Reliability").
fuzz_status=0
bash scripts/fuzz-smoke.sh || fuzz_status=$?
echo "[test] fuzz smoke finished with exit code $fuzz_status"
[ "$status" -ne 0 ] || status=$fuzz_status
exit "$status"
