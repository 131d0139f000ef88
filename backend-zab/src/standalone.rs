//! A single ZooKeeper server: recovery (latest snapshot + log replay, new epoch), the pipeline,
//! session expiry and the container manager. The ensemble (issue: ZAB ensemble) reuses the same
//! pipeline with a quorum in the sync stage.

use crate::pipeline::{self, PipelineConfig, Prep, Shared};
use crate::snapshotter::SnapshotPolicy;
use crate::txnlog::TxnLog;
use parking_lot::{Mutex, RwLock};
use roster_core::backend::{Backend, BackendError, Capabilities, ClusterStatus, Role, TreeView};
use roster_core::session::SessionTracker;
use roster_core::storage::Engine;
use roster_core::tree::prep::{Outstanding, PrepOptions};
use roster_core::txn::{Applied, Envelope, Request, Txn};
use roster_core::{SessionId, Zxid};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// Settings of the ZAB backend.
#[derive(Debug, Clone)]
pub struct ZabConfig {
    pub server_id: u64,
    /// ZooKeeper `tickTime`: the session-expiry granularity.
    pub tick_ms: u64,
    /// When to take a snapshot.
    pub snapshot: SnapshotPolicy,
    /// Snapshots kept (the log after the oldest is kept too).
    pub snapshots_retained: usize,
    /// Accept TTL nodes.
    pub extended_types: bool,
    /// How often the container manager looks for empty containers and expired TTL nodes.
    pub container_check_ms: u64,
    /// Most transactions per fsync.
    pub max_batch: usize,
    /// Requests queued before submitters wait.
    pub queue_depth: usize,
    /// Where snapshots are written as files; `None` keeps them in the engine (in-memory tests).
    pub snapshot_dir: Option<std::path::PathBuf>,
    /// Where the transaction log is written as files; `None` keeps it in the engine.
    pub log_dir: Option<std::path::PathBuf>,
    /// Apply and answer on a thread of their own, overlapping the next batch's fsync, instead of
    /// on the sync thread after each fsync. Default: only with more than 2 CPUs — on 2, the
    /// extra hand-off per batch cost more than the overlap gained (docs/benchmarks.md).
    pub final_thread: bool,
}

/// The default of [`ZabConfig::final_thread`]: more than 2 CPUs.
pub fn final_thread_default() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() > 2)
}

impl Default for ZabConfig {
    fn default() -> Self {
        ZabConfig {
            server_id: 1,
            tick_ms: 2000,
            snapshot: SnapshotPolicy::default(),
            snapshots_retained: 3,
            extended_types: true,
            container_check_ms: 5_000,
            max_batch: 1024,
            queue_depth: 16_384,
            snapshot_dir: None,
            log_dir: None,
            final_thread: final_thread_default(),
        }
    }
}

/// Errors opening the backend.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Storage(#[from] roster_core::storage::StorageError),
    #[error(transparent)]
    Snapshot(#[from] roster_core::tree::snapshot::SnapshotError),
    #[error("ensemble configuration: {0}")]
    Config(String),
}

/// The standalone ZAB backend.
pub struct Standalone {
    shared: Arc<Shared>,
    prep: Prep,
    cfg: ZabConfig,
    epoch: u32,
    closed: AtomicBool,
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Standalone {
    /// Recover state from `engine` and start serving. Must run inside a tokio runtime.
    pub fn open(engine: Arc<dyn Engine>, cfg: ZabConfig) -> Result<Arc<Standalone>, OpenError> {
        let t0 = Instant::now();
        let log = TxnLog::open(engine, cfg.snapshot_dir.as_deref(), cfg.log_dir.as_deref())?;
        let recovered = log.recover()?;
        if let Some(zxid) = recovered.snapshot {
            tracing::info!(zxid = format!("{zxid:#x}"), "loaded snapshot");
        }
        let (tree, replayed) = (recovered.tree, recovered.replayed);
        let last = tree.last_zxid();
        let epoch = log.current_epoch()?.max((last >> 32) as u32) + 1;
        log.set_current_epoch(epoch)?;
        tracing::info!(
            last_zxid = format!("{last:#x}"),
            replayed,
            epoch,
            nodes = tree.node_count(),
            sessions = tree.sessions().len(),
            ms = t0.elapsed().as_millis() as u64,
            "recovered state"
        );
        let started = Instant::now();
        let mut tracker = SessionTracker::new(cfg.tick_ms);
        // Sessions restored from disk get their full timeout again, as in ZooKeeper.
        for (id, meta) in tree.sessions() {
            tracker.add(*id, meta.timeout_ms as u64, 0);
        }
        let (applied_tx, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            tree: Arc::new(RwLock::new(tree)),
            outstanding: Mutex::new(Outstanding::default()),
            sessions: Mutex::new(tracker),
            applied_tx,
            failed: AtomicBool::new(false),
            started,
            txns_since_snapshot: AtomicU64::new(replayed),
        });
        let prep = pipeline::start(
            shared.clone(),
            log,
            PipelineConfig {
                server_id: cfg.server_id,
                epoch,
                prep: PrepOptions {
                    extended_types: cfg.extended_types,
                },
                max_batch: cfg.max_batch,
                snapshot: cfg.snapshot,
                snapshots_retained: cfg.snapshots_retained,
                final_thread: cfg.final_thread,
            },
            cfg.queue_depth,
        );
        let me = Arc::new(Standalone {
            shared,
            prep,
            cfg,
            epoch,
            closed: AtomicBool::new(false),
        });
        me.clone().spawn_session_expiry();
        me.clone().spawn_container_manager();
        Ok(me)
    }

