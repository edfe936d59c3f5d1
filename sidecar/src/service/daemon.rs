//! The sidecar process: the gRPC server with health, reflection and optional mTLS, the job
//! table, and the lifecycle (graceful shutdown, restart on a changed `medusa.ini`).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::{Router, TcpIncoming};
use tonic_health::ServingStatus as Health;
use tonic_health::server::HealthReporter;

use crate::backup::Engine;
use crate::config::Config;
use crate::service::grpc::MedusaService;
use crate::service::jobs::Jobs;
use crate::service::listing::Cache;
use crate::service::pb::medusa_server::MedusaServer;

/// A start-up failure.
pub type DaemonError = Box<dyn std::error::Error + Send + Sync>;

/// Why the daemon stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// A shutdown signal.
    Signal,
    /// `medusa.ini` changed: exit so that the container restarts with it.
    ConfigChanged,
}

/// Lifecycle settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Watched for changes.
    pub config_path: PathBuf,
    /// How long a running backup may continue after a shutdown signal.
    pub shutdown_grace: Duration,
    /// How often `medusa.ini` is checked.
    pub config_poll: Duration,
}

fn file_hash(path: &PathBuf) -> Option<blake3::Hash> {
    std::fs::read(path).ok().map(|b| blake3::hash(&b))
}

/// Serves until `shutdown` resolves or the configuration changes, then drains and returns.
pub async fn run(
    cfg: Config,
    opts: Options,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Exit, DaemonError> {
    let (engine, jobs) = open(&cfg)?;
    let metrics_task = start_metrics(&cfg, &engine, &jobs).await;
    let limits = crate::retention::purge::Limits {
        max_backup_age: cfg.storage.max_backup_age,
        max_backup_count: cfg.storage.max_backup_count,
        grace_days: cfg.storage.backup_grace_period_in_days,
    };
    let cache = Arc::new(Cache::persistent(engine.state_dir.join("summaries.json")));
    let service = MedusaService::new(engine.clone(), jobs.clone(), cache, limits);
    let medusa = MedusaServer::new(service)
        .max_decoding_message_size(cfg.grpc.max_receive_message_length)
        .max_encoding_message_size(cfg.grpc.max_send_message_length);
    let extensions = crate::service::pb::ext::medusa_extensions_server::MedusaExtensionsServer::new(
        crate::service::ext::ExtensionService::new(
            engine.clone(),
            cfg.storage.multipart_chunksize,
            cfg.storage.concurrent_transfers,
            cfg.storage.backup_grace_period_in_days,
        ),
    )
    .max_decoding_message_size(cfg.grpc.max_receive_message_length)
    .max_encoding_message_size(cfg.grpc.max_send_message_length);
    let verifier = (cfg.verification.interval_hours > 0.0).then(|| {
        let every = Duration::from_secs_f64(cfg.verification.interval_hours * 3600.0);
        tracing::info!(
            hours = cfg.verification.interval_hours,
            deep = cfg.verification.deep,
            "scheduled verification on"
        );
        tokio::spawn(crate::service::ext::verify_every(
            engine.clone(),
            cfg.storage.multipart_chunksize,
            cfg.storage.concurrent_transfers,
            every,
            cfg.verification.deep,
        ))
    });
    let (health, health_service) = tonic_health::server::health_reporter();
    // SERVING from the start, whatever storage does: the operator uses this health for the
    // pod's readiness and liveness, and a bucket outage must not restart the container or take
    // the Cassandra node out of its Services. Storage is watched on its own.
    set_health(&health, true).await;
    let probe = tokio::spawn(watch(engine.clone(), jobs.clone()));

    // Like Medusa: TLS always means client certificates signed by ca_cert are required.
    let tls = crate::service::tls::server_config(&cfg.grpc)?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let lifecycle = tokio::spawn(lifecycle(opts, jobs, health, probe, shutdown, stop_tx));

    tracing::info!(%addr, tls = tls.is_some(), node = %engine.fqdn, "medusa-rs sidecar listening");
    let router =
        with_reflection(Server::builder().add_service(health_service))?.add_service(medusa).add_service(extensions);
    let stopped = async {
        let _ = stop_rx.await;
    };
    match tls {
        Some(tls) => router.serve_with_incoming_shutdown(crate::service::tls::incoming(listener, tls), stopped).await?,
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            router.serve_with_incoming_shutdown(incoming, stopped).await?
        }
    }
    let why = lifecycle.await.unwrap_or(Exit::Signal);
    if let Some(t) = metrics_task {
        t.abort();
    }
    if let Some(t) = verifier {
        t.abort();
    }
    tracing::info!(reason = ?why, "stopped");
    Ok(why)
}

