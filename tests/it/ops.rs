//! The operations surface: our grpc_health_probe with its exit codes, the MEDUSA_MODE dispatch,
//! the Prometheus endpoint after real backups and a purge, and the example configurations.

use std::process::Command;
use std::time::Duration;

use medusa::service::pb::backup_request::Mode;
use medusa::service::pb::{self, StatusType};
use medusa_tests::{Env, EnvOptions, Kind, ProxyMode, Sidecar, binary, eventually};
use nix::sys::signal::Signal;

fn probe(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(binary("grpc_health_probe")).args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

async fn serving(port: u16) {
    eventually(Duration::from_secs(20), "SERVING", || async move {
        (probe(&[&format!("--addr=:{port}")]).0 == Some(0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_exit_codes_through_the_sidecar_lifecycle() {
    let mut o = EnvOptions::new(Kind::S3sFs);
    o.storage_extra = "transfer_max_bandwidth = 256KB/s\n".into();
    let env = Env::new(o).await.unwrap();
    let mut sidecar = Sidecar::start_with(&env, &[("MEDUSA_RS_SHUTDOWN_GRACE", "3")]).await.unwrap();
    let port = sidecar.port;
    serving(port).await;
    let (code, out) = probe(&[&format!("--addr=:{port}")]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("status: SERVING"), "{out}");
    assert_eq!(
        probe(&[
            "-addr",
            &format!("127.0.0.1:{port}"),
            "-service",
            "Medusa",
            "-connect-timeout",
            "2s",
            "-rpc-timeout=2s"
        ])
        .0,
        Some(0)
    );
    let (code, out) = probe(&[&format!("--addr=:{port}"), "--service=nope"]);
    assert_eq!(code, Some(3), "unknown service is an RPC failure: {out}");
    for bad in [
        vec![],
        vec!["--addr=:1", "--bogus"],
        vec!["--addr=:1", "--connect-timeout=soon"],
        vec!["--addr=:1", "--tls-ca-cert=x"],
    ] {
        assert_eq!(probe(&bad).0, Some(1), "{bad:?}");
    }
    // Not serving while draining.
    let mut c = sidecar.client().await.unwrap();
    c.async_backup(pb::BackupRequest { name: "slow".into(), mode: Mode::Full as i32 }).await.unwrap();
    eventually(Duration::from_secs(60), "the backup to upload", || {
        let mut c = c.clone();
        async move {
            let s = c.backup_status(pb::BackupStatusRequest { backup_name: "slow".into() }).await.ok()?.into_inner();
            (s.bytes_done > 0).then_some(())
        }
    })
    .await;
    sidecar.signal(Signal::SIGTERM);
    eventually(Duration::from_secs(5), "NOT_SERVING from the probe", || async move {
        let (code, out) = probe(&[&format!("--addr=:{port}")]);
        (code == Some(4)).then_some(out)
    })
    .await;
    sidecar.wait_exit(Duration::from_secs(30)).await.unwrap();
    let (code, out) = probe(&[&format!("--addr=:{port}"), "--connect-timeout=500ms"]);
    assert_eq!(code, Some(2), "nothing listening: {out}");
}

/// Under the operator the probe is the pod's readiness AND liveness: a bucket outage must not
/// restart the container or take the Cassandra node out of its Services. Health stays SERVING
/// with storage unreachable, and a backup asked for meanwhile is accepted and ends FAILED with
/// the storage error as its reason (an OK BackupStatus reply), so the operator's job ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_stays_serving_through_a_storage_outage_and_backups_fail_with_a_reason() {
    let mut o = EnvOptions::new(Kind::S3sFs);
    o.proxy = Some(ProxyMode::Tcp); // the test env retries twice within 10 s
    let env = Env::new(o).await.unwrap();
    env.proxy.as_ref().unwrap().break_now();
    let sidecar = Sidecar::start(&env).await.unwrap();
    let port = sidecar.port;
    serving(port).await;
    let mut c = sidecar.client().await.unwrap();
    let r = c.async_backup(pb::BackupRequest { name: "b-dark".into(), mode: Mode::Full as i32 }).await;
    let r = r.expect("accepted whatever storage does").into_inner();
    assert_eq!(r.status, StatusType::InProgress as i32);
    let failed = eventually(Duration::from_secs(60), "the backup to fail", || {
        let mut c = c.clone();
        async move {
            let s = c.backup_status(pb::BackupStatusRequest { backup_name: "b-dark".into() }).await.ok()?.into_inner();
            (s.status == StatusType::Failed as i32).then_some(s)
        }
    })
    .await;
    assert!(failed.error.contains("storage"), "the reason names storage: {}", failed.error);
    // SERVING for 30 s of outage, sampled as the kubelet would.
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let (code, out) = probe(&[&format!("--addr=:{port}")]);
        assert_eq!(code, Some(0), "after {:?} of outage: {out}", start.elapsed());
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert!(sidecar.log_text().contains("storage unreachable"), "{}", sidecar.log_text());
    env.proxy.as_ref().unwrap().heal();
}

/// What `kubectl logs` shows: no colour codes when piped, and the operator's `[logging] level =
/// DEBUG` applies to medusa-rs only, so health probes do not flood the log with HTTP/2 frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_logs_have_no_colour_and_probes_do_not_flood_them_at_debug() {
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    let ini = std::fs::read_to_string(&env.ini_path).unwrap();
    std::fs::write(&env.ini_path, format!("{ini}\n[logging]\nlevel = DEBUG\n")).unwrap();
    // As the operator runs it: no RUST_LOG.
    let sidecar = Sidecar::start_with(&env, &[("RUST_LOG", "")]).await.unwrap();
    let port = sidecar.port;
    serving(port).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = sidecar.log_text().lines().count();
    for _ in 0..20 {
        let (code, out) = probe(&[&format!("--addr=:{port}")]);
        assert_eq!(code, Some(0), "{out}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = sidecar.log_text();
    let added = log.lines().count() - before;
    assert!(added < 20, "20 probe calls added {added} log lines:\n{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escape codes in piped output:\n{log}");
    assert!(log.contains("DEBUG") || log.contains("INFO"), "the log says something: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_with_tls_as_the_operator_calls_it() {
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    let certs = medusa_tests::test_certs(env.dir.path());
    medusa_tests::enable_tls(&env, &certs);
    let sidecar = Sidecar::start(&env).await.unwrap();
    let addr = format!("--addr=:{}", sidecar.port);
    let ca = format!("--tls-ca-cert={}", certs.ca.display());
    // The operator reuses the server's key pair as the probe's client identity.
    let cert = format!("--tls-client-cert={}", certs.cert.display());
    let key = format!("--tls-client-key={}", certs.key.display());
    let ok = eventually(Duration::from_secs(20), "SERVING over TLS", || {
        let args = [addr.clone(), "--tls".into(), ca.clone(), cert.clone(), key.clone()];
        async move {
            let (code, out) = probe(&args.iter().map(String::as_str).collect::<Vec<_>>());
            (code == Some(0)).then_some(out)
        }
    })
    .await;
    assert!(ok.contains("SERVING"));
    // Checking the name too works with a name the certificate has.
    assert_eq!(probe(&[&addr, "--tls", &ca, &cert, &key, "--tls-server-name=localhost"]).0, Some(0));
    assert_eq!(probe(&[&addr, "--tls", &ca, &cert, &key, "--tls-server-name=elsewhere.example"]).0, Some(2));
    // A CA that did not sign the server: connection failure.
    let other = medusa_tests::test_certs_named(env.dir.path(), "other-");
    let (code, out) = probe(&[&addr, "--tls", &format!("--tls-ca-cert={}", other.ca.display()), &cert, &key]);
    assert_eq!(code, Some(2), "{out}");
    // No client certificate: the server refuses the handshake.
    let (code, out) = probe(&[&addr, "--tls", &ca]);
    assert_eq!(code, Some(2), "{out}");
    // Plaintext against a TLS server fails too.
    assert_ne!(probe(&[&addr]).0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn medusa_mode_dispatch() {
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    let entry = binary("medusa-entrypoint");
    for (mode, expected) in [(Some("BOGUS"), "not \"BOGUS\""), (None, "not \"\"")] {
        let mut c = Command::new(&entry);
        c.env_remove("MEDUSA_MODE");
        if let Some(m) = mode {
            c.env("MEDUSA_MODE", m);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("MEDUSA_MODE must be GRPC") && err.contains(expected), "{err}");
    }
    // RESTORE with nothing to restore: the init container's skip rule, exit 0.
    let out = Command::new(&entry)
        .args(["--config", env.ini_path.to_str().unwrap()])
        .env("MEDUSA_MODE", "RESTORE")
        .env_remove("BACKUP_NAME")
        .env_remove("RESTORE_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no restore requested"));
    // GRPC: the sidecar serves.
    let port = harness::services::free_port();
    let mut child = Command::new(&entry)
        .args(["--config", env.ini_path.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .env("MEDUSA_MODE", "GRPC")
        .env("MEDUSA_RS_STATE_DIR", &env.state_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    serving(port).await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), tokio::task::spawn_blocking(move || child.wait()))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    // The metrics port opens just after the gRPC port the sidecar fixture waits for.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("metrics port {port} not listening after 10 s: {e}"),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    out
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_backups_purges_and_restores() {
    let mport = harness::services::free_port();
    let mut o = EnvOptions::new(Kind::S3sFs);
    o.storage_extra = "max_backup_count = 1\nbackup_grace_period_in_days = 0\n".into();
    let env = Env::new(o).await.unwrap();
    let ini = std::fs::read_to_string(&env.ini_path).unwrap();
    std::fs::write(&env.ini_path, ini.replace("metrics_port = 0", &format!("metrics_port = {mport}"))).unwrap();
    let sidecar = Sidecar::start(&env).await.unwrap();
    let mut c = sidecar.client().await.unwrap();
    let m = scrape(mport);
    assert_eq!(value(&m, "medusa_last_successful_backup_timestamp_seconds"), 0.0);
    let live = env.with_sim(|s| harness::sim::digest_data_dir(&s.data_dir)).await;
    for (name, mode) in [("b1", Mode::Full), ("b2", Mode::Differential), ("b3", Mode::Differential)] {
        c.async_backup(pb::BackupRequest { name: name.into(), mode: mode as i32 }).await.unwrap();
        eventually(Duration::from_secs(60), "backup", || {
            let mut c = c.clone();
            async move {
                let s = c.backup_status(pb::BackupStatusRequest { backup_name: name.into() }).await.ok()?.into_inner();
                (s.status == StatusType::Success as i32).then_some(())
            }
        })
        .await;
    }
    let m = scrape(mport);
    assert_eq!(value(&m, "medusa_backups_started_total{mode=\"full\"}"), 1.0);
    assert_eq!(value(&m, "medusa_backups_succeeded_total{mode=\"full\"}"), 1.0);
    assert_eq!(value(&m, "medusa_backups_succeeded_total{mode=\"differential\"}"), 2.0);
    // full-1 and the first differential upload everything; the unchanged one reuses everything.
    assert_eq!(value(&m, "medusa_backup_uploaded_files_total"), 2.0 * live.files as f64);
    assert_eq!(value(&m, "medusa_backup_uploaded_bytes_total"), 2.0 * live.bytes as f64);
    assert_eq!(value(&m, "medusa_backup_reused_files_total"), live.files as f64);
    assert_eq!(value(&m, "medusa_backup_reused_bytes_total"), live.bytes as f64);
    assert_eq!(value(&m, "medusa_backup_duration_seconds_count"), 3.0);
    let now = chrono_now();
    assert!((now - value(&m, "medusa_last_successful_backup_timestamp_seconds")).abs() < 120.0);
    let r = c.purge_backups(pb::PurgeBackupsRequest {}).await.unwrap().into_inner();
    let m = scrape(mport);
    assert_eq!(value(&m, "medusa_purges_total"), 1.0);
    assert_eq!(value(&m, "medusa_purged_backups_total"), r.nb_backups_purged as f64);
    assert_eq!(value(&m, "medusa_purged_objects_total"), r.nb_objects_purged as f64);
    assert_eq!(value(&m, "medusa_purged_bytes_total"), r.total_purged_size as f64);
    // restore-init leaves its figures; the sidecar exposes them.
    let out = medusa_tests::restore_in_place(&env, "b3", "k");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m = scrape(mport);
    assert_eq!(value(&m, "medusa_restore_files"), live.files as f64);
    assert_eq!(value(&m, "medusa_restore_bytes"), live.bytes as f64);
    // A damaged restore.prom is left out; the rest of the scrape still answers.
    std::fs::write(env.state_dir.join("restore.prom"), "medusa_restore_files {garbage\n\u{0}").unwrap();
    let m = scrape(mport);
    assert!(!m.contains("medusa_restore_files") && m.contains("medusa_purges_total 1"), "{m}");
    // The last success survives a restart (a "time since the last backup" alert must not fire).
    let last = value(&m, "medusa_last_successful_backup_timestamp_seconds");
    drop(sidecar);
    let _sidecar = Sidecar::start(&env).await.unwrap();
    let m = scrape(mport);
    assert_eq!(value(&m, "medusa_last_successful_backup_timestamp_seconds"), last);
    assert_eq!(value(&m, "medusa_purges_total"), 0.0, "a new process: counters start again");
}

/// Metrics are on by default, on the documented port, without any configuration: the operator
/// renders `medusa.ini` and never writes `[monitoring]`. HEAD answers too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answer_on_the_default_port_without_configuration() {
    // The port must be free for this sidecar, and stay its own (see host.rs).
    let _default_ports = medusa_tests::host::DefaultPorts::take().await;
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    let ini = std::fs::read_to_string(&env.ini_path).unwrap();
    std::fs::write(&env.ini_path, ini.replace("[monitoring]\nmetrics_port = 0\n", "")).unwrap();
    let sidecar = Sidecar::start(&env).await.unwrap();
    let port = medusa::config::DEFAULT_METRICS_PORT;
    let m = scrape(port);
    assert!(m.contains("medusa_backups_started_total") && m.contains("medusa_storage_reachable"), "{m}");
    use std::io::{Read, Write};
    // Every address family: over IPv6 where this host has it.
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let mut s = std::net::TcpStream::connect(if ipv6 { ("::1", port) } else { ("127.0.0.1", port) }).unwrap();
    s.write_all(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    drop(sidecar);
}

fn chrono_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn example_configurations_parse() {
    let dir = harness::services::workspace_root().join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("ini") {
            continue;
        }
        let cfg = medusa::config::Config::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(cfg.warnings.is_empty(), "{}: {:?}", p.display(), cfg.warnings);
        assert!(cfg.kubernetes.use_mgmt_api && cfg.grpc.enabled, "{}", p.display());
        n += 1;
    }
    assert_eq!(n, 4);
}

/// Every metric the example Grafana dashboard queries is one medusa-rs exposes.
#[test]
fn dashboard_queries_metrics_that_exist() {
    let path = harness::services::workspace_root().join("examples/grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exposed = medusa::service::metrics::global().render();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("medusa_") {
                let name: String = expr[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let family = name.trim_end_matches("_sum").trim_end_matches("_count");
                assert!(exposed.contains(&format!("# TYPE {family} ")), "{family} has no TYPE line:\n{exposed}");
                queried += 1;
            }
        }
    }
    assert!(queried >= 10, "{queried}");
}

/// The Management API's certificate is verified like cass-operator's client verifies it: the
/// chain against `[kubernetes] ca_cert`, no host-name check, so a certificate without an IP SAN
/// for 127.0.0.1 works (as with Python Medusa); a certificate from another CA does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_api_mtls_verifies_the_chain_without_a_host_name() {
    use medusa::backup::cassandra::{Cassandra, ManagementApi};
    let dir = harness::services::TempDir::new("mgmt-tls").unwrap();
    let ours = mgmt_certs(dir.path(), "ours-");
    let theirs = mgmt_certs(dir.path(), "theirs-");
    let port = serve_tls_once_per_connection(&ours).await;
    let url = format!("http://127.0.0.1:{port}/api/v0/ops/node/snapshots");
    let k = |ca: &std::path::Path| {
        let ini = format!(
            "[storage]\nstorage_provider = local\nbucket_name = b\nbase_path = /tmp\n[kubernetes]\nenabled = 1\n\
             use_mgmt_api = 1\ncassandra_url = {url}\ntls_cert = {}\ntls_key = {}\nca_cert = {}\n",
            ours.client_cert.display(),
            ours.client_key.display(),
            ca.display()
        );
        medusa::config::Config::parse(&ini, "t").unwrap().kubernetes
    };
    let api = ManagementApi::new(&url, &k(&ours.ca)).unwrap();
    api.take_snapshot("t1").await.expect("a certificate without an IP SAN, signed by ca_cert, is accepted");
    let api = ManagementApi::new(&url, &k(&theirs.ca)).unwrap();
    let e = api.take_snapshot("t2").await.expect_err("a certificate of another CA is refused");
    assert!(e.to_string().contains("unreachable"), "{e}");
}

/// A CA, a server certificate naming only `cassandra-mgmt.internal` (no IP address), and a
/// client certificate.
fn mgmt_certs(dir: &std::path::Path, prefix: &str) -> medusa_tests::Certs {
    medusa_tests::test_certs_for(dir, prefix, &["cassandra-mgmt.internal"])
}

/// An HTTPS server on loopback requiring a client certificate of `c.ca`, answering every request
/// `200 OK` (what the Management API answers a snapshot request).
async fn serve_tls_once_per_connection(c: &medusa_tests::Certs) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(&c.ca).unwrap()).unwrap();
    let clients =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone()).build().unwrap();
    let chain = vec![CertificateDer::from_pem_file(&c.cert).unwrap()];
    let key = PrivateKeyDer::from_pem_file(&c.key).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(clients)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut buf = vec![0u8; 8192];
                let _ = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await;
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

/// cert-manager renews certificates in place: a new key pair written over the mounted files is
/// served to the next client without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_grpc_certificate_is_served_without_a_restart() {
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    let certs = medusa_tests::test_certs(env.dir.path());
    medusa_tests::enable_tls(&env, &certs);
    let sidecar = Sidecar::start(&env).await.unwrap();
    let renewed = medusa_tests::test_certs_named(env.dir.path(), "renewed-");
    let first = served_certificate(sidecar.port, &certs, &renewed).await;
    assert_eq!(first, pem_der(&certs.cert));
    std::fs::copy(&renewed.cert, &certs.cert).unwrap();
    std::fs::copy(&renewed.key, &certs.key).unwrap();
    let now = eventually(Duration::from_secs(10), "the renewed certificate to be served", || async {
        let got = served_certificate(sidecar.port, &certs, &renewed).await;
        (got != first).then_some(got)
    })
    .await;
    assert_eq!(now, pem_der(&renewed.cert));
    // And the service answers over it.
    let (code, out) = probe(&[
        &format!("--addr=:{}", sidecar.port),
        "--tls",
        &format!("--tls-ca-cert={}", renewed.ca.display()),
        &format!("--tls-client-cert={}", certs.client_cert.display()),
        &format!("--tls-client-key={}", certs.client_key.display()),
    ]);
    assert_eq!(code, Some(0), "{out}");
}

fn pem_der(path: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(path).unwrap().to_vec()
}

/// The certificate the server presents in a new TLS handshake (trusting either CA, presenting
/// the original client certificate).
async fn served_certificate(port: u16, certs: &medusa_tests::Certs, renewed: &medusa_tests::Certs) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(&certs.ca).unwrap()).unwrap();
    roots.add(CertificateDer::from_pem_file(&renewed.ca).unwrap()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_file(&certs.client_cert).unwrap()],
            PrivateKeyDer::from_pem_file(&certs.client_key).unwrap(),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}
