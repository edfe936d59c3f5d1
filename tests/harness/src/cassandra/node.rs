//! [`RealNode`]: one Apache Cassandra node as a plain java process, started and stopped by
//! `scripts/cassandra/node.sh`, on `127.0.0.N`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{CASSANDRA_5, START_TIMEOUT, expect_success, run_limited, scripts_dir, tail};
use crate::services::tools_dir;

/// How a node gets its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tokens {
    /// `num_tokens: K`, random tokens chosen at the first start.
    Vnodes(u32),
    /// `initial_token:` these (and `num_tokens` their count).
    Initial(Vec<i64>),
}

/// What node.sh generates `cassandra.yaml` from.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Cassandra release (installed by `scripts/cassandra/install.sh`).
    pub version: String,
    /// N of `127.0.0.N` (1..=254); the JMX port is `7199 + 100 (N - 1)`.
    pub index: u8,
    /// `cluster_name`.
    pub cluster: String,
    /// Datacenter (GossipingPropertyFileSnitch).
    pub dc: String,
    /// Rack.
    pub rack: String,
    /// Seed addresses (default: the node itself).
    pub seeds: Vec<String>,
    /// Tokens.
    pub tokens: Tokens,
    /// `-Xmx`.
    pub heap: String,
}

impl NodeConfig {
    /// A lone node: Cassandra `version` on `127.0.0.<index>`, 16 vnodes, `datacenter1`/`rack1`.
    pub fn single(version: &str, index: u8) -> NodeConfig {
        NodeConfig {
            version: version.to_string(),
            index,
            cluster: "medusa-rs-test".into(),
            dc: "datacenter1".into(),
            rack: "rack1".into(),
            seeds: vec![format!("127.0.0.{index}")],
            tokens: Tokens::Vnodes(16),
            heap: "512m".into(),
        }
    }

    /// [`NodeConfig::single`] on Cassandra 5.0.
    pub fn default_5(index: u8) -> NodeConfig {
        NodeConfig::single(CASSANDRA_5, index)
    }

    /// `127.0.0.<index>`.
    pub fn address(&self) -> String {
        format!("127.0.0.{}", self.index)
    }

    /// The JMX port node.sh gives node N.
    pub fn jmx_port(&self) -> u16 {
        7199 + 100 * (u16::from(self.index) - 1)
    }

    fn start_args(&self) -> Vec<String> {
        let mut a = vec![
            "--version".to_string(),
            self.version.clone(),
            "--cluster".into(),
            self.cluster.clone(),
            "--dc".into(),
            self.dc.clone(),
            "--rack".into(),
            self.rack.clone(),
            "--seeds".into(),
            self.seeds.join(","),
            "--heap".into(),
            self.heap.clone(),
            "--timeout".into(),
            START_TIMEOUT.as_secs().to_string(),
        ];
        match &self.tokens {
            Tokens::Vnodes(k) => a.extend(["--num-tokens".to_string(), k.to_string()]),
            Tokens::Initial(t) => {
                a.extend(["--initial-token".to_string(), t.iter().map(i64::to_string).collect::<Vec<_>>().join(",")])
            }
        }
        a
    }
}

/// What the node of a [`RealNode`] is reached by: enough for nodetool (cheap to clone into the
/// Management API's handlers).
#[derive(Debug, Clone)]
pub struct NodeTarget {
    /// Cassandra release (picks nodetool's jars).
    pub version: String,
    /// Listen and CQL address.
    pub address: String,
    /// JMX port on 127.0.0.1.
    pub jmx_port: u16,
    /// Data centre.
    pub dc: String,
}

impl NodeTarget {
    /// `scripts/cassandra/nodetool -h 127.0.0.1 -p <jmx> <args>`; its stdout, or an error with
    /// both outputs. Bounded by [`NODETOOL_LIMIT`].
    pub async fn nodetool(&self, args: &[&str]) -> Result<String> {
        let mut c = tokio::process::Command::new("bash");
        c.arg(scripts_dir().join("nodetool"))
            .args(["-h", "127.0.0.1", "-p", &self.jmx_port.to_string()])
            .args(args)
            .env("MEDUSA_RS_TOOLS", tools_dir())
            .env("CASSANDRA_VERSION", &self.version)
            .env("NODETOOL_TIMEOUT", NODETOOL_LIMIT.as_secs().to_string());
        let what = format!("nodetool {} on {}", args.join(" "), self.address);
        let out = run_limited(c, NODETOOL_LIMIT + Duration::from_secs(15), &what).await?;
        expect_success(out, &what)
    }
}

