//! Storage faults between medusa-rs and a real S3 server (s3s-fs) through the harness's HTTP
//! fault proxy: random 503s and resets, one cut answer for every kind of request, a lost answer
//! to a CompleteMultipartUpload, a black-holed store, damaged downloads. Every backup that says
//! SUCCESS is restored and compared file by file.

use std::time::{Duration, Instant};

use harness::fault_proxy::{Fault, FaultProxy, Kind as Req, ProxyMode, Rates};
use harness::sim::{DataDigest, digest_data_dir};
use medusa::format::layout::Mode;
use medusa::service::pb;
use medusa::service::pb::StatusType;
use medusa_tests::{Env, EnvOptions, Kind, Sidecar, change_one_data_file, live, restore_command};

/// Files from 64 KiB on go up in multipart uploads, so those requests are exercised too.
const MULTIPART: &str = "multi_part_upload_threshold = 64KB\n";

async fn flaky_env() -> Env {
    let mut o = EnvOptions::new(Kind::S3sFs);
    o.proxy = Some(ProxyMode::Http);
    o.storage_extra = MULTIPART.into();
    Env::new(o).await.unwrap()
}

fn proxy(env: &Env) -> &FaultProxy {
    env.proxy.as_ref().expect("the fault proxy")
}

/// Runs the restore init container for an in-place restore of `backup` (on a blocking thread:
/// the proxy and the S3 server run on this test's runtime).
async fn restore(env: &Env, backup: &str, key: &str) -> (Option<i32>, String) {
    let mut cmd = restore_command(env, backup, key);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("medusa-restore-init runs")).await.unwrap();
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Restores `backup` in place through the proxy and checks the data equals `want`.
async fn restores_exactly(env: &Env, backup: &str, key: &str, want: &DataDigest) {
    let (code, log) = restore(env, backup, key).await;
    assert_eq!(code, Some(0), "restore of {backup}: {log}");
    let root = env.sim.lock().unwrap().data_dir.clone();
    let got = digest_data_dir(&root);
    assert!(got == *want, "{backup} restored through faults differs:\n{}", want.diff(&got));
}

/// Flips the byte at `offset` of the first data object of `backup`'s manifest that `pick`
/// chooses, in the bucket itself (same size: only the hash can tell); returns its key.
async fn damage_object(env: &Env, backup: &str, pick: impl Fn(&serde_json::Value) -> bool, offset: usize) -> String {
    let storage = medusa::store::Storage::from_config(&env.config().unwrap().storage).unwrap();
    let manifest = storage.get_bytes(&format!("demo/{}/{backup}/meta/manifest.json", env.fqdn)).await.unwrap();
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let mut objects = m.as_array().unwrap().iter().flat_map(|s| s["objects"].as_array().unwrap());
    let key = objects.find(|o| pick(o)).unwrap()["path"].as_str().unwrap().to_string();
    let mut bytes = storage.get_bytes(&key).await.unwrap().to_vec();
    bytes[offset] ^= 0xff;
    storage.put_bytes(&key, bytes).await.unwrap();
    key
}

fn report(p: &FaultProxy, what: &str) {
    let mut injected: Vec<_> = p.injected().into_iter().collect();
    injected.sort();
    println!("{what}: {} requests, {} faults injected: {injected:?}", p.total_requests(), p.total_injected());
}

