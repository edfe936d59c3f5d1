#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a short while (CI smoke; longer runs by hand:
# `cargo +nightly fuzz run <target> -- -max_total_time=600`). Needs the nightly toolchain and
# cargo-fuzz (scripts/install-test-deps.sh installs cargo-fuzz). Fails if any target finds a
# crash (a panic, an overflow: debug assertions are on); prints the executions of each. Built
# without a sanitizer: medusa-rs has no unsafe code (`unsafe_code = "forbid"`), and the build
# and the runs are faster that way; `--sanitizer address` by hand when dependencies are in doubt.
#   scripts/fuzz-smoke.sh [seconds per target, default 20]
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
SECONDS_EACH="${1:-${MEDUSA_RS_FUZZ_SECONDS:-20}}"

log() { printf '[fuzz] %s\n' "$*"; }

if ! cargo +nightly --version >/dev/null 2>&1; then
    log "ERROR: the nightly toolchain is missing (cargo-fuzz needs it): rustup toolchain install nightly"
    exit 1
fi
t0=$SECONDS
log "cargo +nightly fuzz build (all targets)"
cargo +nightly fuzz build --sanitizer none >/dev/null
log "built in $((SECONDS - t0)) s"
status=0
total=0
for target in $(cargo +nightly fuzz list); do
    mkdir -p "fuzz/corpus/$target"
    out="$(mktemp)"
    if cargo +nightly fuzz run --sanitizer none "$target" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 >"$out" 2>&1; then
        runs="$(grep -o 'Done [0-9]* runs' "$out" | grep -o '[0-9]*' | tail -1)"
        runs="${runs:-0}"
        total=$((total + runs))
        log "$target: $runs executions in ${SECONDS_EACH} s, no crash"
    else
        log "$target: FAILED"
        tail -40 "$out"
        status=1
    fi
    rm -f "$out"
done
log "$total executions in all; exit $status"
exit "$status"
