//! [`RealMgmtApi`]: the Management API endpoints of the simulator (`sim/mgmt_api.rs`: same
//! routes, request bodies, status codes and JSON shapes), each carried out on a real node with
//! nodetool, as the real Management API carries them out through JMX. Plus
//! `/api/v0/ops/keyspace/replication`, which the sidecar asks for the keyspace statements of
//! `schema.cql`.
//!
//! | Call | nodetool |
//! |---|---|
//! | `POST /api/v0/ops/node/snapshots` | `snapshot -t <tag> [-sf] [-kt ks.t,…] [-cf t ks] [ks…]` |
//! | `GET /api/v0/ops/node/snapshots` | `listsnapshots` |
//! | `DELETE /api/v0/ops/node/snapshots` | `clearsnapshot -t <tag> [ks…]` per tag, `--all` without |
//! | `POST /api/v0/ops/tables/flush` | `flush [ks]` |
//! | `GET /api/v0/ops/keyspace`, `…/keyspace/replication` | `describecluster` (its `Keyspaces:`) |
//! | `GET /api/v0/ops/tables` | `tablestats <ks>` |
//! | `GET /api/v0/metadata/endpoints` | `ring` (address, rack, Up/Down, tokens per DC) + `version` |
//! | `GET /api/v0/metadata/localdc` / `versions/release` | `info` / `version` |
//! | `GET /api/v0/probes/readiness` | `statusbinary` |
//! | `POST /api/v0/ops/keyspace/refresh?keyspaceName=&table=` | `refresh <ks> <table>` |

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::node::NodeTarget;
use crate::sim::node::entity_wrapper;
use crate::sim::util::{epoch_millis, parse_query};

#[derive(Clone)]
struct AppState {
    node: NodeTarget,
    calls: Arc<Mutex<Vec<String>>>,
    timed: Arc<Mutex<Vec<TimedCall>>>,
}

/// One request with when it arrived and when it was answered (Unix seconds).
#[derive(Debug, Clone)]
pub struct TimedCall {
    /// Arrival.
    pub start: f64,
    /// Answer.
    pub end: f64,
    /// `"METHOD /path?query"`.
    pub call: String,
    /// The request body.
    pub body: Bytes,
}

/// A Management API on `127.0.0.1:<ephemeral port>` in front of one real node.
pub struct RealMgmtApi {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// `<base_url>/api/v0/ops/node/snapshots`: Medusa's `cassandra_url`.
    pub snapshot_url: String,
    state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RealMgmtApi {
    /// Serves the API for `node` until stopped or dropped.
    pub async fn start(node: NodeTarget) -> anyhow::Result<RealMgmtApi> {
        let state = AppState { node, calls: Arc::new(Mutex::new(Vec::new())), timed: Arc::new(Mutex::new(Vec::new())) };
        let app = router(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!("management API in front of a real node stopped: {e}");
            }
        });
        Ok(RealMgmtApi {
            snapshot_url: format!("{base_url}/api/v0/ops/node/snapshots"),
            base_url,
            state,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Requests received so far, as `"METHOD /path?query"`.
    pub fn calls(&self) -> Vec<String> {
        self.state.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Requests received so far with their arrival and answer times.
    pub fn timed_calls(&self) -> Vec<TimedCall> {
        self.state.timed.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Sends `calls` again, one after another, each with its method, path, query and body.
    pub async fn replay(&self, calls: &[TimedCall]) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        for c in calls {
            let (method, path) = c.call.split_once(' ').ok_or_else(|| anyhow::anyhow!("call {:?}", c.call))?;
            let r = http
                .request(method.parse()?, format!("{}{path}", self.base_url))
                .header("content-type", "application/json")
                .body(c.body.clone())
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "{}: {}", c.call, r.status());
        }
        Ok(())
    }

    /// Stops accepting requests and waits for the server task to end.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RealMgmtApi {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v0/ops/node/snapshots", post(take_snapshot).get(list_snapshots).delete(clear_snapshots))
        .route("/api/v0/ops/tables/flush", post(flush))
        .route("/api/v0/ops/keyspace/refresh", post(refresh))
        .route("/api/v0/ops/keyspace", get(keyspaces))
        .route("/api/v0/ops/keyspace/replication", get(replication))
        .route("/api/v0/ops/tables", get(tables))
        .route("/api/v0/metadata/endpoints", get(endpoints))
        .route("/api/v0/metadata/localdc", get(local_dc))
        .route("/api/v0/metadata/versions/release", get(release_version))
        .route("/api/v0/probes/liveness", get(|| async { "OK" }))
        .route("/api/v0/probes/readiness", get(readiness))
        .fallback(|| async { (StatusCode::NOT_FOUND, "Not Found") })
        .layer(middleware::from_fn_with_state(state.clone(), record_call))
        .with_state(state)
}

async fn record_call(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let line = match req.uri().query() {
        Some(q) => format!("{} {}?{q}", req.method(), req.uri().path()),
        None => format!("{} {}", req.method(), req.uri().path()),
    };
    if let Ok(mut calls) = s.calls.lock() {
        calls.push(line.clone());
    }
    let start = epoch_secs();
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let response = next.run(Request::from_parts(parts, axum::body::Body::from(body.clone()))).await;
    if let Ok(mut timed) = s.timed.lock() {
        timed.push(TimedCall { start, end: epoch_secs(), call: line, body });
    }
    response
}

fn epoch_secs() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}

fn failed(e: anyhow::Error) -> Response {
    text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
}

/// Repeated query values of `key`, empty values dropped.
fn query_values(q: &Option<String>, key: &str) -> Vec<String> {
    parse_query(q.as_deref().unwrap_or(""))
        .into_iter()
        .filter(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v)
        .collect()
}

/// The request body as JSON (an empty body: the defaults); the 400 answer boxed (a `Response` is large).
fn body_json<T: Default + for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| Box::new(text(StatusCode::BAD_REQUEST, format!("Invalid request body: {e}"))))
}