/// 10 % 503 SlowDown and 5 % resets (half before the server acts, half after: lost answers) on
/// every request, plus one cut or lost answer for each kind of request: a series of full and
/// differential backups all succeed, multipart uploads included, and each restores exactly
/// through the same faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_and_restores_succeed_through_flaky_storage() {
    let env = flaky_env().await;
    let p = proxy(&env);
    let node = env.node().unwrap();
    p.set_rates(Rates { slow_down: 0.10, reset_before: 0.025, lost_answer: 0.025, ..Rates::default() });
    for (kind, fault) in [
        (Req::Put, Fault::LostAnswer),
        (Req::CreateMultipartUpload, Fault::CutBody),
        (Req::UploadPart, Fault::LostAnswer),
        (Req::CompleteMultipartUpload, Fault::CutBody),
        (Req::CompleteMultipartUpload, Fault::LostAnswer),
        (Req::List, Fault::CutBody),
        (Req::Get, Fault::CutBody),
        (Req::Head, Fault::LostAnswer),
        (Req::DeleteMany, Fault::LostAnswer),
    ] {
        p.once(kind, fault);
    }
    let mut backed_up = Vec::new();
    for (i, mode) in [Mode::Full, Mode::Differential, Mode::Differential, Mode::Full].into_iter().enumerate() {
        if i > 0 {
            change_one_data_file(&env).await;
        }
        let name = format!("flaky-{i}");
        let r = medusa_tests::backup(&node, &name, mode).await;
        assert!(r.is_ok(), "{name} failed through the faults: {r:?}");
        backed_up.push((name, live(&env).await));
    }
    report(p, "backups");
    assert_eq!(p.pending_one_shots(), 0, "every one-shot fault was used: {:?}", p.injected());
    let multipart = p.requests().get(&Req::CompleteMultipartUpload).copied().unwrap_or(0);
    assert!(multipart >= 2, "multipart uploads happened ({multipart} completes)");
    // Every backup restores exactly, through the same random faults and a cut GET.
    p.once(Req::Get, Fault::CutBody);
    p.once(Req::List, Fault::CutBody);
    for (i, (name, want)) in backed_up.iter().enumerate() {
        restores_exactly(&env, name, &format!("key-{i}"), want).await;
    }
    report(p, "backups and restores");
}

/// A CompleteMultipartUpload whose answer is lost after the store completed the object is
/// recognised (the object is there with the expected multipart ETag), and a complete that keeps
/// failing is reported with its own cause, not the error of the abort that follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_complete_is_recognised_and_a_failed_one_reported_as_itself() {
    let env = flaky_env().await;
    let p = proxy(&env);
    let node = env.node().unwrap();
    // Every complete's answer lost: each upload is recognised as complete by its ETag.
    for _ in 0..200 {
        p.once(Req::CompleteMultipartUpload, Fault::LostAnswer);
    }
    let r = medusa_tests::backup(&node, "lost-completes", Mode::Full).await;
    assert!(r.is_ok(), "{r:?}");
    let lost = p.injected().get(&(Req::CompleteMultipartUpload, Fault::LostAnswer)).copied().unwrap_or(0);
    assert!(lost >= 2, "answers lost: {lost}");
    p.heal();
    let want = live(&env).await;
    restores_exactly(&env, "lost-completes", "key-1", &want).await;

    // Every complete refused with a 500: the backup fails, and says so.
    for _ in 0..2000 {
        p.once(Req::CompleteMultipartUpload, Fault::ServerError);
    }
    let r = medusa_tests::backup(&node, "refused-completes", Mode::Full).await;
    let e = r.expect_err("no complete can succeed").to_string();
    assert!(e.contains("complete multipart upload"), "names the step: {e}");
    assert!(e.contains("500") || e.contains("InternalError"), "names the cause: {e}");
    assert!(!e.contains("privileges") && !e.contains("AccessDenied"), "not the abort's error: {e}");
}

