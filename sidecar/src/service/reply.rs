//! GetBackups' reply (`GetBackupsResponse` of `medusa.proto`), written by hand instead of
//! generated so that the server can encode it one backup summary at a time: with 1,000 backups
//! of 12 nodes of 256 tokens, the generated message alone held 3 million tokens (24 MB) beside
//! the 29 MB of its encoding. The fields and the encoding are those prost generates (same
//! numbers, same order, defaults left out), so clients decode it like any other reply and the
//! generated client uses this type too (`extern_path` in `build.rs`).

use std::sync::Arc;

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};

use crate::pb;
use crate::service::listing::{ClusterBackup, ClusterState};

/// `GetBackupsResponse`.
#[derive(Clone, Default)]
pub struct GetBackupsResponse {
    /// `backups = 1`: what a client decoded (empty on the server, see `from`).
    pub backups: Vec<pb::BackupSummary>,
    /// `overallStatus = 2` (a [`pb::StatusType`]).
    pub overall_status: i32,
    /// Server side: the cluster backups whose summaries are encoded one at a time.
    from: Option<Arc<Vec<ClusterBackup>>>,
}

impl GetBackupsResponse {
    /// The reply for `backups`, summarised lazily while encoding.
    pub fn of(backups: Vec<ClusterBackup>) -> GetBackupsResponse {
        let overall = overall_of(backups.iter().map(|c| state_of(c.status)));
        GetBackupsResponse { backups: Vec::new(), overall_status: overall as i32, from: Some(Arc::new(backups)) }
    }

    /// `overallStatus`, as the generated getter gives it.
    pub fn overall_status(&self) -> pb::StatusType {
        pb::StatusType::try_from(self.overall_status).unwrap_or_default()
    }

    fn for_each_summary(&self, mut f: impl FnMut(&pb::BackupSummary)) {
        match &self.from {
            Some(list) => list.iter().for_each(|c| f(&summary(c))),
            None => self.backups.iter().for_each(f),
        }
    }
}

impl std::fmt::Debug for GetBackupsResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetBackupsResponse")
            .field("backups", &self.backups)
            .field("overall_status", &self.overall_status())
            .field("summarised_on_encoding", &self.from.as_ref().map(|l| l.len()))
            .finish()
    }
}

impl PartialEq for GetBackupsResponse {
    fn eq(&self, other: &Self) -> bool {
        let summaries = |r: &Self| {
            let mut v = Vec::new();
            r.for_each_summary(|s| v.push(s.clone()));
            v
        };
        self.overall_status == other.overall_status && summaries(self) == summaries(other)
    }
}

