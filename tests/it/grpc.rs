//! The sidecar binary over TCP with Medusa's generated client: the operator's flow, honest
//! status across failures and restarts, deletes that never match by prefix, health through
//! shutdown, TLS, reflection, and the error codes.

use std::time::Duration;

use medusa::service::pb::backup_request::Mode;
use medusa::service::pb::{self, StatusType};
use medusa_tests::{Env, EnvOptions, Kind, ProxyMode, Sidecar, eventually};
use nix::sys::signal::Signal;
use tonic::Code;

type Client = pb::medusa_client::MedusaClient<tonic::transport::Channel>;

const LIMIT: Duration = Duration::from_secs(120);

async fn start_backup(c: &mut Client, name: &str, mode: Mode) -> pb::BackupResponse {
    c.async_backup(pb::BackupRequest { name: name.into(), mode: mode as i32 }).await.unwrap().into_inner()
}

async fn status(c: &mut Client, name: &str) -> Result<pb::BackupStatusResponse, tonic::Status> {
    c.backup_status(pb::BackupStatusRequest { backup_name: name.into() }).await.map(|r| r.into_inner())
}

async fn wait_done(c: &mut Client, name: &str) -> pb::BackupStatusResponse {
    eventually(LIMIT, "backup to finish", || {
        let mut c = c.clone();
        let name = name.to_string();
        async move {
            let s = status(&mut c, &name).await.expect("BackupStatus never fails for an accepted backup");
            (s.status != StatusType::InProgress as i32).then_some(s)
        }
    })
    .await
}