/// `TakeSnapshotRequest` of the Management API.
#[derive(Debug, Default, Deserialize)]
struct TakeSnapshotRequest {
    snapshot_name: Option<String>,
    keyspaces: Option<Vec<String>>,
    table_name: Option<String>,
    keyspace_tables: Option<Vec<String>>,
    skip_flush: Option<bool>,
}

async fn take_snapshot(State(s): State<AppState>, body: Bytes) -> Response {
    let req: TakeSnapshotRequest = match body_json(&body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let keyspaces = req.keyspaces.unwrap_or_default();
    let keyspace_tables = req.keyspace_tables.unwrap_or_default();
    let one_keyspace = "Exactly 1 keyspace must be specified when specifying table_name";
    if !keyspaces.is_empty() {
        if !keyspace_tables.is_empty() {
            return text(
                StatusCode::BAD_REQUEST,
                "When specifying keyspace_tables, specifying keyspaces is not allowed",
            );
        }
        if req.table_name.is_some() && keyspaces.len() > 1 {
            return text(StatusCode::BAD_REQUEST, one_keyspace);
        }
    } else if req.table_name.is_some() {
        return text(StatusCode::BAD_REQUEST, one_keyspace);
    }
    let tag = req.snapshot_name.unwrap_or_else(|| epoch_millis().to_string());
    let mut args = vec!["snapshot".to_string(), "-t".into(), tag];
    if req.skip_flush.unwrap_or(false) {
        args.push("-sf".into());
    }
    if let Some(t) = req.table_name {
        args.extend(["-cf".into(), t, keyspaces[0].clone()]);
    } else if !keyspace_tables.is_empty() {
        args.extend(["-kt".into(), keyspace_tables.join(",")]);
    } else {
        args.extend(keyspaces);
    }
    // The JMX call runs on when the HTTP client goes away: a task of its own.
    let node = s.node.clone();
    let work = tokio::spawn(async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        node.nodetool(&args).await
    });
    match work.await {
        Ok(Ok(_)) => text(StatusCode::OK, "OK"),
        Ok(Err(e)) => failed(e),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// One line of `nodetool listsnapshots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSnapshot {
    /// Tag.
    pub tag: String,
    /// Keyspace.
    pub keyspace: String,
    /// Table.
    pub table: String,
    /// "True size" as printed (`1.63 KiB`).
    pub true_size: String,
    /// "Size on disk" as printed.
    pub size_on_disk: String,
    /// Creation time (ISO-8601) as printed.
    pub created_at: String,
    /// Expiration time, if any.
    pub expires_at: Option<String>,
}

/// The snapshots of `nodetool listsnapshots` (4.1 and 5.0: name, keyspace, table, two sizes of
/// two words each, creation time, optional expiration time).
pub fn parse_listsnapshots(out: &str) -> Vec<ListedSnapshot> {
    out.lines()
        .skip_while(|l| !l.starts_with("Snapshot name"))
        .skip(1)
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 8).then(|| ListedSnapshot {
                tag: w[0].into(),
                keyspace: w[1].into(),
                table: w[2].into(),
                true_size: format!("{} {}", w[3], w[4]),
                size_on_disk: format!("{} {}", w[5], w[6]),
                created_at: w[7].into(),
                expires_at: w.get(8).map(|s| s.to_string()),
            })
        })
        .collect()
}

