//! One ensemble member as a state machine without I/O: it takes inputs (a message, a tick, a
//! client request) and produces outputs (messages to send, replies). Storage is reached through
//! the `Engine` (synchronously: the shell runs a peer on its own thread, the simulation in one
//! thread over `MemEngine`), and log appends are group-committed by `flush`.
//!
//! Phases follow ZooKeeper: LOOKING (fast leader election) → discovery (new epoch from a quorum)
//! → synchronisation (DIFF / TRUNC+DIFF / SNAP, NEWLEADER) → broadcast (PROPOSAL / ACK / COMMIT).

use super::msg::{Msg, PeerState, Sid, Vote};
use crate::snapshotter::{SnapshotPolicy, Snapshotter};
use crate::txnlog::{Staged, TxnLog};
use parking_lot::RwLock;
use roster_core::backend::{BackendError, Role};
use roster_core::session::SessionTracker;
use roster_core::storage::{Engine, StorageError};
use roster_core::tree::Tree;
use roster_core::tree::prep::{Outstanding, PrepOptions};
use roster_core::txn::{Applied, Envelope, Outcome, Txn, TxnOp};
use roster_core::{SessionId, Zxid};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Static settings of a member.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub id: Sid,
    pub voters: BTreeSet<Sid>,
    pub observers: BTreeSet<Sid>,
    pub tick_ms: u64,
    /// Ticks a leader may take to get a quorum through discovery and sync.
    pub init_limit: u64,
    /// Ticks without hearing from the leader (or, for a leader, from a quorum) before LOOKING.
    pub sync_limit: u64,
    pub prep: PrepOptions,
    pub snapshot: SnapshotPolicy,
    pub snapshots_retained: usize,
    pub container_check_ms: u64,
    /// Test only: commit with this many acknowledgements instead of a majority. Lets the fault
    /// harness prove that it catches a broken protocol. Never set outside tests.
    #[doc(hidden)]
    pub broken_quorum: Option<usize>,
    /// Test only: write periodic snapshots on the member's own thread instead of in the
    /// background, so that seeded simulations replay exactly. Never set outside tests.
    #[doc(hidden)]
    pub snapshot_inline: bool,
    /// Where snapshots are written as files; `None` keeps them in the engine (the simulations).
    pub snapshot_dir: Option<std::path::PathBuf>,
    /// Where the transaction log is written as files; `None` keeps it in the engine.
    pub log_dir: Option<std::path::PathBuf>,
}

impl PeerConfig {
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
    pub(super) fn commit_quorum(&self) -> usize {
        self.broken_quorum.unwrap_or_else(|| self.quorum())
    }
    pub fn is_observer(&self) -> bool {
        self.observers.contains(&self.id)
    }
    pub(super) fn members(&self) -> impl Iterator<Item = Sid> + '_ {
        self.voters
            .iter()
            .chain(self.observers.iter())
            .copied()
            .filter(move |s| *s != self.id)
    }
}

/// What the shell feeds a peer.
pub enum Input {
    Tick,
    Message {
        from: Sid,
        msg: Msg,
    },
    /// A client request from this member's front end; `origin` identifies it in `Output::Reply`.
    Submit {
        origin: u64,
        env: Envelope,
    },
    /// Resolve with `Output::Barrier` once everything committed before now is applied here.
    Barrier {
        origin: u64,
    },
    Touch(Vec<SessionId>),
    /// The connection to a member broke: messages to or from it may have been lost.
    Disconnected(Sid),
    /// The time asked for by [`Peer::next_wake`] has come (a timer finer than the tick).
    Wake,
}

/// What a peer asks the shell to do.
#[derive(Debug)]
pub enum Output {
    Send {
        to: Sid,
        msg: Msg,
    },
    Reply {
        origin: u64,
        result: Result<Applied, BackendError>,
    },
    Barrier {
        origin: u64,
        result: Result<Zxid, BackendError>,
    },
}

