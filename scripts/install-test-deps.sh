#!/usr/bin/env bash
# Installs the tools the integration tests start, into <repo>/.tools (git-ignored):
#   .tools/venv  Python venv: moto (S3 server), cassandra-medusa 0.31.0 (the reference CLI and its
#                gRPC stubs), grpcio + grpcio-health-checking + protobuf, grpcurl, boto3
#   .tools/npm   azurite 3.35.0 (Azure Blob emulator)
#   Debian       podman, runc, debootstrap (the image test builds and runs the image)
#   cargo        cargo-fuzz 0.13.2 (scripts/fuzz-smoke.sh), cargo-deny 0.20.2 (the lint gate of
#                scripts/test.sh), both built from crates.io
# Versions are pinned in scripts/test-deps/, the cargo tools' in this script. Everything comes
# from the package registries (PyPI, npm, Debian, crates.io); nothing else is downloaded.
#
# Idempotent: each step is skipped when its marker says the same pins are already installed,
# so a re-run takes about a second. Changing a pin file re-runs that step.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$REPO_ROOT/scripts/test-deps"
TOOLS="${MEDUSA_RS_TOOLS:-$REPO_ROOT/.tools}"
VENV="$TOOLS/venv"
NPM_DIR="$TOOLS/npm"

log() { printf '[install-test-deps] %s\n' "$*"; }

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# A digest of the files a step installs from: the marker holds it, so a changed pin re-installs.
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }

mkdir -p "$TOOLS"
start_all=$SECONDS

# --- prerequisites (present on the standard machine; installed from Debian only if missing) ---
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_install python3 python3-venv python3-pip
fi
if ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
fi

# --- Python venv ---
py_marker="$VENV/.medusa-rs-installed"
py_want="$(digest "$DEPS/requirements.txt" "$DEPS/constraints.txt") $(python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
if [ -f "$py_marker" ] && [ "$(cat "$py_marker")" = "$py_want" ] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "python venv up to date: $VENV"
else
    t0=$SECONDS
    if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        log "creating python venv $VENV"
        rm -rf "$VENV"
        python3 -m venv "$VENV"
    fi
    rm -f "$py_marker"
    log "pip install -r scripts/test-deps/requirements.txt (moto, cassandra-medusa, grpcio, grpcurl, boto3)"
    "$VENV/bin/pip" install --disable-pip-version-check -q \
        -r "$DEPS/requirements.txt" -c "$DEPS/constraints.txt"
    for exe in moto_server medusa grpcurl python; do
        [ -x "$VENV/bin/$exe" ] || { log "ERROR: $VENV/bin/$exe missing after install"; exit 1; }
    done
    "$VENV/bin/python" -c 'import medusa.service.grpc.medusa_pb2, grpc_health.v1.health_pb2, boto3, moto'
    printf '%s\n' "$py_want" > "$py_marker"
    log "python venv ready in $((SECONDS - t0)) s"
fi

# --- azurite (npm) ---
npm_marker="$NPM_DIR/.medusa-rs-installed"
npm_want="$(digest "$DEPS/package.json" "$DEPS/package-lock.json") $(node --version)"
if [ -f "$npm_marker" ] && [ "$(cat "$npm_marker")" = "$npm_want" ] && [ -x "$NPM_DIR/node_modules/.bin/azurite-blob" ]; then
    log "azurite up to date: $NPM_DIR"
else
    t0=$SECONDS
    rm -f "$npm_marker"
    mkdir -p "$NPM_DIR"
    cp "$DEPS/package.json" "$DEPS/package-lock.json" "$NPM_DIR/"
    log "npm ci (azurite from scripts/test-deps/package-lock.json) in $NPM_DIR"
    (cd "$NPM_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    [ -x "$NPM_DIR/node_modules/.bin/azurite-blob" ] || { log "ERROR: azurite-blob missing after npm ci"; exit 1; }
    printf '%s\n' "$npm_want" > "$npm_marker"
    log "azurite ready in $((SECONDS - t0)) s"
fi

# --- the image test (tests/it/image.rs, scripts/image.sh): podman with runc, and debootstrap for
# the builder stand-in; rclone is the speed anchor of the S3 benchmark (not used by tests) ---
missing=()
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    t0=$SECONDS
    apt_install podman runc debootstrap
    log "podman, runc, debootstrap ready in $((SECONDS - t0)) s"
else
    log "podman, runc, debootstrap present"
fi

# --- cargo-fuzz (scripts/fuzz-smoke.sh; the fuzz targets build with the nightly toolchain) ---
CARGO_FUZZ_VERSION="0.13.2"
if cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    log "cargo-fuzz $CARGO_FUZZ_VERSION present"
else
    t0=$SECONDS
    log "cargo install cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
    log "cargo-fuzz ready in $((SECONDS - t0)) s"
fi

# --- cargo-deny (the lint gate in scripts/test.sh: licences, bans, sources; deny.toml) ---
CARGO_DENY_VERSION="0.20.2"
if cargo deny --version 2>/dev/null | grep -q "$CARGO_DENY_VERSION"; then
    log "cargo-deny $CARGO_DENY_VERSION present"
else
    t0=$SECONDS
    log "cargo install cargo-deny $CARGO_DENY_VERSION"
    cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked --quiet
    log "cargo-deny ready in $((SECONDS - t0)) s"
fi

log "tools in $TOOLS ($((SECONDS - start_all)) s)"
