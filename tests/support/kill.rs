//! Kill loops: SIGKILL of the sidecar at random moments of a backup, and of the restore init
//! container at random moments of a restore, then a restart, over and over. Storage is s3s-fs
//! behind the fault proxy with a delay on every request, so that a backup lasts seconds and a
//! kill lands anywhere in it. Used by `tests/it/kill_loops.rs` (10 trials each, in CI) and the
//! soak bench `tests/benches/soak.rs` (`--trials 50`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use harness::sim::{DataDigest, digest_data_dir};
use medusa::service::pb;
use medusa::service::pb::StatusType;
use nix::sys::signal::Signal;
use rand::Rng;

use crate::{Env, EnvOptions, Kind, ProxyMode, Sidecar, change_one_data_file, live, restore_command};

type Client = pb::medusa_client::MedusaClient<tonic::transport::Channel>;

/// Per-request delay at the proxy: a backup of the small node takes a few seconds.
const DELAY: Duration = Duration::from_millis(8);
/// A killed backup must read FAILED within this long after the restart.
const FAILED_WITHIN: Duration = Duration::from_secs(15);

/// What a loop measured.
#[derive(Debug, Default)]
pub struct Figures {
    /// Trials run.
    pub trials: usize,
    /// Kills that landed while the backup (or restore) was running.
    pub killed_mid_way: usize,
    /// Kills after it had already finished.
    pub killed_after: usize,
    /// Longest time from a restart to FAILED.
    pub slowest_failed: Duration,
    /// Backups that ended SUCCESS (all restored exactly) or restores that completed.
    pub completed: usize,
    /// Requests seen by the proxy and faults injected.
    pub requests: u64,
    /// Ranged GETs seen by the proxy (restores of multipart objects).
    pub ranged_gets: usize,
}

/// Multipart uploads from 64 KiB on, so kills land in them too.
const MULTIPART: &str = "multi_part_upload_threshold = 64KB\n";

async fn slow_env(storage_extra: &str) -> Result<Env> {
    let mut o = EnvOptions::new(Kind::S3sFs);
    o.proxy = Some(ProxyMode::Http);
    o.storage_extra = storage_extra.into();
    let env = Env::new(o).await?;
    env.proxy.as_ref().expect("proxy").set_delay(DELAY);
    Ok(env)
}

async fn status(c: &mut Client, name: &str) -> Result<pb::BackupStatusResponse> {
    Ok(c.backup_status(pb::BackupStatusRequest { backup_name: name.into() }).await?.into_inner())
}