/// A store that accepts connections and never answers: BackupStatus turns FAILED with a reason
/// within the configured budget (max_retries = 3, retry_timeout = 20 s), never stays
/// IN_PROGRESS; health stays SERVING; the next backup after the outage succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_store_fails_the_backup_within_the_retry_budget() {
    let env = flaky_env().await;
    let ini = std::fs::read_to_string(&env.ini_path).unwrap();
    let ini = ini.replace("max_retries = 2\nretry_timeout = 10\n", "max_retries = 3\nretry_timeout = 20\n");
    std::fs::write(&env.ini_path, ini).unwrap();
    let p = proxy(&env);
    let sidecar = Sidecar::start(&env).await.unwrap();
    let mut c = sidecar.client().await.unwrap();
    p.set_black_hole(true);
    let t0 = Instant::now();
    let r =
        c.async_backup(pb::BackupRequest { name: "dark".into(), mode: pb::backup_request::Mode::Full as i32 }).await;
    assert!(r.is_ok(), "accepted whatever storage does: {r:?}");
    let failed = loop {
        let s = c.backup_status(pb::BackupStatusRequest { backup_name: "dark".into() }).await.unwrap().into_inner();
        if s.status == StatusType::Failed as i32 {
            break s;
        }
        assert_eq!(s.status, StatusType::InProgress as i32);
        assert!(t0.elapsed() < Duration::from_secs(60), "still {s:?} after {:?}\n{}", t0.elapsed(), sidecar.log_text());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let took = t0.elapsed();
    println!(
        "black-holed store: backup FAILED after {:.1} s (budget: retry_timeout 20 s, one 5 s read timeout, AsyncBackup's 2 s check)",
        took.as_secs_f64()
    );
    // The budget: retry_timeout (20 s) plus one attempt's read timeout (20 / 4 = 5 s), and a
    // little for the snapshot and scheduling.
    assert!(took < Duration::from_secs(30), "FAILED only after {took:?}\n{}", sidecar.log_text());
    assert!(!failed.error.is_empty(), "a reason: {failed:?}");
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Endpoint::from_shared(sidecar.url()).unwrap().connect().await.unwrap(),
    );
    let h = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(h.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    // It stays FAILED, and after the outage the next backup succeeds.
    p.set_black_hole(false);
    let s = c.backup_status(pb::BackupStatusRequest { backup_name: "dark".into() }).await.unwrap().into_inner();
    assert_eq!(s.status, StatusType::Failed as i32);
    c.async_backup(pb::BackupRequest { name: "after".into(), mode: pb::backup_request::Mode::Full as i32 })
        .await
        .unwrap();
    let t1 = Instant::now();
    loop {
        let s = c.backup_status(pb::BackupStatusRequest { backup_name: "after".into() }).await.unwrap().into_inner();
        if s.status == StatusType::Success as i32 {
            break;
        }
        assert_ne!(s.status, StatusType::Failed as i32, "{s:?}\n{}", sidecar.log_text());
        assert!(t1.elapsed() < Duration::from_secs(120), "{s:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    report(p, "black hole");
}

/// Downloads cut midway are fetched again; an object damaged in the bucket fails the restore
/// after the bounded retries with the object's key, and the data directory is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_downloads_are_retried_then_fail_with_the_key() {
    let env = flaky_env().await;
    let p = proxy(&env);
    let node = env.node().unwrap();
    medusa_tests::backup(&node, "b1", Mode::Full).await.unwrap();
    let want = live(&env).await;
    change_one_data_file(&env).await;
    for _ in 0..3 {
        p.once(Req::Get, Fault::CutBody);
    }
    restores_exactly(&env, "b1", "key-1", &want).await;
    assert_eq!(p.pending_one_shots(), 0);

    // Damage one data object in the bucket (same size): every fetch of it fails to verify.
    let key = damage_object(&env, "b1", |o| o["size"].as_u64().unwrap() > 100, 10).await;
    change_one_data_file(&env).await;
    let before = live(&env).await;
    let gets = p.requests().get(&Req::Get).copied().unwrap_or(0);
    let (code, log) = restore(&env, "b1", "key-2").await;
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains(&key) && log.contains("corrupt"), "the failure names the object: {log}");
    assert!(log.contains("fetching again"), "it was fetched again first: {log}");
    assert!(p.requests().get(&Req::Get).copied().unwrap_or(0) > gets);
    assert!(live(&env).await == before, "the data directory was touched");
}

