//! GetBackups latency and memory benchmark (contract §4.3): how long the sidecar takes to answer
//! GetBackups over a `local` bucket of many differential backups, and whether the reply fits
//! the gRPC message limits.
//!
//! Each case writes a bucket directly as plain files with the contract §2.2 keys from
//! `medusa::format::layout`: per backup and node the `meta/` files (schema, tokenmap of every node of
//! the cluster, server version, differential marker, a manifest of `--objects` objects) and the
//! index entries medusa-rs writes (`tokenmap_`, `schema_`, `started_`, `differential_`,
//! `manifest_`, `finished_`). Files whose content is the same everywhere (schema, tokenmap,
//! server version, marker) are hard links to one copy; manifests are written one by one. No
//! data files: listing never reads them.
//!
//! The sidecar then runs as its own process (the real `medusa-sidecar` binary on a loopback
//! port, a fresh state directory) and a generated tonic client in this process calls GetBackups:
//! once cold (the sidecar has never seen these backups: it reads every manifest once; the page
//! cache is warm), then `--warm` times more (served from the sidecar's summary cache). Every
//! reply is checked (backups, nodes, finished nodes, objects and bytes per backup), so the bench
//! cannot time an empty answer. Memory is the sidecar process's own: VmRSS once it listens,
//! VmHWM (peak) after the cold call and after the warm calls, from `/proc/<pid>/status`.
//!
//! The datacenter rows ask every node's sidecar in turn (100 backups of 1 node, then of 3 nodes,
//! one sidecar per node over one bucket), as k8ssandra-operator asks the pods of a datacenter:
//! each pod's first call is cold, later calls warm.
//!
//! Run: `cargo bench -p medusa-tests --bench getbackups -- [--backups N --nodes N --tokens N |
//! --datacenter-only] [--objects N] [--warm N]` (default: the three cases below, then the
//! datacenter rows).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use common::{MIB, mib, status_kib};
use harness::services::TempDir;
use medusa::format::layout::{Layout, Meta, Mode, TableFile};
use medusa::format::manifest::{ManifestObject, ManifestSection};
use medusa::format::names::{BackupName, Fqdn};
use medusa::format::tokenmap::{RingNode, TokenMap};
use medusa::service::pb;
use prost::Message;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

const PREFIX: &str = "demo";
const DAY: i64 = 86_400;
const TABLES: usize = 20;
/// SSTable components, 8 per SSTable.
const COMPONENTS: &str = "Data.db Index.db Filter.db Statistics.db Summary.db TOC.txt CompressionInfo.db Digest.crc32";
/// k8ssandra-operator's client accepts replies up to 512 MiB (and medusa-rs sends up to
/// `[grpc] max_send_message_length`, 512 MiB by default).
const OPERATOR_RECEIVE_LIMIT: u64 = 512 * MIB;
const USAGE: &str = "usage: getbackups [--backups N --nodes N --tokens N | --datacenter-only] [--objects N] [--warm N]\n\
    default cases: 100x3 and 1000x3 with 16 tokens per node (k8ssandra's num_tokens for Cassandra 4),\n\
    1000x12 with 256 tokens per node (Cassandra 3's default: the largest reply); 600 objects per manifest";

/// One bucket to list.
#[derive(Debug, Clone, Copy)]
struct Case {
    backups: usize,
    nodes: usize,
    tokens: usize,
    objects: usize,
}

/// What one case measured.
struct Row {
    case: Case,
    generate: Duration,
    cold: Duration,
    warm: Vec<Duration>,
    /// `bucket::index::node_backups` alone (the index listing and parsing), called directly.
    list: Vec<Duration>,
    reply: u64,
    rss_before: u64,
    /// VmHWM right after the cold call.
    cold_peak: u64,
    peak: u64,
    rss_after: u64,
}

