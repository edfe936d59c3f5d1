# syntax=docker/dockerfile:1
# medusa-rs: one image for the Medusa sidecar (MEDUSA_MODE=GRPC) and the restore init container
# (MEDUSA_MODE=RESTORE), usable in place of Medusa's image in k8ssandra-operator's pod spec
# (spec.medusa.containerImage). One binary, /usr/local/bin/medusa-rs, under every name the
# operator and Medusa's users run: medusa-entrypoint (the entry point), medusa-sidecar,
# medusa-restore-init, medusa (the CLI: list-backups, status, verify, download, purge) and
# /bin/grpc_health_probe (the operator's probes).
#
#   docker build -t medusa-rs .            (BuildKit, the default since Docker 23)
#   podman build -t medusa-rs .
#
# Both bases are pinned by digest; override them with --build-arg RUST_IMAGE=... and
# RUNTIME_IMAGE=... (a mirror, or the local stand-ins of scripts/image.sh where no registry can
# be reached).
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12@sha256:e8e7ee4b8b106d4c5fde9e422a321b2b8a2d5cca546c97adcce927f3e1d36e36

# Build stage. The cargo registry and the target directory are cache mounts: a source change
# rebuilds only the workspace's own crates, not its dependencies. protox compiles the proto (no
# protoc needed).
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=medusa-rs-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=medusa-rs-target,target=/src/target \
    CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_LTO=thin \
    cargo build --release --locked -p medusa-sidecar --bin medusa-rs \
 && mkdir -p /out/usr/local/bin /out/bin /out/etc/medusa /out/etc/medusa-secrets /out/etc/cassandra \
             /out/etc/podinfo /out/etc/certificates /out/var/lib/cassandra \
 && cp target/release/medusa-rs /out/usr/local/bin/medusa-rs \
 && for name in medusa-entrypoint medusa-sidecar medusa-restore-init medusa; do \
        ln -s medusa-rs "/out/usr/local/bin/$name"; \
    done \
 && ln -s /usr/local/bin/medusa-rs /out/bin/grpc_health_probe

# Runtime: glibc and CA certificates, no shell, no package manager, no Python.
FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="medusa-rs" \
      org.opencontainers.image.description="Drop-in replacement for Cassandra Medusa's gRPC sidecar and restore init container (k8ssandra-operator)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"
# The binary and its names; the mount points the operator renders (config, credentials,
# cassandra.yaml, pod labels, certificates, the data volume) exist even on a read-only root.
COPY --from=build /out/ /
# The cassandra user of the Cassandra images, which owns /var/lib/cassandra. Nothing is written
# outside the mounted volumes (/var/lib/cassandra, /tmp): the root filesystem can be read-only.
USER 999:999
ENV MEDUSA_MODE=GRPC
EXPOSE 50051 9180
# MEDUSA_MODE picks the program (GRPC: the sidecar; RESTORE: the restore init container);
# anything else exits 1. Config: /etc/medusa/medusa.ini; credentials: /etc/medusa-secrets.
ENTRYPOINT ["/usr/local/bin/medusa-entrypoint"]
