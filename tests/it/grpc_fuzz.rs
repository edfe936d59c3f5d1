//! A property test of every gRPC request field: a few hundred requests of every RPC whose string
//! fields are drawn from hostile shapes (empty, `..`, slashes, control characters, NUL, very
//! long, padded, non-ASCII, random) and whose enum values are any `i32`, sent by the generated
//! client over TCP to a real sidecar. Every answer must be OK or a status whose code says what
//! kind of problem it is (never UNKNOWN or INTERNAL) with a message; the sidecar must stay
//! SERVING and log no panic. The seed is printed; `MEDUSA_RS_FUZZ_SEED` replays a run.

use std::time::Duration;

use medusa::format::layout::Mode;
use medusa::service::pb;
use medusa_tests::{Env, EnvOptions, Kind, Sidecar};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;

const REQUESTS: usize = 400;

fn hostile(rng: &mut StdRng) -> String {
    let shapes: [&dyn Fn(&mut StdRng) -> String; 16] = [
        &|_| String::new(),
        &|_| ".".into(),
        &|_| "..".into(),
        &|_| "../../etc/passwd".into(),
        &|_| "a/b".into(),
        &|_| "a\\b".into(),
        &|_| "nul\0byte".into(),
        &|_| "line\nbreak".into(),
        &|_| " padded ".into(),
        &|r| "x".repeat(r.random_range(200..20_000)),
        &|_| "ünïcødé-名前-🦀".into(),
        &|_| "good".into(),
        &|_| "demo-dc1-default-sts-0".into(),
        &|_| "dc1".into(),
        &|r| format!("b-{}", r.random_range(0..1000)),
        &|r| (0..r.random_range(1..40)).map(|_| char::from_u32(r.random_range(1..0x2FFF)).unwrap_or('?')).collect(),
    ];
    let i = rng.random_range(0..shapes.len());
    shapes[i](rng)
}

/// A name for the backup RPCs: hostile shapes, or the existing backup. (A new valid name would
/// start a real backup each time, and the synchronous Backup would wait for all of them.)
fn backup_name(rng: &mut StdRng) -> String {
    loop {
        let n = hostile(rng);
        if medusa::format::names::BackupName::new(n.clone()).is_err() || n == "good" {
            return n;
        }
    }
}

fn any_i32(rng: &mut StdRng) -> i32 {
    match rng.random_range(0..4) {
        0 => 0,
        1 => 1,
        2 => rng.random_range(-5..5),
        _ => rng.random(),
    }
}

/// What a call answered: fine, or a status that says what kind of problem it is.
fn check<T: std::fmt::Debug>(sidecar: &Sidecar, what: &str, r: Result<tonic::Response<T>, tonic::Status>) {
    if let Err(s) = r {
        let log = || {
            let log = sidecar.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        assert!(
            matches!(
                s.code(),
                Code::InvalidArgument
                    | Code::NotFound
                    | Code::AlreadyExists
                    | Code::FailedPrecondition
                    | Code::ResourceExhausted
                    | Code::Unavailable
            ),
            "{what}: {:?} {}\nthe sidecar's log ends:\n{}",
            s.code(),
            s.message(),
            log()
        );
        assert!(!s.message().trim().is_empty(), "{what}: {:?} without a message", s.code());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_field_answers_with_a_clear_status() {
    let seed =
        std::env::var("MEDUSA_RS_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
    println!("seed {seed} (MEDUSA_RS_FUZZ_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let env = Env::new(EnvOptions::new(Kind::Local)).await.unwrap();
    medusa_tests::backup(&env.node().unwrap(), "good", Mode::Full).await.unwrap();
    let sidecar = Sidecar::start(&env).await.unwrap();
    let mut c = sidecar.client().await.unwrap();
    for i in 0..REQUESTS {
        let what = format!("request {i} (seed {seed})");
        match rng.random_range(0..8) {
            0 => {
                let req = pb::BackupRequest { name: backup_name(&mut rng), mode: any_i32(&mut rng) };
                check(
                    &sidecar,
                    &format!("{what} AsyncBackup {:?}", req.name.chars().take(80).collect::<String>()),
                    c.async_backup(req).await,
                );
            }
            1 => {
                let req = pb::BackupStatusRequest { backup_name: hostile(&mut rng) };
                check(&sidecar, &format!("{what} BackupStatus"), c.backup_status(req).await);
            }
            2 => {
                let req = pb::GetBackupRequest { backup_name: hostile(&mut rng) };
                check(&sidecar, &format!("{what} GetBackup"), c.get_backup(req).await);
            }
            3 => check(&sidecar, &format!("{what} GetBackups"), c.get_backups(pb::GetBackupsRequest {}).await),
            4 => {
                let req = pb::DeleteBackupRequest { name: hostile(&mut rng) };
                check(&sidecar, &format!("{what} DeleteBackup"), c.delete_backup(req).await);
            }
            5 => {
                let req = pb::PrepareRestoreRequest {
                    backup_name: hostile(&mut rng),
                    datacenter: hostile(&mut rng),
                    restore_key: hostile(&mut rng),
                };
                check(&sidecar, &format!("{what} PrepareRestore"), c.prepare_restore(req).await);
            }
            6 => check(&sidecar, &format!("{what} PurgeBackups"), c.purge_backups(pb::PurgeBackupsRequest {}).await),
            _ => {
                let req = pb::BackupRequest { name: backup_name(&mut rng), mode: any_i32(&mut rng) };
                check(
                    &sidecar,
                    &format!("{what} Backup {:?} mode {}", req.name.chars().take(80).collect::<String>(), req.mode),
                    tokio::time::timeout(Duration::from_secs(120), c.backup(req)).await.unwrap(),
                );
            }
        }
    }
    // Still serving, and nothing panicked.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Endpoint::from_shared(sidecar.url()).unwrap().connect().await.unwrap(),
    );
    let h = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(h.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    let log = sidecar.log_text();
    assert!(!log.contains("panicked"), "a panic: {log}");
    // Nothing escaped the node's directories: the restore mappings are plain files in place.
    let root = env.sim.lock().unwrap().root.clone();
    if let Ok(entries) = std::fs::read_dir(root.join(".restore_mapping")) {
        for e in entries.flatten() {
            assert!(e.file_type().unwrap().is_file(), "{:?}", e.path());
        }
    }
}