fn main() -> Result<()> {
    let (cases, warm, datacenter) = parse_args(std::env::args().skip(1).collect())?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut rows = Vec::new();
    for case in cases {
        rows.push(rt.block_on(run_case(case, warm))?);
    }
    if !rows.is_empty() {
        print_table(&rows, warm);
    }
    if datacenter {
        let objects = rows.first().map_or(600, |r| r.case.objects);
        let mut dc = Vec::new();
        for nodes in [1, 3] {
            let case = Case { backups: 100, nodes, tokens: 16, objects };
            dc.push(rt.block_on(run_datacenter(case, warm))?);
        }
        print_datacenter(&dc);
    }
    Ok(())
}

fn parse_args(args: Vec<String>) -> Result<(Vec<Case>, usize, bool)> {
    let (mut custom, mut objects, mut warm) = (None, 600, 10);
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        if a == "--bench" {
            continue; // passed by `cargo bench`
        }
        if a == "--datacenter-only" {
            custom = Some((0, 0, 0));
            continue;
        }
        let v = args.next().with_context(|| format!("{a} needs a value\n{USAGE}"))?;
        let v: usize = v.parse().with_context(|| format!("{a} takes a whole number"))?;
        match a.as_str() {
            "--backups" => custom.get_or_insert((100, 3, 16)).0 = v,
            "--nodes" => custom.get_or_insert((100, 3, 16)).1 = v,
            "--tokens" => custom.get_or_insert((100, 3, 16)).2 = v,
            "--objects" => objects = v,
            "--warm" => warm = v,
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    // The datacenter rows run with the default cases, or alone with --datacenter-only.
    let datacenter = custom.is_none_or(|c| c == (0, 0, 0));
    let cases = match custom {
        None => vec![(100, 3, 16), (1000, 3, 16), (1000, 12, 256)],
        Some((0, 0, 0)) => Vec::new(),
        Some(c) => vec![c],
    };
    let cases: Vec<Case> =
        cases.into_iter().map(|(backups, nodes, tokens)| Case { backups, nodes, tokens, objects }).collect();
    let positive = cases.iter().all(|c| c.backups > 0 && c.nodes > 0 && c.tokens > 0 && c.objects > 0);
    ensure!(positive && warm > 0, "sizes must be positive\n{USAGE}");
    Ok((cases, warm, datacenter))
}

async fn run_case(case: Case, warm_calls: usize) -> Result<Row> {
    let dir = TempDir::new("getbackups-bench")?;
    let t = Instant::now();
    let d = dir.path().to_path_buf();
    let expected = tokio::task::spawn_blocking(move || generate(&d, case)).await??;
    let generate = t.elapsed();
    eprintln!("{}x{} ({} tokens): bucket written in {generate:.1?}", case.backups, case.nodes, case.tokens);
    let ini = write_config(dir.path())?;
    let cfg = medusa::config::Config::load(&ini)?;
    let send_limit = cfg.grpc.max_send_message_length as u64;
    let storage = medusa::store::Storage::from_config(&cfg.storage)?;

    let mut sidecar = SidecarProcess::start(&ini).await?;
    let mut client = sidecar.client().await?;
    let pid = sidecar.pid();
    let rss_before = status_kib(pid, "VmRSS:")?;

    let t = Instant::now();
    let reply = client.get_backups(pb::GetBackupsRequest {}).await.context("cold GetBackups")?.into_inner();
    let (cold, cold_peak) = (t.elapsed(), status_kib(pid, "VmHWM:")?);
    check(&reply, case, &expected)?;
    let size = reply.encoded_len() as u64;
    drop(reply);
    let mut warm = Vec::with_capacity(warm_calls);
    for i in 0..warm_calls {
        let t = Instant::now();
        let reply = client
            .get_backups(pb::GetBackupsRequest {})
            .await
            .with_context(|| format!("warm GetBackups {i}"))?
            .into_inner();
        warm.push(t.elapsed());
        check(&reply, case, &expected)?;
    }
    let (peak, rss_after) = (status_kib(pid, "VmHWM:")?, status_kib(pid, "VmRSS:")?);
    // The part of a warm call that is the index listing (contract §4.3: one listing per call).
    let mut list = Vec::with_capacity(warm_calls);
    for _ in 0..warm_calls {
        let t = Instant::now();
        let nbs = medusa::bucket::index::node_backups(&storage, None).await?;
        list.push(t.elapsed());
        ensure!(nbs.len() == case.backups * case.nodes, "{} node backups listed", nbs.len());
    }
    drop(client);
    sidecar.stop();
    ensure!(size <= send_limit, "the reply ({size} bytes) exceeds max_send_message_length ({send_limit})");
    Ok(Row { case, generate, cold, warm, list, reply: size, rss_before, cold_peak, peak, rss_after })
}

/// The `medusa-sidecar` binary on a loopback port, killed on drop.
struct SidecarProcess {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
}

impl SidecarProcess {
    async fn start(ini: &Path) -> Result<SidecarProcess> {
        let port = harness::services::free_port();
        let log = ini.with_extension("log");
        let file = std::fs::File::create(&log)?;
        let child = std::process::Command::new(medusa_tests::binary("medusa-sidecar"))
            .arg("--config")
            .arg(ini)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        let s = SidecarProcess { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            let log = std::fs::read_to_string(&s.log).unwrap_or_default();
            ensure!(Instant::now() < deadline, "the sidecar did not listen within 20 s; log:\n{log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(s)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn client(&self) -> Result<pb::medusa_client::MedusaClient<tonic::transport::Channel>> {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", self.port))?
            .timeout(Duration::from_secs(600))
            .connect()
            .await?;
        Ok(pb::medusa_client::MedusaClient::new(ch).max_decoding_message_size(OPERATOR_RECEIVE_LIMIT as usize))
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A sidecar running in this process, and a client of it.
struct Sidecar {
    client: pb::medusa_client::MedusaClient<tonic::transport::Channel>,
    stop: tokio::sync::oneshot::Sender<()>,
    daemon: tokio::task::JoinHandle<Result<medusa::service::daemon::Exit, medusa::service::daemon::DaemonError>>,
}

/// Starts `medusa::service::daemon::run` on a loopback port and connects a client that accepts
/// replies up to the operator's limit.
async fn start_sidecar(cfg: medusa::config::Config, ini: PathBuf) -> Result<Sidecar> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let opts = medusa::service::daemon::Options {
        config_path: ini,
        shutdown_grace: Duration::from_secs(5),
        config_poll: Duration::from_secs(3600),
    };
    let daemon = tokio::spawn(medusa::service::daemon::run(cfg, opts, listener, async move {
        let _ = stopped.await;
    }));
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .timeout(Duration::from_secs(600))
        .connect()
        .await?;
    let client = pb::medusa_client::MedusaClient::new(ch).max_decoding_message_size(OPERATOR_RECEIVE_LIMIT as usize);
    Ok(Sidecar { client, stop, daemon })
}

/// What the datacenter case measured: GetBackups asked of every node's sidecar in turn, as
/// k8ssandra-operator asks the pods of a datacenter (each sidecar has its own summary cache).
struct DcRow {
    case: Case,
    /// The first call of each pod's sidecar, in pod order.
    cold: Vec<Duration>,
    /// Later calls, round-robin over the pods.
    warm: Vec<Duration>,
}

/// Starts one sidecar per node of `case` over one bucket and calls GetBackups on each in turn:
/// cold once per pod, then `rounds` warm rounds over all pods.
async fn run_datacenter(case: Case, rounds: usize) -> Result<DcRow> {
    let dir = TempDir::new("getbackups-dc-bench")?;
    let d = dir.path().to_path_buf();
    let expected = tokio::task::spawn_blocking(move || generate(&d, case)).await??;
    let (mut clients, mut stops, mut daemons) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..case.nodes {
        let ini = write_node_config(dir.path(), i)?;
        let cfg = medusa::config::Config::load(&ini)?;
        let sidecar = start_sidecar(cfg, ini).await?;
        clients.push(sidecar.client);
        stops.push(sidecar.stop);
        daemons.push(sidecar.daemon);
    }
    let mut row = DcRow { case, cold: Vec::new(), warm: Vec::new() };
    for round in 0..=rounds {
        for (pod, client) in clients.iter_mut().enumerate() {
            let t = Instant::now();
            let reply = client
                .get_backups(pb::GetBackupsRequest {})
                .await
                .with_context(|| format!("GetBackups round {round} pod {pod}"))?
                .into_inner();
            if round == 0 {
                row.cold.push(t.elapsed())
            } else {
                row.warm.push(t.elapsed())
            }
            check(&reply, case, &expected)?;
        }
    }
    drop(clients);
    for stop in stops {
        let _ = stop.send(());
    }
    for d in daemons {
        d.await?.map_err(|e| anyhow::anyhow!("sidecar: {e}"))?;
    }
    Ok(row)
}

fn print_datacenter(rows: &[DcRow]) {
    println!(
        "
GetBackups asked of every pod of a datacenter in turn (one sidecar per node, one bucket)"
    );
    println!("backups nodes  cold ms (per pod)          warm median ms  warm p95 ms");
    for r in rows {
        let cold: Vec<String> = r.cold.iter().map(|d| format!("{:.1}", ms(*d))).collect();
        let (median, p95) = (ms(percentile(&r.warm, 50)), ms(percentile(&r.warm, 95)));
        println!("{:<7} {:>5}  {:<25} {median:>14.1} {p95:>12.1}", r.case.backups, r.case.nodes, cold.join(" / "));
    }
    println!(
        "(cold = each pod's first call: every sidecar reads the manifests once for its own cache; warm = later calls \
         over all pods; the 1-node row is the single-node figure beside it.)"
    );
}

/// The reply must list every backup as a finished differential backup of every node, with the
/// objects and bytes written into its manifests.
fn check(r: &pb::GetBackupsResponse, case: Case, expected: &HashMap<String, u64>) -> Result<()> {
    ensure!(r.backups.len() == case.backups, "{} backups listed, {} written", r.backups.len(), case.backups);
    ensure!(r.overall_status == pb::StatusType::Success as i32, "overall status {}", r.overall_status);
    let objects = (case.nodes * case.objects) as i64;
    for b in &r.backups {
        let bytes = *expected.get(&b.backup_name).with_context(|| format!("unknown backup {}", b.backup_name))? as i64;
        let (nodes, success) = (case.nodes as i32, pb::StatusType::Success as i32);
        let got = (b.total_nodes, b.finished_nodes, b.total_objects, b.total_size, b.status, b.backup_type.as_str());
        let want = (nodes, nodes, objects, bytes, success, "differential");
        ensure!(
            got == want,
            "{}: (nodes, finished, objects, bytes, status, type) {got:?}, expected {want:?}",
            b.backup_name
        );
        let tokens = b.nodes.iter().map(|n| n.tokens.len());
        ensure!(
            b.nodes.len() == case.nodes && tokens.clone().all(|t| t == case.tokens),
            "{}: tokens {:?}",
            b.backup_name,
            tokens.collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// `[storage] local` over `<dir>/bucket`, a `cassandra.yaml` with only a data directory (the
/// state directory is `<dir>/cassandra/.medusa-rs`, fresh) and a Management API that GetBackups
/// never calls.
fn write_config(dir: &Path) -> Result<PathBuf> {
    write_node_config(dir, 0)
}

/// The configuration of node `i` (its own cassandra directory, hence its own state directory,
/// over the shared bucket `<dir>/bucket`).
fn write_node_config(dir: &Path, i: usize) -> Result<PathBuf> {
    let node = dir.join(format!("cassandra-{i}"));
    let data = node.join("data");
    std::fs::create_dir_all(&data)?;
    let yaml = node.join("cassandra.yaml");
    std::fs::write(&yaml, format!("data_file_directories:\n  - {}\n", data.display()))?;
    let ini = dir.join(format!("medusa-{i}.ini"));
    std::fs::write(
        &ini,
        format!(
            "[cassandra]\nconfig_file = {}\n\n[storage]\nstorage_provider = local\nbase_path = {}\n\
             bucket_name = bucket\nprefix = {PREFIX}\nfqdn = {}\n\n[grpc]\nenabled = 1\n\n[kubernetes]\nenabled = 1\n\
             use_mgmt_api = 1\ncassandra_url = http://127.0.0.1:1/api/v0/ops/node/snapshots\n",
            yaml.display(),
            dir.display(),
            fqdn(i)
        ),
    )?;
    Ok(ini)
}

fn fqdn(i: usize) -> Fqdn {
    Fqdn::new(format!("demo-dc1-default-sts-{i}")).expect("valid node name")
}

/// Writes the bucket below `<dir>/bucket`; returns the bytes of each backup over all nodes.
fn generate(dir: &Path, case: Case) -> Result<HashMap<String, u64>> {
    let (bucket, shared) = (dir.join("bucket"), dir.join("shared"));
    std::fs::create_dir_all(&shared)?;
    let l = Layout::new(Some(PREFIX));
    // Seeded by the case: the same case writes the same bucket.
    let mut rng = SmallRng::seed_from_u64(u64::try_from(case.backups * 1000 + case.nodes).unwrap_or(1));
    let ring = (0..case.nodes).map(|i| {
        let mut tokens: Vec<i64> = (0..case.tokens).map(|_| rng.next_u64() as i64).collect();
        tokens.sort_unstable();
        RingNode {
            host: fqdn(i).to_string(),
            tokens: tokens.iter().map(i64::to_string).collect(),
            is_up: true,
            rack: Some("default".into()),
            dc: Some("dc1".into()),
        }
    });
    let ring = TokenMap(ring.collect());
    let tables: Vec<(String, String)> = (0..TABLES)
        .map(|t| (format!("ks{}", t % 4), format!("table{t}-{:032x}", rng.next_u64() as u128 * 7919)))
        .collect();
    let create = |(ks, t): &(String, String)| {
        let name = t.split('-').next().unwrap_or(t);
        format!(
            "CREATE TABLE {ks}.{name} (id uuid PRIMARY KEY, value text, ts timestamp) \
             WITH gc_grace_seconds = 864000;\n\n"
        )
    };
    let schema: String = tables.iter().map(create).collect();
    // Content that is the same in every backup: one copy, hard-linked into place.
    let same: [(&str, Vec<u8>); 4] = [
        ("tokenmap", ring.to_bytes()),
        ("schema", schema.into_bytes()),
        ("version", br#"{"server_type": "cassandra", "release_version": "4.1.5"}"#.to_vec()),
        ("differential", b"differential".to_vec()),
    ];
    for (name, bytes) in &same {
        std::fs::write(shared.join(name), bytes)?;
    }
    let link = |what: &str, key: &str| -> Result<()> {
        std::fs::hard_link(shared.join(what), bucket.join(key)).with_context(|| format!("linking {key}"))
    };
    let put =
        |key: &str, bytes: &[u8]| std::fs::write(bucket.join(key), bytes).with_context(|| format!("writing {key}"));
    let first = now() - case.backups as i64 * DAY;
    let mut sizes = HashMap::with_capacity(case.backups);
    for i in 0..case.backups {
        let b = BackupName::new(format!("medusa-backup-{i:05}"))?;
        std::fs::create_dir_all(bucket.join(l.index_dir(&b)))?;
        let mut total = 0;
        for node in 0..case.nodes {
            let n = fqdn(node);
            std::fs::create_dir_all(bucket.join(l.meta(&n, &b, Meta::Schema)).parent().context("meta dir")?)?;
            link("schema", &l.meta(&n, &b, Meta::Schema))?;
            link("tokenmap", &l.meta(&n, &b, Meta::Tokenmap))?;
            link("version", &l.meta(&n, &b, Meta::ServerVersion))?;
            link("differential", &l.meta(&n, &b, Meta::Differential))?;
            link("tokenmap", &l.index_tokenmap(&b, &n))?;
            link("schema", &l.index_schema(&b, &n))?;
            let started = first + i as i64 * DAY + node as i64;
            put(&l.index_started(&b, &n, started), started.to_string().as_bytes())?;
            link("differential", &l.index_differential(&b, &n))?;
            let manifest = manifest(&l, &n, &b, &tables, i, case.objects, &mut rng);
            total += manifest.iter().flat_map(|s| &s.objects).map(|o| o.size).sum::<u64>();
            let bytes = medusa::format::manifest::to_bytes(&manifest);
            put(&l.meta(&n, &b, Meta::Manifest), &bytes)?;
            put(&l.index_manifest(&b, &n), &bytes)?;
            let finished = started + 600;
            put(&l.index_finished(&b, &n, finished), finished.to_string().as_bytes())?;
            if i + 1 == case.backups {
                std::fs::create_dir_all(bucket.join(l.latest_tokenmap(&n)).parent().context("latest dir")?)?;
                link("tokenmap", &l.latest_tokenmap(&n))?;
                put(&l.latest_backup_name(&n), b.as_str().as_bytes())?;
            }
        }
        sizes.insert(b.to_string(), total);
    }
    Ok(sizes)
}

/// A differential manifest of `objects` SSTable components spread over the tables; each backup
/// has its own generations (what a node that flushes and compacts daily shows).
fn manifest(
    l: &Layout,
    n: &Fqdn,
    b: &BackupName,
    tables: &[(String, String)],
    backup: usize,
    objects: usize,
    rng: &mut SmallRng,
) -> Vec<ManifestSection> {
    let components: Vec<&str> = COMPONENTS.split(' ').collect();
    let mut sections: Vec<ManifestSection> = tables
        .iter()
        .map(|(ks, t)| ManifestSection { keyspace: ks.clone(), columnfamily: t.clone(), objects: Vec::new() })
        .collect();
    for k in 0..objects {
        let s = &mut sections[k % tables.len()];
        let (generation, component) =
            (backup * 64 + k / (tables.len() * components.len()), components[(k / tables.len()) % components.len()]);
        let file = TableFile { index_dir: None, name: format!("nb-{generation}-big-{component}") };
        let size = if component == "Data.db" { rng.next_u64() % (256 * MIB) } else { rng.next_u64() % 65_536 };
        let md5 = format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64());
        s.objects.push(ManifestObject {
            path: l.data_key(Mode::Differential, n, b, &s.keyspace, &s.columnfamily, &file),
            md5: Some(md5),
            size,
        });
    }
    sections
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Nearest-rank percentile.
fn percentile(v: &[Duration], p: usize) -> Duration {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[(v.len() * p).div_ceil(100).saturating_sub(1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_table(rows: &[Row], warm: usize) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let objects = rows.first().map_or(0, |r| r.case.objects);
    println!(
        "\nGetBackups over local storage, differential backups, {objects} objects per manifest; load average {load}"
    );
    println!(
        "backups nodes tokens   gen s   cold ms  median ms  p95 ms  list ms  reply MiB  % limit  \
         RSS0 MiB  cold MiB  peak MiB  after MiB"
    );
    for r in rows {
        let c = r.case;
        let (gen_s, cold, list) = (r.generate.as_secs_f64(), ms(r.cold), ms(percentile(&r.list, 50)));
        let (median, p95) = (ms(percentile(&r.warm, 50)), ms(percentile(&r.warm, 95)));
        let (reply, limit) = (mib(r.reply), r.reply as f64 * 100.0 / OPERATOR_RECEIVE_LIMIT as f64);
        let (rss0, cold_peak, peak, after) = (mib(r.rss_before), mib(r.cold_peak), mib(r.peak), mib(r.rss_after));
        println!(
            "{:<7} {:>5} {:>6} {gen_s:>7.1} {cold:>9.1} {median:>10.1} {p95:>7.1} {list:>8.1} {reply:>10.2} \
             {limit:>7.2}% \
             {rss0:>9.1} {cold_peak:>9.1} {peak:>9.1} {after:>10.1}",
            c.backups, c.nodes, c.tokens
        );
    }
    println!(
        "(cold = first call of a fresh sidecar: reads every manifest once, page cache warm; median/p95 of {warm} warm \
         calls (nearest rank); list = median of {warm} direct calls of bucket::index::node_backups, the index listing each \
         call starts with. reply = encoded GetBackupsResponse; % limit = of 512 MiB, the operator's receive limit and \
         medusa-rs' default max_send_message_length. Memory is the sidecar process's: RSS0 = VmRSS once it listens; \
         cold/peak = its VmHWM after the cold call / after the warm calls; after = VmRSS after the warm calls.)"
    );
}
