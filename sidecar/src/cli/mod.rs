//! The `medusa-rs` multi-call binary: one program for every role of the image, picked by the
//! name it is run as (`argv[0]`) or by its first argument.
//!
//! | name | role |
//! |---|---|
//! | `medusa-sidecar`, `medusa-rs sidecar` | the gRPC sidecar ([`daemons::sidecar`]) |
//! | `medusa-restore-init`, `medusa-rs restore-init` | the restore init container |
//! | `medusa-entrypoint`, `medusa-rs entrypoint` | the image's entry point (`MEDUSA_MODE`) |
//! | `grpc_health_probe`, `medusa-rs health-probe` | the probe the operator execs ([`probe`]) |
//! | `medusa-rs list-backups`, `status`, `verify`, `download`, `purge` (also as `medusa ...`) | the everyday commands of Medusa's CLI, on the same `medusa.ini` |
//!
//! Exit codes of the commands: 0 done (and, for `status` and `verify`, the backup is complete
//! and sound); 1 an error (unreadable configuration, storage failure); 2 bad arguments; 3 the
//! backup does not exist; 4 the backup is incomplete, failed or damaged; 141
//! ([`stdout::EXIT_BROKEN_PIPE`]) standard output was closed before everything was written.

// These shadow std's macros in this module and every submodule below (declared after them):
// output goes through `stdout`, which survives a closed or full standard output, and a closed
// standard error costs the message, not a panic.
macro_rules! print {
    ($($arg:tt)*) => { $crate::cli::stdout::write_fmt(format_args!($($arg)*)) };
}
macro_rules! println {
    () => { $crate::cli::stdout::write_fmt(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::stdout::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cluster;
mod daemons;
mod decommissioned;
mod delete;
mod download;
mod listing;
mod probe;
mod purge;
mod restores;
mod stdout;
mod verify;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::store::{Storage, StorageError};

/// Exit code: the backup does not exist.
pub const EXIT_NOT_FOUND: u8 = 3;
/// Exit code: the backup is incomplete, failed or damaged.
pub const EXIT_NOT_SOUND: u8 = 4;

/// Runs the role `argv[0]` names, or the command of the first argument.
/// At most two glibc malloc arenas, and a fixed mmap threshold of 4 MiB, unless the
/// environment sets `MALLOC_ARENA_MAX` (and `MALLOC_MMAP_THRESHOLD_`) itself.
///
/// glibc gives each thread that allocates an arena of its own, up to 8 per core, and memory
/// freed into one is rarely given back, so every blocking-pool thread that once parsed a
/// manifest or read a file kept its own high-water mark. And glibc raises its mmap threshold
/// each time a large mmapped block is freed, up to 32 MiB, so that GetBackups' reply buffers
/// (tens of MiB, grown by doubling) soon came from the heap, where they fragmented it. Measured
/// on GetBackups of 1,000 backups x 12 nodes x 256 tokens: peak RSS 66 MiB with glibc's
/// defaults, 54 MiB with two arenas; 79 MiB with two arenas once the index listing got fast
/// (its keys are allocated on a blocking thread between the replies), 53 MiB with the fixed
/// threshold, and 24 MiB after the calls instead of 79. Transfer buffers stay below 4 MiB, so
/// they still come from the heap and cost no mmap each.
///
/// glibc reads these settings when it starts, and `mallopt` would need `unsafe` (forbidden in
/// this workspace), so the process executes itself again once with them set (same pid, same
/// arguments, so the same role); if that fails it goes on with glibc's defaults.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return;
        }
        let args: Vec<CString> = std::env::args_os().filter_map(|a| CString::new(a.as_bytes()).ok()).collect();
        let mut env: Vec<CString> = std::env::vars_os()
            .filter_map(|(k, v)| CString::new([k.as_bytes(), b"=", v.as_bytes()].concat()).ok())
            .collect();
        env.push(c"MALLOC_ARENA_MAX=2".to_owned());
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            env.push(c"MALLOC_MMAP_THRESHOLD_=4194304".to_owned());
        }
        let _ = nix::unistd::execve(c"/proc/self/exe", &args, &env);
    }
}

