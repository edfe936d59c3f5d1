//! [`FaultProxy`]: a proxy on loopback between medusa-rs and a real storage server (s3s-fs, moto,
//! azurite), in one of two modes ([`ProxyMode`]), switchable while it runs.
//!
//! Both modes can cut the link: [`FaultProxy::break_now`] refuses new connections and cuts the
//! open ones at their next read, [`FaultProxy::break_after`] does so once a number of bytes more
//! went towards the server, [`FaultProxy::heal`] forwards again.
//!
//! [`ProxyMode::Tcp`] forwards bytes as they come and can do nothing else. [`ProxyMode::Http`]
//! is an HTTP/1.1 proxy that injects what a flaky network and a loaded store do:
//!
//! - a fraction of requests answered `503 SlowDown` (with S3's XML error body) or `500`;
//! - a fraction of connections reset: before the request reaches the server, or after the server
//!   did the work but before its answer gets back (the "lost answer");
//! - a fraction of responses cut midway through the body, after a correct `Content-Length`
//!   header (a truncated body);
//! - black-hole: requests are read and never answered;
//! - a delay before each answer (slow store);
//! - one-shot faults for the next request of a [`Kind`] (PUT, CreateMultipartUpload,
//!   UploadPart, CompleteMultipartUpload, LIST, GET, HEAD, DELETE, ...).
//!
//! Requests are forwarded unchanged (the `Host` header included, so request signatures still
//! hold). Everything is counted: connections, and in HTTP mode requests per kind and each fault
//! injected.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use rand::Rng;

/// What a request does, from its method and query (S3's API; Azure's requests map onto the same
/// kinds where they have one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// PUT of a whole object.
    Put,
    /// POST `?uploads`.
    CreateMultipartUpload,
    /// PUT `?partNumber=..&uploadId=..` (Azure: `comp=block`).
    UploadPart,
    /// POST `?uploadId=..` (Azure: `comp=blocklist`).
    CompleteMultipartUpload,
    /// DELETE `?uploadId=..`.
    AbortMultipartUpload,
    /// GET of a listing.
    List,
    /// GET of an object.
    Get,
    /// HEAD.
    Head,
    /// DELETE of an object.
    Delete,
    /// POST `?delete` (bulk delete).
    DeleteMany,
    /// Anything else.
    Other,
}

impl Kind {
    /// Every kind, for reports.
    pub const ALL: [Kind; 11] = [
        Kind::Put,
        Kind::CreateMultipartUpload,
        Kind::UploadPart,
        Kind::CompleteMultipartUpload,
        Kind::AbortMultipartUpload,
        Kind::List,
        Kind::Get,
        Kind::Head,
        Kind::Delete,
        Kind::DeleteMany,
        Kind::Other,
    ];

    /// Classifies a request.
    pub fn of(method: &hyper::Method, path: &str, query: &str) -> Kind {
        let has = |k: &str| query.split('&').any(|p| p == k || p.starts_with(&format!("{k}=")));
        let comp = |v: &str| query.split('&').any(|p| p == format!("comp={v}"));
        let key_part = path.trim_start_matches('/').split_once('/').map(|(_, k)| k).unwrap_or("");
        match *method {
            hyper::Method::HEAD => Kind::Head,
            hyper::Method::DELETE if has("uploadId") => Kind::AbortMultipartUpload,
            hyper::Method::DELETE => Kind::Delete,
            hyper::Method::GET if has("list-type") || has("restype") || comp("list") || key_part.is_empty() => {
                Kind::List
            }
            hyper::Method::GET => Kind::Get,
            hyper::Method::PUT if has("partNumber") || comp("block") => Kind::UploadPart,
            hyper::Method::PUT if comp("blocklist") => Kind::CompleteMultipartUpload,
            hyper::Method::PUT => Kind::Put,
            hyper::Method::POST if has("uploads") => Kind::CreateMultipartUpload,
            hyper::Method::POST if has("uploadId") => Kind::CompleteMultipartUpload,
            hyper::Method::POST if has("delete") => Kind::DeleteMany,
            _ => Kind::Other,
        }
    }
}

/// A fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// `503 SlowDown` without forwarding.
    SlowDown,
    /// `500 InternalError` without forwarding.
    ServerError,
    /// Connection closed before the request was forwarded.
    ResetBefore,
    /// Forwarded, then the connection closed without the answer.
    LostAnswer,
    /// Forwarded; the answer's headers sent with its `Content-Length`, then half the body, then
    /// the connection closed.
    CutBody,
    /// Read and never answered.
    BlackHole,
    /// Forwarded; the answer's body is sent in small pieces spread over [`SLOW_BODY`] (a slow
    /// link: the connection never stalls, the transfer just takes long).
    SlowBody,
}

