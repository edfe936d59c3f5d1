//! `grpc_health_probe` (a name of the `medusa-rs` binary): checks `grpc.health.v1.Health` like the original tool of that name, with
//! the flags k8ssandra-operator passes and the same exit codes: 0 serving, 1 bad arguments,
//! 2 connection failure, 3 RPC failure, 4 not serving.
//!
//! TLS: the server chain is verified against `--tls-ca-cert`; the host name is checked only when
//! `--tls-server-name` is given (the operator probes `--addr=:PORT`, and its server certificates
//! need not name the pod, as for its own gRPC client). `--tls-no-verify` skips verification.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tonic_health::pb::health_check_response::ServingStatus as Health;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[derive(Debug, Default)]
struct Flags {
    addr: String,
    service: String,
    connect_timeout: Option<Duration>,
    rpc_timeout: Option<Duration>,
    tls: bool,
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    no_verify: bool,
    server_name: Option<String>,
    headers: Vec<(String, String)>,
    verbose: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "error: {msg}\nusage: grpc_health_probe -addr=[host]:port [-service=name] [-connect-timeout=1s] [-rpc-timeout=1s] [-tls -tls-ca-cert=f -tls-client-cert=f -tls-client-key=f -tls-no-verify -tls-server-name=n] [-rpc-header=k:v] [-v]"
    );
    std::process::exit(1)
}

/// Go's duration syntax for the values used in practice: `1s`, `500ms`, `2m`, `1.5s`.
fn duration(v: &str) -> Option<Duration> {
    let (num, unit) = v.find(|c: char| c.is_ascii_alphabetic()).map(|i| v.split_at(i))?;
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

fn parse(args: impl Iterator<Item = String>) -> Flags {
    let mut f = Flags {
        connect_timeout: Some(Duration::from_secs(1)),
        rpc_timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        let Some(flag) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            usage(&format!("unexpected argument {a:?}"))
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.to_string(), None),
        };
        let boolean = |inline: &Option<String>| match inline.as_deref() {
            None | Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            Some(v) => usage(&format!("invalid boolean value {v:?} for -{name}")),
        };
        let mut value = |inline: Option<String>| {
            inline.or_else(|| args.next()).unwrap_or_else(|| usage(&format!("flag needs an argument: -{name}")))
        };
        match name.as_str() {
            "addr" => f.addr = value(inline),
            "service" => f.service = value(inline),
            "connect-timeout" => {
                f.connect_timeout = Some(duration(&value(inline)).unwrap_or_else(|| usage("invalid -connect-timeout")))
            }
            "rpc-timeout" => {
                f.rpc_timeout = Some(duration(&value(inline)).unwrap_or_else(|| usage("invalid -rpc-timeout")))
            }
            "tls" => f.tls = boolean(&inline),
            "tls-ca-cert" => f.ca = Some(value(inline)),
            "tls-client-cert" => f.cert = Some(value(inline)),
            "tls-client-key" => f.key = Some(value(inline)),
            "tls-no-verify" => f.no_verify = boolean(&inline),
            "tls-server-name" => f.server_name = Some(value(inline)),
            "rpc-header" => {
                let v = value(inline);
                let (k, h) = v.split_once(':').unwrap_or_else(|| usage("-rpc-header must be key:value"));
                f.headers.push((k.trim().to_lowercase(), h.trim().to_string()));
            }
            "user-agent" => drop(value(inline)),
            "gzip" => drop(boolean(&inline)),
            "v" => f.verbose = boolean(&inline),
            "version" => {
                println!("grpc_health_probe (medusa-rs) {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "alts" | "spiffe" => usage(&format!("-{name} is not supported")),
            other => usage(&format!("flag provided but not defined: -{other}")),
        }
    }
    validate(&f);
    f
}

/// Refuses flag combinations the Go probe refuses.
fn validate(f: &Flags) {
    if f.addr.is_empty() {
        usage("-addr not specified");
    }
    if !f.tls && (f.ca.is_some() || f.cert.is_some() || f.key.is_some() || f.no_verify || f.server_name.is_some()) {
        usage("the -tls-* flags need -tls");
    }
    if f.cert.is_some() != f.key.is_some() {
        usage("-tls-client-cert and -tls-client-key go together");
    }
    if f.no_verify && f.ca.is_some() {
        usage("-tls-no-verify and -tls-ca-cert exclude each other");
    }
}

fn tls_config(f: &Flags) -> Result<rustls::ClientConfig, String> {
    let trust = match (&f.ca, f.no_verify) {
        (_, true) => crate::tls::Trust::Anything,
        (Some(ca), false) => {
            let pem = std::fs::read(ca).map_err(|e| format!("-tls-ca-cert {ca}: {e}"))?;
            crate::tls::Trust::Ca { pem, check_name: f.server_name.is_some() }
        }
        (None, false) => {
            return Err("-tls needs -tls-ca-cert (or -tls-no-verify): this build has no system roots".into());
        }
    };
    let identity = match (&f.cert, &f.key) {
        (Some(cert), Some(key)) => Some((
            std::fs::read(cert).map_err(|e| format!("-tls-client-cert {cert}: {e}"))?,
            std::fs::read(key).map_err(|e| format!("-tls-client-key {key}: {e}"))?,
        )),
        _ => None,
    };
    let mut cfg = crate::tls::client_config(trust, identity)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

async fn connect(f: &Flags, target: &str) -> Result<tonic::transport::Channel, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{target}")).map_err(|e| e.to_string())?;
    let endpoint = match f.connect_timeout {
        Some(t) => endpoint.connect_timeout(t),
        None => endpoint,
    };
    if !f.tls {
        return endpoint
            .connect()
            .await
            .map_err(|e| format!("{e}: {}", std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default()));
    }
    let cfg = Arc::new(tls_config(f).map_err(|e| format!("TLS configuration: {e}"))?);
    let host = f.server_name.clone().unwrap_or_else(|| {
        target.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']'])).unwrap_or("localhost").to_string()
    });
    let name = ServerName::try_from(host.clone()).map_err(|e| format!("server name {host:?}: {e}"))?;
    let dial = target.to_string();
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let (cfg, name, target) = (cfg.clone(), name.clone(), dial.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(&target).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    let connecting = endpoint.connect_with_connector(connector);
    let ch = match f.connect_timeout {
        Some(t) => tokio::time::timeout(t, connecting)
            .await
            .map_err(|_| format!("timeout: failed to connect service {target:?} within {t:?}"))?,
        None => connecting.await,
    };
    ch.map_err(|e| format!("{e}: {}", std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default()))
}

