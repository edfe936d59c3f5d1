//! No secret in any log line: backup, purge, GetBackups and restore with `RUST_LOG=trace` (every
//! crate, every level, the HTTP clients included) against S3 (s3s-fs) and Azure (azurite), then
//! every line of every log (sidecar, restore init container, CLI) is searched for each secret
//! value: the S3 access key id and secret key, the Azure account key, and the key file contents.

use std::time::{Duration, Instant};

use harness::services::{AZURITE_KEY, S3_ACCESS_KEY, S3_SECRET_KEY};
use medusa::service::pb;
use medusa::service::pb::StatusType;
use medusa_tests::{Env, EnvOptions, Kind, Sidecar, binary, restore_command};

/// Runs a backup, GetBackups, a purge over gRPC, a restore and the CLI, all logging at TRACE;
/// returns everything they printed.
async fn everything_logged(kind: Kind) -> String {
    let mut o = EnvOptions::new(kind);
    o.storage_extra = "max_backup_count = 1\n".into();
    let env = Env::new(o).await.unwrap();
    let mut logs = String::new();
    {
        let sidecar = Sidecar::start_with(&env, &[("RUST_LOG", "trace")]).await.unwrap();
        let mut c = sidecar.client().await.unwrap();
        for name in ["s1", "s2"] {
            c.async_backup(pb::BackupRequest { name: name.into(), mode: pb::backup_request::Mode::Full as i32 })
                .await
                .unwrap();
            let t0 = Instant::now();
            loop {
                let s =
                    c.backup_status(pb::BackupStatusRequest { backup_name: name.into() }).await.unwrap().into_inner();
                if s.status == StatusType::Success as i32 {
                    break;
                }
                assert_ne!(s.status, StatusType::Failed as i32, "{}", s.error);
                assert!(t0.elapsed() < Duration::from_secs(180));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        c.get_backups(pb::GetBackupsRequest {}).await.unwrap();
        let purged = c.purge_backups(pb::PurgeBackupsRequest {}).await.unwrap().into_inner();
        assert_eq!(purged.nb_backups_purged, 1, "the purge ran");
        logs.push_str(&sidecar.log_text());
    }
    let mut cmd = restore_command(&env, "s2", "key-1");
    cmd.env("RUST_LOG", "trace");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    logs.push_str(&String::from_utf8_lossy(&out.stdout));
    logs.push_str(&String::from_utf8_lossy(&out.stderr));
    let ini = env.ini_path.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary("medusa-rs"))
            .args(["--config", ini.to_str().unwrap(), "verify", "--backup-name", "s2", "--deep"])
            .env("RUST_LOG", "trace")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    logs.push_str(&String::from_utf8_lossy(&out.stdout));
    logs.push_str(&String::from_utf8_lossy(&out.stderr));
    logs
}

fn assert_no_secret(logs: &str, secrets: &[(&str, &str)]) {
    let lines = logs.lines().count();
    assert!(lines > 1000, "TRACE logging was on ({lines} lines)");
    for (what, value) in secrets {
        let hits: Vec<&str> = logs.lines().filter(|l| l.contains(value)).take(3).collect();
        assert!(hits.is_empty(), "the {what} appears in the logs: {hits:#?}");
    }
    println!("{lines} log lines searched for {} secrets: none found", secrets.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_keys_never_reach_the_logs() {
    let logs = everything_logged(Kind::S3sFs).await;
    assert_no_secret(&logs, &[("S3 secret key", S3_SECRET_KEY), ("S3 access key id", S3_ACCESS_KEY)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_key_never_reaches_the_logs() {
    let logs = everything_logged(Kind::Azurite).await;
    // The key, and its first 24 characters (a log could cut it).
    assert_no_secret(&logs, &[("Azure account key", AZURITE_KEY), ("Azure account key (prefix)", &AZURITE_KEY[..24])]);
}
