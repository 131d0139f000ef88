//! The request pipeline of one ZooKeeper server: **prep** (run by the submitting task itself,
//! under a lock: check the request against the tree plus outstanding changes, assign the zxid,
//! build the txn, hand it on — no task of its own, so a request costs no extra wake-up) →
//! **sync** (a thread: group commit — every txn queued while the previous fsync ran goes into the
//! next batch, one fsync per batch) → **final** (after the fsync: apply to the tree, fire
//! watches, publish, reply). Final runs on a thread of its own when `final_thread` is set, so one
//! batch is applied and answered while the next is being fsynced, or else on the sync thread
//! after each fsync (fewer hand-offs: better with few cores). Failed requests travel the same
//! path unlogged, so replies keep submission order.

use crate::snapshotter::{SnapshotPolicy, Snapshotter};
use crate::txnlog::{Staged, TxnLog};
use parking_lot::Mutex;
use roster_core::backend::{BackendError, TreeView};
use roster_core::session::SessionTracker;
use roster_core::tree::prep::{Outstanding, PrepOptions, create_session};
use roster_core::txn::{Applied, Envelope, Outcome, Request, Txn, TxnOp};
use roster_core::{SessionId, Zxid};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};

pub type Reply = oneshot::Sender<Result<Applied, BackendError>>;

/// What prep hands to sync/final.
enum Item {
    Txn(Arc<Txn>, Reply, Instant),
    Failed(Outcome, Reply),
    Barrier(oneshot::Sender<Zxid>),
}

/// State shared by the stages and the backend front.
pub struct Shared {
    pub tree: TreeView,
    pub outstanding: Mutex<Outstanding>,
    pub sessions: Mutex<SessionTracker>,
    pub applied_tx: broadcast::Sender<Arc<Txn>>,
    pub failed: AtomicBool,
    pub started: Instant,
    pub txns_since_snapshot: AtomicU64,
}

impl Shared {
    /// Monotonic ms since start, the session tracker's clock.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

pub struct PipelineConfig {
    pub server_id: u64,
    pub epoch: u32,
    pub prep: PrepOptions,
    pub max_batch: usize,
    pub snapshot: SnapshotPolicy,
    pub snapshots_retained: usize,
    /// Apply and answer on a thread of its own (see the module docs).
    pub final_thread: bool,
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Start sync (a thread) and final (on the sync thread, or its own with `final_thread`). Returns
/// the prep stage, through which requests enter.
pub fn start(shared: Arc<Shared>, log: TxnLog, cfg: PipelineConfig, queue_depth: usize) -> Prep {
    let (sync_tx, sync_rx) = mpsc::unbounded_channel::<Item>();
    let last = shared.tree.read().last_zxid();
    let mut next_zxid: Zxid = ((cfg.epoch as i64) << 32) | 1;
    if next_zxid <= last {
        next_zxid = last + 1;
    }
    let session_base =
        (((wall_ms() as u64) << 24) >> 8) as i64 | ((cfg.server_id as i64 & 0xff) << 56);
    let room = Arc::new(Semaphore::new(queue_depth.max(1)));
    let prep = Prep {
        shared: shared.clone(),
        room: room.clone(),
        state: Mutex::new(PrepState {
            out: sync_tx,
            next_zxid,
            next_session: session_base,
            opts: cfg.prep.clone(),
        }),
    };
    let snapshotter = Snapshotter::new(
        log.clone(),
        cfg.snapshots_retained,
        false,
        cfg.server_id,
        cfg.snapshot,
    );
    let sync = SyncStage {
        shared,
        log,
        cfg,
        snapshotter,
        room,
    };
    std::thread::Builder::new()
        .name("zab-sync".into())
        .spawn(move || sync.run(sync_rx))
        .expect("spawn sync thread");
    prep
}

/// The prep stage: requests enter here, on the submitter's task.
pub struct Prep {
    shared: Arc<Shared>,
    /// One permit per request between prep and its reply (`queue_depth`): submitters wait
    /// beyond that. The final stage gives them back.
    room: Arc<Semaphore>,
    /// Held while a request is prepared and handed to sync, so the sync queue is in zxid order.
    state: Mutex<PrepState>,
}

struct PrepState {
    out: mpsc::UnboundedSender<Item>,
    next_zxid: Zxid,
    next_session: SessionId,
    opts: PrepOptions,
}

impl Prep {
    /// Prepare `env`, hand it to sync and wait for its reply (after its fsync and apply).
    pub async fn submit(&self, env: Envelope) -> Result<Applied, BackendError> {
        self.room
            .acquire()
            .await
            .map_err(|_| BackendError::ShuttingDown)?
            .forget();
        let (tx, rx) = oneshot::channel();
        self.prep(env, tx);
        rx.await.map_err(|_| BackendError::ShuttingDown)?
    }