pub fn main() -> ExitCode {
    tune_malloc();
    let args: Vec<OsString> = std::env::args_os().collect();
    let program = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The re-execution through /proc/self/exe named the process "exe" (what ps and top show):
    // it gets its program's name back.
    #[cfg(target_os = "linux")]
    if let Ok(name) = std::ffi::CString::new(program.as_bytes()) {
        let _ = nix::sys::prctl::set_name(&name);
    }
    let code = match program.as_str() {
        "medusa-sidecar" => daemons::sidecar(args),
        "medusa-restore-init" => daemons::restore_init(args),
        "medusa-entrypoint" => daemons::entrypoint(args),
        "grpc_health_probe" => probe_with(args.into_iter().skip(1)),
        _ => tool(args),
    };
    stdout::finish(code)
}

fn probe_with(args: impl Iterator<Item = OsString>) -> ExitCode {
    let mut out = Vec::new();
    for a in args {
        match a.into_string() {
            Ok(s) => out.push(s),
            Err(a) => {
                eprintln!("error: argument {a:?} is not UTF-8");
                return ExitCode::from(1);
            }
        }
    }
    probe::main(out)
}

/// medusa-rs: Medusa's backup sidecar, restore init container and command line for Apache
/// Cassandra, in one binary.
#[derive(Parser, Debug)]
#[command(name = "medusa-rs", version, about, propagate_version = true)]
struct Cli {
    /// Path of medusa.ini.
    #[arg(long, global = true, alias = "config-file", env = "MEDUSA_RS_CONFIG", default_value = crate::config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Output: human-readable text or JSON (one document on standard output).
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Log progress on standard error (INFO instead of WARN; `RUST_LOG` overrides).
    #[arg(long, short = 'v', global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Lists the backups in the bucket: every node, complete or not, with sizes.
    ListBackups {
        /// Accepted for Medusa's scripts: medusa-rs always lists the backups of every node.
        #[arg(long)]
        show_all: bool,
    },
    /// Shows one backup: its state on each node, files and sizes.
    Status {
        /// The backup.
        #[arg(long)]
        backup_name: String,
    },
    /// Checks that every object of a backup is in storage with its recorded size; `--deep`
    /// downloads each one and checks its hash too.
    Verify {
        /// The backup.
        #[arg(long)]
        backup_name: String,
        /// Re-hash every object (downloads it into `--tmp-dir`, one per transfer at a time).
        #[arg(long)]
        deep: bool,
        /// Where `--deep` puts objects while hashing them.
        #[arg(long, env = "MEDUSA_TMP_DIR", default_value = "/tmp")]
        tmp_dir: PathBuf,
    },
    /// Downloads one node's part of a backup into a directory (`<keyspace>/<table>/<files>`),
    /// each file verified against the manifest.
    Download {
        /// The backup.
        #[arg(long)]
        backup_name: String,
        /// The directory to fill (created; must be empty if it exists).
        #[arg(long, alias = "download-destination")]
        destination: PathBuf,
        /// The node whose part to download (default: this node, as the sidecar names it).
        #[arg(long)]
        fqdn: Option<String>,
    },
    /// Applies the retention limits of `[storage]` (`max_backup_age`, `max_backup_count`) to
    /// one node's backups. Shows what would go unless `--apply` is given.
    Purge {
        /// Delete (without it, a dry run).
        #[arg(long)]
        apply: bool,
        /// The node whose backups to purge (default: this node).
        #[arg(long)]
        fqdn: Option<String>,
    },
    /// Backs up a cluster without an operator: AsyncBackup on every sidecar, their status
    /// polled to the end, a summary; exit 0 only when every node succeeded.
    #[command(name = "backup-cluster")]
    BackupCluster {
        /// The sidecars, `host:port`, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        hosts: Vec<String>,
        /// The backup's name (default: the time, `%Y%m%dT%H%M`, UTC).
        #[arg(long)]
        backup_name: Option<String>,
        /// `full` or `differential` (Medusa's default).
        #[arg(long, default_value = "differential")]
        mode: String,
        /// Seconds between starting two nodes (Medusa's `--stagger` means something else).
        #[arg(long, default_value_t = 0)]
        stagger: u64,
        /// Seconds to wait for every node to finish.
        #[arg(long, default_value_t = 86_400)]
        timeout: u64,
    },
    /// Loads tables of a backup into the running nodes (no restart): RestoreTables on every
    /// sidecar's extension service, each job polled to its end, a summary; exit 0 only when
    /// every node loaded its part. Writes made after the backup win where they are newer:
    /// TRUNCATE a table first to get it exactly as it was.
    #[command(name = "restore-tables")]
    RestoreTables {
        /// The sidecars, `host:port`, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        hosts: Vec<String>,
        /// The backup.
        #[arg(long)]
        backup_name: String,
        /// Tables, `keyspace.table` (repeatable or comma-separated).
        #[arg(long, value_delimiter = ',')]
        table: Vec<String>,
        /// Whole keyspaces (repeatable or comma-separated).
        #[arg(long, value_delimiter = ',')]
        keyspace: Vec<String>,
        /// Load into a table dropped and created again since the backup (its columns must
        /// still fit the backup's SSTables).
        #[arg(long)]
        allow_new_table_id: bool,
        /// Seconds to wait for every node.
        #[arg(long, default_value_t = 86_400)]
        timeout: u64,
    },
    /// Prints how the init containers restore a whole backup: which backup node each target
    /// receives (in place, or Medusa's `--host-list`), and the `restore-init` environment.
    #[command(name = "restore-cluster")]
    RestoreCluster {
        /// The backup.
        #[arg(long)]
        backup_name: String,
        /// Medusa's host list: `seed,target,source` per line (default: in place).
        #[arg(long)]
        host_list: Option<PathBuf>,
    },
    /// Deletes this node's part of a backup (every node's with `--all-nodes`); refuses an
    /// unfinished part that may be running.
    #[command(name = "delete-backup")]
    DeleteBackup {
        /// The backup.
        #[arg(long)]
        backup_name: String,
        /// Every node's part, not only this node's.
        #[arg(long)]
        all_nodes: bool,
    },
    /// Prints the token map of a backup: each node, then its tokens.
    #[command(name = "fetch-tokenmap")]
    FetchTokenmap {
        /// The backup.
        #[arg(long)]
        backup_name: String,
    },
    /// Reports this node's latest backup, the latest complete and the latest cluster backup.
    #[command(name = "report-last-backup")]
    ReportLastBackup {
        /// Accepted for Medusa's scripts; the sidecar's /metrics exports the figures.
        #[arg(long)]
        push_metrics: bool,
    },
    /// Prints the name of the newest backup complete on every node of its ring.
    #[command(name = "get-last-complete-cluster-backup")]
    LastComplete,
    /// Deletes the backups of nodes that left the ring (absent from the latest complete
    /// backup), except parts a complete cluster backup still holds. Shows what would go unless
    /// `--apply` is given.
    #[command(name = "purge-decommissioned")]
    PurgeDecommissioned {
        /// Delete (without it, a dry run).
        #[arg(long)]
        apply: bool,
    },
    /// Runs the gRPC sidecar (as `medusa-sidecar`).
    #[command(disable_help_flag = true)]
    Sidecar {
        /// The sidecar's own arguments (`--help` for them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Runs the restore init container (as `medusa-restore-init`).
    #[command(disable_help_flag = true)]
    RestoreInit {
        /// Its own arguments (`--help` for them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Runs the mode `MEDUSA_MODE` names: GRPC (the sidecar) or RESTORE (the init container).
    #[command(disable_help_flag = true)]
    Entrypoint {
        /// Passed on to the mode.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Checks grpc.health.v1.Health like grpc_health_probe (`--addr=:50051`).
    #[command(name = "health-probe", alias = "grpc_health_probe", disable_help_flag = true)]
    HealthProbe {
        /// The probe's flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

fn tool(args: Vec<OsString>) -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches_from(args);
    let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `--config` is global, so clap takes it wherever it stands, before or after the daemon's
    // name, and the daemon's own parser never sees it: it goes on in front of the daemon's
    // arguments (one the daemon's arguments carry themselves wins, as the later one).
    let config = matches
        .value_source("config")
        .is_some_and(|s| s != clap::parser::ValueSource::DefaultValue)
        .then(|| cli.config.clone());
    let named = |name: &str, rest: Vec<OsString>| -> Vec<OsString> {
        let config = config.iter().flat_map(|c| [OsString::from("--config"), c.clone().into_os_string()]);
        std::iter::once(OsString::from(name)).chain(config).chain(rest).collect()
    };
    let json = cli.output == Output::Json;
    let run = match cli.command {
        Command::Sidecar { args } => return daemons::sidecar(named("medusa-sidecar", args)),
        Command::RestoreInit { args } => return daemons::restore_init(named("medusa-restore-init", args)),
        Command::Entrypoint { args } => return daemons::entrypoint(named("medusa-entrypoint", args)),
        Command::HealthProbe { args } => return probe_with(args.into_iter()),
        other => other,
    };
    crate::logging::init_cli(cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&Failure::error(format!("cannot start the async runtime: {e}"))),
    };
    let result = rt.block_on(async move {
        let ctx = Ctx::open(&cli.config, json)?;
        match run {
            Command::ListBackups { show_all: _ } => listing::list_backups(&ctx).await,
            Command::Status { backup_name } => listing::status(&ctx, &backup_name).await,
            Command::Verify { backup_name, deep, tmp_dir } => verify::verify(&ctx, &backup_name, deep, &tmp_dir).await,
            Command::Download { backup_name, destination, fqdn } => {
                download::download(&ctx, &backup_name, &destination, fqdn.as_deref()).await
            }
            Command::Purge { apply, fqdn } => purge::purge(&ctx, apply, fqdn.as_deref()).await,
            Command::BackupCluster { hosts, backup_name, mode, stagger, timeout } => {
                let r = cluster::Request { hosts, name: backup_name, mode, stagger, timeout };
                cluster::backup_cluster(&ctx, r).await
            }
            Command::RestoreTables { hosts, backup_name, table, keyspace, allow_new_table_id, timeout } => {
                let tables = table.into_iter().chain(keyspace).collect();
                let r = restores::TablesRequest { hosts, backup_name, tables, allow_new_table_id, timeout };
                restores::restore_tables(&ctx, r).await
            }
            Command::RestoreCluster { backup_name, host_list } => {
                restores::restore_cluster(&ctx, &backup_name, host_list.as_deref()).await
            }
            Command::DeleteBackup { backup_name, all_nodes } => {
                delete::delete_backup(&ctx, &backup_name, all_nodes).await
            }
            Command::FetchTokenmap { backup_name } => listing::fetch_tokenmap(&ctx, &backup_name).await,
            Command::LastComplete => listing::last_complete(&ctx).await,
            Command::ReportLastBackup { push_metrics } => listing::report_last_backup(&ctx, push_metrics).await,
            Command::PurgeDecommissioned { apply } => decommissioned::purge_decommissioned(&ctx, apply).await,
            Command::Sidecar { .. }
            | Command::RestoreInit { .. }
            | Command::Entrypoint { .. }
            | Command::HealthProbe { .. } => {
                unreachable!("handled above")
            }
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => fail(&f),
    }
}

fn fail(f: &Failure) -> ExitCode {
    eprintln!("medusa-rs: error: {}", f.message);
    ExitCode::from(f.code)
}

/// Why a command could not do its job, and the exit code that says so.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn error(message: impl Into<String>) -> Failure {
        Failure { code: 1, message: message.into() }
    }

    fn not_found(message: impl Into<String>) -> Failure {
        Failure { code: EXIT_NOT_FOUND, message: message.into() }
    }
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Failure {
        Failure::error(e.to_string())
    }
}

/// What every command works on.
struct Ctx {
    cfg: Config,
    storage: Storage,
    json: bool,
}

impl Ctx {
    fn open(config: &Path, json: bool) -> Result<Ctx, Failure> {
        let cfg = Config::load(config).map_err(|e| Failure::error(e.to_string()))?;
        for w in &cfg.warnings {
            tracing::warn!("{w}");
        }
        let storage = Storage::from_config(&cfg.storage)?;
        Ok(Ctx { cfg, storage, json })
    }

    /// The node `fqdn` names, or this node.
    fn node(&self, fqdn: Option<&str>) -> Result<crate::format::names::Fqdn, Failure> {
        match fqdn {
            Some(f) => crate::format::names::Fqdn::new(f).map_err(|e| Failure::error(format!("--fqdn: {e}"))),
            None => self.cfg.fqdn().map_err(|e| Failure::error(format!("{e}; name the node with --fqdn"))),
        }
    }

    /// Prints `value` as JSON on standard output.
    fn print_json(&self, value: &serde_json::Value) {
        println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
    }
}

/// A backup name from the command line.
fn backup_name(name: &str) -> Result<crate::format::names::BackupName, Failure> {
    crate::format::names::BackupName::new(name).map_err(|e| Failure::error(format!("--backup-name: {e}")))
}

/// `2024-05-20 10:00:00` (UTC) for an epoch second.
fn time(epoch: Option<i64>) -> String {
    epoch
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// Bytes for people: `1.2 GiB`.
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// Prints rows as a table with left-aligned columns.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(time(Some(0)), "1970-01-01 00:00:00");
        assert_eq!(time(None), "-");
    }

    #[test]
    fn the_command_line_parses() {
        Cli::command_for_tests().debug_assert();
    }

    impl Cli {
        fn command_for_tests() -> clap::Command {
            <Cli as clap::CommandFactory>::command()
        }
    }
}
