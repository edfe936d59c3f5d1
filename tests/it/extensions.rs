//! The `medusa_rs.v1.MedusaExtensions` service beside `Medusa`: reached through reflection by
//! grpcurl (no proto file), `Medusa` itself still exactly Medusa's, and `VerifyBackup` (on
//! request and on the `[verification]` schedule) finding a deleted and a truncated object, with
//! the metrics and the log saying so. (RestoreTables runs on real nodes: `cassandra.rs`.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use medusa::service::pb::backup_request::Mode;
use medusa::service::pb::{self, StatusType, ext};
use medusa_tests::{Env, EnvOptions, Kind, Sidecar, eventually};
use tonic::Code;

type ExtClient = ext::medusa_extensions_client::MedusaExtensionsClient<tonic::transport::Channel>;

const LIMIT: Duration = Duration::from_secs(120);

fn grpcurl(args: &[&str]) -> (Option<i32>, String) {
    let exe = harness::services::grpcurl().expect("grpcurl missing: run scripts/install-test-deps.sh");
    let out = std::process::Command::new(exe).args(["-max-time", "20"]).args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

async fn backed_up(env: &Env, sidecar: &Sidecar, name: &str) {
    let mut c = sidecar.client().await.unwrap();
    c.async_backup(pb::BackupRequest { name: name.into(), mode: Mode::Full as i32 }).await.unwrap();
    eventually(LIMIT, "the backup to finish", || {
        let mut c = c.clone();
        async move {
            let s = c.backup_status(pb::BackupStatusRequest { backup_name: name.into() }).await.ok()?.into_inner();
            (s.status == StatusType::Success as i32).then_some(())
        }
    })
    .await;
    let _ = env;
}

fn fixture_proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/medusa-py-0.31")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extension_service_answers_grpcurl_through_reflection() {
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    let sidecar = Sidecar::start(&env).await.unwrap();
    backed_up(&env, &sidecar, "b1").await;
    let addr = format!("127.0.0.1:{}", sidecar.port);
    let (code, out) = grpcurl(&["-plaintext", &addr, "list"]);
    assert_eq!(code, Some(0), "{out}");
    let services: Vec<&str> = out.lines().map(str::trim).collect();
    for s in ["Medusa", "medusa_rs.v1.MedusaExtensions", "grpc.health.v1.Health"] {
        assert!(services.contains(&s), "{s} not listed: {out}");
    }
    let (code, out) = grpcurl(&["-plaintext", &addr, "describe", "medusa_rs.v1.MedusaExtensions"]);
    assert_eq!(code, Some(0), "{out}");
    for rpc in ["RestoreTables", "RestoreTablesStatus", "VerifyBackup", "PurgeDecommissioned"] {
        assert!(out.contains(&format!("rpc {rpc} (")), "{rpc}: {out}");
    }
    let (code, out) =
        grpcurl(&["-plaintext", "-d", r#"{"backupName": "b1"}"#, &addr, "medusa_rs.v1.MedusaExtensions/VerifyBackup"]);
    assert_eq!(code, Some(0), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["backupName"], "b1", "{out}");
    assert_eq!(v["ok"], true, "{out}");
    assert!(v["objectsChecked"].as_str().unwrap_or("0").parse::<u64>().unwrap() > 0, "{out}");
    let (code, out) = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"apply": false}"#,
        &addr,
        "medusa_rs.v1.MedusaExtensions/PurgeDecommissioned",
    ]);
    assert_eq!(code, Some(0), "{out}");
    // Errors carry their codes: grpcurl exits 64 + code.
    let (code, out) = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"jobId": "rt-nope"}"#,
        &addr,
        "medusa_rs.v1.MedusaExtensions/RestoreTablesStatus",
    ]);
    assert_eq!(code, Some(64 + Code::NotFound as i32), "{out}");
    let (code, out) = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"backupName": "b1", "tables": ["system.local"]}"#,
        &addr,
        "medusa_rs.v1.MedusaExtensions/RestoreTables",
    ]);
    assert_eq!(code, Some(64 + Code::InvalidArgument as i32), "{out}");
    assert!(out.contains("restore init container"), "the message says what to do instead: {out}");
    let (code, out) = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"backupName": "nope", "tables": ["ks1"]}"#,
        &addr,
        "medusa_rs.v1.MedusaExtensions/RestoreTables",
    ]);
    assert_eq!(code, Some(64 + Code::NotFound as i32), "{out}");
}