#[derive(Debug)]
pub(super) struct Election {
    pub(super) round: u64,
    pub(super) vote: Vote,
    /// Votes of LOOKING peers in this round.
    pub(super) received: BTreeMap<Sid, Vote>,
    /// Votes of peers that already follow or lead.
    pub(super) settled: BTreeMap<Sid, (Vote, PeerState)>,
    pub(super) agreed_at: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LinkState {
    /// LEADERINFO sent, waiting for ACKEPOCH.
    Epoch,
    /// Synced and NEWLEADER sent: receives proposals and commits.
    Synced,
    /// NEWLEADER acknowledged.
    UpToDate,
}

#[derive(Debug)]
pub(super) struct Link {
    pub(super) state: LinkState,
    pub(super) observer: bool,
    pub(super) last_heard: u64,
    pub(super) pong: u64,
    /// Highest zxid it acknowledged.
    pub(super) acked: Zxid,
}

pub(super) enum Origin {
    None,
    Local(u64),
    Remote(Sid, u64),
}

pub(super) enum Pending {
    Proposal {
        txn: Arc<Txn>,
        origin: Origin,
        acks: HashSet<Sid>,
    },
    /// A request refused by prep. Its refusal reads the leader's state, so, like a `sync`, it
    /// is answered only once a quorum has confirmed this leadership after it was queued (`seq`):
    /// a deposed leader must not refuse a CAS against writes a newer leader made.
    Failed {
        origin: Origin,
        outcome: Outcome,
        seq: u64,
    },
    Barrier {
        origin: Origin,
        seq: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaderPhase {
    Discovery,
    Sync,
    Active,
}

pub(super) struct Leader {
    pub(super) epoch: u32,
    pub(super) phase: LeaderPhase,
    pub(super) started: u64,
    pub(super) infos: BTreeMap<Sid, u32>,
    /// Followers that accepted our epoch fresh (the only ones that count toward activation).
    pub(super) epoch_acks: BTreeSet<Sid>,
    pub(super) links: BTreeMap<Sid, Link>,
    pub(super) counter: u32,
    pub(super) pending: VecDeque<Pending>,
    pub(super) seq: u64,
    pub(super) sessions: SessionTracker,
    pub(super) next_session: i64,
    pub(super) last_container_check: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FollowerPhase {
    Discovery,
    Sync,
    Active,
}

pub(super) struct Follower {
    pub(super) leader: Sid,
    pub(super) phase: FollowerPhase,
    pub(super) last_heard: u64,
    /// Our local request ids by the zxid the leader gave them.
    pub(super) waiting: HashMap<Zxid, u64>,
    pub(super) touched: HashSet<SessionId>,
    pub(super) started: u64,
    /// We asked for a snapshot: ignore the rest of the current synchronisation until it comes.
    pub(super) awaiting_snap: bool,
}

pub(super) enum Role_ {
    Looking(Election),
    Leading(Box<Leader>),
    Following(Follower),
}

/// One ensemble member.
pub struct Peer {
    pub(super) cfg: PeerConfig,
    pub(super) log: TxnLog,
    pub(super) tree: Arc<RwLock<Tree>>,
    pub(super) applied_tx: broadcast::Sender<Arc<Txn>>,
    pub(super) outstanding: Outstanding,
    pub(super) role: Role_,
    pub(super) now: u64,
    pub(super) accepted_epoch: u32,
    pub(super) current_epoch: u32,
    pub(super) last_logged: Zxid,
    /// Logged but not applied (proposals awaiting commit), in zxid order.
    pub(super) unapplied: BTreeMap<Zxid, Arc<Txn>>,
    /// Appends waiting for the next group commit.
    pub(super) to_log: Vec<Arc<Txn>>,
    /// The log records of a group commit (its buffer reused from one to the next).
    pub(super) staged: Staged,
    pub(super) applied_since_snapshot: u64,
    pub(super) snapshotter: Snapshotter,
    pub(super) elections: u64,
    pub(super) looking_since: Option<u64>,
    pub(super) failed: bool,
    /// DIFF, TRUNC and SNAP syncs this member sent as leader.
    pub syncs: SyncCounts,
}

/// A leader's view of its followers.
#[derive(Debug, Clone)]
pub struct FollowerView {
    pub synced: usize,
    pub observers: usize,
    /// (follower, transactions it has not acknowledged).
    pub lag: Vec<(Sid, u64)>,
}

/// How followers were synchronised by this member.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncCounts {
    pub diff: u64,
    pub trunc: u64,
    pub snap: u64,
}

pub(super) fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Rebuild the tree from the newest snapshot and the whole log after it.
pub fn recover(log: &TxnLog) -> Result<Tree, crate::OpenError> {
    Ok(log.recover()?.tree)
}

impl Peer {
    /// Open a member on `engine` (recovering its state) at monotonic time `now` (ms).
    pub fn open(
        cfg: PeerConfig,
        engine: Arc<dyn Engine>,
        now: u64,
    ) -> Result<Peer, crate::OpenError> {
        let t0 = std::time::Instant::now();
        let log = TxnLog::open(engine, cfg.snapshot_dir.as_deref(), cfg.log_dir.as_deref())?;
        let tree = recover(&log)?;
        let last_logged = log.last_logged()?.unwrap_or(0).max(tree.last_zxid());
        tracing::info!(
            sid = cfg.id,
            last_zxid = format!("{:#x}", tree.last_zxid()),
            last_logged = format!("{last_logged:#x}"),
            nodes = tree.node_count(),
            sessions = tree.sessions().len(),
            ms = t0.elapsed().as_millis() as u64,
            "recovered state"
        );
        let current_epoch = log.current_epoch()?;
        let accepted_epoch = log.accepted_epoch()?.max(current_epoch);
        let (applied_tx, _) = broadcast::channel(4096);
        let snapshotter = Snapshotter::new(
            log.clone(),
            cfg.snapshots_retained,
            cfg.snapshot_inline,
            cfg.id,
            cfg.snapshot,
        );
        let mut p = Peer {
            cfg,
            log,
            tree: Arc::new(RwLock::new(tree)),
            applied_tx,
            outstanding: Outstanding::default(),
            role: Role_::Looking(Election {
                round: 0,
                vote: Vote {
                    leader: 0,
                    zxid: 0,
                    epoch: 0,
                },
                received: BTreeMap::new(),
                settled: BTreeMap::new(),
                agreed_at: None,
            }),
            now,
            accepted_epoch,
            current_epoch,
            last_logged,
            unapplied: BTreeMap::new(),
            to_log: Vec::new(),
            staged: Staged::default(),
            applied_since_snapshot: 0,
            snapshotter,
            elections: 0,
            looking_since: None,
            failed: false,
            syncs: SyncCounts::default(),
        };
        let mut out = Vec::new();
        p.look(&mut out);
        Ok(p)
    }

    pub fn tree(&self) -> Arc<RwLock<Tree>> {
        self.tree.clone()
    }
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Txn>> {
        self.applied_tx.subscribe()
    }
    pub fn id(&self) -> Sid {
        self.cfg.id
    }
    pub fn current_epoch(&self) -> u32 {
        self.current_epoch
    }
    pub fn last_logged(&self) -> Zxid {
        self.last_logged
    }
    pub fn elections(&self) -> u64 {
        self.elections
    }
    /// Prepared writes not yet applied (leader) or proposals not yet committed (follower).
    pub fn outstanding(&self) -> usize {
        match &self.role {
            Role_::Leading(l) => l.pending.len(),
            _ => self.unapplied.len(),
        }
    }

    /// Role as the backend contract names it.
    pub fn role(&self) -> Role {
        match &self.role {
            Role_::Looking(_) => Role::Looking,
            Role_::Leading(_) => Role::Leader,
            Role_::Following(_) if self.cfg.is_observer() => Role::Observer,
            Role_::Following(_) => Role::Follower,
        }
    }

    /// The leader this member follows (or itself when leading), once established.
    pub fn leader(&self) -> Option<Sid> {
        match &self.role {
            Role_::Leading(l) if l.phase == LeaderPhase::Active => Some(self.cfg.id),
            Role_::Following(f) if f.phase == FollowerPhase::Active => Some(f.leader),
            _ => None,
        }
    }

    /// Serving clients: an active leader, or a follower that is up to date.
    pub fn serving(&self) -> bool {
        !self.failed && self.leader().is_some()
    }

    /// Per-follower lag (zxids behind the leader's last proposal) for metrics.
    pub fn follower_count(&self) -> usize {
        match &self.role {
            Role_::Leading(l) => l
                .links
                .values()
                .filter(|k| k.state == LinkState::UpToDate)
                .count(),
            _ => 0,
        }
    }

    /// On a leader: synced voting followers, synced observers, per-follower lag in txns.
    pub fn followers(&self) -> Option<FollowerView> {
        let Role_::Leading(l) = &self.role else {
            return None;
        };
        let synced = |obs: bool| {
            l.links
                .values()
                .filter(|k| k.state == LinkState::UpToDate && k.observer == obs)
                .count()
        };
        let lag = l
            .links
            .iter()
            .filter(|(_, k)| !k.observer)
            .map(|(s, k)| {
                let behind = if k.state == LinkState::Epoch {
                    self.last_logged
                } else {
                    self.last_logged.saturating_sub(k.acked.max(0))
                };
                (*s, (behind & 0xffff_ffff) as u64)
            })
            .collect();
        Some(FollowerView {
            synced: synced(false),
            observers: synced(true),
            lag,
        })
    }

    pub(super) fn state(&self) -> PeerState {
        match &self.role {
            Role_::Looking(_) => PeerState::Looking,
            Role_::Leading(_) => PeerState::Leading,
            Role_::Following(_) if self.cfg.is_observer() => PeerState::Observing,
            Role_::Following(_) => PeerState::Following,
        }
    }

    pub(super) fn my_vote(&self) -> Vote {
        match &self.role {
            Role_::Looking(e) => e.vote,
            Role_::Leading(_) => Vote {
                leader: self.cfg.id,
                zxid: self.last_logged,
                epoch: self.current_epoch,
            },
            Role_::Following(f) => Vote {
                leader: f.leader,
                zxid: self.last_logged,
                epoch: self.current_epoch,
            },
        }
    }

    pub(super) fn round(&self) -> u64 {
        match &self.role {
            Role_::Looking(e) => e.round,
            _ => self.elections,
        }
    }

    // ---------------------------------------------------------------- inputs

    /// Feed one input at monotonic time `now` (ms).
    pub fn step(&mut self, now: u64, input: Input, out: &mut Vec<Output>) {
        self.now = now;
        match input {
            Input::Tick => self.tick(out),
            Input::Message { from, msg } => self.on_message(from, msg, out),
            Input::Submit { origin, env } => self.submit(Origin::Local(origin), env, out),
            Input::Barrier { origin } => self.barrier(origin, out),
            Input::Touch(sessions) => self.touch(sessions),
            Input::Disconnected(sid) => self.disconnected(sid, out),
            Input::Wake => {
                if matches!(self.role, Role_::Looking(_)) {
                    self.maybe_decide(out);
                }
            }
        }
    }

    /// When the peer wants an [`Input::Wake`] (in its clock, ms), if before the next tick: the
    /// end of the election's finalize wait, so a settled vote does not wait for a tick.
    pub fn next_wake(&self) -> Option<u64> {
        match &self.role {
            Role_::Looking(e) => e.agreed_at.map(|t| t + super::election::FINALIZE_WAIT_MS),
            _ => None,
        }
    }

    /// Whether what [`Peer::step`] produced may be sent before [`Peer::flush`] logs the
    /// pending appends. True once the peer leads or follows: no message a step produces claims
    /// that this member's log holds anything — a leader counts its own ACK only in `flush` (a
    /// commit needs a quorum of logged ACKs), a follower's ACKs come out of `flush` and it writes
    /// the sync before ACKing NEWLEADER. So a leader sends a PROPOSAL to the followers while it
    /// writes it itself, as ZooKeeper's leader does (a commit costs one fsync, not the leader's
    /// and a follower's one after the other), and a follower forwards a client's write without
    /// waiting for its own fsync. Not while looking: a vote names the member's last zxid.
    pub fn may_send_before_log(&self) -> bool {
        matches!(self.role, Role_::Leading(_) | Role_::Following(_))
    }

    /// Appends waiting for the next [`Peer::flush`].
    pub fn unlogged(&self) -> usize {
        self.to_log.len()
    }

    /// Group commit: write every pending append with one synced write, then act on it
    /// (the leader counts its own ACK, a follower sends ACKs).
    pub fn flush(&mut self, out: &mut Vec<Output>) {
        if self.to_log.is_empty() {
            return;
        }
        let txns = std::mem::take(&mut self.to_log);
        TxnLog::stage(&mut self.staged, &txns);
        let t0 = std::time::Instant::now();
        if let Err(e) = self.log.commit(&self.staged) {
            self.storage_failed(e, out);
            return;
        }
        metrics::histogram!("roster_storage_fsync_seconds").record(t0.elapsed().as_secs_f64());
        metrics::histogram!("roster_backend_commit_batch_txns").record(txns.len() as f64);
        let me = self.cfg.id;
        match &mut self.role {
            Role_::Leading(l) => {
                for t in &txns {
                    for p in l.pending.iter_mut() {
                        if let Pending::Proposal { txn, acks, .. } = p
                            && txn.zxid == t.zxid
                        {
                            acks.insert(me);
                        }
                    }
                }
                self.try_commit(out);
            }
            Role_::Following(f) => {
                if !self.cfg.is_observer() {
                    for t in &txns {
                        out.push(Output::Send {
                            to: f.leader,
                            msg: Msg::Ack { zxid: t.zxid },
                        });
                    }
                }
            }
            Role_::Looking(_) => {}
        }
    }

    pub(super) fn disconnected(&mut self, sid: Sid, out: &mut Vec<Output>) {
        match &mut self.role {
            Role_::Following(f) if f.leader == sid => {
                tracing::warn!(
                    sid = self.cfg.id,
                    leader = sid,
                    "connection to the leader lost; looking"
                );
                self.look(out);
            }
            Role_::Leading(l) => {
                let was_linked = l.links.remove(&sid).is_some();
                tracing::info!(
                    sid = self.cfg.id,
                    follower = sid,
                    was_linked,
                    "follower disconnected"
                );
            }
            _ => {}
        }
    }

    pub(super) fn storage_failed(&mut self, e: StorageError, out: &mut Vec<Output>) {
        tracing::error!(sid = self.cfg.id, error = %e, "storage failed; this member stops serving");
        self.failed = true;
        self.look(out);
    }

    pub(super) fn tick(&mut self, out: &mut Vec<Output>) {
        let now = self.now;
        let tick = self.cfg.tick_ms;
        match &mut self.role {
            Role_::Looking(e) => {
                // Re-announce every tick (messages may have been lost while links were down).
                let (vote, round) = (e.vote, e.round);
                for to in self.cfg.members().collect::<Vec<_>>() {
                    out.push(Output::Send {
                        to,
                        msg: Msg::Notification {
                            vote,
                            round,
                            state: PeerState::Looking,
                        },
                    });
                }
                self.maybe_decide(out);
            }
            Role_::Following(f) => {
                if now.saturating_sub(f.last_heard) > self.cfg.sync_limit * tick
                    || (f.phase != FollowerPhase::Active
                        && now.saturating_sub(f.started) > self.cfg.init_limit * tick)
                {
                    tracing::warn!(
                        sid = self.cfg.id,
                        leader = f.leader,
                        "lost the leader; looking"
                    );
                    self.look(out);
                    return;
                }
                if f.phase == FollowerPhase::Discovery {
                    let msg = Msg::FollowerInfo {
                        accepted_epoch: self.accepted_epoch,
                        last_zxid: self.last_logged,
                        observer: self.cfg.is_observer(),
                    };
                    out.push(Output::Send { to: f.leader, msg });
                }
                if !f.touched.is_empty() {
                    let sessions: Vec<SessionId> = f.touched.drain().collect();
                    out.push(Output::Send {
                        to: f.leader,
                        msg: Msg::Touch { sessions },
                    });
                }
            }
            Role_::Leading(l) => {
                if l.phase != LeaderPhase::Active {
                    if now.saturating_sub(l.started) > self.cfg.init_limit * tick {
                        tracing::warn!(
                            sid = self.cfg.id,
                            "no quorum followed within initLimit; looking"
                        );
                        self.look(out);
                    }
                    return;
                }
                let heard = 1 + l
                    .links
                    .iter()
                    .filter(|(s, k)| {
                        !k.observer
                            && self.cfg.voters.contains(s)
                            && now.saturating_sub(k.last_heard) <= self.cfg.sync_limit * tick
                    })
                    .count();
                if heard < self.cfg.quorum() {
                    tracing::warn!(
                        sid = self.cfg.id,
                        heard,
                        quorum = self.cfg.quorum(),
                        "lost the quorum; looking"
                    );
                    self.look(out);
                    return;
                }
                l.seq += 1;
                let seq = l.seq;
                for (s, k) in &l.links {
                    if k.state != LinkState::Epoch {
                        out.push(Output::Send {
                            to: *s,
                            msg: Msg::Ping { seq },
                        });
                    }
                }
                self.expire_sessions(out);
                self.sweep_containers(out);
            }
        }
    }

    pub(super) fn on_message(&mut self, from: Sid, msg: Msg, out: &mut Vec<Output>) {
        if !self.cfg.voters.contains(&from) && !self.cfg.observers.contains(&from) {
            tracing::warn!(
                sid = self.cfg.id,
                from,
                kind = msg.kind(),
                "message from a non-member; ignored"
            );
            return;
        }
        if let Msg::Notification { vote, round, state } = msg {
            return self.on_notification(from, vote, round, state, out);
        }
        match &self.role {
            Role_::Leading(_) => self.leader_message(from, msg, out),
            Role_::Following(f) if f.leader == from => self.follower_message(msg, out),
            Role_::Following(_) | Role_::Looking(_) => {
                if let Msg::FollowerInfo { .. } = msg {
                    // Not leading: tell it so through a notification.
                    let vote = self.my_vote();
                    out.push(Output::Send {
                        to: from,
                        msg: Msg::Notification {
                            vote,
                            round: self.round(),
                            state: self.state(),
                        },
                    });
                }
            }
        }
    }
    // ---------------------------------------------------------------- apply

    pub(super) fn apply_unapplied(&mut self) {
        let txns: Vec<Arc<Txn>> = std::mem::take(&mut self.unapplied).into_values().collect();
        for t in txns {
            if t.zxid > self.tree.read().last_zxid() {
                self.apply(&t);
            }
        }
    }

    pub(super) fn apply(&mut self, txn: &Arc<Txn>) -> Outcome {
        let outcome = self.tree.write().apply(txn);
        self.outstanding.applied(txn.zxid);
        let now = self.now;
        if let Role_::Leading(l) = &mut self.role {
            match &txn.op {
                TxnOp::CreateSession { timeout_ms, .. } => {
                    l.sessions.add(txn.session, *timeout_ms as u64, now)
                }
                TxnOp::CloseSession => l.sessions.remove(txn.session),
                _ => {}
            }
        }
        let _ = self.applied_tx.send(txn.clone());
        metrics::counter!("roster_backend_txns_total").increment(1);
        self.applied_since_snapshot += 1;
        if self.snapshotter.due(self.applied_since_snapshot) && self.serving() {
            self.applied_since_snapshot = 0;
            self.snapshot();
        }
        outcome
    }

    /// Snapshot the applied (hence committed and logged) state: an O(1) view here, written in
    /// the background.
    pub(super) fn snapshot(&mut self) {
        let view = self.tree.read().snapshot_view();
        self.snapshotter.take(view);
    }

    /// Debug view for tests: (role, leader, epoch, last logged, applied).
    pub fn describe(&self) -> String {
        format!(
            "sid={} role={:?} leader={:?} epoch={} logged={:#x} applied={:#x}",
            self.cfg.id,
            self.role(),
            self.leader(),
            self.current_epoch,
            self.last_logged,
            self.tree.read().last_zxid()
        )
    }
}