/// How long a [`Fault::SlowBody`] answer takes to send its body.
pub const SLOW_BODY: Duration = Duration::from_secs(35);

/// Fractions of requests (0..=1) that get each random fault.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rates {
    /// `503 SlowDown`.
    pub slow_down: f64,
    /// `500`.
    pub server_error: f64,
    /// Reset before forwarding.
    pub reset_before: f64,
    /// Reset after the server answered.
    pub lost_answer: f64,
    /// Body cut midway.
    pub cut_body: f64,
}

#[derive(Default)]
struct State {
    rates: Rates,
    delay: Duration,
    one_shots: HashMap<Kind, Vec<Fault>>,
    /// One-shots for the next request of a kind whose path ends with a suffix.
    targeted: Vec<(Kind, String, Fault)>,
    /// Path and `Range` header of each ranged GET.
    ranged_gets: Vec<(String, String)>,
    requests: HashMap<Kind, u64>,
    injected: HashMap<(Kind, Fault), u64>,
}

/// What the proxy understands of the traffic it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Bytes, forwarded as they come: the link can be cut ([`FaultProxy::break_now`],
    /// [`FaultProxy::break_after`]), nothing else.
    Tcp,
    /// HTTP/1.1 requests, each read whole and forwarded: the link can be cut, and every fault of
    /// [`Fault`] injected per request.
    Http,
}

/// What the accepting task, the connections and the handle share.
struct Shared {
    state: Mutex<State>,
    black_hole: AtomicBool,
    /// New connections refused, open ones cut at their next read.
    broken: AtomicBool,
    /// Bytes sent towards the server (HTTP: request bodies); past `break_after` the proxy breaks.
    sent: AtomicU64,
    break_after: AtomicU64,
    connections: AtomicU64,
}