async fn list_snapshots(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let names = query_values(&q, "snapshotNames");
    let keyspaces = query_values(&q, "keyspaces");
    let out = match s.node.nodetool(&["listsnapshots"]).await {
        Ok(o) => o,
        Err(e) => return failed(e),
    };
    let entity: Vec<Value> = parse_listsnapshots(&out)
        .into_iter()
        .filter(|i| names.is_empty() || names.contains(&i.tag))
        .filter(|i| keyspaces.is_empty() || keyspaces.contains(&i.keyspace))
        .map(|i| {
            json!({
                "Snapshot name": i.tag,
                "Keyspace name": i.keyspace,
                "Column family name": i.table,
                "True size": i.true_size,
                "Size on disk": i.size_on_disk,
                "Creation time": i.created_at,
                "Expiration time": i.expires_at.unwrap_or_else(|| "null".into()),
                "Ephemeral": "false",
            })
        })
        .collect();
    axum::Json(entity_wrapper(Value::Array(entity))).into_response()
}

async fn clear_snapshots(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let names = query_values(&q, "snapshotNames");
    let keyspaces = query_values(&q, "keyspaces");
    let runs: Vec<Vec<String>> = if names.is_empty() {
        vec![["clearsnapshot", "--all"].iter().map(|a| a.to_string()).chain(keyspaces.clone()).collect()]
    } else {
        names
            .iter()
            .map(|n| {
                ["clearsnapshot".to_string(), "-t".into(), n.clone()].into_iter().chain(keyspaces.clone()).collect()
            })
            .collect()
    };
    for args in runs {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Err(e) = s.node.nodetool(&args).await {
            return failed(e);
        }
    }
    text(StatusCode::OK, "OK")
}

/// `KeyspaceRequest` of the Management API (flush body).
#[derive(Debug, Default, Deserialize)]
struct KeyspaceRequest {
    keyspace_name: Option<String>,
}

async fn flush(State(s): State<AppState>, body: Bytes) -> Response {
    let req: KeyspaceRequest = match body_json(&body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let keyspace = req.keyspace_name.filter(|k| !k.trim().is_empty() && k != "ALL");
    let mut args = vec!["flush"];
    if let Some(k) = &keyspace {
        args.push(k);
    }
    match s.node.nodetool(&args).await {
        Ok(_) => text(StatusCode::OK, "OK"),
        Err(e) => failed(e),
    }
}

/// Loads newly placed SSTables (`StorageService.loadNewSSTables` behind the real API).
async fn refresh(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let (ks, table) = (query_values(&q, "keyspaceName"), query_values(&q, "table"));
    let (Some(ks), Some(table)) = (ks.first(), table.first()) else {
        return text(StatusCode::BAD_REQUEST, "keyspaceName and table are required");
    };
    match s.node.nodetool(&["refresh", ks, table]).await {
        Ok(_) => text(StatusCode::OK, "OK"),
        Err(e) => failed(e),
    }
}

/// The `Keyspaces:` section of `nodetool describecluster` (4.0 and later): keyspace →
/// replication as `system_schema.keyspaces` holds it (`class` with its package, then the
/// options), e.g. `rs3 -> Replication class: NetworkTopologyStrategy {datacenter1=3}`.
pub fn parse_describecluster_keyspaces(out: &str) -> BTreeMap<String, Map<String, Value>> {
    out.lines()
        .skip_while(|l| l.trim() != "Keyspaces:")
        .skip(1)
        .filter_map(|l| {
            let (ks, rest) = l.trim().split_once(" -> Replication class: ")?;
            let (class, opts) = rest.split_once(' ').unwrap_or((rest, "{}"));
            let class =
                if class.contains('.') { class.to_string() } else { format!("org.apache.cassandra.locator.{class}") };
            let mut m = Map::new();
            m.insert("class".into(), Value::String(class));
            for kv in opts.trim().trim_start_matches('{').trim_end_matches('}').split(',') {
                if let Some((k, v)) = kv.split_once('=') {
                    m.insert(k.trim().to_string(), Value::String(v.trim().to_string()));
                }
            }
            Some((ks.to_string(), m))
        })
        .collect()
}

async fn described_keyspaces(s: &AppState) -> anyhow::Result<BTreeMap<String, Map<String, Value>>> {
    Ok(parse_describecluster_keyspaces(&s.node.nodetool(&["describecluster"]).await?))
}

async fn keyspaces(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let filter = query_values(&q, "keyspaceName");
    match described_keyspaces(&s).await {
        Ok(all) => {
            let names: Vec<String> = all.into_keys().filter(|k| filter.is_empty() || filter.contains(k)).collect();
            axum::Json(json!(names)).into_response()
        }
        Err(e) => failed(e),
    }
}

async fn replication(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let Some(keyspace) = query_values(&q, "keyspaceName").into_iter().next() else {
        return text(StatusCode::BAD_REQUEST, "Non-empty 'keyspaceName' must be provided");
    };
    match described_keyspaces(&s).await {
        Ok(mut all) => match all.remove(&keyspace) {
            Some(m) => axum::Json(Value::Object(m)).into_response(),
            None => text(StatusCode::NOT_FOUND, format!("keyspace {keyspace} does not exist")),
        },
        Err(e) => failed(e),
    }
}

async fn tables(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let Some(keyspace) = query_values(&q, "keyspaceName").into_iter().next() else {
        return text(StatusCode::BAD_REQUEST, "List tables failed. Non-empty 'keyspaceName' must be provided");
    };
    match s.node.nodetool(&["tablestats", &keyspace]).await {
        Ok(out) => {
            let mut names: Vec<String> =
                out.lines().filter_map(|l| l.trim().strip_prefix("Table: ")).map(str::to_string).collect();
            names.sort();
            axum::Json(json!(names)).into_response()
        }
        Err(e) => failed(e),
    }
}

/// One node of `nodetool ring`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingMember {
    /// Address.
    pub ip: String,
    /// Data centre (the section it is listed in).
    pub dc: String,
    /// Rack.
    pub rack: String,
    /// `Up`.
    pub up: bool,
    /// `Normal`, `Joining`, ...
    pub state: String,
    /// Its tokens, in the order listed.
    pub tokens: Vec<String>,
}