/// Longest a start waits for a free slot under node.sh's machine-wide limit of three nodes.
pub const SLOT_WAIT: Duration = Duration::from_secs(900);

/// Longest one nodetool command may take (a snapshot flushes every table first).
pub const NODETOOL_LIMIT: Duration = Duration::from_secs(300);

/// One real Cassandra node in `dir` (conf/, data/, logs/, node.env as node.sh lays them out).
/// Dropped while running, it is killed (and its log tail printed if the test is failing).
#[derive(Debug)]
pub struct RealNode {
    /// The node directory.
    pub dir: PathBuf,
    /// What its `cassandra.yaml` is generated from.
    pub config: NodeConfig,
    /// Start times so far (CQL ready), for the scenario's figures.
    pub starts: Vec<Duration>,
    /// A label for messages (`node1`, or the pod name).
    pub label: String,
}

impl RealNode {
    /// A node to be started in `dir` (created if missing).
    pub fn new(dir: &Path, config: NodeConfig) -> RealNode {
        let label = format!("node{}", config.index);
        RealNode { dir: dir.to_path_buf(), config, starts: Vec::new(), label }
    }

    /// Names the node in messages.
    pub fn labelled(mut self, label: &str) -> RealNode {
        self.label = label.to_string();
        self
    }

    /// The nodetool target.
    pub fn target(&self) -> NodeTarget {
        NodeTarget {
            version: self.config.version.clone(),
            address: self.config.address(),
            jmx_port: self.config.jmx_port(),
            dc: self.config.dc.clone(),
        }
    }

    /// `127.0.0.N`.
    pub fn address(&self) -> String {
        self.config.address()
    }