/// Runs the probe with `args` (without the program name) and exits with its code.
pub fn main(args: Vec<String>) -> ! {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let Ok(rt) = rt else {
        eprintln!("error: cannot start the probe's runtime");
        std::process::exit(2)
    };
    rt.block_on(probe(args))
}

async fn probe(args: Vec<String>) -> ! {
    let f = parse(args.into_iter());
    // ":50051" means this host, as for Go's dialer.
    let target = if f.addr.starts_with(':') { format!("127.0.0.1{}", f.addr) } else { f.addr.clone() };
    let ch = match connect(&f, &target).await {
        Ok(ch) => ch,
        Err(e) => {
            eprintln!("error: failed to connect service at {:?}: {e}", f.addr);
            std::process::exit(2);
        }
    };
    let mut req = tonic::Request::new(HealthCheckRequest { service: f.service.clone() });
    for (k, v) in &f.headers {
        if let (Ok(k), Ok(v)) = (k.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(), v.parse()) {
            req.metadata_mut().insert(k, v);
        }
    }
    if let Some(t) = f.rpc_timeout {
        req.set_timeout(t);
    }
    let mut client = HealthClient::new(ch);
    let call = client.check(req);
    let resp = match f.rpc_timeout {
        Some(t) => match tokio::time::timeout(t + Duration::from_millis(200), call).await {
            Ok(r) => r,
            Err(_) => {
                eprintln!("timeout: health rpc did not complete within {t:?}");
                std::process::exit(3);
            }
        },
        None => call.await,
    };
    std::process::exit(report(&f, resp))
}

/// Prints the outcome of the health call as the Go probe does and returns its exit code.
fn report(f: &Flags, resp: Result<tonic::Response<tonic_health::pb::HealthCheckResponse>, tonic::Status>) -> i32 {
    match resp {
        Ok(r) => {
            let status = r.into_inner().status;
            if status == Health::Serving as i32 {
                println!("status: SERVING");
                return 0;
            }
            let name = Health::try_from(status).map(|s| s.as_str_name()).unwrap_or("UNKNOWN");
            eprintln!("service unhealthy (responded with {name:?})");
            4
        }
        Err(s) if s.code() == tonic::Code::Unimplemented => {
            eprintln!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                s.message()
            );
            3
        }
        // The transport failed (e.g. a TLS 1.3 server rejecting the client certificate after the
        // client's side of the handshake): a connection failure, as the Go probe's blocking dial
        // reports it.
        // Statuses the transport made (they carry the underlying error; a server's never do),
        // whatever code the timing gave them: Unavailable, Cancelled or Unknown.
        Err(s)
            if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Cancelled)
                || std::error::Error::source(&s).is_some()
                || s.message() == "transport error" =>
        {
            eprintln!("error: failed to connect service at {:?}: {}", f.addr, s.message());
            2
        }
        Err(s) if s.code() == tonic::Code::DeadlineExceeded => {
            eprintln!("timeout: health rpc did not complete within {:?}", f.rpc_timeout.unwrap_or_default());
            3
        }
        Err(s) => {
            if f.verbose {
                eprintln!("{s:?}");
            }
            eprintln!("error: health rpc failed: rpc error: code = {:?} desc = {}", s.code(), s.message());
            3
        }
    }
}
