//! `medusa-rs`: one binary for every role of the image (see `medusa::cli`). Run as
//! `medusa-sidecar`, `medusa-restore-init`, `medusa-entrypoint` or `grpc_health_probe` (links or
//! copies of it), it is that program; run as `medusa-rs`, its first argument picks the role or
//! command.

fn main() -> std::process::ExitCode {
    medusa::cli::main()
}