/// The engine and the job table recovered from its journal; the clean-up of backups that a
/// previous process left running starts in the background.
fn open(cfg: &Config) -> Result<(Arc<Engine>, Arc<Jobs>), DaemonError> {
    let engine = Arc::new(Engine::open(cfg)?);
    std::fs::create_dir_all(&engine.state_dir)
        .map_err(|e| format!("state directory {}: {e}", engine.state_dir.display()))?;
    let (jobs, interrupted) = Jobs::recover(engine.clone())?;
    let jobs = Arc::new(jobs);
    let j = jobs.clone();
    tokio::spawn(async move { j.clean_up_recovered(&interrupted).await });
    Ok((engine, jobs))
}

/// Serves `/metrics` on `[monitoring] metrics_port` on every address family (IPv6 with IPv4
/// mapped, else IPv4). A port that cannot be bound is a warning, not a failure: metrics must
/// not keep backups from running.
async fn start_metrics(cfg: &Config, engine: &Engine, jobs: &Jobs) -> Option<JoinHandle<()>> {
    let metrics = crate::service::metrics::global();
    metrics.set_restore_file(engine.state_dir.join("restore.prom"));
    if let Some(at) = jobs.last_success() {
        metrics.restore_last_success(at);
    }
    let port = cfg.metrics_port?;
    let listener = match tokio::net::TcpListener::bind(("::", port)).await {
        Ok(l) => Ok(l),
        Err(_) => tokio::net::TcpListener::bind(("0.0.0.0", port)).await,
    };
    match listener {
        Ok(l) => {
            tracing::info!(port, "Prometheus metrics on /metrics");
            Some(tokio::spawn(crate::service::metrics::serve(l)))
        }
        Err(e) => {
            tracing::warn!(port, error = %e, "[monitoring] metrics_port cannot be bound: no metrics endpoint");
            None
        }
    }
}

/// The health of `""` and `"Medusa"`.
async fn set_health(health: &HealthReporter, serving: bool) {
    if serving {
        health.set_service_status("", Health::Serving).await;
        health.set_serving::<MedusaServer<MedusaService>>().await;
    } else {
        health.set_service_status("", Health::NotServing).await;
        health.set_not_serving::<MedusaServer<MedusaService>>().await;
    }
}

/// How often storage reachability is checked.
const STORAGE_CHECK: Duration = Duration::from_secs(30);

/// Every [`STORAGE_CHECK`] (and now): checks storage with one listing request, with a log line on
/// each change (with the error) and the `medusa_storage_reachable` gauge (health is not
/// affected); and clears stale medusa snapshots while no backup runs.
async fn watch(engine: Arc<Engine>, jobs: Arc<Jobs>) {
    use futures::StreamExt;
    let root = engine.storage.layout.index_root();
    let mut reachable = None;
    loop {
        let first = std::pin::pin!(engine.storage.list(&root)).next().await;
        let now = match &first {
            None | Some(Ok(_)) => true,
            Some(Err(e)) => {
                if reachable != Some(false) {
                    tracing::warn!(error = %e, "storage unreachable: backups fail until it answers (health stays SERVING)");
                }
                false
            }
        };
        if now && reachable != Some(true) {
            tracing::info!("storage reachable");
        }
        crate::service::metrics::global().storage_reachable(now);
        reachable = Some(now);
        jobs.clear_stale_snapshots().await;
        tokio::time::sleep(STORAGE_CHECK).await;
    }
}

/// Adds server reflection, v1 and v1alpha, for the Medusa, extension and health services.
fn with_reflection(router: Router) -> Result<Router, DaemonError> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::service::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::service::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok(router.add_service(v1).add_service(v1alpha))
}

/// The lifecycle: a signal, or a changed `medusa.ini` while no backup runs, starts the drain:
/// health NOT_SERVING, no new backups, the running one gets its grace period, then the server
/// is told to stop.
async fn lifecycle(
    opts: Options,
    jobs: Arc<Jobs>,
    health: HealthReporter,
    probe: JoinHandle<()>,
    shutdown: impl Future<Output = ()>,
    stop: tokio::sync::oneshot::Sender<()>,
) -> Exit {
    let why = tokio::select! {
        _ = shutdown => Exit::Signal,
        _ = config_changed(&opts, &jobs) => Exit::ConfigChanged,
    };
    tracing::info!(reason = ?why, "shutting down: refusing new backups");
    probe.abort();
    set_health(&health, false).await;
    jobs.shutdown(opts.shutdown_grace).await;
    let _ = stop.send(());
    why
}

/// Resolves once `medusa.ini` has changed and no backup runs.
async fn config_changed(opts: &Options, jobs: &Jobs) {
    let initial = file_hash(&opts.config_path);
    let mut announced = false;
    loop {
        tokio::time::sleep(opts.config_poll).await;
        if file_hash(&opts.config_path) == initial {
            continue;
        }
        if !jobs.any_active() {
            tracing::info!(path = %opts.config_path.display(), "configuration changed: restarting to apply it");
            return;
        }
        if !announced {
            tracing::info!("configuration changed: restarting once the running backup ends");
            announced = true;
        }
    }
}
