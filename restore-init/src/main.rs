//! `medusa-restore-init`: the `medusa-restore` init container, for those who run it outside the
//! image (where it is a name of the `medusa-rs` binary). Exit 0 when the node is restored or
//! there is nothing to restore; non-zero on any failure, so that Cassandra does not start on a
//! half-restored node.

fn main() -> std::process::ExitCode {
    medusa::cli::main()
}
