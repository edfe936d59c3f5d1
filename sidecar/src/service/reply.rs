//! GetBackups' reply (`GetBackupsResponse` of `medusa.proto`), written by hand instead of
//! generated so that the server can encode it one backup summary at a time: with 1,000 backups
//! of 12 nodes of 256 tokens, the generated message alone held 3 million tokens (24 MB) beside
//! the 29 MB of its encoding. The fields and the encoding are those prost generates (same
//! numbers, same order, defaults left out), so clients decode it like any other reply and the
//! generated client uses this type too (`extern_path` in `build.rs`).

use std::sync::Arc;

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};

use crate::format::tokenmap::RingNode;
use crate::service::listing::{ClusterBackup, ClusterState};
use crate::service::pb;

/// `GetBackupsResponse`.
#[derive(Clone, Default)]
pub struct GetBackupsResponse {
    /// `backups = 1`: what a client decoded (empty on the server, see `from`).
    pub backups: Vec<pb::BackupSummary>,
    /// `overallStatus = 2` (a [`pb::StatusType`]).
    pub overall_status: i32,
    /// Server side: the cluster backups whose summaries are encoded one at a time.
    from: Option<Arc<Served>>,
}

/// The cluster backups of a reply, and the encoded `nodes` field of each distinct ring they
/// share (by `Arc`): backups of one cluster mostly share one ring, and its tokens, parsed from
/// decimal text and encoded once instead of twice per backup, were a fifth of a warm
/// GetBackups of 1,000 backups x 12 nodes x 256 tokens.
struct Served {
    list: Vec<ClusterBackup>,
    rings: std::collections::HashMap<usize, Vec<u8>>,
}

/// At most this many rings are kept encoded (each up to tens of KiB); backups of others are
/// encoded from their tokenmap.
const RINGS_KEPT: usize = 64;

impl GetBackupsResponse {
    /// The reply for `backups`, summarised lazily while encoding.
    pub fn of(backups: Vec<ClusterBackup>) -> GetBackupsResponse {
        let overall = overall_of(backups.iter().map(|c| state_of(c.status)));
        let mut rings = std::collections::HashMap::new();
        for c in &backups {
            let id = Arc::as_ptr(&c.tokenmap) as usize;
            if rings.len() < RINGS_KEPT && !rings.contains_key(&id) {
                rings.insert(id, encoded_nodes(c));
            }
        }
        let from = Some(Arc::new(Served { list: backups, rings }));
        GetBackupsResponse { backups: Vec::new(), overall_status: overall as i32, from }
    }

    /// `overallStatus`, as the generated getter gives it.
    pub fn overall_status(&self) -> pb::StatusType {
        pb::StatusType::try_from(self.overall_status).unwrap_or_default()
    }

    fn for_each_summary(&self, mut f: impl FnMut(&pb::BackupSummary)) {
        match &self.from {
            Some(served) => served.list.iter().for_each(|c| f(&summary(c))),
            None => self.backups.iter().for_each(f),
        }
    }

    /// Each summary as `backups = 1` would encode it, with its `nodes` field already encoded.
    fn for_each_served(&self, mut f: impl FnMut(&ClusterBackup, &[u8])) {
        let Some(served) = &self.from else { return };
        for c in &served.list {
            match served.rings.get(&(Arc::as_ptr(&c.tokenmap) as usize)) {
                Some(nodes) => f(c, nodes),
                None => f(c, &encoded_nodes(c)),
            }
        }
    }
}

/// The `nodes = 6` fields of `c`'s summary, encoded.
fn encoded_nodes(c: &ClusterBackup) -> Vec<u8> {
    let mut out = Vec::new();
    for n in &c.tokenmap.0 {
        encoding::message::encode(6, &node(n), &mut out);
    }
    out
}

/// The fields of `c`'s summary in tag order, as prost encodes them (defaults left out), with
/// `nodes` already encoded; returns the body's length, writing it to `buf` when given one.
fn summary_fields<B: BufMut>(c: &ClusterBackup, nodes: &[u8], buf: Option<&mut B>) -> usize {
    let mut f = Fields { len: 0, buf };
    f.text(1, &c.name);
    f.int(2, c.started);
    f.int(3, c.finished.unwrap_or(0));
    f.int(4, i64::from(c.tokenmap.0.len() as i32));
    f.int(5, i64::from(c.finished_nodes as i32));
    f.raw(nodes);
    f.int(7, i64::from(state_of(c.status) as i32));
    f.text(8, c.backup_type);
    f.int(9, c.total_size as i64);
    f.int(10, c.total_objects as i64);
    f.len
}

/// Counts, and writes when it has a buffer, fields as prost encodes them.
struct Fields<'a, B> {
    len: usize,
    buf: Option<&'a mut B>,
}

impl<B: BufMut> Fields<'_, B> {
    fn text(&mut self, tag: u32, v: &str) {
        if v.is_empty() {
            return;
        }
        self.len += encoding::key_len(tag) + encoding::encoded_len_varint(v.len() as u64) + v.len();
        if let Some(b) = &mut self.buf {
            encoding::encode_key(tag, WireType::LengthDelimited, *b);
            encoding::encode_varint(v.len() as u64, *b);
            b.put_slice(v.as_bytes());
        }
    }

    /// An int64, int32 or enum field: all are the varint of the sign-extended value.
    fn int(&mut self, tag: u32, v: i64) {
        if v == 0 {
            return;
        }
        self.len += encoding::key_len(tag) + encoding::encoded_len_varint(v as u64);
        if let Some(b) = &mut self.buf {
            encoding::encode_key(tag, WireType::Varint, *b);
            encoding::encode_varint(v as u64, *b);
        }
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
        if let Some(b) = &mut self.buf {
            b.put_slice(bytes);
        }
    }
}

