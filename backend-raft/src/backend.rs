//! `RaftBackend`: the `Backend` contract on openraft. Writes go to the leader's prep stage
//! (locally, or forwarded from a follower or learner, which then waits until it has applied the
//! result itself); reads are local; `barrier` is ReadIndex at the leader followed by a local
//! wait; session touches on a follower are relayed to the leader in batches.

use crate::network::{
    Forward, ForwardError, ForwardReply, NetworkFactory, Peer, Transport, TransportError,
};
use crate::proposer::{Msg, Proposer, ProposerConfig};
use crate::storage::{LogStore, Progress, Shared, StateMachine};
use crate::types::{
    AppendEntriesRequest, AppendEntriesResponse, NodeId, Raft, Snapshot, SnapshotResponse, Vote,
    VoteRequest, VoteResponse,
};
use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use parking_lot::Mutex;
use roster_core::backend::{Backend, BackendError, Capabilities, ClusterStatus, TreeView};
use roster_core::storage::Engine;
use roster_core::tree::prep::PrepOptions;
use roster_core::txn::{Applied, Envelope, Txn};
use roster_core::{SessionId, Zxid};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Longest a snapshot may take to reach a member and be installed there; the TCP transport's
/// `long_timeout` is the same.
pub const SNAPSHOT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);

/// Settings of the Raft backend.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This member's id; stable for the life of its data (never reuse an id with an empty disk
    /// for a different member).
    pub node_id: NodeId,
    /// The address other members reach this one at (recorded in the membership).
    pub addr: String,
    /// ZooKeeper `tickTime`: session-expiry granularity and the touch-relay period (half a tick).
    pub tick_ms: u64,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Take a snapshot after this many log entries.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot (so a slightly lagging member needs no snapshot).
    pub logs_kept_after_snapshot: u64,
    /// Accept TTL nodes.
    pub extended_types: bool,
    /// How often the container manager looks for empty containers and expired TTL nodes.
    pub container_check_ms: u64,
    /// Most requests prepared into one log entry, and most writes per fsync.
    pub max_batch: usize,
    /// Requests queued at the prep stage before submitters wait.
    pub queue_depth: usize,
    /// How long a request may wait for a leader before it fails `Unavailable`.
    pub request_timeout_ms: u64,
    /// Let the leader accept a member whose log went backwards (restarted with an empty disk)
    /// and re-send it everything (by snapshot). Raft assumes durable votes: a voter that lost
    /// its disk may vote twice in one term, so operators should prefer removing and re-adding
    /// such a member under a new id.
    pub allow_log_reversion: bool,
    /// Keep snapshots as files in this directory (a server: `<data_dir>/raft-snapshots`)
    /// instead of in the storage engine.
    pub snapshot_dir: Option<std::path::PathBuf>,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            node_id: 1,
            addr: "127.0.0.1:2888".into(),
            tick_ms: 2000,
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            snapshot_every: 100_000,
            logs_kept_after_snapshot: 10_000,
            extended_types: true,
            container_check_ms: 5_000,
            max_batch: 1024,
            queue_depth: 16_384,
            request_timeout_ms: 10_000,
            allow_log_reversion: true,
            snapshot_dir: None,
        }
    }
}

/// Errors opening the backend.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("storage: {0}")]
    Storage(#[from] std::io::Error),
    #[error("raft config: {0}")]
    Config(String),
    #[error("raft: {0}")]
    Raft(String),
}

/// Where a request for the leader goes.
pub(crate) enum Route {
    Local,
    Remote(Peer),
    None,
}

/// The Raft backend.
pub struct RaftBackend {
    pub(crate) cfg: RaftConfig,
    pub(crate) raft: Raft,
    pub(crate) shared: Arc<Shared>,
    queue: mpsc::Sender<Msg>,
    pub(crate) transport: Arc<dyn Transport>,
    /// Sessions touched on this member since the last relay to the leader.
    pub(crate) touched: Mutex<HashSet<SessionId>>,
    pub(crate) closed: AtomicBool,
    /// Leaders this member has seen elected (a new term's leader becoming known).
    pub(crate) elections: std::sync::atomic::AtomicU64,
    /// When (`Shared::now_ms`) a leader's append last reached this member; `u64::MAX`: never.
    pub(crate) leader_contact_ms: std::sync::atomic::AtomicU64,
}

