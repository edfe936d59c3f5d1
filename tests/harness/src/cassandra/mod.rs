//! Real Apache Cassandra nodes for the scenario tests (`tests/it/cassandra.rs`): the same jars,
//! scripts and Python driver as `scripts/cassandra/` (see its README), driven from Rust.
//!
//! - [`RealNode`] (`node.rs`): one node on `127.0.0.N` started by `scripts/cassandra/node.sh`
//!   (generated `cassandra.yaml`, small heap, JMX on loopback), its start time measured and
//!   printed; stop (drain first), kill, nodetool, its directories and `cassandra.yaml`. A node
//!   left running by a failing test is killed on drop, its log tail printed.
//! - [`ring_nodes`], [`start_all`] (`ring.rs`): 1-3 nodes, all seeds, one evenly spaced token
//!   each, started in parallel; waits until every node sees every other `UN`.
//! - [`RealMgmtApi`] (`mgmt_api.rs`): the Management API endpoints the simulator serves
//!   (`sim/mgmt_api.rs`), each carried out on the real node through nodetool.
//! - [`CqlData`] (`cql.rs`): `scripts/cassandra/cqldata.py` (cassandra-driver): the schema,
//!   deterministic writes per phase, and per-table digests of a full scan.
//! - [`exclusive`]: one test at a time on this machine owns the loopback addresses and ports of
//!   the nodes (a lock file), so parallel test threads and processes never collide.
//!
//! A missing installation is an error that says what to run, never a skip.

mod cql;
mod mgmt_api;
mod node;
mod ring;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};

pub use cql::{CqlData, Digests, diff};
pub use mgmt_api::{
    ListedSnapshot, RealMgmtApi, RingMember, TimedCall, parse_describecluster_keyspaces, parse_listsnapshots,
    parse_ring,
};
pub use node::{NODETOOL_LIMIT, NodeConfig, NodeTarget, RealNode, Tokens};
pub use ring::{even_tokens, ring_nodes, start_all, wait_all_up};

use crate::services::{tools_dir, workspace_root};

/// The Cassandra 5.0 release CI tests (pinned in `scripts/cassandra/install.sh`).
pub const CASSANDRA_5: &str = "5.0.9";
/// The Cassandra 4.1 release of the soak matrix.
pub const CASSANDRA_4: &str = "4.1.10";

/// Longest a node may take to answer CQL after its start (node.sh's own limit is the same).
pub const START_TIMEOUT: Duration = Duration::from_secs(240);

/// `<workspace>/scripts/cassandra`.
pub fn scripts_dir() -> PathBuf {
    workspace_root().join("scripts/cassandra")
}

/// `<tools>/cassandra`.
pub fn cassandra_tools() -> PathBuf {
    tools_dir().join("cassandra")
}

/// Fails, saying what to run, unless `version`'s jars and the cqlsh venv are installed.
pub fn require_installed(version: &str) -> Result<()> {
    let jar = cassandra_tools().join(version).join("lib").join(format!("cassandra-all-{version}.jar"));
    let python = cassandra_tools().join("venv/bin/python");
    ensure!(
        jar.is_file() && python.is_file(),
        "Cassandra {version} is not installed under {} (missing {} or {}): run \
         `MEDUSA_RS_TOOLS={} bash scripts/cassandra/install.sh {version}` (scripts/install-test-deps.sh installs {CASSANDRA_5})",
        cassandra_tools().display(),
        jar.display(),
        python.display(),
        tools_dir().display(),
    );
    Ok(())
}

/// Holds the machine-wide lock of the real-node tests until dropped.
pub struct Exclusive {
    _file: std::fs::File,
}

/// Waits (at most `limit`) for the machine-wide lock of the real-node tests: their nodes use
/// fixed addresses and ports (127.0.0.1-6, 9042, 7000, 7199+), and node.sh refuses a fourth node.
pub async fn exclusive(limit: Duration) -> Result<Exclusive> {
    let path = std::env::temp_dir().join("medusa-rs-cassandra.lock");
    let t0 = std::time::Instant::now();
    loop {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {
                if t0.elapsed() > Duration::from_secs(1) {
                    println!("[cassandra] waited {:.1} s for {}", t0.elapsed().as_secs_f64(), path.display());
                }
                return Ok(Exclusive { _file: file });
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                ensure!(t0.elapsed() < limit, "another real-Cassandra test held {} for {limit:?}", path.display());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e).context(format!("locking {}", path.display())),
        }
    }
}

/// A work directory under the system temp dir that is removed on drop when the test passed and
/// kept (its path printed) when it failed, for the node logs.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// Creates `<temp>/medusa-rs-real-<label>-<pid>-<n>` and prints its path.
    pub fn new(label: &str) -> Result<WorkDir> {
        let dir = crate::services::TempDir::new(&format!("real-{label}"))?;
        let path = dir.path().to_path_buf();
        std::mem::forget(dir);
        println!("[cassandra] work directory {}", path.display());
        Ok(WorkDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            println!("[cassandra] test failed: node logs kept in {}", self.path.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.path) {
            println!("[cassandra] could not remove {}: {e}", self.path.display());
        }
    }
}

/// Runs `cmd` to its end, killing it after `limit`; returns its output. Used for the scripts.
pub(crate) async fn run_limited(
    mut cmd: tokio::process::Command,
    limit: Duration,
    what: &str,
) -> Result<std::process::Output> {
    cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .with_context(|| format!("{what}: no answer within {limit:?}"))?
        .with_context(|| format!("{what}: cannot run"))?;
    Ok(out)
}

/// `Ok(stdout)` of a successful run, else an error with its status and both outputs' tails.
pub(crate) fn expect_success(out: std::process::Output, what: &str) -> Result<String> {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::bail!("{what} failed ({}):\n{}\n{}", out.status, tail(&stdout, 30), tail(&stderr, 40))
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
