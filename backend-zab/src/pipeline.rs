//! The request pipeline of one ZooKeeper server: **prep** (a task: check the request against the
//! tree plus outstanding changes, assign the zxid, build the txn) → **sync** (a thread: group
//! commit — every txn queued while the previous fsync ran goes into the next batch, one fsync per
//! batch) → **final** (after the fsync: apply to the tree, fire watches, publish, reply). Final
//! runs on a thread of its own when `final_thread` is set, so one batch is applied and answered
//! while the next is being fsynced, or else on the sync thread after each fsync (fewer
//! hand-offs: better with few cores). Failed requests travel the same path unlogged, so replies
//! keep submission order.

use crate::snapshotter::{SnapshotPolicy, Snapshotter};
use crate::txnlog::TxnLog;
use parking_lot::Mutex;
use roster_core::backend::{BackendError, TreeView};
use roster_core::session::SessionTracker;
use roster_core::tree::prep::{Outstanding, PrepOptions};
use roster_core::txn::{Applied, Envelope, Outcome, Request, Txn, TxnOp};
use roster_core::{SessionId, Zxid};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc, oneshot};

pub type Reply = oneshot::Sender<Result<Applied, BackendError>>;

/// What the prep stage receives.
pub enum Msg {
    Request(Envelope, Reply),
    /// Resolves once everything submitted before it is applied.
    Barrier(oneshot::Sender<Zxid>),
}

/// What prep hands to sync/final.
enum Item {
    Txn(Arc<Txn>, Option<Reply>, Instant),
    Failed(Outcome, Option<Reply>),
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

/// Start prep (a tokio task), sync (a thread) and final (on the sync thread, or its own with
/// `final_thread`). Returns the prep queue.
pub fn start(
    shared: Arc<Shared>,
    log: TxnLog,
    cfg: PipelineConfig,
    queue_depth: usize,
) -> mpsc::Sender<Msg> {
    let (tx, rx) = mpsc::channel::<Msg>(queue_depth);
    let (sync_tx, sync_rx) = mpsc::unbounded_channel::<Item>();
    let last = shared.tree.read().last_zxid();
    let mut next_zxid: Zxid = ((cfg.epoch as i64) << 32) | 1;
    if next_zxid <= last {
        next_zxid = last + 1;
    }
    let session_base =
        (((wall_ms() as u64) << 24) >> 8) as i64 | ((cfg.server_id as i64 & 0xff) << 56);
    let prep_state = PrepStage {
        shared: shared.clone(),
        out: sync_tx,
        next_zxid,
        next_session: session_base,
        opts: cfg.prep.clone(),
    };
    tokio::spawn(prep_state.run(rx));
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
    };
    std::thread::Builder::new()
        .name("zab-sync".into())
        .spawn(move || sync.run(sync_rx))
        .expect("spawn sync thread");
    tx
}

struct PrepStage {
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Item>,
    next_zxid: Zxid,
    next_session: SessionId,
    opts: PrepOptions,
}

impl PrepStage {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        // Both buffers live as long as the stage: a batch allocates neither.
        let mut buf = Vec::with_capacity(256);
        let mut items = Vec::with_capacity(256);
        while rx.recv_many(&mut buf, 256).await > 0 {
            self.prep_batch(&mut buf, &mut items);
            for item in items.drain(..) {
                if self.out.send(item).is_err() {
                    return;
                }
            }
        }
    }

    /// Prepare `msgs` (drained) into `items` (appended to).
    fn prep_batch(&mut self, msgs: &mut Vec<Msg>, items: &mut Vec<Item>) {
        let failed = self.shared.failed.load(Ordering::Acquire);
        let tree = self.shared.tree.read();
        let mut outstanding = self.shared.outstanding.lock();
        for msg in msgs.drain(..) {
            let (env, reply) = match msg {
                Msg::Barrier(r) => {
                    items.push(Item::Barrier(r));
                    continue;
                }
                Msg::Request(env, reply) => (env, reply),
            };
            if failed {
                let _ = reply.send(Err(BackendError::Storage(
                    "the transaction log failed".into(),
                )));
                continue;
            }
            let time = wall_ms();
            let zxid = self.next_zxid;
            let op = match &env.request {
                Request::CreateSession { timeout_ms } => {
                    let mut id = self.next_session;
                    while tree.sessions().contains_key(&id) || id == 0 {
                        id += 1;
                    }
                    self.next_session = id + 1;
                    let passwd: [u8; 16] = rand::random();
                    Ok((
                        id,
                        TxnOp::CreateSession {
                            timeout_ms: *timeout_ms,
                            passwd: passwd.to_vec(),
                        },
                    ))
                }
                _ => outstanding
                    .prepare(&tree, &env, zxid, time, &self.opts)
                    .map(|op| (env.session, op)),
            };
            match op {
                Ok((session, op)) => {
                    self.next_zxid += 1;
                    let txn = Arc::new(Txn {
                        zxid,
                        time,
                        session,
                        op,
                    });
                    items.push(Item::Txn(txn, Some(reply), Instant::now()));
                }
                Err(outcome) => items.push(Item::Failed(outcome, Some(reply))),
            }
        }
    }
}

struct SyncStage {
    shared: Arc<Shared>,
    log: TxnLog,
    cfg: PipelineConfig,
    snapshotter: Snapshotter,
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
                let wb = TxnLog::stage(&txns);
                let t0 = Instant::now();
                let res = self.log.commit(wb);
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
    /// Looked up once: `histogram!` searches the registry on every call.
    commit_seconds: metrics::Histogram,
    /// The replies of the batch being finished; empty between batches, kept for its capacity.
    replies: Vec<(Option<Reply>, Result<Applied, BackendError>)>,
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
            for item in items.drain(..) {
                match item {
                    Item::Txn(_, Some(r), _) | Item::Failed(_, Some(r)) => {
                        let _ = r.send(Err(BackendError::Storage(
                            "the transaction log failed".into(),
                        )));
                    }
                    Item::Barrier(r) => drop(r),
                    _ => {}
                }
            }
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
        for (reply, res) in replies.drain(..) {
            if let Some(r) = reply {
                let _ = r.send(res);
            }
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