    /// The Cassandra root (`/var/lib/cassandra` of a pod): `<dir>/data`, parent of the data
    /// directory, commitlog, saved caches and hints.
    pub fn root(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `data_file_directories[0]`.
    pub fn data_dir(&self) -> PathBuf {
        self.root().join("data")
    }

    /// `commitlog_directory`.
    pub fn commitlog_dir(&self) -> PathBuf {
        self.root().join("commitlog")
    }

    /// `saved_caches_directory`.
    pub fn saved_caches_dir(&self) -> PathBuf {
        self.root().join("saved_caches")
    }

    /// `hints_directory`.
    pub fn hints_dir(&self) -> PathBuf {
        self.root().join("hints")
    }

    /// Its `cassandra.yaml` (written at each start unless kept).
    pub fn yaml(&self) -> PathBuf {
        self.dir.join("conf/cassandra.yaml")
    }

    /// `logs/system.log`.
    pub fn system_log(&self) -> PathBuf {
        self.dir.join("logs/system.log")
    }

    /// Starts the node with a freshly generated `cassandra.yaml` and waits for CQL; returns
    /// the time to CQL (also printed and recorded in [`RealNode::starts`]).
    pub async fn start(&mut self) -> Result<Duration> {
        self.start_with(false).await
    }

    /// Starts the node on the `cassandra.yaml` already in `conf/` (as a restore left it: its
    /// `initial_token`, `num_tokens`, `auto_bootstrap`); the config only picks the JVM.
    pub async fn start_keeping_conf(&mut self) -> Result<Duration> {
        self.start_with(true).await
    }

    async fn start_with(&mut self, keep_conf: bool) -> Result<Duration> {
        std::fs::create_dir_all(&self.dir)?;
        let mut c = tokio::process::Command::new("bash");
        c.arg(scripts_dir().join("node.sh"))
            .arg("start")
            .arg(&self.dir)
            .arg(self.config.index.to_string())
            .args(self.config.start_args())
            .env("MEDUSA_RS_TOOLS", tools_dir())
            // Nodes of other tests on this machine count against node.sh's limit of three:
            // wait for one of them to stop rather than fail.
            .env("CASSANDRA_SLOT_WAIT", SLOT_WAIT.as_secs().to_string());
        if keep_conf {
            c.arg("--keep-conf");
        }
        let t0 = Instant::now();
        let what = format!("starting Cassandra {} {} on {}", self.config.version, self.label, self.address());
        let out = run_limited(c, SLOT_WAIT + START_TIMEOUT + Duration::from_secs(60), &what).await;
        let out = match out.and_then(|o| expect_success(o, &what)) {
            Ok(o) => o,
            Err(e) => bail!("{e:#}\n---- {} ----\n{}", self.system_log().display(), self.log_tail(40)),
        };
        // node.sh's own figure: from the java launch to CQL (without a wait for a slot).
        let took = out
            .lines()
            .find_map(|l| {
                l.strip_prefix("started node ")?.split(" in ").nth(1)?.strip_suffix(" s")?.parse::<f64>().ok()
            })
            .map(Duration::from_secs_f64)
            .unwrap_or_else(|| t0.elapsed());
        self.starts.push(took);
        println!(
            "[cassandra] {} (Cassandra {}, {}) answers CQL {:.1} s after its launch{} ({:.1} s in all)",
            self.label,
            self.config.version,
            self.address(),
            took.as_secs_f64(),
            if keep_conf { ", on the restored cassandra.yaml" } else { "" },
            t0.elapsed().as_secs_f64()
        );
        Ok(took)
    }

    /// Whether the recorded pid is a live Cassandra process.
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    fn pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.dir.join("cassandra.pid")).ok()?.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline).contains("org.apache.cassandra.service.CassandraDaemon").then_some(pid)
    }

    /// `nodetool drain` (memtables flushed, commit log done), then SIGTERM and wait (node.sh
    /// stop: SIGKILL after 60 s). Returns the time it took.
    pub async fn stop(&mut self) -> Result<Duration> {
        let t0 = Instant::now();
        if !self.is_running() {
            return Ok(Duration::ZERO);
        }
        if let Err(e) = self.nodetool(&["drain"]).await {
            println!("[cassandra] {}: drain failed ({e:#}); stopping anyway", self.label);
        }
        self.stop_script(&[]).await?;
        let took = t0.elapsed();
        println!("[cassandra] {} drained and stopped in {:.1} s", self.label, took.as_secs_f64());
        Ok(took)
    }

    /// SIGKILL at once: no drain, memtables lost to the commit log (a crashed or evicted pod).
    pub async fn kill(&mut self) -> Result<()> {
        if self.is_running() {
            self.stop_script(&["--kill"]).await?;
            println!("[cassandra] {} killed (SIGKILL, no drain)", self.label);
        }
        Ok(())
    }

    async fn stop_script(&self, extra: &[&str]) -> Result<()> {
        let mut c = tokio::process::Command::new("bash");
        c.arg(scripts_dir().join("node.sh")).arg("stop").arg(&self.dir).args(extra);
        let what = format!("stopping {}", self.label);
        expect_success(run_limited(c, Duration::from_secs(120), &what).await?, &what).map(drop)
    }

    /// nodetool against this node.
    pub async fn nodetool(&self, args: &[&str]) -> Result<String> {
        self.target().nodetool(args).await
    }

    /// Removes everything the node keeps under its root (data, commit log, saved caches,
    /// hints, cdc, medusa-rs' state and markers): a lost volume. The node must be stopped.
    pub fn wipe(&self) -> Result<()> {
        anyhow::ensure!(!self.is_running(), "{}: wipe of a running node", self.label);
        let root = self.root();
        if root.exists() {
            for entry in std::fs::read_dir(&root)? {
                let p = entry?.path();
                if p.is_dir() && !p.is_symlink() {
                    std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
                } else {
                    std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
                }
            }
        }
        Ok(())
    }

    /// The last `n` lines of `system.log` at INFO and above.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&std::fs::read_to_string(self.system_log()).unwrap_or_default(), n)
    }

    /// The WARN and ERROR lines of `system.log` so far.
    pub fn log_problems(&self) -> Vec<String> {
        std::fs::read_to_string(self.system_log())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("WARN") || l.starts_with("ERROR"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = nix_kill(pid);
            for _ in 0..100 {
                if self.pid().is_none() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            println!("[cassandra] {} was still running at the end of the test: killed (pid {pid})", self.label);
        }
        if std::thread::panicking() {
            println!(
                "[cassandra] ---- {} ({}): last lines of {} ----\n{}",
                self.label,
                self.address(),
                self.system_log().display(),
                self.log_tail(25)
            );
        }
    }
}

/// SIGKILL `pid` (std only: the harness does not depend on nix).
fn nix_kill(pid: i32) -> std::io::Result<()> {
    let status = std::process::Command::new("kill").arg("-KILL").arg(pid.to_string()).status()?;
    if status.success() { Ok(()) } else { Err(std::io::Error::other(format!("kill -KILL {pid}: {status}"))) }
}