impl RaftBackend {
    /// Recover from `engine` (snapshot, then the log) and join the cluster through `transport`.
    /// A brand-new cluster is formed by calling [`RaftBackend::initialize`] on one member.
    pub async fn open(
        cfg: RaftConfig,
        engine: Arc<dyn Engine>,
        transport: Arc<dyn Transport>,
    ) -> Result<Arc<RaftBackend>, OpenError> {
        let t0 = Instant::now();
        roster_core::transfer::register();
        let snaps = crate::storage::SnapStore::open(engine.clone(), cfg.snapshot_dir.as_deref())?;
        let (tree, meta) = crate::storage::load(&snaps)?;
        tracing::info!(
            node = cfg.node_id,
            zxid = format!("{:#x}", tree.last_zxid()),
            last_applied = ?meta.last_applied,
            "loaded snapshot"
        );
        let shared = Arc::new(Shared::new(tree, meta, cfg.tick_ms));
        let log = LogStore::open(engine.clone(), cfg.max_batch, cfg.node_id)?;
        let retain_from = log.retain_from();
        let sm = StateMachine::new(shared.clone(), snaps);
        let rcfg = openraft::Config {
            cluster_name: "roster".into(),
            heartbeat_interval: cfg.heartbeat_ms,
            election_timeout_min: cfg.election_timeout_min_ms,
            election_timeout_max: cfg.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: cfg.logs_kept_after_snapshot,
            allow_log_reversion: Some(cfg.allow_log_reversion),
            enable_pre_vote: Some(true),
            // A leader that restarts must win a new term. Restored in its old term, it would
            // lack entries it replicated from its in-memory tail before they were synced, and
            // mint new entries (and zxids) at log ids and zxids its followers already hold.
            enable_leader_restore: Some(false),
            // openraft's deadline for sending a whole snapshot, install included (its default,
            // 200 ms, is for a snapshot of kilobytes: one of 300 MB was abandoned and sent again
            // every few hundred ms, 53 times in 90 s, and the member had not caught up —
            // docs/raft.md). The TCP transport bounds each piece on its own and notices a dead
            // link within seconds.
            install_snapshot_timeout: SNAPSHOT_TRANSFER_TIMEOUT.as_millis() as u64,
            ..Default::default()
        }
        .validate()
        .map_err(|e| OpenError::Config(e.to_string()))?;
        let raft = Raft::new(
            cfg.node_id,
            Arc::new(rcfg),
            NetworkFactory {
                transport: transport.clone(),
            },
            log,
            sm,
        )
        .await
        .map_err(|e| OpenError::Raft(e.to_string()))?;
        let queue = Proposer::start(
            shared.clone(),
            raft.clone(),
            ProposerConfig {
                server_id: cfg.node_id,
                prep: PrepOptions {
                    extended_types: cfg.extended_types,
                },
                max_batch: cfg.max_batch,
                ready_timeout: Duration::from_millis(cfg.request_timeout_ms),
            },
            cfg.queue_depth,
        );
        let me = Arc::new(RaftBackend {
            cfg,
            raft,
            shared,
            queue,
            transport,
            touched: Mutex::new(HashSet::new()),
            closed: AtomicBool::new(false),
            elections: Default::default(),
            leader_contact_ms: std::sync::atomic::AtomicU64::new(u64::MAX),
        });
        crate::timers::spawn_all(&me);
        crate::status::spawn_metrics(&me, retain_from);
        tracing::info!(
            node = me.cfg.node_id,
            ms = t0.elapsed().as_millis() as u64,
            "raft backend open"
        );
        Ok(me)
    }

