//! `medusa-demo`: the main job on an embedded default. Generates a demo Cassandra node (disk
//! layout + Management API), runs the medusa-rs sidecar on local storage, takes a full and a
//! differential backup through gRPC as k8ssandra-operator does, lists them, then wipes the node
//! and restores it with the restore-init logic, checking every file.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use harness::sim::{MgmtApiServer, SimNode, SimSpec, digest_data_dir};
use medusa::service::pb::{self, StatusType, backup_request::Mode};

#[tokio::main]
async fn main() -> Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("target/medusa-demo"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cleaning {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    println!("medusa-rs demo in {}", dir.display());

    let t = Instant::now();
    let sim = SimNode::generate(&dir.join("cassandra"), &SimSpec::small())?;
    let (yaml, root) = (sim.cassandra_yaml.clone(), sim.root.clone());
    let before_files = digest_data_dir(&sim.data_dir).files;
    let sim = Arc::new(Mutex::new(sim));
    let api = MgmtApiServer::start(sim.clone()).await?;
    println!(
        "1. generated a Cassandra 4.1 node ({before_files} SSTable files) and its Management API at {} in {:.1?}",
        api.base_url,
        t.elapsed()
    );

    let fqdn = "demo-dc1-default-sts-0";
    let ini = format!(
        "[cassandra]\nconfig_file = {}\n\n[storage]\nstorage_provider = local\nbase_path = {}\nbucket_name = bucket\nprefix = demo\nfqdn = {fqdn}\nconcurrent_transfers = 2\n\n\
         [grpc]\nenabled = 1\n\n[kubernetes]\nenabled = 1\nuse_mgmt_api = 1\ncassandra_url = {}\n",
        yaml.display(),
        dir.display(),
        api.snapshot_url
    );
    let ini_path = dir.join("medusa.ini");
    std::fs::write(&ini_path, ini)?;
    let cfg = medusa::config::Config::load(&ini_path)?;
    // What `medusa-sidecar` does before it serves: only it creates a `local` bucket directory.
    medusa::store::create_local_bucket(&cfg.storage)?;
    // SAFETY of the environment: only this process reads it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts = medusa::service::daemon::Options {
        config_path: ini_path.clone(),
        shutdown_grace: Duration::from_secs(5),
        config_poll: Duration::from_secs(3600),
    };
    let daemon = tokio::spawn(medusa::service::daemon::run(cfg.clone(), opts, listener, async move {
        let _ = stop_rx.await;
    }));
    println!("2. medusa-rs sidecar serving gRPC on {addr}, bucket {}/bucket (prefix demo)", dir.display());
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect().await?;
    let mut c = pb::medusa_client::MedusaClient::new(ch);

    for (step, name, mode) in [(3, "demo-full", Mode::Full), (5, "demo-diff", Mode::Differential)] {
        if mode == Mode::Differential {
            let s = sim.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let mut s = s.lock().expect("sim");
                s.flush(42, 0.1)?;
                s.compact(43)
            })
            .await??;
            println!("4. the node flushed and compacted (new SSTables, some removed)");
        }
        let t = Instant::now();
        c.async_backup(pb::BackupRequest { name: name.into(), mode: mode as i32 }).await?;
        let s = loop {
            let s = c.backup_status(pb::BackupStatusRequest { backup_name: name.into() }).await?.into_inner();
            if s.status != StatusType::InProgress as i32 {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if s.status != StatusType::Success as i32 {
            bail!("backup {name} failed: {}", s.error);
        }
        println!(
            "{step}. AsyncBackup {name}: SUCCESS in {:.2?} ({} files, {} bytes)",
            t.elapsed(),
            s.files_total,
            s.bytes_total
        );
    }
    let all = c.get_backups(pb::GetBackupsRequest {}).await?.into_inner();
    println!("6. GetBackups:");
    for b in &all.backups {
        println!(
            "   {:<10} {:<12} {:?} nodes {}/{} objects {} size {} B",
            b.backup_name,
            b.backup_type,
            StatusType::try_from(b.status).unwrap_or(StatusType::Unknown),
            b.finished_nodes,
            b.total_nodes,
            b.total_objects,
            b.total_size
        );
    }

    let expected = {
        let s = sim.lock().expect("sim");
        digest_data_dir(&s.data_dir)
    };
    {
        let mut s = sim.lock().expect("sim");
        s.wipe()?;
    }
    println!("7. wiped the node's data, commitlog, caches and hints");
    let t = Instant::now();
    let env = medusa::restore::RestoreEnv {
        backup_name: Some("demo-diff".into()),
        restore_key: Some("demo-restore-1".into()),
        mapping: Some(format!(r#"{{"in_place":true,"host_map":{{"{fqdn}":{{"source":["{fqdn}"],"seed":false}}}}}}"#)),
        pod_name: Some(fqdn.into()),
        tmp_dir: Some(root.clone()),
        keyspaces: None,
        tables: None,
    };
    let outcome = medusa::restore::run(&cfg, env).await?;
    let got = digest_data_dir(&sim.lock().expect("sim").data_dir);
    if got != expected {
        bail!("restored data differs:\n{}", expected.diff(&got));
    }
    println!(
        "8. restore-init restored demo-diff in {:.2?}: {} files, {} bytes, identical to the backed-up node ({outcome:?})",
        t.elapsed(),
        got.files,
        got.bytes
    );

    let _ = stop_tx.send(());
    daemon.await?.map_err(|e| anyhow::anyhow!("{e}"))?;
    api.stop().await;
    println!("done: everything above ran against real files in {}", dir.display());
    Ok(())
}