async fn summaries(c: &mut Client) -> pb::GetBackupsResponse {
    c.get_backups(pb::GetBackupsRequest {}).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_flow_backup_status_and_summaries() {
    let env = Env::new(EnvOptions::new(Kind::S3sFs)).await.unwrap();
    let sidecar = Sidecar::start(&env).await.unwrap();
    let mut c = sidecar.client().await.unwrap();
    // ps and top show its name, not "exe" (it executes itself again once to limit malloc arenas).
    let pid = sidecar.child.as_ref().unwrap().id();
    assert_eq!(std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap(), "medusa-sidecar\n");

    let r = start_backup(&mut c, "medusa-backup-1", Mode::Full).await;
    assert_eq!(r.backup_name, "medusa-backup-1");
    assert_eq!(r.status, StatusType::InProgress as i32);
    // Never NOT_FOUND for an accepted backup, even before anything reached storage.
    let s = status(&mut c, "medusa-backup-1").await.unwrap();
    assert!(s.status == StatusType::InProgress as i32 || s.status == StatusType::Success as i32);
    assert!(!s.start_time.is_empty());
    let s = wait_done(&mut c, "medusa-backup-1").await;
    assert_eq!(s.status, StatusType::Success as i32, "{}: {}", s.error, sidecar.log_text());
    assert_eq!(s.start_time.len(), "2024-06-01 12:00:00".len());
    assert_eq!(s.finish_time.len(), "2024-06-01 12:00:00".len());
    assert!(s.files_total > 0 && s.files_done == s.files_total, "{s:?}");

    let live = env.with_sim(|s| harness::sim::digest_data_dir(&s.data_dir)).await;
    let tokens = env.with_sim(|s| s.tokens.clone()).await;
    let all = summaries(&mut c).await;
    assert_eq!(all.overall_status, StatusType::Success as i32);
    assert_eq!(all.backups.len(), 1);
    let b = &all.backups[0];
    assert_eq!(b.backup_name, "medusa-backup-1");
    assert_eq!((b.total_nodes, b.finished_nodes), (1, 1));
    assert_eq!(b.status, StatusType::Success as i32);
    assert_eq!(b.backup_type, "full");
    assert_eq!(b.total_objects as u64, live.files);
    assert_eq!(b.total_size as u64, live.bytes);
    assert!(b.start_time > 0 && b.finish_time >= b.start_time);
    assert_eq!(b.nodes.len(), 1);
    assert_eq!(b.nodes[0].host, env.fqdn);
    assert_eq!(b.nodes[0].tokens, tokens);
    assert_eq!((b.nodes[0].datacenter.as_str(), b.nodes[0].rack.as_str()), ("dc1", "default"));

    // The synchronous Backup of a name this sidecar finished answers at once (it once waited
    // for ever: the job's end was announced to nobody and so never stored): ALREADY_EXISTS,
    // the stored backup untouched (see `a_complete_backup_name_is_never_taken_again`).
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        c.backup(pb::BackupRequest { name: "medusa-backup-1".into(), mode: Mode::Full as i32 }),
    )
    .await
    .expect("Backup of a finished job answers at once")
    .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e}");
    assert!(e.message().contains("choose another name"), "{e}");
    // GetBackup for one name; a differential next.
    let one = c.get_backup(pb::GetBackupRequest { backup_name: "medusa-backup-1".into() }).await.unwrap().into_inner();
    assert_eq!(one.backup.unwrap().total_objects as u64, live.files);
    start_backup(&mut c, "medusa-backup-2", Mode::Differential).await;
    assert_eq!(wait_done(&mut c, "medusa-backup-2").await.status, StatusType::Success as i32);
    let all = summaries(&mut c).await;
    let names: Vec<_> = all.backups.iter().map(|b| (b.backup_name.as_str(), b.backup_type.as_str())).collect();
    assert_eq!(names, [("medusa-backup-1", "full"), ("medusa-backup-2", "differential")]);
    // The synchronous Backup runs a new one to its end.
    let sync = tokio::time::timeout(
        LIMIT,
        c.backup(pb::BackupRequest { name: "medusa-backup-3".into(), mode: Mode::Differential as i32 }),
    )
    .await
    .expect("Backup within the limit")
    .unwrap()
    .into_inner();
    assert_eq!(sync.status, StatusType::Success as i32);
    assert_eq!(status(&mut c, "medusa-backup-3").await.unwrap().status, StatusType::Success as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_outage_is_reported_failed_with_a_reason() {
    let mut o = EnvOptions::new(Kind::S3sFs);
    o.proxy = Some(ProxyMode::Tcp);
    let env = Env::new(o).await.unwrap();
    let sidecar = Sidecar::start(&env).await.unwrap();
    let mut c = sidecar.client().await.unwrap();
    env.proxy.as_ref().unwrap().break_after(256 << 10);
    start_backup(&mut c, "b-outage", Mode::Full).await;
    let s = wait_done(&mut c, "b-outage").await;
    assert_eq!(s.status, StatusType::Failed as i32);
    assert!(s.error.contains("storage"), "reason: {}", s.error);
    // While storage is down, listing says UNAVAILABLE rather than a wrong answer.
    let e = c.get_backups(pb::GetBackupsRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    env.proxy.as_ref().unwrap().heal();
    let all = summaries(&mut c).await;
    let b = all.backups.iter().find(|b| b.backup_name == "b-outage").expect("listed");
    assert_eq!(b.status, StatusType::Failed as i32, "a failed backup is not IN_PROGRESS forever");
    assert_eq!(all.overall_status, StatusType::Failed as i32);
    // The name cannot be reused while the incomplete backup exists.
    let e = c.async_backup(pb::BackupRequest { name: "b-outage".into(), mode: 1 }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("delete it or choose another name"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_backup_reports_failed_after_restart_and_recovers() {
    let mut o = EnvOptions::new(Kind::S3sFs);
    o.storage_extra = "transfer_max_bandwidth = 512KB/s\n".into();
    let env = Env::new(o).await.unwrap();
    let mut sidecar = Sidecar::start(&env).await.unwrap();
    let mut c = sidecar.client().await.unwrap();
    start_backup(&mut c, "b-killed", Mode::Full).await;
    eventually(LIMIT, "uploads to start", || {
        let mut c = c.clone();
        async move { status(&mut c, "b-killed").await.ok().filter(|s| s.bytes_done > 0).map(drop) }
    })
    .await;
    assert!(env.with_sim(|s| s.snapshot_exists("medusa-b-killed")).await);
    sidecar.signal(Signal::SIGKILL);
    sidecar.wait_exit(Duration::from_secs(10)).await.unwrap();

    let sidecar = Sidecar::start(&env).await.unwrap();
    let mut c = sidecar.client().await.unwrap();
    let s = status(&mut c, "b-killed").await.unwrap();
    assert_eq!(s.status, StatusType::Failed as i32);
    assert!(s.error.contains("stopped while this backup was running"), "{}", s.error);
    eventually(Duration::from_secs(20), "the interrupted snapshot to be cleared", || {
        let sim = env.sim.clone();
        async move { (!sim.lock().unwrap().snapshot_exists("medusa-b-killed")).then_some(()) }
    })
    .await;
    let all = summaries(&mut c).await;
    assert_eq!(all.backups.iter().find(|b| b.backup_name == "b-killed").unwrap().status, StatusType::Failed as i32);
    start_backup(&mut c, "b-next", Mode::Full).await;
    assert_eq!(wait_done(&mut c, "b-next").await.status, StatusType::Success as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_never_matches_by_prefix_and_refuses_a_running_backup() {
    let mut o = EnvOptions::new(Kind::Local);
    o.storage_extra = String::new();
    let env = Env::new(o).await.unwrap();
    let sidecar = Sidecar::start(&env).await.unwrap();
    let mut c = sidecar.client().await.unwrap();
    for name in ["b1", "b10", "b1-old"] {
        start_backup(&mut c, name, Mode::Full).await;
        assert_eq!(wait_done(&mut c, name).await.status, StatusType::Success as i32);
    }
    let node = env.node().unwrap();
    let before = medusa_tests::list_all(&node).await.unwrap();
    let r = c.delete_backup(pb::DeleteBackupRequest { name: "b1".into() }).await.unwrap().into_inner();
    assert_eq!((r.name.as_str(), r.status), ("b1", StatusType::Success as i32));
    let after = medusa_tests::list_all(&node).await.unwrap();
    let gone: Vec<_> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    assert!(!gone.is_empty());
    for k in &gone {
        let parts: Vec<&str> = k.split('/').collect();
        assert!(parts.contains(&"b1"), "deleted {k}");
        assert!(!parts.contains(&"b10") && !parts.contains(&"b1-old"), "deleted {k}");
    }
    for k in after.keys() {
        assert!(!k.contains("/b1/meta/") && !k.contains("backup_index/b1/"), "left {k}");
    }
    let mut names: Vec<_> = summaries(&mut c).await.backups.into_iter().map(|b| b.backup_name).collect();
    names.sort();
    assert_eq!(names, ["b1-old", "b10"]);
    let e = c.delete_backup(pb::DeleteBackupRequest { name: "b1".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // A running backup cannot be deleted.
    env.api.faults().delay_snapshot_ms.store(3000, std::sync::atomic::Ordering::SeqCst);
    start_backup(&mut c, "b-running", Mode::Full).await;
    let e = c.delete_backup(pb::DeleteBackupRequest { name: "b-running".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_codes_say_what_to_fix() {
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    let sidecar = Sidecar::start(&env).await.unwrap();
    let mut c = sidecar.client().await.unwrap();
    for bad in ["", "a/b", "..", "x\ny"] {
        let e = c.async_backup(pb::BackupRequest { name: bad.into(), mode: 0 }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e}");
        assert!(e.message().contains("backup name"), "{e}");
        let e = status(&mut c, bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }
    let e = status(&mut c, "nope").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("nope") && e.message().contains("does not exist"), "{e}");
    let e = c.get_backup(pb::GetBackupRequest { backup_name: "nope".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c.delete_backup(pb::DeleteBackupRequest { name: "nope".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // PrepareRestore's datacenter is bounded and printable (checked before the backup is looked up).
    for (dc, why) in [("x".repeat(300), "at most 255 bytes"), ("dc\n1".into(), "control characters")] {
        let req = pb::PrepareRestoreRequest { backup_name: "nope".into(), datacenter: dc, restore_key: "k".into() };
        let e = c.prepare_restore(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        assert!(e.message().contains("datacenter") && e.message().contains(why), "{e}");
        assert!(e.message().len() < 400, "{e}");
    }
    let all = summaries(&mut c).await;
    assert_eq!((all.backups.len(), all.overall_status), (0, StatusType::Unknown as i32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_goes_not_serving_during_shutdown_and_exit_is_clean() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let mut o = EnvOptions::new(Kind::S3sFs);
    o.storage_extra = "transfer_max_bandwidth = 256KB/s\n".into();
    let env = Env::new(o).await.unwrap();
    let mut sidecar = Sidecar::start_with(&env, &[("MEDUSA_RS_SHUTDOWN_GRACE", "3")]).await.unwrap();
    let ch = tonic::transport::Endpoint::from_shared(sidecar.url()).unwrap().connect().await.unwrap();
    let h = HealthClient::new(ch);
    let check = |svc: &'static str| {
        let mut h = h.clone();
        async move { h.check(HealthCheckRequest { service: svc.into() }).await }
    };
    let serving = eventually(Duration::from_secs(20), "SERVING", || async {
        let s = check("").await.ok()?.into_inner().status;
        (s == ServingStatus::Serving as i32).then_some(s)
    })
    .await;
    assert_eq!(serving, ServingStatus::Serving as i32);
    assert_eq!(check("Medusa").await.unwrap().into_inner().status, ServingStatus::Serving as i32);
    assert_eq!(check("nope").await.unwrap_err().code(), Code::NotFound);

    let mut c = sidecar.client().await.unwrap();
    start_backup(&mut c, "b-drain", Mode::Full).await;
    eventually(LIMIT, "uploads to start", || {
        let mut c = c.clone();
        async move { status(&mut c, "b-drain").await.ok().filter(|s| s.bytes_done > 0).map(drop) }
    })
    .await;
    sidecar.signal(Signal::SIGTERM);
    eventually(Duration::from_secs(5), "NOT_SERVING", || async {
        let s = check("").await.ok()?.into_inner().status;
        (s == ServingStatus::NotServing as i32).then_some(())
    })
    .await;
    let e = c.async_backup(pb::BackupRequest { name: "b-late".into(), mode: 1 }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert_eq!(sidecar.wait_exit(Duration::from_secs(30)).await.unwrap(), Some(0), "{}", sidecar.log_text());
    assert!(!env.with_sim(|s| s.snapshot_exists("medusa-b-drain")).await, "snapshot cleared");
    // The stopped backup is FAILED, not IN_PROGRESS, after a restart.
    let sidecar = Sidecar::start(&env).await.unwrap();
    let mut c = sidecar.client().await.unwrap();
    let s = status(&mut c, "b-drain").await.unwrap();
    assert_eq!(s.status, StatusType::Failed as i32, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_requires_a_client_certificate() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    let certs = medusa_tests::test_certs(env.dir.path());
    medusa_tests::enable_tls(&env, &certs);
    let medusa_tests::Certs { ca, client_cert, client_key, .. } = certs;
    let sidecar = Sidecar::start(&env).await.unwrap();
    let url = format!("https://localhost:{}", sidecar.port);
    let ca_pem = std::fs::read(&ca).unwrap();
    let with_id = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca_pem))
        .identity(Identity::from_pem(std::fs::read(&client_cert).unwrap(), std::fs::read(&client_key).unwrap()));
    let ch = match Endpoint::from_shared(url.clone()).unwrap().tls_config(with_id).unwrap().connect().await {
        Ok(ch) => ch,
        Err(e) => panic!("{e:?}\n{}", sidecar.log_text()),
    };
    let all = Client::new(ch).get_backups(pb::GetBackupsRequest {}).await.unwrap().into_inner();
    assert_eq!(all.backups.len(), 0);
    // Without a client certificate the handshake is refused.
    let without = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem));
    let r = async {
        let ch = Endpoint::from_shared(url.clone())?.tls_config(without)?.connect().await?;
        Client::new(ch).get_backups(pb::GetBackupsRequest {}).await.map_err(|e| e.into())
    };
    let r: Result<_, Box<dyn std::error::Error>> = r.await;
    assert!(r.is_err(), "a client without a certificate was served");
    // Plaintext is not served either.
    let plain = Endpoint::from_shared(sidecar.url()).unwrap().connect().await;
    if let Ok(ch) = plain {
        assert!(Client::new(ch).get_backups(pb::GetBackupsRequest {}).await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_serves_grpcurl_without_the_proto() {
    let grpcurl = harness::services::grpcurl().expect("grpcurl missing: run scripts/install-test-deps.sh");
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    let sidecar = Sidecar::start(&env).await.unwrap();
    let addr = format!("127.0.0.1:{}", sidecar.port);
    let run = |args: &[&str]| {
        let out =
            std::process::Command::new(&grpcurl).args(["-plaintext", "-max-time", "10"]).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (code, out) = run(&[&addr, "list"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.lines().any(|l| l.trim() == "Medusa"), "{out}");
    assert!(out.contains("grpc.health.v1.Health"), "{out}");
    let (code, out) = run(&[&addr, "describe", "Medusa"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("rpc AsyncBackup ( .BackupRequest ) returns ( .BackupResponse )"), "{out}");
    let (code, out) = run(&["-d", "{}", &addr, "Medusa/GetBackups"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&["-d", r#"{"backupName": "nope"}"#, &addr, "Medusa/BackupStatus"]);
    assert_eq!(code, Some(64 + 5), "NOT_FOUND: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_restore_writes_the_mapping_that_restore_init_reads() {
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    let sidecar = Sidecar::start(&env).await.unwrap();
    let mut c = sidecar.client().await.unwrap();
    start_backup(&mut c, "b1", Mode::Full).await;
    assert_eq!(wait_done(&mut c, "b1").await.status, StatusType::Success as i32);
    let prep = |backup: &str, dc: &str, key: &str| pb::PrepareRestoreRequest {
        backup_name: backup.into(),
        datacenter: dc.into(),
        restore_key: key.into(),
    };
    assert_eq!(c.prepare_restore(prep("", "dc1", "k")).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(c.prepare_restore(prep("b1", "dc1", "../k")).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(c.prepare_restore(prep("nope", "dc1", "k")).await.unwrap_err().code(), Code::NotFound);
    // k8ssandra-operator sends the CassandraDatacenter object's name, which differs from the
    // datacenter's name when `datacenterName` overrides it: accepted, this node's DC is used.
    c.prepare_restore(prep("b1", "demo-dc1-object", "key-cr")).await.unwrap();
    c.prepare_restore(prep("b1", "dc1", "key-42")).await.unwrap();
    let root = env.sim.lock().unwrap().root.clone();
    let file = std::fs::read_to_string(root.join(".restore_mapping/key-42")).unwrap();
    assert_eq!(
        file,
        format!(r#"{{"in_place": true, "host_map": {{"{f}": {{"source": ["{f}"], "seed": false}}}}}}"#, f = env.fqdn)
    );
    assert_eq!(std::fs::read_to_string(root.join(".restore_mapping/key-cr")).unwrap(), file);
    // restore-init without RESTORE_MAPPING uses that file.
    let before = env.with_sim(|s| harness::sim::digest_data_dir(&s.data_dir)).await;
    env.with_sim(|s| s.wipe().unwrap()).await;
    let out = medusa_tests::restore_in_place(&env, "b1", "key-42");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after = env.with_sim(|s| harness::sim::digest_data_dir(&s.data_dir)).await;
    assert!(after == before, "{}", before.diff(&after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_restarts_the_sidecar_only_when_idle() {
    let mut o = EnvOptions::new(Kind::S3sFs);
    // Per transfer: with the env's two transfers, 512 KB/s in all.
    o.storage_extra = "transfer_max_bandwidth = 256KB/s\n".into();
    let env = Env::new(o).await.unwrap();
    let mut sidecar = Sidecar::start_with(&env, &[("MEDUSA_RS_CONFIG_POLL", "1")]).await.unwrap();
    let mut c = sidecar.client().await.unwrap();
    start_backup(&mut c, "b-reload", Mode::Full).await;
    eventually(LIMIT, "uploads to start", || {
        let mut c = c.clone();
        async move { status(&mut c, "b-reload").await.ok().filter(|s| s.bytes_done > 0).map(drop) }
    })
    .await;
    let ini = std::fs::read_to_string(&env.ini_path).unwrap();
    std::fs::write(&env.ini_path, ini.replace("transfer_max_bandwidth = 256KB/s", "transfer_max_bandwidth = 0"))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(sidecar.child.as_mut().unwrap().try_wait().unwrap().is_none(), "restarted under a running backup");
    assert_eq!(wait_done(&mut c, "b-reload").await.status, StatusType::Success as i32);
    assert_eq!(sidecar.wait_exit(Duration::from_secs(20)).await.unwrap(), Some(0));
    assert!(sidecar.log_text().contains("configuration changed"), "{}", sidecar.log_text());
    // Started again (as Kubernetes restarts the container), it serves with the new settings.
    let sidecar = Sidecar::start(&env).await.unwrap();
    let mut c = sidecar.client().await.unwrap();
    assert_eq!(status(&mut c, "b-reload").await.unwrap().status, StatusType::Success as i32);
}

/// A re-created MedusaBackupJob sends AsyncBackup with the name of a complete backup: the
/// operator polls BackupStatus next, which must say FAILED (with why) rather than SUCCESS for
/// the old data, while the stored backup stays intact and listed SUCCESS. Whether the name was
/// finished by this process, remembered in the journal over a restart, or only in storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_backup_name_is_never_taken_again() {
    let mut o = EnvOptions::new(Kind::S3sFs);
    o.proxy = Some(ProxyMode::Http);
    let env = Env::new(o).await.unwrap();
    let node = env.node().unwrap();
    let mut sidecar = Sidecar::start(&env).await.unwrap();
    let mut c = sidecar.client().await.unwrap();
    start_backup(&mut c, "taken", Mode::Full).await;
    assert_eq!(wait_done(&mut c, "taken").await.status, StatusType::Success as i32);
    let stored = medusa_tests::list_all(&node).await.unwrap();
    let taken = || env.api.calls().iter().filter(|c| c.starts_with("POST") && c.contains("snapshot")).count();
    let snapshots = taken();

    let refused = |s: &pb::BackupStatusResponse| {
        s.status == StatusType::Failed as i32 && s.error.contains("already exists") && s.error.contains("another name")
    };
    for round in ["same process", "after a restart", "with a lost state directory"] {
        if round != "same process" {
            sidecar.signal(Signal::SIGTERM);
            sidecar.wait_exit(Duration::from_secs(20)).await.unwrap();
            if round == "with a lost state directory" {
                std::fs::remove_dir_all(&env.state_dir).unwrap();
            }
            sidecar = Sidecar::start(&env).await.unwrap();
            c = sidecar.client().await.unwrap();
        }
        let r = start_backup(&mut c, "taken", Mode::Differential).await;
        assert_eq!(r.status, StatusType::InProgress as i32, "{round}");
        let s = wait_done(&mut c, "taken").await;
        assert!(refused(&s), "{round}: {s:?}");
        // Nothing written, no snapshot taken, the backup still listed complete.
        assert_eq!(medusa_tests::list_all(&node).await.unwrap(), stored, "{round}");
        assert_eq!(taken(), snapshots, "{round}: no snapshot taken for a refused name");
        let all = summaries(&mut c).await;
        let b = all.backups.iter().find(|b| b.backup_name == "taken").unwrap();
        assert_eq!(b.status, StatusType::Success as i32, "{round}");
    }

    // AsyncBackup does not wait on storage: with every request held for 3 s, three pods'
    // worth of calls in a row still answer at once (the jobs then wait and finish).
    env.proxy.as_ref().unwrap().set_delay(Duration::from_secs(3));
    let t0 = std::time::Instant::now();
    for name in ["slow-1", "slow-2", "slow-3"] {
        let r = start_backup(&mut c, name, Mode::Full).await;
        assert_eq!(r.status, StatusType::InProgress as i32);
    }
    assert!(t0.elapsed() < Duration::from_millis(1500), "AsyncBackup waited {:?}", t0.elapsed());
    env.proxy.as_ref().unwrap().heal();
    for name in ["slow-1", "slow-2", "slow-3"] {
        assert_eq!(wait_done(&mut c, name).await.status, StatusType::Success as i32);
    }
}