impl std::fmt::Debug for GetBackupsResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetBackupsResponse")
            .field("backups", &self.backups)
            .field("overall_status", &self.overall_status())
            .field("summarised_on_encoding", &self.from.as_ref().map(|l| l.list.len()))
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
        if self.from.is_some() {
            self.for_each_served(|c, nodes| {
                let len = summary_fields::<Vec<u8>>(c, nodes, None);
                encoding::encode_key(1, WireType::LengthDelimited, buf);
                encoding::encode_varint(len as u64, buf);
                summary_fields(c, nodes, Some(&mut *buf));
            });
        } else {
            self.backups.iter().for_each(|s| encoding::message::encode(1, s, buf));
        }
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
        if self.from.is_some() {
            self.for_each_served(|c, nodes| {
                let body = summary_fields::<Vec<u8>>(c, nodes, None);
                len += encoding::key_len(1) + encoding::encoded_len_varint(body as u64) + body;
            });
        } else {
            self.backups.iter().for_each(|s| len += encoding::message::encoded_len(1, s));
        }
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

/// One cluster backup as GetBackups shows it (contract §1.6).
pub fn summary(c: &ClusterBackup) -> pb::BackupSummary {
    let nodes = c.tokenmap.0.iter().map(node).collect();
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

/// One node of a ring as a summary shows it.
fn node(n: &RingNode) -> pb::BackupNode {
    pb::BackupNode {
        host: n.host.clone(),
        // Tokens beyond int64 (RandomPartitioner) cannot travel in this field (contract §10.34).
        tokens: n.tokens.iter().filter_map(|t| t.parse::<i64>().ok()).collect(),
        datacenter: n.dc.clone().unwrap_or_default(),
        rack: n.rack.clone().unwrap_or_default(),
    }
}

/// Medusa's `overallStatus` (contract §1.6): UNKNOWN when empty; then, later rules winning, all SUCCESS
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
    use crate::format::tokenmap::TokenMap;

    /// What prost generates for `GetBackupsResponse`, to compare the encodings with.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(message, repeated, tag = "1")]
        backups: Vec<pb::BackupSummary>,
        #[prost(enumeration = "pb::StatusType", tag = "2")]
        overall_status: i32,
    }

    /// The size of GetBackups against the operator's 512 MiB receive limit: bytes per node in
    /// one backup's summary with vnode tokens spread over the whole ring (most take 9 or 10
    /// varint bytes), for 16 and 256 tokens (README, "GetBackups and the operator's limit").
    #[test]
    fn get_backups_bytes_per_node_backup_at_16_and_256_tokens() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for (tokens, low, high) in [(16usize, 160usize, 250usize), (256, 2_300, 2_900)] {
            let node = |i: usize, rng: &mut rand::rngs::SmallRng| pb::BackupNode {
                host: format!("cluster1-dc1-default-sts-{i}"),
                tokens: (0..tokens).map(|_| rng.random::<i64>()).collect(),
                datacenter: "dc1".into(),
                rack: "default".into(),
            };
            let summary = |nodes: usize, rng: &mut rand::rngs::SmallRng| pb::BackupSummary {
                backup_name: "medusa-backup-schedule-1733580000".into(),
                start_time: 1_733_580_000,
                finish_time: 1_733_580_600,
                total_nodes: nodes as i32,
                finished_nodes: nodes as i32,
                nodes: (0..nodes).map(|i| node(i, rng)).collect(),
                status: pb::StatusType::Success as i32,
                backup_type: "differential".into(),
                total_size: 1 << 40,
                total_objects: 1_000_000,
            };
            let one = Generated { backups: vec![summary(1, &mut rng)], overall_status: 0 }.encoded_len();
            let hundred = Generated { backups: vec![summary(100, &mut rng)], overall_status: 0 }.encoded_len();
            let per_node = (hundred - one) / 99;
            let limit = 512usize << 20;
            println!(
                "{tokens} tokens: {per_node} bytes per node backup; 512 MiB holds {} node backups",
                limit / per_node
            );
            assert!((low..high).contains(&per_node), "{tokens} tokens: {per_node} bytes per node");
        }
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

    /// `n` backups sharing one ring, but every other one of the second half, which has its own.
    fn shared_ring(n: usize) -> Vec<ClusterBackup> {
        let first = backup("r0", ClusterState::Success, 3);
        let mut list: Vec<ClusterBackup> = (0..n)
            .map(|i| ClusterBackup { name: format!("r{i}"), tokenmap: first.tokenmap.clone(), ..first.clone() })
            .collect();
        for i in (n / 2..n).step_by(2) {
            list[i].tokenmap = backup("x", ClusterState::Success, 1 + i % 4).tokenmap;
        }
        list
    }

    #[test]
    fn encodes_as_the_generated_message_and_decodes_back() {
        for list in [
            vec![],
            vec![backup("a", ClusterState::Success, 3)],
            vec![backup("a", ClusterState::Success, 3), backup("b", ClusterState::InProgress, 0)],
            vec![backup("a", ClusterState::Failed, 1), backup("b", ClusterState::Success, 2)],
            shared_ring(3),
            shared_ring(RINGS_KEPT * 5), // more rings than are kept encoded
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