/// The nodes of `nodetool ring` (one line per token: address, rack, status, state, load of two
/// words, owns, token), in first-seen order per data centre.
pub fn parse_ring(out: &str) -> Vec<RingMember> {
    let mut members: Vec<RingMember> = Vec::new();
    let mut dc = String::new();
    for line in out.lines() {
        if let Some(d) = line.strip_prefix("Datacenter:") {
            dc = d.trim().to_string();
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 6 || w[0].parse::<std::net::IpAddr>().is_err() {
            continue;
        }
        let token = w[w.len() - 1].to_string();
        match members.iter_mut().find(|m| m.ip == w[0] && m.dc == dc) {
            Some(m) => m.tokens.push(token),
            None => members.push(RingMember {
                ip: w[0].into(),
                dc: dc.clone(),
                rack: w[1].into(),
                up: w[2] == "Up",
                state: w[3].into(),
                tokens: vec![token],
            }),
        }
    }
    members
}

async fn release(s: &AppState) -> anyhow::Result<String> {
    let out = s.node.nodetool(&["version"]).await?;
    out.lines()
        .find_map(|l| l.strip_prefix("ReleaseVersion:"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| anyhow::anyhow!("nodetool version printed no ReleaseVersion: {out}"))
}

async fn endpoints(State(s): State<AppState>) -> Response {
    let (ring, version) = futures::join!(s.node.nodetool(&["ring"]), release(&s));
    let (ring, version) = match (ring, version) {
        (Ok(r), Ok(v)) => (r, v),
        (Err(e), _) | (_, Err(e)) => return failed(e),
    };
    let entries: Vec<Value> = parse_ring(&ring)
        .into_iter()
        .map(|m| {
            let first = m.tokens.first().cloned().unwrap_or_default();
            let status = if m.state == "Normal" { format!("NORMAL,{first}") } else { m.state.to_uppercase() };
            json!({
                "ENDPOINT_IP": m.ip,
                "IS_ALIVE": m.up.to_string(),
                "IS_LOCAL": (m.ip == s.node.address).to_string(),
                "PARTITIONER": "org.apache.cassandra.dht.Murmur3Partitioner",
                "DC": m.dc,
                "RACK": m.rack,
                "RELEASE_VERSION": version,
                "STATUS": status,
                "STATUS_WITH_PORT": status,
                "TOKENS": m.tokens.join(","),
                "NATIVE_ADDRESS_AND_PORT": format!("{}:9042", m.ip),
                "INTERNAL_ADDRESS_AND_PORT": format!("{}:7000", m.ip),
                "INTERNAL_IP": m.ip,
                "RPC_ADDRESS": m.ip,
            })
        })
        .collect();
    axum::Json(entity_wrapper(Value::Array(entries))).into_response()
}

async fn local_dc(State(s): State<AppState>) -> Response {
    match s.node.nodetool(&["info"]).await {
        Ok(out) => match out.lines().filter_map(|l| l.split_once(':')).find(|(k, _)| k.trim() == "Data Center") {
            Some((_, dc)) => text(StatusCode::OK, dc.trim()),
            None => text(StatusCode::INTERNAL_SERVER_ERROR, format!("nodetool info printed no Data Center: {out}")),
        },
        Err(e) => failed(e),
    }
}

async fn release_version(State(s): State<AppState>) -> Response {
    match release(&s).await {
        Ok(v) => text(StatusCode::OK, v),
        Err(e) => failed(e),
    }
}

async fn readiness(State(s): State<AppState>) -> Response {
    match s.node.nodetool(&["statusbinary"]).await {
        Ok(out) if out.trim() == "running" => text(StatusCode::OK, "OK"),
        Ok(out) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("native transport: {}", out.trim())),
        Err(e) => failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nodetool ring` of Cassandra 5.0.9 (two tokens per node shown).
    const RING: &str = "
Datacenter: datacenter1
==========
Address         Rack        Status State   Load            Owns                Token
                                                                               3074457345618258602
127.0.0.1       rack1       Up     Normal  114.71 KiB      33.33%              -9223372036854775808
127.0.0.2       rack1       Down   Normal  120.1 KiB       33.33%              -3074457345618258603
127.0.0.1       rack1       Up     Normal  114.71 KiB      33.33%              1
127.0.0.3       rack2       Up     Joining 99 bytes        33.33%              3074457345618258602

  Warning: \"nodetool ring\" is used to output all the tokens of a node.
";

    #[test]
    fn ring_lines_become_members_with_their_tokens() {
        let m = parse_ring(RING);
        assert_eq!(m.len(), 3);
        assert_eq!(
            (m[0].ip.as_str(), m[0].tokens.clone()),
            ("127.0.0.1", vec!["-9223372036854775808".into(), "1".into()])
        );
        assert!(!m[1].up && m[0].up);
        assert_eq!((m[2].rack.as_str(), m[2].state.as_str(), m[2].dc.as_str()), ("rack2", "Joining", "datacenter1"));
    }

    #[test]
    fn describecluster_keyspaces_become_replication_maps() {
        let out = "Keyspaces:\n\tsystem_auth -> Replication class: SimpleStrategy {replication_factor=1}\n\
                   \trs3 -> Replication class: NetworkTopologyStrategy {datacenter1=3, dc2=1}\n\
                   \tsystem -> Replication class: LocalStrategy {}\n\nNote: Non-system keyspaces ...\n";
        let k = parse_describecluster_keyspaces(out);
        assert_eq!(k.keys().collect::<Vec<_>>(), ["rs3", "system", "system_auth"]);
        assert_eq!(
            Value::Object(k["rs3"].clone()),
            json!({"class": "org.apache.cassandra.locator.NetworkTopologyStrategy", "datacenter1": "3", "dc2": "1"})
        );
        assert_eq!(Value::Object(k["system"].clone()), json!({"class": "org.apache.cassandra.locator.LocalStrategy"}));
    }

    #[test]
    fn listsnapshots_lines_keep_their_two_word_sizes() {
        let out = "Snapshot Details: \nSnapshot name Keyspace name Column family name True size Size on disk Creation time            Expiration time\n\
                   medusa-x      rs1           users              1.63 KiB  209.1 KiB    2026-12-07T06:35:10.576Z\n\n\
                   Total TrueDiskSpaceUsed: 0 bytes\n";
        let s = parse_listsnapshots(out);
        assert_eq!(s.len(), 1);
        assert_eq!(
            s[0],
            ListedSnapshot {
                tag: "medusa-x".into(),
                keyspace: "rs1".into(),
                table: "users".into(),
                true_size: "1.63 KiB".into(),
                size_on_disk: "209.1 KiB".into(),
                created_at: "2026-12-07T06:35:10.576Z".into(),
                expires_at: None,
            }
        );
    }
}
