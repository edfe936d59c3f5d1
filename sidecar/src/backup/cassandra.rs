//! The local Cassandra node as a backup needs it: take and clear snapshots, and the facts that
//! go into `tokenmap.json`, `server_version.json` and `schema.cql`. Through the Management API
//! (k8ssandra) or through `nodetool`; no CQL driver.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::resolver::{Resolver, SystemResolver, node_name};
use crate::config::Config;
use crate::format::names::Fqdn;
use crate::format::tokenmap::{RingNode, TokenMap};

/// A failure talking to Cassandra.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The Management API could not be reached.
    #[error("Cassandra Management API at {url} unreachable: {source}")]
    Unreachable {
        /// The URL.
        url: String,
        /// The HTTP client error.
        source: reqwest::Error,
    },
    /// The Management API answered with an error.
    #[error("Cassandra Management API {method} {url} answered HTTP {status}: {body}")]
    Http {
        /// Method.
        method: &'static str,
        /// URL.
        url: String,
        /// Status code.
        status: u16,
        /// Response text (trimmed).
        body: String,
    },
    /// `nodetool` failed.
    #[error("nodetool {args} failed: {message}")]
    Nodetool {
        /// The sub-command (credentials elided).
        args: String,
        /// Exit status and stderr.
        message: String,
    },
    /// An answer could not be understood.
    #[error("unexpected answer from Cassandra: {0}")]
    Protocol(String),
    /// The configuration selects no usable way to reach Cassandra.
    #[error("{0}")]
    Config(String),
}

impl NodeError {
    /// Whether trying again later can help (Cassandra still starting, API restarting).
    pub fn is_retryable(&self) -> bool {
        matches!(self, NodeError::Unreachable { .. })
            || matches!(self, NodeError::Http { status, .. } if *status >= 500)
    }
}

/// What a backup records about the node.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// The ring of the node's datacenter, keyed by node name.
    pub tokenmap: TokenMap,
    /// `release_version`.
    pub release_version: String,
    /// `CREATE KEYSPACE` statements, when the node can tell the replication.
    pub keyspace_cql: Vec<String>,
}

/// Control of the local Cassandra node.
#[async_trait]
pub trait Cassandra: Send + Sync {
    /// Snapshots every keyspace under `tag` (flushing first).
    async fn take_snapshot(&self, tag: &str) -> Result<(), NodeError>;
    /// Removes the snapshot `tag` from every keyspace.
    async fn clear_snapshot(&self, tag: &str) -> Result<(), NodeError>;
    /// Ring, version and keyspace definitions; `local` names this node in the tokenmap and
    /// `keyspaces` are the keyspaces found on disk.
    async fn facts(&self, local: &Fqdn, keyspaces: &[String]) -> Result<NodeFacts, NodeError>;
    /// Snapshots one table under `tag` without a flush: the snapshot lands in the directory of
    /// the table the node serves, which tells its live id.
    async fn snapshot_table(&self, tag: &str, keyspace: &str, table: &str) -> Result<(), NodeError>;
    /// Loads SSTables newly placed in the table's directory (`nodetool refresh`; Cassandra
    /// gives each one a generation of its own as it loads it).
    async fn refresh(&self, keyspace: &str, table: &str) -> Result<(), NodeError>;
}

/// Picks the Management API when `[kubernetes] use_mgmt_api` is on, `nodetool` otherwise.
pub fn from_config(cfg: &Config) -> Result<Arc<dyn Cassandra>, NodeError> {
    let k = &cfg.kubernetes;
    if k.use_mgmt_api {
        let url =
            k.cassandra_url.clone().ok_or_else(|| NodeError::Config("[kubernetes] cassandra_url is empty".into()))?;
        let api = ManagementApi::new(&url, k)?;
        if !cfg.cassandra.resolve_ip_addresses {
            return Ok(Arc::new(api.with_resolver(Arc::new(super::resolver::AddressesOnly))));
        }
        return Ok(Arc::new(api));
    }
    if k.enabled {
        return Err(NodeError::Config(
            "[kubernetes] enabled without use_mgmt_api selects Jolokia, which medusa-rs does not support; \
             set use_mgmt_api = 1 (what k8ssandra-operator writes)"
                .into(),
        ));
    }
    Ok(Arc::new(Nodetool::new(cfg)))
}

/// Cassandra's Management API over HTTP(S).
pub struct ManagementApi {
    client: reqwest::Client,
    snapshots_url: String,
    base_url: String,
    resolver: Arc<dyn Resolver>,
}

