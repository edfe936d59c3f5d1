//! Log output of the binaries, as `kubectl logs` shows it: plain text without colour codes
//! unless standard output is a terminal, or JSON lines when asked (`MEDUSA_RS_LOG_FORMAT=json`,
//! or `[logging] format = json` in `medusa.ini`, since the operator renders the container and no
//! environment variable can be added there).
//!
//! `[logging] level` (k8ssandra-operator always writes `DEBUG`) applies to medusa-rs' own code;
//! its dependencies (h2, hyper, tower, rustls, the storage clients) log at WARN, so a health
//! probe every ten seconds does not fill the log with HTTP/2 frames. `RUST_LOG` overrides both.

use std::io::IsTerminal;

/// Crates whose events `[logging] level` governs (tracing targets start with the crate name).
const OWN_CRATES: &[&str] = &["medusa", "medusa_sidecar", "medusa_restore_init", "medusa_entrypoint"];

/// The filter directives for Medusa's `level` (Python names: DEBUG, INFO, WARNING, ERROR,
/// CRITICAL; unknown values mean INFO).
pub fn directives(level: &str) -> String {
    let level = match level.trim().to_ascii_uppercase().as_str() {
        "TRACE" => "trace",
        "DEBUG" => "debug",
        "WARNING" | "WARN" => "warn",
        "ERROR" | "CRITICAL" | "FATAL" => "error",
        _ => "info",
    };
    let own: Vec<String> = OWN_CRATES.iter().map(|c| format!("{c}={level}")).collect();
    format!("warn,{}", own.join(","))
}

/// Whether JSON lines are asked for: the environment first, then `[logging] format`.
pub fn json_wanted(ini_format: Option<&str>) -> bool {
    let env = std::env::var("MEDUSA_RS_LOG_FORMAT").ok().filter(|v| !v.is_empty());
    env.as_deref().or(ini_format).is_some_and(|f| f.trim().eq_ignore_ascii_case("json"))
}

/// Installs the global subscriber for `level` and `format` (from `[logging]`).
pub fn init(level: &str, format: Option<&str>) {
    let rust_log = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
    let filter = rust_log
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(directives(level)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    if json_wanted(format) {
        builder.json().with_current_span(false).init();
    } else {
        builder.with_ansi(std::io::stdout().is_terminal()).init();
    }
}

/// Installs the subscriber of the command-line tools: plain text on standard error (standard
/// output carries their tables and JSON), WARN unless `verbose` or `RUST_LOG` says otherwise.
pub fn init_cli(verbose: bool) {
    let rust_log = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
    let level = if verbose { "INFO" } else { "WARNING" };
    let filter = rust_log
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(directives(level)));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medusa_levels_govern_our_crates_only() {
        let d = directives("DEBUG");
        assert!(d.starts_with("warn,") && d.contains("medusa=debug") && d.contains("medusa_sidecar=debug"), "{d}");
        assert!(directives("WARNING").contains("medusa=warn"));
        assert!(directives("CRITICAL").contains("medusa=error"));
        assert!(directives("bogus").contains("medusa=info"));
        tracing_subscriber::EnvFilter::try_new(directives("INFO")).expect("valid directives");
    }

    #[test]
    fn json_lines_from_the_ini_key_when_the_environment_says_nothing() {
        if std::env::var_os("MEDUSA_RS_LOG_FORMAT").is_none() {
            assert!(json_wanted(Some("json")) && json_wanted(Some(" JSON ")));
            // Medusa's own `format` holds a Python logging format string: plain text then.
            assert!(!json_wanted(Some("[%(asctime)s] %(levelname)s: %(message)s")) && !json_wanted(None));
        }
    }
}