    /// Resolves once everything submitted before it is applied.
    pub async fn barrier(&self) -> Result<Zxid, BackendError> {
        let (tx, rx) = oneshot::channel();
        let sent = self.state.lock().out.send(Item::Barrier(tx)).is_ok();
        if !sent {
            return Err(BackendError::ShuttingDown);
        }
        rx.await.map_err(|_| BackendError::ShuttingDown)
    }

    fn prep(&self, env: Envelope, reply: Reply) {
        if self.shared.failed.load(Ordering::Acquire) {
            self.room.add_permits(1);
            let _ = reply.send(Err(BackendError::Storage(
                "the transaction log failed".into(),
            )));
            return;
        }
        let mut st = self.state.lock();
        let tree = self.shared.tree.read();
        let time = wall_ms();
        let zxid = st.next_zxid;
        let op = match &env.request {
            Request::CreateSession { timeout_ms } => Ok(create_session(
                &tree,
                &mut st.next_session,
                *timeout_ms,
                rand::random(),
            )),
            _ => self
                .shared
                .outstanding
                .lock()
                .prepare(&tree, &env, zxid, time, &st.opts)
                .map(|op| (env.session, op)),
        };
        drop(tree);
        let item = match op {
            Ok((session, op)) => {
                st.next_zxid += 1;
                let txn = Arc::new(Txn {
                    zxid,
                    time,
                    session,
                    op,
                });
                Item::Txn(txn, reply, Instant::now())
            }
            Err(outcome) => Item::Failed(outcome, reply),
        };
        if st.out.send(item).is_err() {
            // The sync thread is gone (shutting down): the reply went with the item.
            self.room.add_permits(1);
        }
    }
}

struct SyncStage {
    shared: Arc<Shared>,
    log: TxnLog,
    cfg: PipelineConfig,
    snapshotter: Snapshotter,
    room: Arc<Semaphore>,
}

/// A batch the sync thread has written (or failed to write), on its way to the final thread.
struct Written {
    items: Vec<Item>,
    txns: usize,
    /// The batch is durable (or held no txn); false once the log has failed.
    ok: bool,
}

impl SyncStage {
    /// Sync on this thread; final either on another (`final_thread`: while it applies and
    /// answers one batch, this one is already writing and fsyncing the next, as ZooKeeper's
    /// SyncRequestProcessor and FinalRequestProcessor are separate threads) or here, after each
    /// fsync. The hand-off to another thread costs a wake-up and a context switch per batch,
    /// which on 2 cores cost more than the overlap gained (measured, docs/benchmarks.md).
    /// Either way batches are finished in log order, and only after their fsync.
    fn run(self, mut rx: mpsc::UnboundedReceiver<Item>) {
        let fin = FinalStage {
            shared: self.shared.clone(),
            snapshotter: self.snapshotter,
            room: self.room.clone(),
            commit_seconds: metrics::histogram!("roster_backend_commit_seconds"),
            replies: Vec::new(),
        };
        /// Where written batches go.
        enum Final {
            Here(FinalStage),
            Thread(
                std::sync::mpsc::Sender<Written>,
                std::thread::JoinHandle<()>,
            ),
        }
        let mut fin = if self.cfg.final_thread {
            let (tx, rx) = std::sync::mpsc::channel::<Written>();
            let t = std::thread::Builder::new()
                .name("zab-final".into())
                .spawn(move || fin.run(rx))
                .expect("spawn final thread");
            Final::Thread(tx, t)
        } else {
            Final::Here(fin)
        };
        let mut txns: Vec<Arc<Txn>> = Vec::with_capacity(self.cfg.max_batch);
        // Reused from batch to batch when final runs here, so a batch allocates no vector of its
        // own (it was a large allocation per batch, one glibc serves by sorting its free lists).
        let batch_capacity = self.cfg.max_batch.min(1024);
        let mut batch: Vec<Item> = Vec::with_capacity(batch_capacity);
        let mut staged = Staged::default();
        loop {
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            batch.push(first);
            while batch.len() < self.cfg.max_batch {
                match rx.try_recv() {
                    Ok(i) => batch.push(i),
                    Err(_) => break,
                }
            }
            txns.clear();
            txns.extend(batch.iter().filter_map(|i| match i {
                Item::Txn(t, _, _) => Some(t.clone()),
                _ => None,
            }));
            if !txns.is_empty() && !self.shared.failed.load(Ordering::Acquire) {
                TxnLog::stage(&mut staged, &txns);
                let t0 = Instant::now();
                let res = self.log.commit(&staged);
                metrics::histogram!("roster_storage_fsync_seconds")
                    .record(t0.elapsed().as_secs_f64());
                metrics::histogram!("roster_backend_commit_batch_txns").record(txns.len() as f64);
                if let Err(e) = res {
                    tracing::error!(error = %e, first_zxid = txns[0].zxid, n = txns.len(),
                        "transaction log write failed; refusing further writes");
                    self.shared.failed.store(true, Ordering::Release);
                }
            }
            let ok = !self.shared.failed.load(Ordering::Acquire);
            match &mut fin {
                Final::Here(fin) => fin.finish(&mut batch, txns.len(), ok),
                Final::Thread(tx, _) => {
                    let items = std::mem::replace(&mut batch, Vec::with_capacity(batch_capacity));
                    let written = Written {
                        items,
                        txns: txns.len(),
                        ok,
                    };
                    if tx.send(written).is_err() {
                        break;
                    }
                }
            }
        }
        if let Final::Thread(tx, t) = fin {
            drop(tx);
            let _ = t.join();
        }
    }
}

struct FinalStage {
    shared: Arc<Shared>,
    snapshotter: Snapshotter,
    /// Where each answered request's permit goes back.
    room: Arc<Semaphore>,
    /// Looked up once: `histogram!` searches the registry on every call.
    commit_seconds: metrics::Histogram,
    /// The replies of the batch being finished; empty between batches, kept for its capacity.
    replies: Vec<(Reply, Result<Applied, BackendError>)>,
}

impl FinalStage {
    fn run(mut self, rx: std::sync::mpsc::Receiver<Written>) {
        while let Ok(mut w) = rx.recv() {
            self.finish(&mut w.items, w.txns, w.ok);
        }
    }

