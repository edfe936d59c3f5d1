# medusa-rs: one image for the Medusa sidecar (MEDUSA_MODE=GRPC) and the restore init container
# (MEDUSA_MODE=RESTORE), usable in place of Medusa's image in k8ssandra-operator's pod spec.
#
#   docker build -t medusa-rs .
#
# Build stage: the workspace's release binaries. protox compiles the proto (no protoc needed).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_LTO=thin \
    cargo build --release --locked -p medusa-sidecar -p medusa-restore-init \
 && mkdir /out \
 && cp target/release/medusa-sidecar target/release/medusa-restore-init target/release/medusa-entrypoint \
       target/release/grpc_health_probe /out/

# Runtime: glibc and CA certificates, no shell, no Python, no package manager.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /out/medusa-sidecar /out/medusa-restore-init /out/medusa-entrypoint /usr/local/bin/
COPY --from=build /out/grpc_health_probe /bin/grpc_health_probe
# The cassandra user of the Cassandra images, which owns /var/lib/cassandra.
USER 999:999
ENV MEDUSA_MODE=GRPC
EXPOSE 50051
# The mode dispatch is a program (medusa-entrypoint), not a shell script; anything but GRPC or
# RESTORE exits 1. Config: /etc/medusa/medusa.ini; credentials: /etc/medusa-secrets/credentials.
ENTRYPOINT ["/usr/local/bin/medusa-entrypoint"]