    fn spawn_session_expiry(self: Arc<Self>) {
        let weak = Arc::downgrade(&self);
        let tick = Duration::from_millis((self.cfg.tick_ms / 2).max(10));
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(tick);
            loop {
                iv.tick().await;
                let Some(me) = weak.upgrade() else { return };
                if me.closed.load(Ordering::Acquire) {
                    return;
                }
                let now = me.shared.now_ms();
                let expired = me.shared.sessions.lock().expired(now);
                for id in expired {
                    tracing::info!(session = format!("{id:#x}"), "session expired");
                    metrics::counter!("roster_sessions_expired_total").increment(1);
                    let me = me.clone();
                    tokio::spawn(async move {
                        let env = Envelope {
                            session: id,
                            ..Envelope::internal(Request::CloseSession)
                        };
                        if let Err(e) = me.submit(env).await {
                            tracing::warn!(session = format!("{id:#x}"), error = %e, "closing expired session failed");
                        }
                    });
                }
            }
        });
    }

    fn spawn_container_manager(self: Arc<Self>) {
        let weak = Arc::downgrade(&self);
        let every = Duration::from_millis(self.cfg.container_check_ms.max(10));
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(every);
            loop {
                iv.tick().await;
                let Some(me) = weak.upgrade() else { return };
                if me.closed.load(Ordering::Acquire) {
                    return;
                }
                let due = me.shared.tree.read().expired_containers(wall_ms());
                for path in due {
                    let env = Envelope::internal(Request::DeleteContainer { path: path.clone() });
                    match me.submit(env).await {
                        Ok(a) => tracing::debug!(path, ?a.outcome, "container manager"),
                        Err(e) => tracing::warn!(path, error = %e, "container delete failed"),
                    }
                }
            }
        });
    }

    /// The epoch this run writes in.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Stop timers (the pipeline drains when the last handle is dropped).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Live sessions tracked for expiry.
    pub fn session_count(&self) -> usize {
        self.shared.sessions.lock().len()
    }
}

#[async_trait::async_trait]
impl Backend for Standalone {
    async fn submit(&self, req: Envelope) -> Result<Applied, BackendError> {
        self.prep.submit(req).await
    }

    fn tree(&self) -> TreeView {
        self.shared.tree.clone()
    }

    async fn barrier(&self) -> Result<Zxid, BackendError> {
        self.prep.barrier().await
    }

    fn applied(&self) -> broadcast::Receiver<Arc<Txn>> {
        self.shared.applied_tx.subscribe()
    }

    async fn touch(&self, sessions: &[SessionId]) -> Result<(), BackendError> {
        let now = self.shared.now_ms();
        let mut t = self.shared.sessions.lock();
        for s in sessions {
            t.touch(*s, now);
        }
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::CP
    }

    fn status(&self) -> ClusterStatus {
        let last = self.shared.tree.read().last_zxid();
        ClusterStatus {
            backend: "zab",
            role: Role::Standalone,
            server_id: self.cfg.server_id,
            leader: Some(self.cfg.server_id),
            epoch: self.epoch as u64,
            last_zxid: last,
            committed_zxid: last,
            members: 1,
            voters: 1,
            outstanding: self.shared.outstanding.lock().len(),
            ready: !self.shared.failed.load(Ordering::Acquire),
            synced_followers: None,
            synced_observers: None,
            elections: 0,
        }
    }
}
