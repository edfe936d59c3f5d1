//! [`MgmtApiServer`]: the subset of the Management API for Apache Cassandra a backup sidecar
//! uses, served over HTTP on loopback against a [`SimNode`], with switchable faults and a call
//! log. Status codes and texts follow `NodeOpsResources` / `TableOpsResources`. A node may be
//! one of a ring ([`MgmtApiServer::start_in_ring`]): its endpoints answer then lists every
//! member, as gossip does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::node::{SimNode, entity_wrapper};
use super::util::{epoch_millis, parse_query, stringify_file_size};

/// Message of the Management API when it cannot reach Cassandra.
const CONNECTION_CLOSED: &str = "Internal connection to Cassandra closed";

/// Switches a test flips to make the API misbehave. All start off.
#[derive(Debug, Default)]
pub struct Faults {
    /// `POST /api/v0/ops/node/snapshots` answers 500 (plain text) without snapshotting.
    pub fail_snapshot_create: AtomicBool,
    /// `DELETE /api/v0/ops/node/snapshots` answers 500 without deleting.
    pub fail_snapshot_delete: AtomicBool,
    /// Milliseconds to wait before taking a snapshot. The snapshot is taken even if the client
    /// stops waiting meanwhile, as Cassandra does.
    pub delay_snapshot_ms: AtomicU64,
    /// `GET /api/v0/metadata/endpoints` answers 500.
    pub fail_endpoints: AtomicBool,
    /// `GET /api/v0/probes/readiness` answers 500 (Cassandra not serving).
    pub fail_readiness: AtomicBool,
    /// Snapshots without `skip_flush` first flush the memtables (adds ~1% new SSTables), like a
    /// node taking writes. Off by default so snapshots do not change the data directory.
    pub flush_on_snapshot: AtomicBool,
}

#[derive(Clone)]
struct AppState {
    node: Arc<Mutex<SimNode>>,
    /// Every node of the ring, this one included.
    ring: Arc<Vec<Arc<Mutex<SimNode>>>>,
    faults: Arc<Faults>,
    calls: Arc<Mutex<Vec<String>>>,
    flushes: Arc<AtomicU64>,
    /// Snapshots being taken now (their requests may be gone).
    snapshotting: Arc<AtomicU64>,
}