/// What reflection serves for `Medusa` is what Medusa's own `medusa.proto` (0.31, a copy in the
/// fixtures) says: the service's methods are the same, and every message keeps each of Medusa's
/// fields; the only extra fields are medusa-rs' own, numbered from 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_medusa_service_is_medusas_own_through_reflection() {
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    let sidecar = Sidecar::start(&env).await.unwrap();
    let addr = format!("127.0.0.1:{}", sidecar.port);
    let dir = fixture_proto_dir();
    let theirs = |what: &str| {
        let (code, out) = grpcurl(&["-import-path", dir.to_str().unwrap(), "-proto", "medusa.proto", "describe", what]);
        assert_eq!(code, Some(0), "{out}");
        out
    };
    let ours = |what: &str| {
        let (code, out) = grpcurl(&["-plaintext", &addr, "describe", what]);
        assert_eq!(code, Some(0), "{out}");
        out
    };
    assert_eq!(ours("Medusa"), theirs("Medusa"), "the Medusa service differs from Medusa's");
    let proto = std::fs::read_to_string(dir.join("medusa.proto")).unwrap();
    let types: Vec<&str> = proto
        .lines()
        .filter_map(|l| l.strip_prefix("message ").or_else(|| l.strip_prefix("enum ")))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(types.len() >= 15, "{types:?}");
    let field_lines = |text: &str| -> Vec<String> {
        text.lines().map(str::trim).filter(|l| l.ends_with(';') && l.contains('=')).map(str::to_string).collect()
    };
    let number =
        |line: &str| -> u32 { line.rsplit('=').next().unwrap().trim().trim_end_matches(';').trim().parse().unwrap() };
    for t in types {
        let (theirs, ours) = (field_lines(&theirs(&format!(".{t}"))), field_lines(&ours(&format!(".{t}"))));
        for f in &theirs {
            assert!(ours.contains(f), "{t}: Medusa's `{f}` is not served as it is; served: {ours:?}");
        }
        for f in ours.iter().filter(|f| !theirs.contains(f)) {
            assert!(number(f) >= 100, "{t}: `{f}` is not Medusa's and not numbered from 100");
        }
    }
}

fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
}

/// Waits until the scheduled verification has reported `ok` with `problems` problems.
async fn scheduled(port: u16, after: f64, ok: f64, problems: f64) -> String {
    eventually(LIMIT, "a scheduled verification", || async move {
        let m = scrape(port);
        let done = value(&m, "medusa_verify_last_timestamp_seconds")? > after
            && value(&m, "medusa_verify_last_success")? == ok
            && value(&m, "medusa_verify_last_problems")? == problems;
        done.then_some(m)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_backup_names_a_deleted_and_a_truncated_object_and_the_metrics_show_it() {
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    let mport = harness::services::free_port();
    let ini = std::fs::read_to_string(&env.ini_path).unwrap();
    // Every 2 s, presence and size.
    let ini = ini.replace("metrics_port = 0", &format!("metrics_port = {mport}"))
        + "\n[verification]\ninterval_hours = 0.00056\ndeep = 0\n";
    std::fs::write(&env.ini_path, ini).unwrap();
    let sidecar = Sidecar::start(&env).await.unwrap();
    backed_up(&env, &sidecar, "v1").await;
    let mut c = ExtClient::connect(sidecar.url()).await.unwrap();
    let sound = c.verify_backup(ext::VerifyBackupRequest { backup_name: "v1".into(), deep: true }).await.unwrap();
    let sound = sound.into_inner();
    assert!(sound.ok && sound.problems.is_empty(), "{sound:?}");
    assert!(
        sound.objects_checked > 2 && sound.objects_rehashed + sound.objects_size_only == sound.objects_checked,
        "{sound:?}"
    );
    let m = scheduled(mport, 0.0, 1.0, 0.0).await;
    assert_eq!(value(&m, "medusa_verify_last_objects_checked"), Some(sound.objects_checked as f64), "{m}");
    let t0 = value(&m, "medusa_verify_last_timestamp_seconds").unwrap();

    // One data object deleted, another cut short.
    let medusa_tests::Backend::Local(local) = &env.backend else { unreachable!() };
    let data = local.bucket_dir().join(format!("demo/{}/v1/data", env.fqdn));
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(&data)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && e.metadata().unwrap().len() > 10)
        .map(|e| e.into_path())
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    std::fs::remove_file(&files[0]).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&files[1]).unwrap();
    f.set_len(5).unwrap();
    let key = |p: &Path| p.strip_prefix(local.bucket_dir()).unwrap().to_string_lossy().into_owned();
    let (deleted, truncated) = (key(&files[0]), key(&files[1]));

    for deep in [false, true] {
        let r =
            c.verify_backup(ext::VerifyBackupRequest { backup_name: String::new(), deep }).await.unwrap().into_inner();
        assert_eq!(r.backup_name, "v1", "the latest complete backup");
        assert!(!r.ok, "{r:?}");
        assert_eq!(r.problems.len(), 2, "deep {deep}: {r:?}");
        let about = |k: &str| r.problems.iter().find(|p| p.key == k).map(|p| p.problem.clone());
        assert_eq!(about(&deleted).as_deref(), Some("missing"), "{r:?}");
        assert!(about(&truncated).unwrap_or_default().contains("truncated"), "{r:?}");
    }
    let m = scheduled(mport, t0, 0.0, 2.0).await;
    assert!(value(&m, "medusa_verifications_total").unwrap() >= 3.0, "{m}");
    let log = sidecar.log_text();
    for k in [&deleted, &truncated] {
        assert!(
            log.lines().any(|l| l.contains("verification found a problem") && l.contains(k.as_str())),
            "{k} not logged:\n{log}"
        );
    }
    let e = c.verify_backup(ext::VerifyBackupRequest { backup_name: "nope".into(), deep: false }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = c.verify_backup(ext::VerifyBackupRequest { backup_name: "../x".into(), deep: false }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
}
