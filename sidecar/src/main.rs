//! `medusa-sidecar`: the Medusa gRPC backup sidecar.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// The Medusa gRPC backup sidecar for Apache Cassandra (medusa-rs).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Path of medusa.ini.
    #[arg(long, default_value = medusa::config::DEFAULT_CONFIG_PATH)]
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

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let cfg = match medusa::config::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("medusa-sidecar: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    medusa::logging::init(&cfg.log_level, cfg.log_format.as_deref());
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
                return std::process::ExitCode::from(1);
            }
        },
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen");
            return std::process::ExitCode::from(1);
        }
    };
    let opts = medusa::service::daemon::Options {
        config_path: args.config.clone(),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        config_poll: Duration::from_secs(args.config_poll_seconds.max(1)),
    };
    match medusa::service::daemon::run(cfg, opts, listener, shutdown_signal()).await {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "medusa-sidecar failed");
            std::process::ExitCode::from(1)
        }
    }
}
