#!/usr/bin/env bash
# Builds the shipped Dockerfile with podman where no registry can be reached (this project's CI
# machines): two local images stand in for the Dockerfile's FROM images and are passed through
# its build args; the Dockerfile itself, its stages and steps, are the shipped ones.
#
#   scripts/image.sh bases   make the stand-ins (once; kept under fixed tags)
#   scripts/image.sh build   bases + `podman build` of ./Dockerfile -> $MEDUSA_RS_IMAGE
#   scripts/image.sh size    the image's size in bytes
#
# Stand-ins, made from Debian packages and this machine's toolchain:
#   builder  (for rust:1.95-bookworm): debootstrap bookworm minbase + gcc, libc6-dev, make,
#            pkg-config, ca-certificates, and the Rust 1.95 toolchain of this machine in the
#            places the official image has it (/usr/local/rustup, /usr/local/cargo/bin on PATH);
#            this machine's extra CA certificates are trusted (the package registries are
#            reached through a TLS-inspecting proxy here).
#   runtime  (for gcr.io/distroless/cc-debian12): glibc, libgcc_s, CA certificates, a passwd
#            file, /tmp; no shell.
# Needs root, podman and runc, debootstrap (scripts/install-test-deps.sh installs them).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

IMAGE="${MEDUSA_RS_IMAGE:-localhost/medusa-rs:test}"
BUILDER="localhost/medusa-rs-standin-rust:1.95-bookworm"
RUNTIME="localhost/medusa-rs-standin-distroless-cc:debian12"
TOOLCHAIN="${MEDUSA_RS_TOOLCHAIN:-1.95.0-x86_64-unknown-linux-gnu}"
MIRROR="${MEDUSA_RS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# crun fails here ("cgroups in hybrid mode"): runc and the cgroupfs manager.
P=(podman --runtime runc --cgroup-manager=cgroupfs)

log() { printf '[image] %s\n' "$*" >&2; }

exists() { "${P[@]}" image exists "$1"; }

make_builder() {
    local work rootfs rustup_home src
    work="$(mktemp -d /var/tmp/medusa-rs-builder.XXXXXX)"
    rootfs="$work/rootfs"
    log "builder stand-in: debootstrap bookworm (minbase + gcc, libc6-dev, make, pkg-config, ca-certificates)"
    debootstrap --variant=minbase --include=gcc,libc6-dev,make,pkg-config,ca-certificates \
        bookworm "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
        tail -20 "$work/debootstrap.log" >&2
        exit 1
    }
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates >/dev/null
    fi
    rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
    src="$rustup_home/toolchains/$TOOLCHAIN"
    [ -x "$src/bin/cargo" ] || { log "ERROR: toolchain $src not found (set MEDUSA_RS_TOOLCHAIN)"; exit 1; }
    log "builder stand-in: Rust toolchain $TOOLCHAIN (bin, lib; no docs)"
    mkdir -p "$rootfs/usr/local/rustup/toolchains/$TOOLCHAIN" "$rootfs/usr/local/cargo/bin"
    (cd -P "$src" && tar -c bin lib libexec etc 2>/dev/null) | tar -x -C "$rootfs/usr/local/rustup/toolchains/$TOOLCHAIN"
    for t in cargo rustc rustdoc; do
        ln -s "../../rustup/toolchains/$TOOLCHAIN/bin/$t" "$rootfs/usr/local/cargo/bin/$t"
    done
    tar -C "$rootfs" -c . | "${P[@]}" import \
        --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV RUSTUP_HOME=/usr/local/rustup' --change 'ENV CARGO_HOME=/usr/local/cargo' \
        - "$BUILDER" >/dev/null
    rm -rf "$work"
}

make_runtime() {
    local work rootfs lib
    work="$(mktemp -d /var/tmp/medusa-rs-runtime.XXXXXX)"
    rootfs="$work/rootfs"
    log "runtime stand-in: glibc, libgcc_s, CA certificates, passwd, /tmp"
    mkdir -p "$rootfs"/{etc/ssl/certs,lib/x86_64-linux-gnu,lib64,tmp,home/nonroot,usr/share}
    for lib in libc.so.6 libm.so.6 libgcc_s.so.1 libdl.so.2 libpthread.so.0 librt.so.1; do
        cp -L "/lib/x86_64-linux-gnu/$lib" "$rootfs/lib/x86_64-linux-gnu/"
    done
    cp -L /lib64/ld-linux-x86-64.so.2 "$rootfs/lib64/"
    cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
    printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
    chmod 1777 "$rootfs/tmp"
    tar -C "$rootfs" -c . | "${P[@]}" import - "$RUNTIME" >/dev/null
    rm -rf "$work"
}

bases() {
    local t0=$SECONDS
    exists "$BUILDER" || make_builder
    exists "$RUNTIME" || make_runtime
    log "stand-ins ready in $((SECONDS - t0)) s: $BUILDER, $RUNTIME"
}

build() {
    bases
    local t0=$SECONDS
    log "podman build of ./Dockerfile -> $IMAGE"
    "${P[@]}" build --pull=never --network=host \
        --build-arg "RUST_IMAGE=$BUILDER" --build-arg "RUNTIME_IMAGE=$RUNTIME" \
        --build-arg "VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" \
        --build-arg "VCS_REF=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
        -t "$IMAGE" -f Dockerfile . >&2
    log "built $IMAGE in $((SECONDS - t0)) s, $(size) bytes"
}

size() {
    "${P[@]}" image inspect --format '{{.Size}}' "$IMAGE"
}

case "${1:-build}" in
    bases) bases ;;
    build) build ;;
    size) size ;;
    *) echo "usage: $0 [bases|build|size]" >&2; exit 2 ;;
esac