impl ManagementApi {
    /// A client for the snapshot endpoint `snapshots_url`
    /// (e.g. `http://127.0.0.1:8080/api/v0/ops/node/snapshots`).
    pub fn new(snapshots_url: &str, k: &crate::config::KubernetesConfig) -> Result<ManagementApi, NodeError> {
        let mut url = snapshots_url.trim_end_matches('/').to_string();
        let tls = k.tls_cert.is_some();
        if tls && let Some(rest) = url.strip_prefix("http://") {
            url = format!("https://{rest}");
        }
        let base_url = match url.find("/api/") {
            Some(i) => url[..i].to_string(),
            None => url.clone(),
        };
        let mut b =
            reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(600));
        if let (Some(cert), Some(key)) = (&k.tls_cert, &k.tls_key) {
            // The chain is verified against ca_cert without a host-name check, as cass-operator's
            // own client does: certificates without an IP SAN for 127.0.0.1 work as they do with
            // Python Medusa. Medusa never verifies the API's certificate (contract §10.32); without
            // ca_cert medusa-rs keeps that behaviour so that existing pods still work.
            let trust = match &k.ca_cert {
                Some(ca) => crate::tls::Trust::Ca { pem: read(ca)?, check_name: false },
                None => crate::tls::Trust::Anything,
            };
            let tls = crate::tls::client_config(trust, Some((read(cert)?, read(key)?)))
                .map_err(|e| NodeError::Config(format!("[kubernetes] tls_cert/tls_key/ca_cert: {e}")))?;
            b = b.use_preconfigured_tls(tls);
        }
        let client = b.build().map_err(|e| NodeError::Config(format!("HTTP client: {e}")))?;
        let resolver = Arc::new(SystemResolver::from_env());
        Ok(ManagementApi { client, snapshots_url: url, base_url, resolver })
    }

    /// Names the ring's other nodes with `resolver` instead of the system's.
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolver>) -> ManagementApi {
        self.resolver = resolver;
        self
    }

    /// The tokenmap of the local datacenter, other nodes named by [`node_name`].
    async fn ring(&self, endpoints: &[Endpoint], local: &Fqdn) -> Result<TokenMap, NodeError> {
        let lookups = endpoints.iter().filter(|e| !e.is_local).map(|e| async move {
            let name = match e.ip.parse() {
                Ok(ip) => node_name(&self.resolver.names(ip).await, &e.ip),
                Err(_) => e.ip.clone(),
            };
            (e.ip.clone(), name)
        });
        let names: std::collections::HashMap<String, String> =
            futures::future::join_all(lookups).await.into_iter().collect();
        ring_of_local_dc(endpoints, local, |ip| names.get(ip).cloned())
    }

    async fn send(&self, method: &'static str, req: reqwest::RequestBuilder, url: &str) -> Result<String, NodeError> {
        let resp = req.send().await.map_err(|source| NodeError::Unreachable { url: url.to_string(), source })?;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        if status != 200 {
            return Err(NodeError::Http {
                method,
                url: url.to_string(),
                status,
                body: body.trim().chars().take(500).collect(),
            });
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> Result<String, NodeError> {
        let url = format!("{}{path}", self.base_url);
        self.send("GET", self.client.get(&url), &url).await
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, NodeError> {
    std::fs::read(path).map_err(|e| NodeError::Config(format!("cannot read {}: {e}", path.display())))
}

#[async_trait]
impl Cassandra for ManagementApi {
    async fn take_snapshot(&self, tag: &str) -> Result<(), NodeError> {
        let body = serde_json::json!({ "snapshot_name": tag });
        let req = self.client.post(&self.snapshots_url).json(&body);
        self.send("POST", req, &self.snapshots_url).await.map(drop)
    }

    async fn clear_snapshot(&self, tag: &str) -> Result<(), NodeError> {
        let req = self.client.delete(&self.snapshots_url).query(&[("snapshotNames", tag)]);
        self.send("DELETE", req, &self.snapshots_url).await.map(drop)
    }

    async fn snapshot_table(&self, tag: &str, keyspace: &str, table: &str) -> Result<(), NodeError> {
        let body = serde_json::json!({
            "snapshot_name": tag, "keyspace_tables": [format!("{keyspace}.{table}")], "skip_flush": true,
        });
        let req = self.client.post(&self.snapshots_url).json(&body);
        self.send("POST", req, &self.snapshots_url).await.map(drop)
    }

    async fn refresh(&self, keyspace: &str, table: &str) -> Result<(), NodeError> {
        let url = format!("{}/api/v0/ops/keyspace/refresh", self.base_url);
        let req = self.client.post(&url).query(&[("keyspaceName", keyspace), ("table", table)]);
        self.send("POST", req, &url).await.map(drop)
    }

    async fn facts(&self, local: &Fqdn, keyspaces: &[String]) -> Result<NodeFacts, NodeError> {
        let body = self.get("/api/v0/metadata/endpoints").await?;
        let v: Value = serde_json::from_str(&body).map_err(|e| NodeError::Protocol(format!("endpoints: {e}")))?;
        let entries = v
            .get("entity")
            .and_then(Value::as_array)
            .ok_or_else(|| NodeError::Protocol("endpoints: no \"entity\" list".into()))?;
        let endpoints: Vec<Endpoint> = entries.iter().filter_map(Endpoint::from_json).collect();
        let tokenmap = self.ring(&endpoints, local).await;
        // The local endpoint carries the release; older APIs leave it out, then it is asked for.
        let release_version = match endpoints.iter().find(|e| e.is_local && !e.release_version.is_empty()) {
            Some(e) => e.release_version.clone(),
            None => match self.get("/api/v0/metadata/versions/release").await {
                Ok(v) => v.trim().trim_matches('"').to_string(),
                Err(_) => "unknown".into(),
            },
        };
        // One keyspace after another: the node answers each from its own threads, and a backup
        // is not worth a burst of concurrent requests to the node it runs beside. Older
        // Management APIs lack this endpoint; the schema then has table statements only.
        let mut statements = Vec::with_capacity(keyspaces.len());
        for ks in keyspaces {
            let Ok(body) = self.get(&format!("/api/v0/ops/keyspace/replication?keyspaceName={ks}")).await else {
                continue;
            };
            if let Ok(map) = serde_json::from_str::<serde_json::Map<String, Value>>(&body) {
                statements.push(Some(keyspace_statement(ks, &map)));
            }
        }
        let keyspace_cql = statements.into_iter().flatten().collect();
        Ok(NodeFacts { tokenmap: tokenmap?, release_version, keyspace_cql })
    }
}

/// `CREATE KEYSPACE` for a replication map (`{"class": ..., "dc1": "3"}`).
pub fn keyspace_statement(ks: &str, replication: &serde_json::Map<String, Value>) -> String {
    let parts: Vec<String> = replication
        .iter()
        .map(|(k, v)| format!("'{k}': '{}'", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
        .collect();
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {{{}}}  AND durable_writes = true;",
        parts.join(", ")
    )
}

/// One `/api/v0/metadata/endpoints` entry.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `ENDPOINT_IP`.
    pub ip: String,
    /// `IS_LOCAL`.
    pub is_local: bool,
    /// `IS_ALIVE`.
    pub is_alive: bool,
    /// `DC`.
    pub dc: String,
    /// `RACK`.
    pub rack: String,
    /// `TOKENS`, split.
    pub tokens: Vec<String>,
    /// `RELEASE_VERSION`.
    pub release_version: String,
}

impl Endpoint {
    fn from_json(v: &Value) -> Option<Endpoint> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let ip = s("ENDPOINT_IP");
        if ip.is_empty() {
            return None;
        }
        Some(Endpoint {
            is_local: s("IS_LOCAL") == "true",
            is_alive: s("IS_ALIVE") != "false",
            dc: s("DC"),
            rack: s("RACK"),
            tokens: s("TOKENS").split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect(),
            release_version: s("RELEASE_VERSION"),
            ip,
        })
    }
}

/// Medusa's tokenmap: the nodes of the local node's datacenter, ordered by IP string, named by
/// `name_of` (else by their address); the local node is always `local`.
pub fn ring_of_local_dc(
    endpoints: &[Endpoint],
    local: &Fqdn,
    name_of: impl Fn(&str) -> Option<String>,
) -> Result<TokenMap, NodeError> {
    let me = endpoints
        .iter()
        .find(|e| e.is_local)
        .ok_or_else(|| NodeError::Protocol("endpoints: no entry has IS_LOCAL=true".into()))?;
    let mut dc: Vec<&Endpoint> = endpoints.iter().filter(|e| e.dc == me.dc).collect();
    dc.sort_by(|a, b| a.ip.cmp(&b.ip));
    Ok(TokenMap(
        dc.into_iter()
            .map(|e| RingNode {
                host: if e.is_local { local.to_string() } else { name_of(&e.ip).unwrap_or_else(|| e.ip.clone()) },
                tokens: e.tokens.clone(),
                is_up: e.is_alive,
                rack: Some(e.rack.clone()),
                dc: Some(e.dc.clone()),
            })
            .collect(),
    ))
}

/// `nodetool` on the local machine.
pub struct Nodetool {
    exe: String,
    base_args: Vec<String>,
}

impl Nodetool {
    /// From `[cassandra]` settings.
    pub fn new(cfg: &Config) -> Nodetool {
        let c = &cfg.cassandra;
        let mut args = c.nodetool_flags.clone();
        if c.nodetool_ssl {
            args.push("--ssl".into());
        }
        let pairs = [
            ("-u", &c.nodetool_username),
            ("-pw", &c.nodetool_password),
            ("-pwf", &c.nodetool_password_file_path),
            ("-h", &c.nodetool_host),
            ("-p", &c.nodetool_port),
        ];
        for (flag, v) in pairs {
            if let Some(v) = v {
                args.push(flag.into());
                args.push(v.clone());
            }
        }
        Nodetool { exe: c.nodetool_executable.clone(), base_args: args }
    }

    async fn run(&self, sub: &[&str]) -> Result<String, NodeError> {
        let out = tokio::process::Command::new(&self.exe)
            .args(&self.base_args)
            .args(sub)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| NodeError::Nodetool {
                args: sub.join(" "),
                message: format!("cannot run {}: {e}", self.exe),
            })?;
        if !out.status.success() {
            return Err(NodeError::Nodetool { args: sub.join(" "), message: failure_message(&out) });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The exit status and what a failed nodetool said. NodeTool prints its own errors on stdout
/// (`nodetool: Found unexpected parameters: …`, `nodetool: Failed to connect to …`), the JVM
/// and the shell script on stderr: both are kept, stderr first, each cut to its last 1000
/// characters.
fn failure_message(out: &std::process::Output) -> String {
    let keep = |b: &[u8]| {
        let s = String::from_utf8_lossy(b);
        let s = s.trim();
        let start = s.char_indices().rev().nth(999).map_or(0, |(i, _)| i);
        s[start..].to_string()
    };
    let said: Vec<String> = [keep(&out.stderr), keep(&out.stdout)].into_iter().filter(|s| !s.is_empty()).collect();
    if said.is_empty() {
        format!("{} (no output)", out.status)
    } else {
        format!("{}: {}", out.status, said.join(" | "))
    }
}

#[async_trait]
impl Cassandra for Nodetool {
    async fn take_snapshot(&self, tag: &str) -> Result<(), NodeError> {
        // Unlike Medusa (contract §10.19), a failed snapshot fails the backup.
        self.run(&["snapshot", "-t", tag]).await.map(drop)
    }

    async fn clear_snapshot(&self, tag: &str) -> Result<(), NodeError> {
        self.run(&["clearsnapshot", "-t", tag]).await.map(drop)
    }

    async fn snapshot_table(&self, tag: &str, keyspace: &str, table: &str) -> Result<(), NodeError> {
        self.run(&["snapshot", "-t", tag, "-sf", "-kt", &format!("{keyspace}.{table}")]).await.map(drop)
    }

    async fn refresh(&self, keyspace: &str, table: &str) -> Result<(), NodeError> {
        self.run(&["refresh", keyspace, table]).await.map(drop)
    }

    async fn facts(&self, local: &Fqdn, _keyspaces: &[String]) -> Result<NodeFacts, NodeError> {
        let info = self.run(&["info", "-T"]).await?;
        let field = |name: &str| {
            info.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim().to_string())
        };
        let tokens: Vec<String> = info
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim() == "Token")
            .map(|(_, v)| v.trim().to_string())
            .collect();
        let version = self.run(&["version"]).await.unwrap_or_default();
        let release_version = version
            .lines()
            .find_map(|l| l.strip_prefix("ReleaseVersion:"))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        // nodetool gives this node's facts only: the tokenmap holds the local node.
        let node =
            RingNode { host: local.to_string(), tokens, is_up: true, rack: field("Rack"), dc: field("Data Center") };
        Ok(NodeFacts { tokenmap: TokenMap(vec![node]), release_version, keyspace_cql: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(ip: &str, local: bool, dc: &str, tokens: &str) -> Endpoint {
        Endpoint {
            ip: ip.into(),
            is_local: local,
            is_alive: true,
            dc: dc.into(),
            rack: "r1".into(),
            tokens: tokens.split(',').map(str::to_string).collect(),
            release_version: "4.1.5".into(),
        }
    }

    #[test]
    fn ring_keeps_the_local_dc_sorted_by_ip() {
        let eps =
            [ep("10.0.0.9", false, "dc1", "3"), ep("10.0.0.10", true, "dc1", "1,2"), ep("10.0.0.5", false, "dc2", "4")];
        let local = Fqdn::new("demo-dc1-r1-sts-0").unwrap();
        let tm = ring_of_local_dc(&eps, &local, |ip| Some(format!("pod-{ip}"))).unwrap();
        let hosts: Vec<_> = tm.0.iter().map(|n| n.host.as_str()).collect();
        assert_eq!(hosts, ["demo-dc1-r1-sts-0", "pod-10.0.0.9"]);
        assert_eq!(tm.0[0].tokens, ["1", "2"]);
        assert!(ring_of_local_dc(&eps[..1], &local, |_| None).is_err());
    }

    /// A resolver answering like Kubernetes DNS: an IP-shaped PTR name first, then the pod's.
    struct Several;

    #[async_trait]
    impl Resolver for Several {
        async fn names(&self, ip: std::net::IpAddr) -> Vec<String> {
            let dashed = ip.to_string().replace('.', "-");
            let last = ip.to_string().rsplit('.').next().unwrap().to_string();
            vec![format!("{dashed}.ns.pod.cluster.local"), format!("demo-dc1-r1-sts-{last}.demo-dc1-service.ns.svc")]
        }
    }

    #[tokio::test]
    async fn other_nodes_take_the_first_name_that_is_not_an_address() {
        let k = crate::config::Config::parse(
            "[storage]\nstorage_provider = local\nbucket_name = b\nbase_path = /tmp\n",
            "t",
        )
        .unwrap()
        .kubernetes;
        let api = ManagementApi::new("http://127.0.0.1:9/api/v0/ops/node/snapshots", &k).unwrap();
        let api = api.with_resolver(Arc::new(Several));
        let eps =
            [ep("10.0.0.1", true, "dc1", "1"), ep("10.0.0.2", false, "dc1", "2"), ep("10.0.0.3", false, "dc1", "3")];
        let local = Fqdn::new("demo-dc1-r1-sts-1").unwrap();
        let tm = api.ring(&eps, &local).await.unwrap();
        let hosts: Vec<_> = tm.0.iter().map(|n| n.host.as_str()).collect();
        assert_eq!(hosts, ["demo-dc1-r1-sts-1", "demo-dc1-r1-sts-2", "demo-dc1-r1-sts-3"]);
    }

    /// Found on a real node: NodeTool prints its errors on stdout and exits 1 with an empty
    /// stderr; the error said only "exit status: 1: ".
    #[tokio::test]
    async fn a_failed_nodetool_reports_what_it_printed_on_stdout() {
        let dir = std::env::temp_dir().join(format!("medusa-rs-nodetool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("nodetool");
        std::fs::write(
            &exe,
            "#!/bin/sh\necho \"nodetool: Found unexpected parameters: [$*]\"\necho \"See 'nodetool help'.\"\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let cfg = crate::config::Config::parse(
            &format!(
                "[storage]\nstorage_provider = local\nbucket_name = b\nbase_path = /tmp\n[cassandra]\nnodetool_executable = {}\n",
                exe.display()
            ),
            "t",
        )
        .unwrap();
        let e = Nodetool::new(&cfg).take_snapshot("medusa-b1").await.unwrap_err().to_string();
        assert!(e.contains("Found unexpected parameters") && e.contains("snapshot -t medusa-b1"), "{e}");
        assert!(e.contains("exit status: 1"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keyspace_statement_is_fully_qualified() {
        let m: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"class": "org.apache.cassandra.locator.NetworkTopologyStrategy", "dc1": "3"}"#)
                .unwrap();
        assert_eq!(
            keyspace_statement("ks1", &m),
            "CREATE KEYSPACE IF NOT EXISTS ks1 WITH replication = {'class': 'org.apache.cassandra.locator.NetworkTopologyStrategy', 'dc1': '3'}  AND durable_writes = true;"
        );
    }
}