impl prost::Message for GetBackupsResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.for_each_summary(|s| encoding::message::encode(1, s, buf));
        if self.overall_status != 0 {
            encoding::int32::encode(2, &self.overall_status, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            1 => encoding::message::merge_repeated(wire_type, &mut self.backups, buf, ctx),
            2 => encoding::int32::merge(wire_type, &mut self.overall_status, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let mut len = 0;
        self.for_each_summary(|s| len += encoding::message::encoded_len(1, s));
        if self.overall_status != 0 {
            len += encoding::int32::encoded_len(2, &self.overall_status);
        }
        len
    }

    fn clear(&mut self) {
        *self = GetBackupsResponse::default();
    }
}

fn state_of(s: ClusterState) -> pb::StatusType {
    match s {
        ClusterState::InProgress => pb::StatusType::InProgress,
        ClusterState::Success => pb::StatusType::Success,
        ClusterState::Failed => pb::StatusType::Failed,
    }
}

/// One cluster backup as GetBackups shows it (§1.6).
pub fn summary(c: &ClusterBackup) -> pb::BackupSummary {
    let nodes = c
        .tokenmap
        .0
        .iter()
        .map(|n| pb::BackupNode {
            host: n.host.clone(),
            // Tokens beyond int64 (RandomPartitioner) cannot travel in this field (§10.34).
            tokens: n.tokens.iter().filter_map(|t| t.parse::<i64>().ok()).collect(),
            datacenter: n.dc.clone().unwrap_or_default(),
            rack: n.rack.clone().unwrap_or_default(),
        })
        .collect();
    pb::BackupSummary {
        backup_name: c.name.clone(),
        start_time: c.started,
        finish_time: c.finished.unwrap_or(0),
        total_nodes: c.tokenmap.0.len() as i32,
        finished_nodes: c.finished_nodes as i32,
        nodes,
        status: state_of(c.status) as i32,
        backup_type: c.backup_type.to_string(),
        total_size: c.total_size as i64,
        total_objects: c.total_objects as i64,
    }
}

/// Medusa's `overallStatus` (§1.6): UNKNOWN when empty; then, later rules winning, all SUCCESS
/// → SUCCESS, any IN_PROGRESS → IN_PROGRESS, any FAILED → FAILED.
pub fn overall_of(states: impl Iterator<Item = pb::StatusType> + Clone) -> pb::StatusType {
    let has = |s: pb::StatusType| states.clone().any(|x| x == s);
    if states.clone().next().is_none() {
        pb::StatusType::Unknown
    } else if has(pb::StatusType::Failed) {
        pb::StatusType::Failed
    } else if has(pb::StatusType::InProgress) {
        pb::StatusType::InProgress
    } else if states.clone().all(|s| s == pb::StatusType::Success) {
        pb::StatusType::Success
    } else {
        pb::StatusType::Unknown
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::format::tokenmap::{RingNode, TokenMap};

    /// What prost generates for `GetBackupsResponse`, to compare the encodings with.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(message, repeated, tag = "1")]
        backups: Vec<pb::BackupSummary>,
        #[prost(enumeration = "pb::StatusType", tag = "2")]
        overall_status: i32,
    }

    fn backup(name: &str, status: ClusterState, hosts: usize) -> ClusterBackup {
        let node = |i: usize| RingNode {
            host: format!("pod-{i}"),
            tokens: vec![format!("-{}", 9_000_000_000_000_000_000u64 - i as u64), i.to_string(), "2".repeat(39)],
            is_up: true,
            rack: Some("r1".into()),
            dc: (i > 0).then(|| "dc1".to_string()),
        };
        ClusterBackup {
            name: name.into(),
            started: 1_700_000_000,
            finished: (status == ClusterState::Success).then_some(1_700_000_100),
            status,
            tokenmap: Arc::new(TokenMap((0..hosts).map(node).collect())),
            finished_nodes: hosts,
            backup_type: "differential",
            total_size: 123_456_789,
            total_objects: 0,
            nodes: Vec::new(),
        }
    }

    #[test]
    fn encodes_as_the_generated_message_and_decodes_back() {
        for list in [
            vec![],
            vec![backup("a", ClusterState::Success, 3)],
            vec![backup("a", ClusterState::Success, 3), backup("b", ClusterState::InProgress, 0)],
            vec![backup("a", ClusterState::Failed, 1), backup("b", ClusterState::Success, 2)],
        ] {
            let ours = GetBackupsResponse::of(list.clone());
            let states: Vec<pb::StatusType> = list.iter().map(|c| state_of(c.status)).collect();
            let generated = Generated {
                backups: list.iter().map(summary).collect(),
                overall_status: overall_of(states.into_iter()) as i32,
            };
            let bytes = ours.encode_to_vec();
            assert_eq!(bytes, generated.encode_to_vec());
            assert_eq!(ours.encoded_len(), bytes.len());
            let decoded = GetBackupsResponse::decode(bytes.as_slice()).unwrap();
            assert_eq!(decoded.backups, generated.backups);
            assert_eq!(decoded.overall_status(), pb::StatusType::try_from(generated.overall_status).unwrap());
            assert_eq!(decoded, ours);
            assert_eq!(decoded.encode_to_vec(), bytes, "a decoded reply encodes the same");
        }
        assert_eq!(GetBackupsResponse::of(vec![]).overall_status(), pb::StatusType::Unknown);
        let tokens = &summary(&backup("a", ClusterState::Success, 2)).nodes[1].tokens;
        assert_eq!(tokens.len(), 2, "the token beyond int64 is left out");
    }
}
