//! `medusa-restore-init`: the `medusa-restore` init container. Exit 0 when the node is restored
//! or there is nothing to restore; non-zero on any failure, so that Cassandra does not start on
//! a half-restored node.

use std::path::PathBuf;

use clap::Parser;
use medusa::restore::{Outcome, RestoreEnv};

/// Restores a Medusa backup onto this node before Cassandra starts (medusa-rs).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Path of medusa.ini.
    #[arg(long, default_value = medusa::config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // Medusa's entrypoint sleeps before doing anything; logged once logging is set up.
    let slept = std::env::var("DEBUG_SLEEP").ok().and_then(|v| v.parse::<u64>().ok()).filter(|s| *s > 0);
    if let Some(secs) = slept {
        tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
    }
    // `[logging]` applies here too: the configuration is read before anything is logged.
    let cfg = match medusa::config::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            medusa::logging::init("INFO", None);
            tracing::error!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    medusa::logging::init(&cfg.log_level, cfg.log_format.as_deref());
    if let Some(secs) = slept {
        tracing::info!(seconds = secs, "DEBUG_SLEEP: waited before doing anything");
    }
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    match medusa::restore::run(&cfg, RestoreEnv::from_process()).await {
        Ok(Outcome::Skipped(why)) => {
            tracing::info!("skipping restore: {why}");
            std::process::ExitCode::SUCCESS
        }
        Ok(Outcome::Restored(_)) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("restore failed: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