async fn wait_final(c: &mut Client, name: &str, limit: Duration) -> Result<pb::BackupStatusResponse> {
    let t0 = Instant::now();
    loop {
        let s = status(c, name).await?;
        if s.status == StatusType::Success as i32 || s.status == StatusType::Failed as i32 {
            return Ok(s);
        }
        ensure!(t0.elapsed() < limit, "{name} still {:?} after {limit:?}", s.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn medusa_snapshots(env: &Env) -> usize {
    env.with_sim(|s| s.list_snapshots().into_iter().filter(|i| i.tag.starts_with("medusa-")).count()).await
}

/// Sidecar kill loop: per trial, a backup is started over gRPC, the sidecar is SIGKILLed after a
/// random delay and started again; the killed backup must read FAILED within 15 s of the
/// restart (or SUCCESS if it had finished), its snapshot must be cleared, the next backup must
/// succeed, and GetBackups must never show IN_PROGRESS afterwards. Finally every backup that
/// GetBackups lists as SUCCESS is restored and compared with the data it was taken from.
pub async fn sidecar_loop(trials: usize) -> Result<Figures> {
    let env = slow_env(MULTIPART).await?;
    let mut fig = Figures { trials, ..Figures::default() };
    let mut taken: Vec<(String, DataDigest)> = Vec::new();
    let mut sidecar = Sidecar::start(&env).await?;
    // One backup first, timed: the random kill moments spread over its length.
    let mut c = sidecar.client().await?;
    let t0 = Instant::now();
    let mode = |full: bool| {
        if full { pb::backup_request::Mode::Full as i32 } else { pb::backup_request::Mode::Differential as i32 }
    };
    c.async_backup(pb::BackupRequest { name: "first".into(), mode: mode(true) }).await?;
    let s = wait_final(&mut c, "first", Duration::from_secs(180)).await?;
    ensure!(s.status == StatusType::Success as i32, "first backup: {}", s.error);
    let length = t0.elapsed();
    taken.push(("first".into(), live(&env).await));
    for i in 0..trials {
        change_one_data_file(&env).await;
        let data = live(&env).await;
        let name = format!("killed-{i}");
        // Mostly full backups (a differential one of one changed file is over at once).
        c.async_backup(pb::BackupRequest { name: name.clone(), mode: mode(i % 4 != 3) }).await?;
        let wait = rand::rng().random_range(Duration::from_millis(50)..length);
        tokio::time::sleep(wait).await;
        sidecar.signal(Signal::SIGKILL);
        sidecar.wait_exit(Duration::from_secs(10)).await?;
        sidecar = Sidecar::start(&env).await?;
        let restarted = Instant::now();
        c = sidecar.client().await?;
        let s = wait_final(&mut c, &name, FAILED_WITHIN)
            .await
            .with_context(|| format!("trial {i}: {}", sidecar.log_text()))?;
        if s.status == StatusType::Success as i32 {
            fig.killed_after += 1;
            taken.push((name.clone(), data.clone()));
        } else {
            fig.killed_mid_way += 1;
            fig.slowest_failed = fig.slowest_failed.max(restarted.elapsed());
            ensure!(!s.error.is_empty(), "trial {i}: FAILED without a reason");
        }
        // The next backup succeeds, and the killed one's snapshot is gone.
        let next = format!("next-{i}");
        c.async_backup(pb::BackupRequest { name: next.clone(), mode: mode(i % 2 == 0) }).await?;
        let s = wait_final(&mut c, &next, Duration::from_secs(180)).await?;
        ensure!(s.status == StatusType::Success as i32, "trial {i}: the next backup failed: {}", s.error);
        taken.push((next, data));
        let left = medusa_snapshots(&env).await;
        ensure!(left == 0, "trial {i}: {left} medusa snapshot tables left behind");
        let all = c.get_backups(pb::GetBackupsRequest {}).await?.into_inner();
        for b in &all.backups {
            ensure!(b.status != StatusType::InProgress as i32, "trial {i}: {} listed IN_PROGRESS", b.backup_name);
        }
    }
    // Every backup GetBackups lists as SUCCESS restores exactly.
    let all = c.get_backups(pb::GetBackupsRequest {}).await?.into_inner();
    drop(sidecar);
    let successes: Vec<&str> =
        all.backups.iter().filter(|b| b.status == StatusType::Success as i32).map(|b| b.backup_name.as_str()).collect();
    for (k, name) in successes.iter().enumerate() {
        let Some((_, want)) = taken.iter().find(|(n, _)| n == name) else {
            bail!("{name} is listed SUCCESS but was killed mid-way");
        };
        let mut cmd = restore_command(&env, name, &format!("check-{k}"));
        let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
        ensure!(out.status.success(), "restore of {name}: {}", String::from_utf8_lossy(&out.stdout));
        let got = env.with_sim(|s| digest_data_dir(&s.data_dir)).await;
        ensure!(got == *want, "{name} restored differs:\n{}", want.diff(&got));
        fig.completed += 1;
    }
    fig.requests = env.proxy.as_ref().map(|p| p.total_requests()).unwrap_or(0);
    fig.ranged_gets = env.proxy.as_ref().map(|p| p.ranged_gets().len()).unwrap_or(0);
    Ok(fig)
}

/// Restore kill loop: per trial the data is changed, the restore init container is started and
/// SIGKILLed after a random delay; at that moment `.last-restore` may hold the trial's key only
/// if the data already equals the backup. A rerun then completes: the data equals the backup,
/// `.last-restore` holds the key, no staging directory is left.
pub async fn restore_loop(trials: usize) -> Result<Figures> {
    let env = slow_env(&format!("{MULTIPART}multipart_chunksize = 5MB\n")).await?;
    let mut fig = Figures { trials, ..Figures::default() };
    // A 21 MiB SSTable in 5 MiB parts: restored by three ranged GETs of whole parts, so kills
    // land in them too and the rerun finds the file at its full size with holes.
    crate::plant_big_sstable(&env, 21 << 20).await;
    let node = env.node()?;
    crate::backup(&node, "base", medusa::format::layout::Mode::Full).await?;
    let want = live(&env).await;
    let root = env.sim.lock().expect("sim").root.clone();
    // One restore timed, for the spread of the kill moments.
    change_one_data_file(&env).await;
    let t0 = Instant::now();
    let mut cmd = restore_command(&env, "base", "timed");
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    ensure!(out.status.success(), "timed restore: {}", String::from_utf8_lossy(&out.stdout));
    let length = t0.elapsed();
    for i in 0..trials {
        change_one_data_file(&env).await;
        let key = format!("rk-{i}");
        let mut child = restore_command(&env, "base", &key)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let wait = rand::rng().random_range(Duration::from_millis(20)..length + length / 4);
        tokio::time::sleep(wait).await;
        let finished = child.try_wait()?.is_some();
        let _ = child.kill();
        let _ = child.wait();
        if finished {
            fig.killed_after += 1;
        } else {
            fig.killed_mid_way += 1;
        }
        let last = std::fs::read_to_string(root.join(".last-restore")).unwrap_or_default();
        if last.trim() == key {
            let now = live(&env).await;
            ensure!(now == want, "trial {i}: .last-restore holds {key} but the data differs:\n{}", want.diff(&now));
        }
        let mut cmd = restore_command(&env, "base", &key);
        let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
        ensure!(out.status.success(), "trial {i}: rerun failed: {}", String::from_utf8_lossy(&out.stdout));
        let now = live(&env).await;
        ensure!(now == want, "trial {i}: data after the rerun differs:\n{}", want.diff(&now));
        ensure!(std::fs::read_to_string(root.join(".last-restore"))?.trim() == key, "trial {i}: .last-restore");
        let staging: Vec<String> = std::fs::read_dir(&root)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("medusa-restore-"))
            .collect();
        ensure!(staging.is_empty(), "trial {i}: staging left behind: {staging:?}");
        fig.completed += 1;
    }
    fig.requests = env.proxy.as_ref().map(|p| p.total_requests()).unwrap_or(0);
    fig.ranged_gets = env.proxy.as_ref().map(|p| p.ranged_gets().len()).unwrap_or(0);
    Ok(fig)
}