/// An object whose manifest records a multipart ETag of several parts is fetched by ranged GETs
/// of whole parts, several at once, each hashing its own parts; the file comes out exact. A
/// range cut midway fails its file's attempt, which is fetched again into a new file (the
/// cut attempt's writers cannot write into it) and still comes out exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_are_fetched_by_ranges_of_whole_parts() {
    let mut o = EnvOptions::new(Kind::S3sFs);
    o.proxy = Some(ProxyMode::Http);
    o.storage_extra = "multi_part_upload_threshold = 5MB\nmultipart_chunksize = 5MB\n".into();
    let env = Env::new(o).await.unwrap();
    let p = proxy(&env);
    // 21 MiB in parts of 5 MiB: ranges of two parts (the smallest whole number of parts of at
    // least 8 MiB), the last one a single short part.
    const MIB: u64 = 1 << 20;
    let size = 21 * MIB;
    let name = medusa_tests::plant_big_sstable(&env, size as u32).await;
    medusa_tests::backup(&env.node().unwrap(), "b1", Mode::Full).await.unwrap();
    let want = live(&env).await;
    let ranges_of_big = || -> Vec<String> {
        let mut r: Vec<String> =
            p.ranged_gets().into_iter().filter(|(path, _)| path.ends_with(&name)).map(|(_, r)| r).collect();
        r.sort();
        r
    };
    assert!(ranges_of_big().is_empty(), "the backup fetched nothing by ranges");

    env.with_sim(|s| s.wipe().unwrap()).await;
    restores_exactly(&env, "b1", "key-1", &want).await;
    let expected = [(0, 10 * MIB), (10 * MIB, 20 * MIB), (20 * MIB, size)]
        .map(|(a, b): (u64, u64)| format!("bytes={a}-{}", b - 1));
    assert_eq!(ranges_of_big(), expected, "one GET per range of whole parts");
    assert_eq!(p.ranged_gets().len(), 3, "small objects are fetched whole");

    env.with_sim(|s| s.wipe().unwrap()).await;
    p.once_for(Req::Get, &name, Fault::CutBody);
    let (code, log) = restore(&env, "b1", "key-2").await;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(p.pending_one_shots(), 0, "the cut was injected");
    let root = env.sim.lock().unwrap().data_dir.clone();
    let got = digest_data_dir(&root);
    assert!(got == want, "restored through a cut range differs:\n{}", want.diff(&got));
    // The store client fetches the rest of the cut range with one more ranged GET.
    let again = ranges_of_big();
    let extra: Vec<_> = again.iter().filter(|r| !expected.contains(*r)).collect();
    assert_eq!((again.len(), extra.len()), (7, 1), "{again:?}");
    assert!(expected.iter().any(|e| e.rsplit('-').next() == extra[0].rsplit('-').next()), "{again:?}");

    // The object damaged in the bucket: every attempt fails to verify, is fetched again by
    // ranges into a new file, and the restore fails naming the object.
    let big = |o: &serde_json::Value| o["path"].as_str().unwrap().ends_with(&name);
    let key = damage_object(&env, "b1", big, (20 * MIB) as usize + 10).await;
    let before = ranges_of_big().len();
    let (code, log) = restore(&env, "b1", "key-3").await;
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains(&key) && log.contains("corrupt"), "the failure names the object: {log}");
    assert!(log.contains("fetching again"), "it was fetched again first: {log}");
    assert!(ranges_of_big().len() >= before + 6, "each attempt fetched it by ranges");
}

/// The same random faults in front of azurite: Azure's requests (blocks, block lists, listings)
/// go through the proxy too, and backup and restore still come out exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_backups_and_restores_succeed_through_flaky_storage() {
    let mut o = EnvOptions::new(Kind::Azurite);
    o.proxy = Some(ProxyMode::Http);
    let env = Env::new(o).await.unwrap();
    let p = proxy(&env);
    p.set_rates(Rates { slow_down: 0.10, reset_before: 0.025, lost_answer: 0.025, ..Rates::default() });
    let node = env.node().unwrap();
    let r = medusa_tests::backup(&node, "azure-1", Mode::Full).await;
    assert!(r.is_ok(), "{r:?}");
    let want = live(&env).await;
    change_one_data_file(&env).await;
    restores_exactly(&env, "azure-1", "key-1", &want).await;
    report(p, "azure");
    assert!(p.total_injected() > 10, "faults were injected");
}

/// A download that takes longer than the HTTP client's default whole-request timeout (30 s) on a
/// healthy, slow link completes: only stalls time out. Without retries of our own, so that the
/// one slow answer is the one that counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_download_is_not_cut_by_a_request_timeout() {
    let env = flaky_env().await;
    let p = proxy(&env);
    let node = env.node().unwrap();
    medusa_tests::backup(&node, "slow", Mode::Full).await.unwrap();
    let want = live(&env).await;
    change_one_data_file(&env).await;
    let ini = std::fs::read_to_string(&env.ini_path).unwrap().replace("max_retries = 2\n", "max_retries = 0\n");
    std::fs::write(&env.ini_path, ini).unwrap();
    p.once(Req::Get, Fault::SlowBody);
    let t0 = Instant::now();
    restores_exactly(&env, "slow", "key-1", &want).await;
    assert!(t0.elapsed() >= harness::fault_proxy::SLOW_BODY, "the slow answer was part of the restore");
    assert_eq!(p.injected().get(&(Req::Get, Fault::SlowBody)), Some(&1));
}
