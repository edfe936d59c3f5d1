//! `medusa-entrypoint`: the image's entry point. `MEDUSA_MODE=GRPC` runs the sidecar,
//! `MEDUSA_MODE=RESTORE` the restore init container (both found next to this binary), anything
//! else exits 1 with a message. Arguments are passed through; `--config` defaults to
//! `/etc/medusa/medusa.ini` in both.

use std::os::unix::process::CommandExt;

fn main() {
    let mode = std::env::var("MEDUSA_MODE").unwrap_or_default();
    let program = match mode.as_str() {
        "GRPC" => "medusa-sidecar",
        "RESTORE" => "medusa-restore-init",
        other => {
            eprintln!(
                "medusa-entrypoint: MEDUSA_MODE must be GRPC (the backup sidecar) or RESTORE (the restore init container), not {other:?}"
            );
            std::process::exit(1);
        }
    };
    let dir = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.to_path_buf())).unwrap_or_default();
    let err = std::process::Command::new(dir.join(program)).args(std::env::args_os().skip(1)).exec();
    eprintln!("medusa-entrypoint: cannot run {}: {err}", dir.join(program).display());
    std::process::exit(1);
}
