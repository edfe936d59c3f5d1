//! The operator's custom resources as the tests see them (MedusaBackup, job and task results,
//! MedusaRestoreMapping) and its small rules (`humanize`, the Go error text, restore keys).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use medusa::service::pb::{self, StatusType};
use sha2::Digest as _;

use super::InitRun;

/// A `MedusaBackup` object as the operator fills it in.
#[derive(Debug, Clone, PartialEq)]
pub struct MedusaBackup {
    /// `metadata.name` (the backup name).
    pub name: String,
    /// `spec.cassandraDatacenter`: the CassandraDatacenter object's name.
    pub cassandra_datacenter: String,
    /// `spec.type`.
    pub backup_type: String,
    /// `status.startTime` (epoch seconds).
    pub start_time: i64,
    /// `status.finishTime` (epoch seconds).
    pub finish_time: i64,
    /// `status.totalNodes`.
    pub total_nodes: i32,
    /// `status.finishedNodes`.
    pub finished_nodes: i32,
    /// `status.totalFiles` (the summary's `totalObjects`).
    pub total_files: i64,
    /// `status.totalSize`: humanized (`%.2f` and a 1024-based unit).
    pub total_size: String,
    /// `status.nodes`.
    pub nodes: Vec<pb::BackupNode>,
    /// `status.status`: the status type's name (`SUCCESS`, ...).
    pub status: String,
}

/// What a MedusaBackupJob ended with.
#[derive(Debug, Clone, Default)]
pub struct BackupJob {
    /// `status.finished`, in the order the pods finished.
    pub finished: Vec<String>,
    /// `status.failed`.
    pub failed: Vec<String>,
    /// The summary the operator took the MedusaBackup from (none when a pod failed).
    pub summary: Option<pb::BackupSummary>,
    /// The MedusaBackup created (none when a pod failed).
    pub backup: Option<MedusaBackup>,
    /// Reconcile errors on the way (each one aborted a round and was retried).
    pub reconcile_errors: Vec<String>,
    /// A terminal error (the summary could not be found).
    pub terminal_error: Option<String>,
    /// Status polling rounds that completed.
    pub rounds: usize,
}

/// One pod's purge result (`TaskResult`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskResult {
    /// The pod.
    pub pod: String,
    /// `nbBackupsPurged`.
    pub backups_purged: i32,
    /// `nbObjectsPurged`.
    pub objects_purged: i32,
    /// `totalPurgedSize`.
    pub purged_size: i64,
    /// `totalObjectsWithinGcGrace`.
    pub within_gc_grace: i32,
}

/// What a `sync` MedusaTask did.
#[derive(Debug, Clone, Default)]
pub struct SyncTask {
    /// The pod whose GetBackups was used.
    pub pod: String,
    /// MedusaBackups created.
    pub created: Vec<String>,
    /// MedusaBackups deleted (absent from the bucket).
    pub deleted: Vec<String>,
}

/// What a `purge` MedusaTask did.
#[derive(Debug, Clone, Default)]
pub struct PurgeTask {
    /// `status.finished`.
    pub finished: Vec<TaskResult>,
    /// `status.failed`, with the error.
    pub failed: Vec<(String, String)>,
    /// The `<task>-sync` task the purge schedules.
    pub sync: SyncTask,
}

/// What a `prepare_restore` MedusaTask did.
#[derive(Debug, Clone, Default)]
pub struct PrepareTask {
    /// Pods that answered without error.
    pub finished: Vec<String>,
    /// Pods that failed, with the error.
    pub failed: Vec<(String, String)>,
}

/// `MedusaRestoreMapping`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreMapping {
    /// `in_place`.
    pub in_place: bool,
    /// `host_map`: target pod → source node.
    pub host_map: BTreeMap<String, String>,
}

impl RestoreMapping {
    /// `encoding/json` of the operator's struct: `in_place` first, `host_map` keys sorted,
    /// `host_map` omitted when empty, `seed` always false.
    pub fn to_json(&self) -> String {
        let q = |s: &str| serde_json::to_string(s).expect("string");
        let entries: Vec<String> =
            self.host_map.iter().map(|(t, s)| format!(r#"{}:{{"source":[{}],"seed":false}}"#, q(t), q(s))).collect();
        if entries.is_empty() {
            format!(r#"{{"in_place":{}}}"#, self.in_place)
        } else {
            format!(r#"{{"in_place":{},"host_map":{{{}}}}}"#, self.in_place, entries.join(","))
        }
    }
}

/// What a MedusaRestoreJob did.
#[derive(Debug, Clone, Default)]
pub struct RestoreJob {
    /// `status.restoreKey`.
    pub key: String,
    /// `status.restoreMapping` (none when the job stopped before).
    pub mapping: Option<RestoreMapping>,
    /// `status.message`: why the backup cannot be restored here.
    pub message: Option<String>,
    /// The `medusa-restore` init container of every pod.
    pub runs: Vec<InitRun>,
}

/// The Go client's error text for a failed RPC (`status.Error`): what the operator matches
/// `NotFound` in.
pub fn go_error(s: &tonic::Status) -> String {
    format!("rpc error: code = {:?} desc = {}", s.code(), s.message())
}

/// The operator's `humanize`: `%.2f` and B/KB/MB/GB/TB/PB, base 1024.
pub fn humanize(bytes: i64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut size = bytes as f64;
    let mut i = 0;
    while size >= 1024.0 && i < units.len() - 1 {
        size /= 1024.0;
        i += 1;
    }
    format!("{size:.2} {}", units[i])
}

/// A random (version 4) UUID, as `uuid.New().String()` gives the restore key.
pub fn uuid4() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let seed = format!("{nanos}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
    let mut b: [u8; 16] = sha2::Sha256::digest(seed.as_bytes())[..16].try_into().expect("16 bytes");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

pub(crate) fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64
}

pub(crate) fn status_name(status: i32) -> String {
    StatusType::try_from(status).map_or_else(|_| status.to_string(), |s| s.as_str_name().to_string())
}
