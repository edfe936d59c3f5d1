//! The two long-standing programs of the image: the gRPC sidecar (`medusa-sidecar`) and the
//! restore init container (`medusa-restore-init`), and the entry point that picks one by
//! `MEDUSA_MODE` as Medusa's image does.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::restore::{Outcome, RestoreEnv};

/// The Medusa gRPC backup sidecar for Apache Cassandra (medusa-rs).
#[derive(Parser, Debug)]
#[command(name = "medusa-sidecar", version, about, args_override_self = true)]
struct SidecarArgs {
    /// Path of medusa.ini (the last one given counts).
    #[arg(long, alias = "config-file", env = "MEDUSA_RS_CONFIG", default_value = crate::config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Seconds a running backup may continue after SIGTERM before it is stopped.
    #[arg(long, default_value_t = 25, env = "MEDUSA_RS_SHUTDOWN_GRACE")]
    shutdown_grace: u64,
    /// Seconds between checks of medusa.ini for changes (a change restarts the sidecar when idle).
    #[arg(long, default_value_t = 5, env = "MEDUSA_RS_CONFIG_POLL")]
    config_poll_seconds: u64,
    /// Address to listen on (default: all interfaces, `[grpc] port`).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

/// Restores a Medusa backup onto this node before Cassandra starts (medusa-rs). Exit 0 when the
/// node is restored or there is nothing to restore; non-zero on any failure, so that Cassandra
/// does not start on a half-restored node.
#[derive(Parser, Debug)]
#[command(name = "medusa-restore-init", version, about, args_override_self = true)]
struct RestoreArgs {
    /// Path of medusa.ini (the last one given counts).
    #[arg(long, alias = "config-file", env = "MEDUSA_RS_CONFIG", default_value = crate::config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        eprintln!("medusa-rs: cannot start the async runtime: {e}");
        ExitCode::from(1)
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; only Ctrl-C stops the sidecar gracefully");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `medusa-sidecar`: `args` include the program name.
pub fn sidecar(args: Vec<OsString>) -> ExitCode {
    let args = SidecarArgs::parse_from(args);
    let cfg = match crate::config::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("medusa-sidecar: {e}");
            return ExitCode::from(2);
        }
    };
    // The sidecar alone makes a `local` bucket directory (inside an existing base_path): its
    // first backup needs one, and everything else only reads.
    if let Err(e) = crate::store::create_local_bucket(&cfg.storage) {
        eprintln!("medusa-sidecar: {e}");
        return ExitCode::from(2);
    }
    // Before the runtime starts its threads, which inherit it.
    let nice = lower_priority();
    match runtime() {
        Ok(rt) => rt.block_on(serve(args, cfg, nice)),
        Err(code) => code,
    }
}

/// The niceness the sidecar asks for by default: Cassandra's threads (0) get about nine times
/// its share of a busy CPU.
const DEFAULT_NICE: i32 = 10;

/// Lowers the sidecar's CPU priority below Cassandra's, beside which it runs: to
/// `MEDUSA_RS_NICE` (default [`DEFAULT_NICE`]; `0` leaves it as inherited). What it got, or
/// why not (for the log).
fn lower_priority() -> Result<i32, String> {
    let want = match std::env::var("MEDUSA_RS_NICE") {
        Ok(v) => v.trim().parse::<i32>().map_err(|_| format!("MEDUSA_RS_NICE={v:?} is not a number (0 to 19)"))?,
        Err(_) => DEFAULT_NICE,
    };
    if want <= 0 {
        return Ok(rustix::process::getpriority_process(None).unwrap_or(0));
    }
    rustix::process::setpriority_process(None, want.min(19)).map_err(|e| format!("setpriority: {e}"))?;
    Ok(rustix::process::getpriority_process(None).unwrap_or(want))
}

async fn serve(args: SidecarArgs, cfg: crate::config::Config, nice: Result<i32, String>) -> ExitCode {
    crate::logging::init(&cfg.log_level, cfg.log_format.as_deref());
    match nice {
        Ok(n) => tracing::info!(nice = n, "CPU priority (MEDUSA_RS_NICE)"),
        Err(e) => tracing::warn!("the CPU priority stays as inherited: {e}"),
    }
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let addr = args.listen.unwrap_or_else(|| std::net::SocketAddr::from(([0u16; 8], cfg.grpc.port)));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        // No IPv6 on this host: all IPv4 interfaces instead.
        Err(_) if args.listen.is_none() => match tokio::net::TcpListener::bind(("0.0.0.0", cfg.grpc.port)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(port = cfg.grpc.port, error = %e, "cannot listen");
                return ExitCode::from(1);
            }
        },
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen");
            return ExitCode::from(1);
        }
    };
    let opts = crate::service::daemon::Options {
        config_path: args.config.clone(),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        config_poll: Duration::from_secs(args.config_poll_seconds.max(1)),
    };
    match crate::service::daemon::run(cfg, opts, listener, shutdown_signal()).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "medusa-sidecar failed");
            ExitCode::from(1)
        }
    }
}

/// `medusa-restore-init`: `args` include the program name.
pub fn restore_init(args: Vec<OsString>) -> ExitCode {
    let args = RestoreArgs::parse_from(args);
    match runtime() {
        Ok(rt) => rt.block_on(restore(args)),
        Err(code) => code,
    }
}

async fn restore(args: RestoreArgs) -> ExitCode {
    // Medusa's entrypoint sleeps before doing anything; logged once logging is set up.
    let slept = std::env::var("DEBUG_SLEEP").ok().and_then(|v| v.parse::<u64>().ok()).filter(|s| *s > 0);
    if let Some(secs) = slept {
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    // `[logging]` applies here too: the configuration is read before anything is logged.
    let cfg = match crate::config::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            crate::logging::init("INFO", None);
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    crate::logging::init(&cfg.log_level, cfg.log_format.as_deref());
    if let Some(secs) = slept {
        tracing::info!(seconds = secs, "DEBUG_SLEEP: waited before doing anything");
    }
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    match crate::restore::run(&cfg, RestoreEnv::from_process()).await {
        Ok(Outcome::Skipped(why)) => {
            tracing::info!("skipping restore: {why}");
            ExitCode::SUCCESS
        }
        Ok(Outcome::Restored(_)) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("restore failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// `medusa-entrypoint`: `MEDUSA_MODE=GRPC` runs the sidecar, `MEDUSA_MODE=RESTORE` the restore
/// init container, in this process; anything else exits 1 with a message. `args` (program name
/// first) are passed on; `--config` defaults to `/etc/medusa/medusa.ini` in both.
pub fn entrypoint(mut args: Vec<OsString>) -> ExitCode {
    let mode = std::env::var("MEDUSA_MODE").unwrap_or_default();
    match mode.as_str() {
        "GRPC" => {
            args[0] = "medusa-sidecar".into();
            sidecar(args)
        }
        "RESTORE" => {
            args[0] = "medusa-restore-init".into();
            restore_init(args)
        }
        other => {
            eprintln!(
                "medusa-entrypoint: MEDUSA_MODE must be GRPC (the backup sidecar) or RESTORE (the restore init container), not {other:?}"
            );
            ExitCode::from(1)
        }
    }
}
