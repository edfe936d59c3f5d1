//! Retention (contract §5): which of this node's backups to purge (a pure plan, logged), their deletion,
//! then the cleanup of shared differential files that no remaining backup references
//! ([`crate::retention::orphans`]).
//!
//! Safety rules that Medusa lacks (contract §10.7-9): keys are never matched by prefix; a backup running
//! on this node is never selected; orphan cleanup runs only while no backup runs on this node
//! (it holds the node's backup slot, so none starts meanwhile) and is otherwise deferred to the
//! next purge; an object referenced by any manifest below the node's folder is never deleted,
//! and none is while some manifest there cannot be read.

use crate::bucket::index::{NodeBackup, confirm_finished, node_backups};
use crate::bucket::node_backup;
use crate::format::names::{BackupName, Fqdn};
use crate::retention::orphans;
use crate::store::{Storage, StorageError};

/// Limits from `[storage]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Days; 0 = off.
    pub max_backup_age: u32,
    /// 0 = off.
    pub max_backup_count: u32,
    /// Unreferenced files younger than this many days are kept.
    pub grace_days: u32,
}

/// Why a node backup is purged or kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Older than `max_backup_age` days.
    TooOld,
    /// Beyond the newest `max_backup_count`.
    OverCount,
    /// Both.
    TooOldAndOverCount,
    /// Within the limits.
    WithinLimits,
    /// Running on this node now.
    Running,
    /// Incomplete (failed or abandoned), older than the newest complete backup and than the
    /// grace period.
    Incomplete,
}

/// The plan: which node backups go, which stay, and why.
#[derive(Debug, Clone, Default)]
pub struct PurgePlan {
    /// To delete.
    pub purge: Vec<(NodeBackup, Reason)>,
    /// To keep.
    pub keep: Vec<(NodeBackup, Reason)>,
}

/// Medusa's selection (contract §5.1) over this node's backups, with its count rule fixed (Medusa
/// counted failed backups too, contract §10.8): by age (`started < now - age`, complete or not);
/// by count among COMPLETE backups only (the oldest beyond the newest N), so that a run of
/// failed backups never pushes complete ones out; and incomplete backups older than the newest
/// complete one and than the grace period (`backup_grace_period_in_days`) go as such.
/// A backup running here is always kept.
pub fn plan(
    mut backups: Vec<NodeBackup>,
    now: i64,
    limits: Limits,
    running: &(dyn Fn(&str) -> bool + Sync),
) -> PurgePlan {
    backups.sort_by(|a, b| (a.started, &a.name).cmp(&(b.started, &b.name)));
    let complete = backups.iter().filter(|b| b.finished.is_some()).count();
    let over = if limits.max_backup_count > 0 { complete.saturating_sub(limits.max_backup_count as usize) } else { 0 };
    let newest_complete = backups.iter().filter(|b| b.finished.is_some()).filter_map(|b| b.started).max();
    let cutoff = now - i64::from(limits.max_backup_age) * 86_400;
    let grace = now - i64::from(limits.grace_days) * 86_400;
    let mut out = PurgePlan::default();
    let mut complete_seen = 0;
    for b in backups {
        let started = b.started.unwrap_or(0);
        let old = limits.max_backup_age > 0 && started < cutoff;
        let surplus = b.finished.is_some() && complete_seen < over;
        complete_seen += usize::from(b.finished.is_some());
        let stale = b.finished.is_none() && newest_complete.is_some_and(|n| started < n) && started < grace;
        let reason = match (old, surplus) {
            _ if running(&b.name) => {
                out.keep.push((b, Reason::Running));
                continue;
            }
            (true, true) => Reason::TooOldAndOverCount,
            (true, false) => Reason::TooOld,
            (false, true) => Reason::OverCount,
            (false, false) if stale => Reason::Incomplete,
            (false, false) => {
                out.keep.push((b, Reason::WithinLimits));
                continue;
            }
        };
        out.purge.push((b, reason));
    }
    out
}

/// What a purge did (PurgeBackupsResponse).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Node backups purged.
    pub backups: u64,
    /// Objects deleted (backup folders and orphans).
    pub objects: u64,
    /// Bytes deleted.
    pub bytes: u64,
    /// Unreferenced objects kept: younger than the grace period, or all candidates when the
    /// cleanup was deferred.
    pub within_grace: u64,
    /// The orphan cleanup was deferred because a backup runs on this node.
    pub deferred: bool,
    /// The orphan cleanup deleted nothing because some manifest below the node's folder could
    /// not be read (or a folder's name is not one medusa-rs accepts): the reason.
    pub cleanup_deferred: Option<String>,
}

