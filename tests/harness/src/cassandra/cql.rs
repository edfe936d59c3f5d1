//! [`CqlData`]: `scripts/cassandra/cqldata.py` run with the cqlsh venv's Python
//! (cassandra-driver 3.29.2).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use super::{cassandra_tools, expect_success, run_limited, scripts_dir};

/// Longest one cqldata.py command may take.
const CQL_LIMIT: Duration = Duration::from_secs(300);

/// Per-table digests of what the nodes serve: `"<ks>.<table>"` → `{rows, sha256, phases}` or
/// `{absent: true}`, and `"<ks>.users#indexes"` → the answers of index queries.
pub type Digests = BTreeMap<String, Value>;

/// The CQL data tool against some contact points at one consistency level.
#[derive(Debug, Clone)]
pub struct CqlData {
    /// Contact points.
    pub hosts: Vec<String>,
    /// Consistency level of reads and writes (`ONE`, `QUORUM`, `ALL`, ...).
    pub cl: String,
}

impl CqlData {
    /// Against `hosts` at `cl`.
    pub fn new(hosts: &[String], cl: &str) -> CqlData {
        CqlData { hosts: hosts.to_vec(), cl: cl.to_string() }
    }

    /// The same contact points at another consistency level.
    pub fn at(&self, cl: &str) -> CqlData {
        CqlData { hosts: self.hosts.clone(), cl: cl.to_string() }
    }

    async fn run(&self, args: &[&str]) -> Result<Value> {
        let mut c = tokio::process::Command::new(cassandra_tools().join("venv/bin/python"));
        c.arg(scripts_dir().join("cqldata.py")).args(["--hosts", &self.hosts.join(","), "--cl", &self.cl]).args(args);
        let what = format!("cqldata.py {} ({} at {})", args.join(" "), self.hosts.join(","), self.cl);
        let t0 = Instant::now();
        let out = expect_success(run_limited(c, CQL_LIMIT, &what).await?, &what)?;
        println!("[cassandra] {what}: {:.1} s", t0.elapsed().as_secs_f64());
        serde_json::from_str(&out).with_context(|| format!("{what}: not JSON: {out}"))
    }

    /// Keyspaces `rs1` (RF 1) and `rs3` (RF 3) in data centre `dc`, the UDT, tables and indexes.
    pub async fn schema(&self, dc: &str) -> Result<()> {
        self.run(&["schema", "--dc", dc]).await.map(drop)
    }

    /// The rows of phase `phase` (and, from phase 2, updates and deletes of phase - 1).
    pub async fn write(&self, phase: u32) -> Result<Value> {
        self.run(&["write", "--phase", &phase.to_string()]).await
    }

    /// Creates the optional table `table` (`late`, `dropped_early`, `dropped_late`).
    pub async fn create(&self, table: &str) -> Result<()> {
        self.run(&["create", table]).await.map(drop)
    }

    /// Drops `table` in both keyspaces.
    pub async fn drop_table(&self, table: &str) -> Result<()> {
        self.run(&["drop", table]).await.map(drop)
    }

    /// Runs one CQL statement (and waits for schema agreement).
    pub async fn execute(&self, statement: &str) -> Result<()> {
        self.run(&["cql", statement]).await.map(drop)
    }

    /// Full scans of every table, and the index queries.
    pub async fn digest(&self) -> Result<Digests> {
        let v = self.run(&["digest"]).await?;
        let map = v.as_object().context("digest: not an object")?;
        Ok(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

/// What differs between two digests, one line per table (empty when equal).
pub fn diff(expected: &Digests, actual: &Digests) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (e, a) = (expected.get(k), actual.get(k));
            (e != a).then(|| format!("{k}: expected {}, got {}", show(e), show(a)))
        })
        .collect()
}

fn show(v: Option<&Value>) -> String {
    v.map(Value::to_string).unwrap_or_else(|| "nothing".into())
}