/// A running simulated Management API on `127.0.0.1:<ephemeral port>`.
pub struct MgmtApiServer {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// `<base_url>/api/v0/ops/node/snapshots`: Medusa's `cassandra_url`.
    pub snapshot_url: String,
    state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MgmtApiServer {
    /// Binds `127.0.0.1:0` and serves the API for `node` until [`MgmtApiServer::stop`] (or drop).
    /// The node lock is a std mutex, only taken on blocking threads by the server.
    pub async fn start(node: Arc<Mutex<SimNode>>) -> anyhow::Result<MgmtApiServer> {
        let ring = vec![node.clone()];
        MgmtApiServer::start_in_ring(node, ring).await
    }

    /// Like [`MgmtApiServer::start`] for `node` as one of `ring` (which should hold it):
    /// `/api/v0/metadata/endpoints` lists every member, `IS_LOCAL` true only for `node`, in the
    /// order given. Members are locked one at a time, never two at once.
    pub async fn start_in_ring(
        node: Arc<Mutex<SimNode>>,
        ring: Vec<Arc<Mutex<SimNode>>>,
    ) -> anyhow::Result<MgmtApiServer> {
        let state = AppState {
            node,
            ring: Arc::new(ring),
            faults: Arc::new(Faults::default()),
            calls: Arc::new(Mutex::new(Vec::new())),
            flushes: Arc::new(AtomicU64::new(0)),
            snapshotting: Arc::new(AtomicU64::new(0)),
        };
        let app = router(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!("simulated management API stopped: {e}");
            }
        });
        Ok(MgmtApiServer {
            snapshot_url: format!("{base_url}/api/v0/ops/node/snapshots"),
            base_url,
            state,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The fault switches shared with the running server.
    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// Requests received so far, as `"METHOD /path?query"` (query omitted when absent).
    pub fn calls(&self) -> Vec<String> {
        self.state.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Snapshots being taken right now, including those whose client stopped waiting.
    pub fn snapshots_in_flight(&self) -> u64 {
        self.state.snapshotting.load(Ordering::SeqCst)
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

impl Drop for MgmtApiServer {
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
        .route("/api/v0/ops/keyspace", get(keyspaces))
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
        calls.push(line);
    }
    next.run(req).await
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}

fn json_response(v: Value) -> Response {
    axum::Json(v).into_response()
}

/// Runs `f` with the node locked on a blocking thread (snapshots hard-link thousands of files).
async fn with_node<T: Send + 'static>(
    s: &AppState,
    f: impl FnOnce(&mut SimNode) -> std::io::Result<T> + Send + 'static,
) -> Result<T, String> {
    let node = s.node.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = node.lock().map_err(|_| "node lock poisoned".to_string())?;
        f(&mut guard).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
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
    let req: TakeSnapshotRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TakeSnapshotRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return text(StatusCode::BAD_REQUEST, format!("Invalid request body: {e}"));
            }
        }
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
    if s.faults.fail_snapshot_create.load(Ordering::SeqCst) {
        return text(StatusCode::INTERNAL_SERVER_ERROR, CONNECTION_CLOSED);
    }
    let delay = s.faults.delay_snapshot_ms.load(Ordering::SeqCst);
    let tag = req.snapshot_name.unwrap_or_else(|| epoch_millis().to_string());
    let flush_first = s.faults.flush_on_snapshot.load(Ordering::SeqCst) && !req.skip_flush.unwrap_or(false);
    let flush_seed = 0x5EED_0000 + s.flushes.fetch_add(1, Ordering::SeqCst);
    let table_name = req.table_name;
    // Cassandra finishes a snapshot whose HTTP client went away (the JMX call runs on), so the
    // work is a task of its own that a dropped request does not cancel.
    s.snapshotting.fetch_add(1, Ordering::SeqCst);
    let work = tokio::spawn(async move {
        let in_flight = s.snapshotting.clone();
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let result = with_node(&s, move |node| {
            let targets: Vec<String> = match &table_name {
                Some(t) => vec![format!("{}.{t}", keyspaces[0])],
                None => keyspace_tables,
            };
            if flush_first {
                let ks = (keyspaces.len() == 1).then(|| keyspaces[0].as_str());
                node.flush_keyspace(flush_seed, 0.01, ks)?;
            }
            if targets.is_empty() {
                node.take_snapshot(&tag, &keyspaces)
            } else {
                node.take_table_snapshot(&tag, &targets)
            }
        })
        .await;
        in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    });
    let result = work.await.unwrap_or_else(|e| Err(e.to_string()));
    match result {
        Ok(()) => text(StatusCode::OK, "OK"),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Repeated query values of `key` (`?k=a&k=b`), empty values dropped.
fn query_values(q: &Option<String>, key: &str) -> Vec<String> {
    parse_query(q.as_deref().unwrap_or(""))
        .into_iter()
        .filter(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v)
        .collect()
}

async fn list_snapshots(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let names = query_values(&q, "snapshotNames");
    let keyspaces = query_values(&q, "keyspaces");
    let infos = match with_node(&s, |node| Ok(node.list_snapshots())).await {
        Ok(i) => i,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let entity: Vec<Value> = infos
        .into_iter()
        .filter(|i| names.is_empty() || names.contains(&i.tag))
        .filter(|i| keyspaces.is_empty() || keyspaces.contains(&i.keyspace))
        .map(|i| {
            json!({
                "Snapshot name": i.tag,
                "Keyspace name": i.keyspace,
                "Column family name": i.table,
                "True size": stringify_file_size(i.true_size),
                "Size on disk": stringify_file_size(i.size_on_disk),
                "Creation time": i.created_at.unwrap_or_else(|| "null".to_string()),
                "Expiration time": "null",
                "Ephemeral": "false",
            })
        })
        .collect();
    json_response(entity_wrapper(Value::Array(entity)))
}

async fn clear_snapshots(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    if s.faults.fail_snapshot_delete.load(Ordering::SeqCst) {
        return text(StatusCode::INTERNAL_SERVER_ERROR, CONNECTION_CLOSED);
    }
    let names = query_values(&q, "snapshotNames");
    let keyspaces = query_values(&q, "keyspaces");
    let result = with_node(&s, move |node| {
        if names.is_empty() {
            return node.clear_snapshot(None, &keyspaces);
        }
        for name in &names {
            node.clear_snapshot(Some(name), &keyspaces)?;
        }
        Ok(())
    })
    .await;
    match result {
        Ok(()) => text(StatusCode::OK, "OK"),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `KeyspaceRequest` of the Management API (flush body).
#[derive(Debug, Default, Deserialize)]
struct KeyspaceRequest {
    keyspace_name: Option<String>,
}

async fn flush(State(s): State<AppState>, body: Bytes) -> Response {
    let req: KeyspaceRequest = if body.iter().all(u8::is_ascii_whitespace) {
        KeyspaceRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return text(StatusCode::BAD_REQUEST, format!("Invalid request body: {e}"));
            }
        }
    };
    let keyspace = req.keyspace_name.filter(|k| !k.trim().is_empty() && k != "ALL");
    let seed = 0xF1_0000 + s.flushes.fetch_add(1, Ordering::SeqCst);
    let result = with_node(&s, move |node| node.flush_keyspace(seed, 0.01, keyspace.as_deref())).await;
    match result {
        Ok(_) => text(StatusCode::OK, "OK"),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn keyspaces(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let filter = query_values(&q, "keyspaceName");
    match with_node(&s, |node| Ok(node.keyspaces())).await {
        Ok(all) => {
            let names: Vec<String> = all.into_iter().filter(|k| filter.is_empty() || filter.contains(k)).collect();
            json_response(json!(names))
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn tables(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let Some(keyspace) = query_values(&q, "keyspaceName").into_iter().next() else {
        return text(StatusCode::BAD_REQUEST, "List tables failed. Non-empty 'keyspaceName' must be provided");
    };
    match with_node(&s, move |node| Ok(node.table_names(&keyspace))).await {
        Ok(names) => json_response(json!(names)),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn endpoints(State(s): State<AppState>) -> Response {
    if s.faults.fail_endpoints.load(Ordering::SeqCst) {
        return text(StatusCode::INTERNAL_SERVER_ERROR, CONNECTION_CLOSED);
    }
    let (me, ring) = (s.node.clone(), s.ring.clone());
    let entries = tokio::task::spawn_blocking(move || {
        ring.iter()
            .map(|member| {
                let node = member.lock().map_err(|_| "node lock poisoned".to_string())?;
                Ok(node.gossip_entry(Arc::ptr_eq(member, &me)))
            })
            .collect::<Result<Vec<Value>, String>>()
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match entries {
        Ok(v) => json_response(entity_wrapper(Value::Array(v))),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn local_dc(State(s): State<AppState>) -> Response {
    match with_node(&s, |node| Ok(node.dc.clone())).await {
        Ok(dc) => text(StatusCode::OK, dc),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn release_version(State(s): State<AppState>) -> Response {
    match with_node(&s, |node| Ok(node.spec.cassandra_version.clone())).await {
        Ok(v) => text(StatusCode::OK, v),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn readiness(State(s): State<AppState>) -> Response {
    if s.faults.fail_readiness.load(Ordering::SeqCst) {
        return text(StatusCode::INTERNAL_SERVER_ERROR, CONNECTION_CLOSED);
    }
    text(StatusCode::OK, "OK")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::TempDir;
    use crate::sim::{NodeIdentity, SimSpec};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_ring_member_lists_every_node_and_only_itself_as_local() {
        let dir = TempDir::new("ring").unwrap();
        let mut ring = Vec::new();
        for (i, rack) in ["r1", "r2"].into_iter().enumerate() {
            let who = NodeIdentity {
                rack: rack.into(),
                listen_address: format!("127.0.0.{}", i + 1),
                schema_seed: Some(7),
                ..NodeIdentity::default()
            };
            let spec = SimSpec { seed: 40 + i as u64, user_keyspaces: 1, sstables_per_table: 1, ..SimSpec::small() };
            let node = SimNode::generate_with(&dir.path().join(rack), &spec, &who).unwrap();
            ring.push(Arc::new(Mutex::new(node)));
        }
        let (a, b) = (ring[0].lock().unwrap().clone(), ring[1].lock().unwrap().clone());
        assert_eq!(a.tables, b.tables, "one schema per cluster");
        assert_ne!(a.tokens, b.tokens);
        let api = MgmtApiServer::start_in_ring(ring[1].clone(), ring.clone()).await.unwrap();
        let url = format!("{}/api/v0/metadata/endpoints", api.base_url);
        let v: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        let entries = v["entity"].as_array().unwrap();
        let facts: Vec<(&str, &str, &str)> = entries
            .iter()
            .map(|e| (e["ENDPOINT_IP"].as_str().unwrap(), e["RACK"].as_str().unwrap(), e["IS_LOCAL"].as_str().unwrap()))
            .collect();
        assert_eq!(facts, [("127.0.0.1", "r1", "false"), ("127.0.0.2", "r2", "true")]);
        let tokens: Vec<String> = b.tokens.iter().map(i64::to_string).collect();
        assert_eq!(entries[1]["TOKENS"], tokens.join(","));
        assert_eq!(entries[0]["SCHEMA"], entries[1]["SCHEMA"]);
        api.stop().await;
    }
}