/// Runs a purge for node `n`. `exclusive` is true when the caller holds the node's backup slot
/// (no backup runs, none can start): only then are orphans deleted.
pub async fn purge(
    storage: &Storage,
    n: &Fqdn,
    limits: Limits,
    now: i64,
    running: &(dyn Fn(&str) -> bool + Sync),
    exclusive: bool,
) -> Result<PurgeReport, StorageError> {
    let (leftovers, mut mine): (Vec<NodeBackup>, Vec<NodeBackup>) =
        node_backups(storage, None).await?.into_iter().filter(|b| b.fqdn == n.as_str()).partition(|b| b.leftover);
    // A backup whose manifest is gone or unreadable cannot be restored: it is not one of the
    // complete backups that the count keeps.
    confirm_finished(storage, &mut mine).await?;
    let mut report = PurgeReport::default();
    // What an interrupted purge or delete left behind is finished first, whatever the limits.
    for b in &leftovers {
        let Ok(name) = BackupName::new(b.name.clone()) else { continue };
        tracing::info!(backup = %b.name, "finishing the deletion of an interrupted purge or delete");
        // Its backup was counted when it vanished from the index; its objects count now.
        let d = node_backup::delete(storage, n, &name).await?;
        report.objects += d.objects;
        report.bytes += d.bytes;
    }
    let plan = plan(mine, now, limits, running);
    for (b, why) in &plan.purge {
        if *why == Reason::Incomplete {
            tracing::info!(backup = %b.name, started = b.started, "purge plan: delete an incomplete backup (failed or abandoned) older than the newest complete one and the grace period");
        } else {
            tracing::info!(backup = %b.name, started = b.started, reason = ?why, "purge plan: delete");
        }
    }
    tracing::info!(delete = plan.purge.len(), keep = plan.keep.len(), "purge plan");
    report.backups += plan.purge.len() as u64;
    // What the backups that stay reference (a manifest moved or copied into another folder may
    // name a purged folder's data) is never deleted with a purged backup.
    let purged: std::collections::HashSet<&str> = plan.purge.iter().map(|(b, _)| b.name.as_str()).collect();
    let refs = if purged.is_empty() {
        orphans::References::default()
    } else {
        orphans::referenced(storage, n, &|folder| purged.contains(folder)).await?
    };
    for (b, _) in &plan.purge {
        let Ok(name) = BackupName::new(b.name.clone()) else { continue };
        let d = node_backup::delete_keeping(storage, n, &name, &|k| refs.contains(k)).await?;
        report.objects += d.objects;
        report.bytes += d.bytes;
    }
    if exclusive {
        let c = orphans::clean(storage, n, now, limits.grace_days).await?;
        report.objects += c.objects;
        report.bytes += c.bytes;
        report.within_grace = c.within_grace;
        report.cleanup_deferred = c.deferred;
    } else {
        report.deferred = true;
        report.within_grace = orphans::count(storage, n).await?;
        tracing::info!(
            kept = report.within_grace,
            "a backup is running on this node: orphan cleanup deferred to the next purge"
        );
    }
    tracing::info!(
        backups = report.backups,
        objects = report.objects,
        bytes = report.bytes,
        within_grace = report.within_grace,
        cleanup_deferred = report.cleanup_deferred.as_deref().unwrap_or("no"),
        "purge done"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nb(name: &str, started: i64) -> NodeBackup {
        NodeBackup {
            leftover: false,
            name: name.into(),
            fqdn: "n".into(),
            started: Some(started),
            finished: Some(started + 1),
            differential: true,
            damaged: None,
        }
    }

    fn names(v: &[(NodeBackup, Reason)]) -> Vec<&str> {
        v.iter().map(|(b, _)| b.name.as_str()).collect()
    }

    #[test]
    fn selection_by_age_count_and_running() {
        let day = 86_400;
        let now = 100 * day;
        let all = vec![nb("a", 90 * day), nb("b", 95 * day), nb("c", 98 * day), nb("d", 99 * day)];
        let off = Limits { max_backup_age: 0, max_backup_count: 0, grace_days: 10 };
        assert!(plan(all.clone(), now, off, &|_| false).purge.is_empty());
        let count = Limits { max_backup_count: 2, ..off };
        assert_eq!(names(&plan(all.clone(), now, count, &|_| false).purge), ["a", "b"]);
        let age = Limits { max_backup_age: 6, ..off };
        assert_eq!(names(&plan(all.clone(), now, age, &|_| false).purge), ["a"]);
        let both = Limits { max_backup_age: 3, max_backup_count: 3, grace_days: 10 };
        let p = plan(all.clone(), now, both, &|_| false);
        assert_eq!(names(&p.purge), ["a", "b"]);
        assert_eq!(p.purge[0].1, Reason::TooOldAndOverCount);
        assert_eq!(p.purge[1].1, Reason::TooOld);
        let p = plan(all, now, count, &|n| n == "a");
        assert_eq!(names(&p.purge), ["b"]);
        assert!(p.keep.iter().any(|(b, r)| b.name == "a" && *r == Reason::Running));
    }

    #[test]
    fn failed_backups_never_push_complete_ones_out_of_the_count() {
        let day = 86_400;
        let now = 100 * day;
        let failed = |name: &str, started: i64| NodeBackup { finished: None, ..nb(name, started) };
        // Two complete backups, then a run of failures (contract §10.8).
        let all = vec![
            nb("c1", 80 * day),
            failed("f0", 85 * day),
            nb("c2", 90 * day),
            failed("f1", 95 * day),
            failed("f2", 98 * day),
            failed("f3", 99 * day + day / 2),
        ];
        let limits = Limits { max_backup_age: 0, max_backup_count: 2, grace_days: 1 };
        let p = plan(all.clone(), now, limits, &|_| false);
        // Both complete backups stay; the failure older than the newest complete backup and than
        // the grace period goes as incomplete; newer failures stay (they may still be running
        // elsewhere and say what happened).
        assert_eq!(names(&p.purge), ["f0"]);
        assert_eq!(p.purge[0].1, Reason::Incomplete);
        let one = Limits { max_backup_count: 1, ..limits };
        assert_eq!(names(&plan(all, now, one, &|_| false).purge), ["c1", "f0"]);
    }
}