    /// Form a new cluster with these voters (id → address). Call once, on one member of a
    /// brand-new cluster; a member that already has state refuses.
    pub async fn initialize(&self, voters: BTreeMap<NodeId, String>) -> Result<(), BackendError> {
        let nodes: BTreeMap<NodeId, BasicNode> = voters
            .into_iter()
            .map(|(id, addr)| (id, BasicNode { addr }))
            .collect();
        self.raft
            .initialize(nodes)
            .await
            .map_err(|e| BackendError::Unavailable(format!("initialize: {e}")))
    }

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.cfg.node_id
    }

    /// The openraft handle (for tooling and tests).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The leader as this member knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Is this member the leader, with its predecessors' entries applied (ready to prepare)?
    pub fn is_leading(&self) -> bool {
        self.shared.leading_term.load(Ordering::Acquire) != 0
    }

    /// Where this member's state machine is.
    pub fn progress(&self) -> Progress {
        *self.shared.progress.borrow()
    }

    /// Stop: Raft, timers and the prep stage. Pending requests fail.
    pub async fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        self.shared
            .fail_waiters(ForwardError::Backend(BackendError::ShuttingDown));
        tracing::info!(node = self.cfg.node_id, "raft backend stopped");
    }

    pub fn is_shut_down(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn route(&self) -> Route {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.state == ServerState::Leader {
            return Route::Local;
        }
        match m.current_leader {
            Some(id) if id != self.cfg.node_id => match m.membership_config.get_node(&id) {
                Some(n) => Route::Remote(Peer {
                    id,
                    addr: n.addr.clone(),
                }),
                None => Route::None,
            },
            _ => Route::None,
        }
    }

    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.cfg.request_timeout_ms)
    }

    /// Run `attempt` against the leader until it answers, the leader cannot be found before
    /// the deadline, or it fails in a way a retry could double-apply.
    pub(crate) async fn retry_at_leader<T, F, Fut>(&self, mut attempt: F) -> Result<T, BackendError>
    where
        F: FnMut(Route) -> Fut,
        Fut: std::future::Future<Output = Result<T, ForwardError>>,
    {
        let deadline = self.deadline();
        let mut backoff = Duration::from_millis(5);
        loop {
            if self.is_shut_down() {
                return Err(BackendError::ShuttingDown);
            }
            let err = match attempt(self.route()).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match err {
                // Nothing ran: look for the leader again.
                ForwardError::NotLeader(_)
                | ForwardError::Transport(TransportError::Unreachable(_)) => {}
                ForwardError::Backend(e) => return Err(e),
                e @ ForwardError::Transport(_) => {
                    return Err(BackendError::Unavailable(e.to_string()));
                }
            }
            if Instant::now() + backoff > deadline {
                return Err(BackendError::Unavailable(format!(
                    "no leader reachable within {} ms",
                    self.cfg.request_timeout_ms
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    /// Submit to this member's own prep stage (it must be the leader).
    pub(crate) async fn submit_local(&self, env: Envelope) -> Result<Applied, ForwardError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(Msg::Submit(env, tx))
            .await
            .map_err(|_| BackendError::ShuttingDown)?;
        rx.await.map_err(|_| BackendError::ShuttingDown)?
    }

    pub(crate) async fn barrier_local(&self) -> Result<Progress, ForwardError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(Msg::Barrier(tx))
            .await
            .map_err(|_| BackendError::ShuttingDown)?;
        rx.await.map_err(|_| BackendError::ShuttingDown)?
    }

    /// Wait until this member has applied `p` (by zxid or by log index).
    pub(crate) async fn wait_applied(&self, p: Progress) -> Result<(), BackendError> {
        let mut rx = self.shared.progress.subscribe();
        let wait = rx.wait_for(|cur| cur.zxid >= p.zxid && cur.index >= p.index);
        match tokio::time::timeout(Duration::from_millis(self.cfg.request_timeout_ms), wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(BackendError::ShuttingDown),
            Err(_) => Err(BackendError::Unavailable(format!(
                "this member has not applied {:#x} (log index {}) in time",
                p.zxid, p.index
            ))),
        }
    }

    // ---- the receiving side of a transport ----

    pub async fn handle_append_entries(
        &self,
        rpc: AppendEntriesRequest,
    ) -> Result<AppendEntriesResponse, TransportError> {
        let r = self
            .raft
            .append_entries(rpc)
            .await
            .map_err(|e| TransportError::Remote(e.to_string()))?;
        if !matches!(r, AppendEntriesResponse::HigherVote(_)) {
            self.leader_contact_ms
                .store(self.shared.now_ms(), Ordering::Relaxed);
        }
        Ok(r)
    }

    pub async fn handle_vote(&self, rpc: VoteRequest) -> Result<VoteResponse, TransportError> {
        self.raft
            .vote(rpc)
            .await
            .map_err(|e| TransportError::Remote(e.to_string()))
    }

    pub async fn handle_pre_vote(&self, rpc: VoteRequest) -> Result<VoteResponse, TransportError> {
        self.raft
            .pre_vote(rpc)
            .await
            .map_err(|e| TransportError::Remote(e.to_string()))
    }

    pub async fn handle_install_snapshot(
        &self,
        vote: Vote,
        snapshot: Snapshot,
    ) -> Result<SnapshotResponse, TransportError> {
        self.raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| TransportError::Remote(e.to_string()))
    }

    /// A Roster request from another member (it believes this one leads).
    pub async fn handle_forward(&self, req: Forward) -> Result<ForwardReply, ForwardError> {
        if self.is_shut_down() {
            return Err(TransportError::Unreachable("shut down".into()).into());
        }
        if self.raft.metrics().borrow_watched().state != ServerState::Leader {
            return Err(ForwardError::NotLeader(self.leader()));
        }
        match req {
            Forward::Submit(env) => self.submit_local(env).await.map(ForwardReply::Applied),
            Forward::Touch(ids) => {
                if !self.is_leading() {
                    return Err(ForwardError::NotLeader(self.leader()));
                }
                let now = self.shared.now_ms();
                let mut t = self.shared.sessions.lock();
                for id in ids {
                    t.touch(id, now);
                }
                Ok(ForwardReply::Touched)
            }
            Forward::Barrier => self.barrier_local().await.map(ForwardReply::barrier),
            Forward::Admin(op) => self.run_admin(op).await.map(|()| ForwardReply::Admin),
        }
    }
}

#[async_trait::async_trait]
impl Backend for RaftBackend {
    async fn submit(&self, req: Envelope) -> Result<Applied, BackendError> {
        self.retry_at_leader(|route| {
            let env = req.clone();
            async move {
                match route {
                    Route::Local => self.submit_local(env).await,
                    Route::Remote(peer) => {
                        match self.transport.forward(&peer, Forward::Submit(env)).await? {
                            ForwardReply::Applied(a) => {
                                // Applied on the leader; answer once it is applied here too, so
                                // this member's reads see it.
                                self.wait_applied(Progress {
                                    zxid: a.zxid,
                                    index: 0,
                                })
                                .await?;
                                Ok(a)
                            }
                            other => Err(BackendError::Unavailable(format!(
                                "unexpected reply to a write: {other:?}"
                            ))
                            .into()),
                        }
                    }
                    Route::None => Err(ForwardError::NotLeader(None)),
                }
            }
        })
        .await
    }

    fn tree(&self) -> TreeView {
        self.shared.tree.clone()
    }

    async fn barrier(&self) -> Result<Zxid, BackendError> {
        let p = self
            .retry_at_leader(|route| async move {
                match route {
                    Route::Local => self.barrier_local().await,
                    Route::Remote(peer) => {
                        match self.transport.forward(&peer, Forward::Barrier).await? {
                            ForwardReply::Barrier { zxid, index } => Ok(Progress { zxid, index }),
                            other => Err(BackendError::Unavailable(format!(
                                "unexpected reply to a barrier: {other:?}"
                            ))
                            .into()),
                        }
                    }
                    Route::None => Err(ForwardError::NotLeader(None)),
                }
            })
            .await?;
        self.wait_applied(p).await?;
        Ok(self.shared.tree.read().last_zxid())
    }

    fn applied(&self) -> broadcast::Receiver<Arc<Txn>> {
        self.shared.applied_tx.subscribe()
    }

    async fn touch(&self, sessions: &[SessionId]) -> Result<(), BackendError> {
        if self.is_leading() {
            let now = self.shared.now_ms();
            let mut t = self.shared.sessions.lock();
            for s in sessions {
                t.touch(*s, now);
            }
        } else {
            self.touched.lock().extend(sessions.iter().copied());
        }
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::CP
    }

    fn status(&self) -> ClusterStatus {
        crate::status::status(self)
    }
}
