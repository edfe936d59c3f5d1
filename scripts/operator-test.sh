#!/usr/bin/env bash
# Runs the Go suite in tests/operator: k8ssandra-operator's own medusa reconcilers
# (MedusaBackupJob, MedusaTask sync/purge/prepare_restore, MedusaRestoreJob,
# MedusaBackupSchedule), built from the operator's released module, driven against a
# controller-runtime fake client and real medusa-rs sidecars (one per pod address 127.0.0.N),
# with the real restore-init for restores.
#
# Runs the suite twice: against the newest operator release the Go module proxy serves
# (tests/operator/go.mod) and against an older one (tests/operator/go.v1.26.mod, same sources via
# `go test -modfile`, build tag operator_v1_26); OPERATOR_TEST_OLDER=0 skips the older one.
#
# Prints, for each: the module download time and the module cache size, the build time of the
# test binary (the Go build cache and module cache stay in their defaults, ~/.cache/go-build and
# ~/go/pkg/mod, so a machine that ran this once downloads and compiles nothing again), and the
# run time.
#
#   scripts/operator-test.sh                       # both releases, every test
#   scripts/operator-test.sh -run TestMedusaRestoreJob -v
#
# Extra arguments go to `go test`. Environment:
#   MEDUSA_SIDECAR_BIN      the medusa-rs binary (default <repo>/target/release/medusa-rs; when
#                           that is missing it is built with `cargo build --release --bins`)
#   OPERATOR_TEST_TIMEOUT   go test -timeout (default 15m)
#   OPERATOR_TEST_FIRST_IP  the first pod is 127.0.0.<N> (default 41)
#   OPERATOR_TEST_OLDER     0: only the newest release
#   OPERATOR_TEST_CASSANDRA 1: also the restore onto a real Cassandra node that must boot
#                           (tests/operator/realnode_test.go; installs Cassandra 5.0.9 with
#                           scripts/cassandra/install.sh into $MEDUSA_RS_TOOLS, default
#                           <repo>/.tools)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

log() { echo "[operator-test] $*"; }

command -v go >/dev/null || { log "go is not installed"; exit 1; }
log "$(go version)"

BIN="${MEDUSA_SIDECAR_BIN:-$REPO_ROOT/target/release/medusa-rs}"
if [[ ! -x "$BIN" ]]; then
    if [[ -n "${MEDUSA_SIDECAR_BIN:-}" ]]; then
        log "MEDUSA_SIDECAR_BIN=$BIN does not exist"
        exit 1
    fi
    log "no $BIN: cargo build --release --bins"
    start=$SECONDS
    cargo build --release --bins
    log "medusa-rs built in $((SECONDS - start)) s"
fi
export MEDUSA_SIDECAR_BIN="$BIN"
log "sidecar: $MEDUSA_SIDECAR_BIN"

if [[ "${OPERATOR_TEST_CASSANDRA:-0}" == 1 ]]; then
    export MEDUSA_RS_TOOLS="${MEDUSA_RS_TOOLS:-$REPO_ROOT/.tools}"
    start=$SECONDS
    bash scripts/cassandra/install.sh 5.0.9
    log "Cassandra 5.0.9 ready in $((SECONDS - start)) s (MEDUSA_RS_TOOLS=$MEDUSA_RS_TOOLS)"
fi

cd tests/operator
timeout="${OPERATOR_TEST_TIMEOUT:-15m}"
modcache="$(go env GOMODCACHE)"

# run_suite LABEL MODFILE TAGS [go test args...]
run_suite() {
    local label="$1" modfile="$2" tags="$3"
    shift 3
    local mf=()
    [[ "$modfile" != go.mod ]] && mf=(-modfile="$modfile")
    [[ -n "$tags" ]] && mf+=(-tags="$tags")
    local operator
    operator="$(go list "${mf[@]}" -m -f '{{.Version}}' github.com/k8ssandra/k8ssandra-operator)"
    log "== $label: k8ssandra-operator $operator ($modfile)"

    local start=$SECONDS
    # Downloads exactly the modules the test binary needs (nothing when they are cached).
    go list "${mf[@]}" -test -deps ./... >/dev/null
    log "$label: modules ready in $((SECONDS - start)) s (module cache $(du -sh "$modcache" 2>/dev/null | cut -f1))"

    start=$SECONDS
    go test "${mf[@]}" -count=1 -run '^$' ./... >/dev/null
    log "$label: test binary built in $((SECONDS - start)) s"

    start=$SECONDS
    local status=0
    go test "${mf[@]}" -count=1 -timeout "$timeout" -v "$@" ./... || status=$?
    log "$label: tests ran in $((SECONDS - start)) s, exit $status"
    return "$status"
}

status=0
run_suite newest go.mod "" "$@" || status=1
if [[ "${OPERATOR_TEST_OLDER:-1}" != 0 ]]; then
    # the few calls whose signatures differ in v1.26 are in render_v1_26_test.go
    run_suite older go.v1.26.mod operator_v1_26 "$@" || status=1
fi
exit "$status"
