//! medusa-rs: the backup engine shared by the gRPC sidecar and the restore init container.
//!
//! # The two flows
//!
//! **Backup**, in the sidecar: [`service::grpc`] (`AsyncBackup`) → [`service::jobs`] (a
//! journalled job, one backup at a time per node) → [`backup::run`]:
//! 1. [`backup::cassandra`] takes the snapshot and tells the node's facts;
//! 2. [`backup::snapshot`] reads what the snapshot put on disk;
//! 3. [`bucket::node_backup::begin`] writes the meta objects and index start entries;
//! 4. [`backup::plan`] decides, file by file, upload or reuse of what is stored;
//! 5. [`transfer`] moves the bytes, hashing them on the way;
//! 6. [`bucket::node_backup::publish`] writes the manifest (the node backup is complete), the
//!    index finish entries and the latest pointer; the snapshot is cleared.
//!
//! **Restore**, in the init container: [`restore`] resolves the request (environment and
//! mapping, [`restore::mapping`]) → reads the manifest through [`bucket::node_backup`] →
//! [`restore::plan`] → [`restore::download`] (into staging, every object verified, phases in
//! [`restore::journal`]) → [`restore::place`] (by rename) → `.last-restore`.
//!
//! Around them: [`retention`] (purge and orphan cleanup), [`service::listing`] (GetBackups),
//! [`service::daemon`] (the sidecar's lifecycle), [`service::status`] (every error's gRPC code).
//!
//! # Layers
//!
//! Each module imports only from the layers below it:
//! 1. [`config`] (`medusa.ini`, each key declared once in `config::keys`; `cassandra.yaml`)
//!    and [`format`] (the bucket contract as pure formats: keys, manifest, tokenmap, names,
//!    digests);
//! 2. [`store`]: the object store (built in `store::build`, operated in `store::objects`), its
//!    errors, the one retry engine ([`store::Retries`], [`store::Attempts`]) and the `local`
//!    fast path;
//! 3. [`bucket`]: the state of node backups and the index, read and written through the store;
//! 4. [`transfer`]: moving bytes (uploads, streamed S3 uploads, downloads, the `local` copies
//!    and the hashing file I/O they share, one file each);
//! 5. the flows: [`backup`], [`restore`], [`retention`];
//! 6. [`service`]: the sidecar (the generated gRPC code in [`service::pb`]);
//! 7. [`cli`]: the `medusa-rs` multi-call binary (sidecar, restore init container, entry point,
//!    health probe, and the everyday commands: list-backups, status, verify, download, purge,
//!    purge-decommissioned, fetch-tokenmap, get-last-complete-cluster-backup, report-last-backup,
//!    backup-cluster, delete-backup).
//!
//! [`fsutil`] (durable writes, the blocking pool), [`logging`] and [`tls`] serve every layer.
pub mod backup;
pub mod bucket;
pub mod cli;
pub mod config;
pub mod format;
pub mod fsutil;
pub mod logging;
pub mod restore;
pub mod retention;
pub mod service;
pub mod store;
pub mod tls;
pub mod transfer;