/// The proxy; stops when dropped.
pub struct FaultProxy {
    /// Listening port on 127.0.0.1.
    pub port: u16,
    mode: ProxyMode,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

type Body = BoxBody<Bytes, std::io::Error>;

impl FaultProxy {
    /// Starts forwarding to `127.0.0.1:<target_port>`.
    pub async fn start(target_port: u16, mode: ProxyMode) -> Result<FaultProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            black_hole: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            break_after: AtomicU64::new(u64::MAX),
            connections: AtomicU64::new(0),
        });
        let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(16).build()?;
        let sh = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                if sh.broken.load(Ordering::SeqCst) {
                    drop(socket);
                    continue;
                }
                sh.connections.fetch_add(1, Ordering::Relaxed);
                match mode {
                    ProxyMode::Tcp => {
                        tokio::spawn(forward_bytes(socket, target_port, sh.clone()));
                    }
                    ProxyMode::Http => {
                        let _ = socket.set_nodelay(true);
                        let (sh, client) = (sh.clone(), client.clone());
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |req| {
                                let (sh, client) = (sh.clone(), client.clone());
                                async move { handle(req, target_port, &sh, &client).await }
                            });
                            let io = hyper_util::rt::TokioIo::new(socket);
                            let _ = hyper::server::conn::http1::Builder::new()
                                .keep_alive(true)
                                .serve_connection(io, service)
                                .await;
                        });
                    }
                }
            }
        });
        Ok(FaultProxy { port, mode, shared, task })
    }

    /// Panics unless the proxy sees requests: faults per request need [`ProxyMode::Http`].
    fn http_only(&self, what: &str) {
        assert_eq!(self.mode, ProxyMode::Http, "{what} needs a proxy started in ProxyMode::Http");
    }

    /// Refuses every connection from now on (existing ones are cut at their next read).
    pub fn break_now(&self) {
        self.shared.broken.store(true, Ordering::SeqCst);
    }

    /// Breaks (as [`FaultProxy::break_now`]) once `bytes` more bytes have been sent towards the
    /// server; in HTTP mode, bytes of request bodies, checked as each request is read.
    pub fn break_after(&self, bytes: u64) {
        let sh = &self.shared;
        sh.break_after.store(sh.sent.load(Ordering::SeqCst) + bytes, Ordering::SeqCst);
    }

    /// Sets the random fault rates (all zero: a clean proxy).
    pub fn set_rates(&self, rates: Rates) {
        self.http_only("set_rates");
        self.shared.state.lock().unwrap().rates = rates;
    }

    /// Delays every answer by `d`.
    pub fn set_delay(&self, d: Duration) {
        self.http_only("set_delay");
        self.shared.state.lock().unwrap().delay = d;
    }

    /// Black-holes every request from now on (`false`: answers again).
    pub fn set_black_hole(&self, on: bool) {
        self.http_only("set_black_hole");
        self.shared.black_hole.store(on, Ordering::SeqCst);
    }

    /// Injects `fault` into the next request of `kind` (queued after earlier one-shots).
    pub fn once(&self, kind: Kind, fault: Fault) {
        self.http_only("once");
        self.shared.state.lock().unwrap().one_shots.entry(kind).or_default().push(fault);
    }

    /// Injects `fault` into the next request of `kind` whose path ends with `suffix` (before
    /// the one-shots of [`FaultProxy::once`]).
    pub fn once_for(&self, kind: Kind, suffix: &str, fault: Fault) {
        self.http_only("once_for");
        self.shared.state.lock().unwrap().targeted.push((kind, suffix.to_string(), fault));
    }

    /// One-shot faults not yet used.
    pub fn pending_one_shots(&self) -> usize {
        let s = self.shared.state.lock().unwrap();
        s.one_shots.values().map(Vec::len).sum::<usize>() + s.targeted.len()
    }

    /// The path and `Range` header of every ranged GET so far, in order.
    pub fn ranged_gets(&self) -> Vec<(String, String)> {
        self.shared.state.lock().unwrap().ranged_gets.clone()
    }

    /// Requests seen, per kind.
    pub fn requests(&self) -> HashMap<Kind, u64> {
        self.shared.state.lock().unwrap().requests.clone()
    }

    /// Faults injected, per kind and fault.
    pub fn injected(&self) -> HashMap<(Kind, Fault), u64> {
        self.shared.state.lock().unwrap().injected.clone()
    }

    /// All requests seen.
    pub fn total_requests(&self) -> u64 {
        self.shared.state.lock().unwrap().requests.values().sum()
    }

    /// All faults injected.
    pub fn total_injected(&self) -> u64 {
        self.shared.state.lock().unwrap().injected.values().sum()
    }

    /// TCP connections accepted (refused ones, while broken, not counted).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Back to a clean proxy that forwards everything (counters kept).
    pub fn heal(&self) {
        let sh = &self.shared;
        let mut s = sh.state.lock().unwrap();
        s.rates = Rates::default();
        s.delay = Duration::ZERO;
        s.one_shots.clear();
        s.targeted.clear();
        drop(s);
        sh.black_hole.store(false, Ordering::SeqCst);
        sh.break_after.store(u64::MAX, Ordering::SeqCst);
        sh.broken.store(false, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// [`ProxyMode::Tcp`]: one connection, bytes both ways until either side ends or the proxy
/// breaks.
async fn forward_bytes(mut client: tokio::net::TcpStream, target_port: u16, sh: Arc<Shared>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await else {
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = cr.read(&mut buf).await.unwrap_or(0);
            if n == 0 || sh.broken.load(Ordering::SeqCst) {
                return;
            }
            if sh.sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > sh.break_after.load(Ordering::SeqCst) {
                sh.broken.store(true, Ordering::SeqCst);
                return;
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = sr.read(&mut buf).await.unwrap_or(0);
            if n == 0 || sh.broken.load(Ordering::SeqCst) || cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Either direction ending (or the proxy breaking) cuts the connection.
    tokio::select! { _ = up => {}, _ = down => {} }
}

/// The fault for this request, if any (one-shots first), counted.
fn pick(st: &Mutex<State>, kind: Kind, path: &str) -> (Option<Fault>, Duration) {
    let mut s = st.lock().unwrap();
    *s.requests.entry(kind).or_default() += 1;
    let delay = s.delay;
    let targeted = s.targeted.iter().position(|(k, suffix, _)| *k == kind && path.ends_with(suffix.as_str()));
    let one = targeted
        .map(|i| s.targeted.remove(i).2)
        .or_else(|| s.one_shots.get_mut(&kind).and_then(|v| (!v.is_empty()).then(|| v.remove(0))));
    let fault = one.or_else(|| {
        let r = s.rates;
        let x: f64 = rand::rng().random();
        let mut acc = 0.0;
        for (p, f) in [
            (r.slow_down, Fault::SlowDown),
            (r.server_error, Fault::ServerError),
            (r.reset_before, Fault::ResetBefore),
            (r.lost_answer, Fault::LostAnswer),
            (r.cut_body, Fault::CutBody),
        ] {
            acc += p;
            if x < acc {
                return Some(f);
            }
        }
        None
    });
    if let Some(f) = fault {
        *s.injected.entry((kind, f)).or_default() += 1;
    }
    (fault, delay)
}

fn full(status: StatusCode, body: &'static str, content_type: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from_static(body.as_bytes())).map_err(|e: Infallible| match e {}).boxed())
        .expect("a valid response")
}

/// The error that makes hyper drop the connection without an answer.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by the fault proxy")
    }
}

impl std::error::Error for Reset {}

async fn handle(
    req: Request<Incoming>,
    target_port: u16,
    sh: &Shared,
    client: &reqwest::Client,
) -> Result<Response<Body>, Reset> {
    let (st, black_hole) = (&sh.state, &sh.black_hole);
    if sh.broken.load(Ordering::SeqCst) {
        return Err(Reset);
    }
    let kind = Kind::of(req.method(), req.uri().path(), req.uri().query().unwrap_or(""));
    let (fault, delay) = pick(st, kind, req.uri().path());
    if let Some(range) = req.headers().get(hyper::header::RANGE).and_then(|r| r.to_str().ok())
        && kind == Kind::Get
    {
        st.lock().unwrap().ranged_gets.push((req.uri().path().to_string(), range.to_string()));
    }
    // The request is read whole first, as a server would before it acts.
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|_| Reset)?.to_bytes();
    let n = body.len() as u64;
    if sh.broken.load(Ordering::SeqCst)
        || sh.sent.fetch_add(n, Ordering::SeqCst) + n > sh.break_after.load(Ordering::SeqCst)
    {
        sh.broken.store(true, Ordering::SeqCst);
        return Err(Reset);
    }
    if black_hole.load(Ordering::SeqCst) || fault == Some(Fault::BlackHole) {
        if black_hole.load(Ordering::SeqCst) {
            *st.lock().unwrap().injected.entry((kind, Fault::BlackHole)).or_default() += 1;
        }
        std::future::pending::<()>().await;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match fault {
        Some(Fault::SlowDown) => {
            return Ok(full(
                StatusCode::SERVICE_UNAVAILABLE,
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
                "application/xml",
            ));
        }
        Some(Fault::ServerError) => {
            return Ok(full(
                StatusCode::INTERNAL_SERVER_ERROR,
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>",
                "application/xml",
            ));
        }
        Some(Fault::ResetBefore) => return Err(Reset),
        _ => {}
    }
    let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("http://127.0.0.1:{target_port}{pq}");
    let mut fwd = client.request(parts.method.clone(), &url).body(body);
    for (name, value) in &parts.headers {
        if name != hyper::header::CONNECTION && name != hyper::header::TRANSFER_ENCODING {
            fwd = fwd.header(name, value);
        }
    }
    let Ok(answer) = fwd.send().await else { return Err(Reset) };
    let status = answer.status();
    let headers = answer.headers().clone();
    let Ok(bytes) = answer.bytes().await else { return Err(Reset) };
    if fault == Some(Fault::LostAnswer) {
        return Err(Reset);
    }
    let head = parts.method == hyper::Method::HEAD;
    if fault == Some(Fault::CutBody) && (head || bytes.is_empty()) {
        return Err(Reset); // nothing to cut: the answer is lost instead
    }
    let mut out = Response::builder().status(status);
    for (name, value) in &headers {
        let skip = name == hyper::header::CONNECTION
            || name == hyper::header::TRANSFER_ENCODING
            || (name == hyper::header::CONTENT_LENGTH && !head);
        if !skip {
            out = out.header(name, value);
        }
    }
    if !head {
        out = out.header(hyper::header::CONTENT_LENGTH, bytes.len());
    }
    let body: Body = if fault == Some(Fault::SlowBody) {
        // Twenty pieces, one every 1/20 of the time: never a pause long enough to look stalled.
        let piece = bytes.len().div_ceil(20).max(1);
        let pieces: Vec<Bytes> = bytes.chunks(piece).map(Bytes::copy_from_slice).collect();
        let gap = SLOW_BODY / pieces.len().max(1) as u32;
        let frames = futures::StreamExt::then(futures::stream::iter(pieces), move |p| async move {
            tokio::time::sleep(gap).await;
            Ok::<_, std::io::Error>(Frame::data(p))
        });
        StreamBody::new(frames).boxed()
    } else if fault == Some(Fault::CutBody) {
        // The full length is announced, half is sent, then the stream fails: hyper closes the
        // connection, and the client sees a body shorter than its Content-Length.
        let half = bytes.slice(..bytes.len() / 2);
        let frames = futures::stream::iter([
            Ok(Frame::data(half)),
            Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut by the fault proxy")),
        ]);
        StreamBody::new(frames).boxed()
    } else {
        Full::new(bytes).map_err(|e: Infallible| match e {}).boxed()
    };
    out.body(body).map_err(|_| Reset)
}