    /// Apply and answer `items` (drained), a batch holding `txns` txns.
    fn finish(&mut self, items: &mut Vec<Item>, txns: usize, ok: bool) {
        // `ok` is the batch's own fate: batches written before a log failure were handed over
        // earlier and are applied normally even if the flag is set by the time they get here.
        if !ok {
            self.shared.outstanding.lock().clear();
            let mut answered = 0;
            for item in items.drain(..) {
                match item {
                    Item::Txn(_, r, _) | Item::Failed(_, r) => {
                        answered += 1;
                        let _ = r.send(Err(BackendError::Storage(
                            "the transaction log failed".into(),
                        )));
                    }
                    Item::Barrier(r) => drop(r),
                }
            }
            // Each request (not a barrier) held one permit of the prep queue until answered.
            self.room.add_permits(answered);
            return;
        }
        // Final: apply in order under the write lock, then reply (replies never wait on I/O).
        let mut replies = std::mem::take(&mut self.replies);
        {
            let mut tree = self.shared.tree.write();
            let mut outstanding = self.shared.outstanding.lock();
            for item in items.drain(..) {
                match item {
                    Item::Txn(txn, reply, t0) => {
                        let outcome = tree.apply(&txn);
                        outstanding.applied(txn.zxid);
                        match &txn.op {
                            TxnOp::CreateSession { timeout_ms, .. } => {
                                let now = self.shared.now_ms();
                                self.shared.sessions.lock().add(
                                    txn.session,
                                    *timeout_ms as u64,
                                    now,
                                );
                            }
                            TxnOp::CloseSession => self.shared.sessions.lock().remove(txn.session),
                            _ => {}
                        }
                        let _ = self.shared.applied_tx.send(txn.clone());
                        self.commit_seconds.record(t0.elapsed().as_secs_f64());
                        replies.push((
                            reply,
                            Ok(Applied {
                                zxid: txn.zxid,
                                outcome,
                            }),
                        ));
                    }
                    Item::Failed(outcome, reply) => {
                        replies.push((
                            reply,
                            Ok(Applied {
                                zxid: tree.last_zxid(),
                                outcome,
                            }),
                        ));
                    }
                    Item::Barrier(r) => {
                        let _ = r.send(tree.last_zxid());
                    }
                }
            }
        }
        metrics::counter!("roster_backend_txns_total").increment(txns as u64);
        self.room.add_permits(replies.len());
        for (reply, res) in replies.drain(..) {
            let _ = reply.send(res);
        }
        self.replies = replies;
        let since = self
            .shared
            .txns_since_snapshot
            .fetch_add(txns as u64, Ordering::Relaxed)
            + txns as u64;
        if self.snapshotter.due(since) {
            self.shared.txns_since_snapshot.store(0, Ordering::Relaxed);
            self.snapshot();
        }
    }

    /// Snapshot the applied state: an O(1) view taken here, on the final thread (the only
    /// writer, so the tree cannot change under it), serialized and written in the background.
    fn snapshot(&self) {
        let view = self.shared.tree.read().snapshot_view();
        self.snapshotter.take(view);
    }
}
