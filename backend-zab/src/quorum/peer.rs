//! One ensemble member as a state machine without I/O: it takes inputs (a message, a tick, a
//! client request) and produces outputs (messages to send, replies). Storage is reached through
//! the `Engine` (synchronously: the shell runs a peer on its own thread, the simulation in one
//! thread over `MemEngine`), and log appends are group-committed by `flush`.
//!
//! Phases follow ZooKeeper: LOOKING (fast leader election) → discovery (new epoch from a quorum)
//! → synchronisation (DIFF / TRUNC+DIFF / SNAP, NEWLEADER) → broadcast (PROPOSAL / ACK / COMMIT).

use super::msg::{Msg, PeerState, Sid, Vote};
use crate::txnlog::TxnLog;
use parking_lot::RwLock;
use roster_core::backend::{BackendError, Role};
use roster_core::session::SessionTracker;
use roster_core::storage::{Engine, StorageError, WriteBatch};
use roster_core::tree::Tree;
use roster_core::tree::prep::{Outstanding, PrepOptions};
use roster_core::txn::{Applied, Envelope, Outcome, Request, Txn, TxnOp};
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
    pub snapshot_every: u64,
    pub snapshots_retained: usize,
    pub container_check_ms: u64,
    /// Test only: commit with this many acknowledgements instead of a majority. Lets the fault
    /// harness prove that it catches a broken protocol. Never set outside tests.
    #[doc(hidden)]
    pub broken_quorum: Option<usize>,
}

impl PeerConfig {
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
    fn commit_quorum(&self) -> usize {
        self.broken_quorum.unwrap_or_else(|| self.quorum())
    }
    pub fn is_observer(&self) -> bool {
        self.observers.contains(&self.id)
    }
    fn members(&self) -> impl Iterator<Item = Sid> + '_ {
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
struct Election {
    round: u64,
    vote: Vote,
    /// Votes of LOOKING peers in this round.
    received: BTreeMap<Sid, Vote>,
    /// Votes of peers that already follow or lead.
    settled: BTreeMap<Sid, (Vote, PeerState)>,
    agreed_at: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    /// LEADERINFO sent, waiting for ACKEPOCH.
    Epoch,
    /// Synced and NEWLEADER sent: receives proposals and commits.
    Synced,
    /// NEWLEADER acknowledged.
    UpToDate,
}

#[derive(Debug)]
struct Link {
    state: LinkState,
    observer: bool,
    last_heard: u64,
    pong: u64,
    /// Highest zxid it acknowledged.
    acked: Zxid,
}

enum Origin {
    None,
    Local(u64),
    Remote(Sid, u64),
}

enum Pending {
    Proposal {
        txn: Arc<Txn>,
        origin: Origin,
        acks: HashSet<Sid>,
    },
    Failed {
        origin: Origin,
        outcome: Outcome,
    },
    Barrier {
        origin: Origin,
        seq: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaderPhase {
    Discovery,
    Sync,
    Active,
}

struct Leader {
    epoch: u32,
    phase: LeaderPhase,
    started: u64,
    infos: BTreeMap<Sid, u32>,
    /// Followers that accepted our epoch fresh (the only ones that count toward activation).
    epoch_acks: BTreeSet<Sid>,
    links: BTreeMap<Sid, Link>,
    counter: u32,
    pending: VecDeque<Pending>,
    seq: u64,
    sessions: SessionTracker,
    next_session: i64,
    last_container_check: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FollowerPhase {
    Discovery,
    Sync,
    Active,
}

struct Follower {
    leader: Sid,
    phase: FollowerPhase,
    last_heard: u64,
    /// Our local request ids by the zxid the leader gave them.
    waiting: HashMap<Zxid, u64>,
    touched: HashSet<SessionId>,
    started: u64,
}

enum Role_ {
    Looking(Election),
    Leading(Box<Leader>),
    Following(Follower),
}

/// One ensemble member.
pub struct Peer {
    cfg: PeerConfig,
    log: TxnLog,
    tree: Arc<RwLock<Tree>>,
    applied_tx: broadcast::Sender<Arc<Txn>>,
    outstanding: Outstanding,
    role: Role_,
    now: u64,
    accepted_epoch: u32,
    current_epoch: u32,
    last_logged: Zxid,
    /// Logged but not applied (proposals awaiting commit), in zxid order.
    unapplied: BTreeMap<Zxid, Arc<Txn>>,
    /// Appends waiting for the next group commit.
    to_log: Vec<Arc<Txn>>,
    applied_since_snapshot: u64,
    elections: u64,
    looking_since: Option<u64>,
    failed: bool,
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

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Rebuild the tree from the newest snapshot and the whole log after it.
pub fn recover(log: &TxnLog) -> Result<Tree, crate::OpenError> {
    let mut tree = match log.latest_snapshot()? {
        Some((_, bytes)) => Tree::restore(&bytes)?,
        None => Tree::new(),
    };
    let from = tree.last_zxid();
    log.replay_after(from, &mut |t: Txn| {
        tree.apply(&t);
    })?;
    Ok(tree)
}

impl Peer {
    /// Open a member on `engine` (recovering its state) at monotonic time `now` (ms).
    pub fn open(
        cfg: PeerConfig,
        engine: Arc<dyn Engine>,
        now: u64,
    ) -> Result<Peer, crate::OpenError> {
        let log = TxnLog::new(engine);
        let tree = recover(&log)?;
        let last_logged = log.last_logged()?.unwrap_or(0).max(tree.last_zxid());
        let current_epoch = log.current_epoch()?;
        let accepted_epoch = log.accepted_epoch()?.max(current_epoch);
        let (applied_tx, _) = broadcast::channel(4096);
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
            applied_since_snapshot: 0,
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

    fn state(&self) -> PeerState {
        match &self.role {
            Role_::Looking(_) => PeerState::Looking,
            Role_::Leading(_) => PeerState::Leading,
            Role_::Following(_) if self.cfg.is_observer() => PeerState::Observing,
            Role_::Following(_) => PeerState::Following,
        }
    }

    fn my_vote(&self) -> Vote {
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

    fn round(&self) -> u64 {
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
        }
    }

    /// Group commit: write every pending append with one synced write, then act on it
    /// (the leader counts its own ACK, a follower sends ACKs).
    pub fn flush(&mut self, out: &mut Vec<Output>) {
        if self.to_log.is_empty() {
            return;
        }
        let txns = std::mem::take(&mut self.to_log);
        let mut wb = WriteBatch::default();
        TxnLog::stage(&mut wb, &txns);
        let t0 = std::time::Instant::now();
        if let Err(e) = self.log.commit(wb) {
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

    fn disconnected(&mut self, sid: Sid, out: &mut Vec<Output>) {
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

    fn storage_failed(&mut self, e: StorageError, out: &mut Vec<Output>) {
        tracing::error!(sid = self.cfg.id, error = %e, "storage failed; this member stops serving");
        self.failed = true;
        self.look(out);
    }

    fn tick(&mut self, out: &mut Vec<Output>) {
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

    fn on_message(&mut self, from: Sid, msg: Msg, out: &mut Vec<Output>) {
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

    // ---------------------------------------------------------------- election

    /// Enter LOOKING: new round, vote for ourselves.
    fn look(&mut self, out: &mut Vec<Output>) {
        // Fail whatever was waiting on the old role.
        let old = std::mem::replace(
            &mut self.role,
            Role_::Looking(Election {
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
        );
        match old {
            Role_::Leading(l) => {
                for p in l.pending {
                    // Our uncommitted proposals stay in our log: keep them as logged-but-unapplied
                    // so the next synchronisation either commits them (DIFF) or truncates them.
                    if let Pending::Proposal { txn, .. } = &p {
                        self.unapplied.insert(txn.zxid, txn.clone());
                    }
                    match p {
                        Pending::Proposal {
                            origin: Origin::Local(o),
                            ..
                        }
                        | Pending::Failed {
                            origin: Origin::Local(o),
                            ..
                        } => out.push(Output::Reply {
                            origin: o,
                            result: Err(BackendError::Unavailable("leader lost its quorum".into())),
                        }),
                        Pending::Barrier {
                            origin: Origin::Local(o),
                            ..
                        } => out.push(Output::Barrier {
                            origin: o,
                            result: Err(BackendError::Unavailable("leader lost its quorum".into())),
                        }),
                        _ => {}
                    }
                }
            }
            Role_::Following(f) => {
                for (_, o) in f.waiting {
                    out.push(Output::Reply {
                        origin: o,
                        result: Err(BackendError::Unavailable("lost the leader".into())),
                    });
                }
            }
            Role_::Looking(_) => {}
        }
        self.outstanding.clear();
        if self.failed {
            return;
        }
        self.elections += 1;
        self.looking_since.get_or_insert(self.now);
        metrics::counter!("roster_zab_elections_total").increment(1);
        let vote = Vote {
            leader: self.cfg.id,
            zxid: self.last_logged,
            epoch: self.current_epoch,
        };
        let round = match &self.role {
            Role_::Looking(e) => e.round,
            _ => 0,
        }
        .max(self.elections);
        if let Role_::Looking(e) = &mut self.role {
            e.round = round;
            e.vote = if self.cfg.is_observer() {
                Vote {
                    leader: 0,
                    zxid: 0,
                    epoch: 0,
                }
            } else {
                vote
            };
        }
        let v = self.my_vote();
        for to in self.cfg.members().collect::<Vec<_>>() {
            out.push(Output::Send {
                to,
                msg: Msg::Notification {
                    vote: v,
                    round,
                    state: self.state(),
                },
            });
        }
        tracing::info!(
            sid = self.cfg.id,
            round,
            zxid = format!("{:#x}", self.last_logged),
            epoch = self.current_epoch,
            "looking for a leader"
        );
    }

    fn on_notification(
        &mut self,
        from: Sid,
        vote: Vote,
        round: u64,
        state: PeerState,
        out: &mut Vec<Output>,
    ) {
        let me = self.cfg.id;
        let observer = self.cfg.is_observer();
        let my_state = self.state();
        let Role_::Looking(e) = &mut self.role else {
            // Settled: a looking peer learns who leads.
            if state == PeerState::Looking {
                let v = self.my_vote();
                out.push(Output::Send {
                    to: from,
                    msg: Msg::Notification {
                        vote: v,
                        round: self.round(),
                        state: my_state,
                    },
                });
            }
            return;
        };
        match state {
            PeerState::Looking => {
                if observer || self.cfg.observers.contains(&from) {
                    // Observers do not vote; they only listen for an established leader.
                    return;
                }
                if round > e.round {
                    e.round = round;
                    e.received.clear();
                    let mine = Vote {
                        leader: me,
                        zxid: self.last_logged,
                        epoch: self.current_epoch,
                    };
                    e.vote = if vote.beats(&mine) { vote } else { mine };
                    let (v, r) = (e.vote, e.round);
                    for to in self.cfg.members().collect::<Vec<_>>() {
                        out.push(Output::Send {
                            to,
                            msg: Msg::Notification {
                                vote: v,
                                round: r,
                                state: PeerState::Looking,
                            },
                        });
                    }
                } else if round < e.round {
                    let (v, r) = (e.vote, e.round);
                    out.push(Output::Send {
                        to: from,
                        msg: Msg::Notification {
                            vote: v,
                            round: r,
                            state: PeerState::Looking,
                        },
                    });
                    return;
                } else if vote.beats(&e.vote) {
                    e.vote = vote;
                    let (v, r) = (e.vote, e.round);
                    for to in self.cfg.members().collect::<Vec<_>>() {
                        out.push(Output::Send {
                            to,
                            msg: Msg::Notification {
                                vote: v,
                                round: r,
                                state: PeerState::Looking,
                            },
                        });
                    }
                }
                e.received.insert(from, vote);
            }
            _ => {
                e.settled.insert(from, (vote, state));
            }
        }
        self.maybe_decide(out);
    }

    fn maybe_decide(&mut self, out: &mut Vec<Output>) {
        let me = self.cfg.id;
        let quorum = self.cfg.quorum();
        let now = self.now;
        let Role_::Looking(e) = &mut self.role else {
            return;
        };
        // An established leader that a quorum follows (and that says it leads): join it.
        let mut by_leader: BTreeMap<Sid, usize> = BTreeMap::new();
        for (s, (v, st)) in &e.settled {
            if self.cfg.voters.contains(s)
                && matches!(st, PeerState::Following | PeerState::Leading)
            {
                *by_leader.entry(v.leader).or_default() += 1;
            }
        }
        for (leader, n) in by_leader {
            let leads = e
                .settled
                .get(&leader)
                .is_some_and(|(_, st)| *st == PeerState::Leading);
            if leads && n >= quorum && leader != me {
                return self.follow(leader, out);
            }
        }
        if self.cfg.is_observer() {
            return;
        }
        let agree = 1 + e
            .received
            .iter()
            .filter(|(s, v)| self.cfg.voters.contains(s) && **v == e.vote)
            .count();
        if agree < quorum {
            e.agreed_at = None;
            return;
        }
        // ZooKeeper's finalize wait: give a better vote a moment to arrive, unless all voted.
        let all = e.received.len() + 1 >= self.cfg.voters.len();
        let since = *e.agreed_at.get_or_insert(now);
        if !all && now.saturating_sub(since) < 200 {
            return;
        }
        let leader = e.vote.leader;
        if leader == me {
            self.lead(out)
        } else {
            self.follow(leader, out)
        }
    }

    fn follow(&mut self, leader: Sid, out: &mut Vec<Output>) {
        tracing::info!(
            sid = self.cfg.id,
            leader,
            observer = self.cfg.is_observer(),
            "following"
        );
        self.role = Role_::Following(Follower {
            leader,
            phase: FollowerPhase::Discovery,
            last_heard: self.now,
            waiting: HashMap::new(),
            touched: HashSet::new(),
            started: self.now,
        });
        let msg = Msg::FollowerInfo {
            accepted_epoch: self.accepted_epoch,
            last_zxid: self.last_logged,
            observer: self.cfg.is_observer(),
        };
        out.push(Output::Send { to: leader, msg });
        let v = self.my_vote();
        for to in self.cfg.members().collect::<Vec<_>>() {
            out.push(Output::Send {
                to,
                msg: Msg::Notification {
                    vote: v,
                    round: self.elections,
                    state: self.state(),
                },
            });
        }
    }

    fn lead(&mut self, out: &mut Vec<Output>) {
        tracing::info!(
            sid = self.cfg.id,
            zxid = format!("{:#x}", self.last_logged),
            "leading: discovery"
        );
        // Everything we logged becomes part of the new epoch's initial history.
        self.apply_unapplied();
        let mut infos = BTreeMap::new();
        infos.insert(self.cfg.id, self.accepted_epoch);
        self.role = Role_::Leading(Box::new(Leader {
            epoch: 0,
            phase: LeaderPhase::Discovery,
            started: self.now,
            infos,
            epoch_acks: BTreeSet::new(),
            links: BTreeMap::new(),
            counter: 0,
            pending: VecDeque::new(),
            seq: 0,
            sessions: SessionTracker::new(self.cfg.tick_ms),
            next_session: 0,
            last_container_check: self.now,
        }));
        let v = self.my_vote();
        for to in self.cfg.members().collect::<Vec<_>>() {
            out.push(Output::Send {
                to,
                msg: Msg::Notification {
                    vote: v,
                    round: self.elections,
                    state: PeerState::Leading,
                },
            });
        }
        self.maybe_new_epoch(out);
    }

    // ---------------------------------------------------------------- leader

    fn leader_message(&mut self, from: Sid, msg: Msg, out: &mut Vec<Output>) {
        let now = self.now;
        let Role_::Leading(l) = &mut self.role else {
            return;
        };
        if let Some(k) = l.links.get_mut(&from) {
            k.last_heard = now;
        }
        match msg {
            Msg::FollowerInfo {
                accepted_epoch,
                last_zxid: _,
                observer,
            } => {
                if self.cfg.observers.contains(&from) != observer {
                    tracing::warn!(
                        sid = self.cfg.id,
                        from,
                        observer,
                        "member role disagrees with our configuration"
                    );
                }
                if l.phase == LeaderPhase::Discovery {
                    if !observer {
                        l.infos.insert(from, accepted_epoch);
                    }
                    l.links.insert(
                        from,
                        Link {
                            state: LinkState::Epoch,
                            observer,
                            last_heard: now,
                            pong: 0,
                            acked: 0,
                        },
                    );
                    self.maybe_new_epoch(out);
                } else if l
                    .links
                    .get(&from)
                    .is_none_or(|k| k.state == LinkState::Epoch)
                {
                    // (A repeated FollowerInfo from a follower already being synced is ignored.)
                    l.links.insert(
                        from,
                        Link {
                            state: LinkState::Epoch,
                            observer,
                            last_heard: now,
                            pong: 0,
                            acked: 0,
                        },
                    );
                    out.push(Output::Send {
                        to: from,
                        msg: Msg::LeaderInfo { epoch: l.epoch },
                    });
                }
            }
            Msg::AckEpoch {
                current_epoch,
                last_zxid,
                fresh,
            } => {
                if fresh {
                    l.epoch_acks.insert(from);
                }
                if fresh
                    && (current_epoch, last_zxid) > (self.current_epoch, self.last_logged)
                    && l.phase != LeaderPhase::Active
                {
                    tracing::warn!(
                        sid = self.cfg.id,
                        from,
                        "a follower is ahead of us; re-electing"
                    );
                    return self.look(out);
                }
                if l.links
                    .get(&from)
                    .is_some_and(|k| k.state == LinkState::Epoch)
                {
                    self.sync_follower(from, last_zxid, out);
                }
            }
            Msg::NeedSnap => self.send_snap(from, out),
            Msg::AckNewLeader => {
                if let Some(k) = l.links.get_mut(&from) {
                    k.state = LinkState::UpToDate;
                }
                if l.phase == LeaderPhase::Active {
                    out.push(Output::Send {
                        to: from,
                        msg: Msg::UpToDate,
                    });
                } else {
                    self.maybe_activate(out);
                }
            }
            Msg::Ack { zxid } => {
                if let Some(k) = l.links.get_mut(&from) {
                    k.acked = k.acked.max(zxid);
                }
                if self.cfg.voters.contains(&from) {
                    for p in l.pending.iter_mut() {
                        if let Pending::Proposal { txn, acks, .. } = p
                            && txn.zxid == zxid
                        {
                            acks.insert(from);
                            break;
                        }
                    }
                    self.try_commit(out);
                }
            }
            Msg::Forward {
                id,
                session,
                auth,
                request,
            } => {
                self.submit(
                    Origin::Remote(from, id),
                    Envelope {
                        session,
                        auth,
                        request,
                    },
                    out,
                );
            }
            Msg::Touch { sessions } => {
                let now = self.now;
                for s in sessions {
                    l.sessions.touch(s, now);
                }
            }
            Msg::Pong { seq } => {
                if let Some(k) = l.links.get_mut(&from) {
                    k.pong = k.pong.max(seq);
                }
                self.try_commit(out);
            }
            Msg::SyncReq { id } => {
                l.seq += 1;
                let seq = l.seq;
                l.pending.push_back(Pending::Barrier {
                    origin: Origin::Remote(from, id),
                    seq,
                });
                for (s, k) in &l.links {
                    if k.state != LinkState::Epoch && !k.observer {
                        out.push(Output::Send {
                            to: *s,
                            msg: Msg::Ping { seq },
                        });
                    }
                }
                self.try_commit(out);
            }
            other => tracing::debug!(
                sid = self.cfg.id,
                from,
                kind = other.kind(),
                "unexpected message for a leader"
            ),
        }
    }

    fn maybe_new_epoch(&mut self, out: &mut Vec<Output>) {
        let quorum = self.cfg.quorum();
        let Role_::Leading(l) = &mut self.role else {
            return;
        };
        if l.phase != LeaderPhase::Discovery || l.infos.len() < quorum {
            return;
        }
        let epoch = l
            .infos
            .values()
            .copied()
            .max()
            .unwrap_or(0)
            .max(self.current_epoch)
            + 1;
        if let Err(e) = self.log.set_accepted_epoch(epoch) {
            return self.storage_failed(e, out);
        }
        self.accepted_epoch = epoch;
        l.epoch = epoch;
        l.phase = LeaderPhase::Sync;
        tracing::info!(
            sid = self.cfg.id,
            epoch,
            "new epoch agreed by a quorum; synchronising followers"
        );
        for s in l.links.keys() {
            out.push(Output::Send {
                to: *s,
                msg: Msg::LeaderInfo { epoch },
            });
        }
    }

    fn committed_zxid(&self) -> Zxid {
        self.tree.read().last_zxid()
    }

    /// Bring a follower up to date: DIFF, TRUNC+DIFF or SNAP, then the pending proposals, then
    /// NEWLEADER. From here on it receives proposals and commits.
    fn sync_follower(&mut self, to: Sid, last: Zxid, out: &mut Vec<Output>) {
        let committed = self.committed_zxid();
        let plan = (|| -> Result<Option<Zxid>, StorageError> {
            // Some(from): DIFF after `from` (after a TRUNC to it if needed); None: SNAP.
            if last == committed || (last != 0 && self.log.contains(last)?) {
                return Ok(Some(last));
            }
            match self.log.floor(last)? {
                Some(t) => Ok(Some(t)),
                None => Ok(None),
            }
        })();
        let plan = match plan {
            Ok(p) => p,
            Err(e) => return self.storage_failed(e, out),
        };
        match plan {
            Some(from) => {
                if from != last {
                    out.push(Output::Send {
                        to,
                        msg: Msg::Trunc { to: from },
                    });
                    metrics::counter!("roster_zab_syncs_total", "kind" => "trunc").increment(1);
                    self.syncs.trunc += 1;
                }
                let mut txns = Vec::new();
                let res = self.log.replay_after(from, &mut |t: Txn| {
                    if t.zxid <= committed {
                        txns.push(Arc::new(t));
                    }
                });
                if let Err(e) = res {
                    return self.storage_failed(e, out);
                }
                tracing::info!(
                    sid = self.cfg.id,
                    follower = to,
                    from = format!("{from:#x}"),
                    txns = txns.len(),
                    "DIFF"
                );
                metrics::counter!("roster_zab_syncs_total", "kind" => "diff").increment(1);
                self.syncs.diff += 1;
                out.push(Output::Send {
                    to,
                    msg: Msg::Diff { committed, txns },
                });
            }
            None => return self.send_snap(to, out),
        }
        self.finish_sync(to, out);
    }

    fn send_snap(&mut self, to: Sid, out: &mut Vec<Output>) {
        let (zxid, data) = {
            let t = self.tree.read();
            (t.last_zxid(), t.snapshot())
        };
        tracing::info!(
            sid = self.cfg.id,
            follower = to,
            zxid = format!("{zxid:#x}"),
            bytes = data.len(),
            "SNAP"
        );
        metrics::counter!("roster_zab_syncs_total", "kind" => "snap").increment(1);
        self.syncs.snap += 1;
        out.push(Output::Send {
            to,
            msg: Msg::Snap { zxid, data },
        });
        self.finish_sync(to, out);
    }

    fn finish_sync(&mut self, to: Sid, out: &mut Vec<Output>) {
        let last = self.last_logged;
        let Role_::Leading(l) = &mut self.role else {
            return;
        };
        let observer = l.links.get(&to).is_some_and(|k| k.observer);
        if !observer {
            for p in &l.pending {
                if let Pending::Proposal { txn, .. } = p {
                    out.push(Output::Send {
                        to,
                        msg: Msg::Proposal {
                            txn: txn.clone(),
                            origin: None,
                        },
                    });
                }
            }
        }
        out.push(Output::Send {
            to,
            msg: Msg::NewLeader {
                epoch: l.epoch,
                zxid: last,
            },
        });
        if let Some(k) = l.links.get_mut(&to) {
            k.state = LinkState::Synced;
        }
    }

    fn maybe_activate(&mut self, out: &mut Vec<Output>) {
        let quorum = self.cfg.quorum();
        let Role_::Leading(l) = &mut self.role else {
            return;
        };
        if l.phase != LeaderPhase::Sync {
            return;
        }
        let acked = 1 + l
            .links
            .iter()
            .filter(|(s, k)| {
                k.state == LinkState::UpToDate
                    && !k.observer
                    && self.cfg.voters.contains(s)
                    && l.epoch_acks.contains(s)
            })
            .count();
        if acked < quorum {
            return;
        }
        if let Err(e) = self.log.set_current_epoch(l.epoch) {
            return self.storage_failed(e, out);
        }
        self.current_epoch = l.epoch;
        l.phase = LeaderPhase::Active;
        if let Some(t) = self.looking_since.take() {
            metrics::histogram!("roster_zab_election_seconds")
                .record(self.now.saturating_sub(t) as f64 / 1000.0);
        }
        l.counter = 0;
        // Sessions: every committed session gets its full timeout under the new leader.
        {
            let tree = self.tree.read();
            for (id, m) in tree.sessions() {
                l.sessions.add(*id, m.timeout_ms as u64, self.now);
            }
        }
        l.next_session =
            ((((wall_ms() as u64) << 24) >> 8) as i64) | ((self.cfg.id as i64 & 0xff) << 56);
        for (s, k) in &l.links {
            if k.state == LinkState::UpToDate {
                out.push(Output::Send {
                    to: *s,
                    msg: Msg::UpToDate,
                });
            }
        }
        tracing::info!(
            sid = self.cfg.id,
            epoch = l.epoch,
            followers = acked - 1,
            "leading: active"
        );
    }

    fn next_zxid(l: &mut Leader) -> Zxid {
        l.counter += 1;
        ((l.epoch as i64) << 32) | l.counter as i64
    }

    fn submit(&mut self, origin: Origin, env: Envelope, out: &mut Vec<Output>) {
        match &mut self.role {
            Role_::Leading(l) if l.phase == LeaderPhase::Active => {
                let zxid = Self::next_zxid(l);
                let time = wall_ms();
                let op = match &env.request {
                    Request::CreateSession { timeout_ms } => {
                        let tree = self.tree.read();
                        let mut id = l.next_session;
                        while id == 0 || tree.sessions().contains_key(&id) {
                            id += 1;
                        }
                        l.next_session = id + 1;
                        let passwd: [u8; 16] = rand::random();
                        Ok((
                            id,
                            TxnOp::CreateSession {
                                timeout_ms: *timeout_ms,
                                passwd: passwd.to_vec(),
                            },
                        ))
                    }
                    _ => {
                        let tree = self.tree.read();
                        self.outstanding
                            .prepare(&tree, &env, zxid, time, &self.cfg.prep)
                            .map(|op| (env.session, op))
                    }
                };
                match op {
                    Ok((session, op)) => {
                        let txn = Arc::new(Txn {
                            zxid,
                            time,
                            session,
                            op,
                        });
                        self.propose(txn, origin, out);
                    }
                    Err(outcome) => {
                        l.counter -= 1; // failed requests consume no zxid
                        l.pending.push_back(Pending::Failed { origin, outcome });
                        self.try_commit(out);
                    }
                }
            }
            Role_::Following(f) if f.phase == FollowerPhase::Active => match origin {
                Origin::Local(id) => {
                    let Envelope {
                        session,
                        auth,
                        request,
                    } = env;
                    out.push(Output::Send {
                        to: f.leader,
                        msg: Msg::Forward {
                            id,
                            session,
                            auth,
                            request,
                        },
                    });
                }
                _ => tracing::warn!(
                    sid = self.cfg.id,
                    "a follower was asked to order a forwarded write"
                ),
            },
            _ => {
                if let Origin::Local(o) = origin {
                    out.push(Output::Reply {
                        origin: o,
                        result: Err(BackendError::Unavailable(
                            "no leader (election in progress)".into(),
                        )),
                    });
                }
            }
        }
    }

    fn propose(&mut self, txn: Arc<Txn>, origin: Origin, out: &mut Vec<Output>) {
        let Role_::Leading(l) = &mut self.role else {
            return;
        };
        for (s, k) in &l.links {
            if k.state != LinkState::Epoch && !k.observer {
                let o = match origin {
                    Origin::Remote(p, id) if p == *s => Some(id),
                    _ => None,
                };
                out.push(Output::Send {
                    to: *s,
                    msg: Msg::Proposal {
                        txn: txn.clone(),
                        origin: o,
                    },
                });
            }
        }
        self.last_logged = txn.zxid;
        self.to_log.push(txn.clone());
        l.pending.push_back(Pending::Proposal {
            txn,
            origin,
            acks: HashSet::new(),
        });
    }

    fn try_commit(&mut self, out: &mut Vec<Output>) {
        let quorum = self.cfg.commit_quorum();
        loop {
            let Role_::Leading(l) = &mut self.role else {
                return;
            };
            let ready = match l.pending.front() {
                None => false,
                Some(Pending::Proposal { acks, .. }) => {
                    acks.iter().filter(|s| self.cfg.voters.contains(s)).count() >= quorum
                }
                Some(Pending::Failed { .. }) => true,
                Some(Pending::Barrier { seq, .. }) => {
                    1 + l
                        .links
                        .iter()
                        .filter(|(s, k)| {
                            !k.observer && self.cfg.voters.contains(s) && k.pong >= *seq
                        })
                        .count()
                        >= quorum
                }
            };
            if !ready {
                return;
            }
            match l.pending.pop_front().expect("front exists") {
                Pending::Proposal { txn, origin, .. } => {
                    for (s, k) in &l.links {
                        match k.state {
                            LinkState::Epoch => {}
                            _ if k.observer => {
                                let o = match origin {
                                    Origin::Remote(p, id) if p == *s => Some(id),
                                    _ => None,
                                };
                                out.push(Output::Send {
                                    to: *s,
                                    msg: Msg::Inform {
                                        txn: txn.clone(),
                                        origin: o,
                                    },
                                });
                            }
                            _ => out.push(Output::Send {
                                to: *s,
                                msg: Msg::Commit { zxid: txn.zxid },
                            }),
                        }
                    }
                    let outcome = self.apply(&txn);
                    if let Origin::Local(o) = origin {
                        out.push(Output::Reply {
                            origin: o,
                            result: Ok(Applied {
                                zxid: txn.zxid,
                                outcome,
                            }),
                        });
                    }
                }
                Pending::Failed { origin, outcome } => match origin {
                    Origin::Local(o) => {
                        let zxid = self.committed_zxid();
                        out.push(Output::Reply {
                            origin: o,
                            result: Ok(Applied { zxid, outcome }),
                        });
                    }
                    Origin::Remote(p, id) => out.push(Output::Send {
                        to: p,
                        msg: Msg::Failed { id, outcome },
                    }),
                    Origin::None => {}
                },
                Pending::Barrier { origin, .. } => match origin {
                    Origin::Local(o) => {
                        let zxid = self.committed_zxid();
                        out.push(Output::Barrier {
                            origin: o,
                            result: Ok(zxid),
                        });
                    }
                    Origin::Remote(p, id) => out.push(Output::Send {
                        to: p,
                        msg: Msg::SyncDone { id },
                    }),
                    Origin::None => {}
                },
            }
        }
    }

    fn barrier(&mut self, origin: u64, out: &mut Vec<Output>) {
        match &mut self.role {
            Role_::Leading(l) if l.phase == LeaderPhase::Active => {
                l.seq += 1;
                let seq = l.seq;
                l.pending.push_back(Pending::Barrier {
                    origin: Origin::Local(origin),
                    seq,
                });
                for (s, k) in &l.links {
                    if k.state != LinkState::Epoch && !k.observer {
                        out.push(Output::Send {
                            to: *s,
                            msg: Msg::Ping { seq },
                        });
                    }
                }
                self.try_commit(out);
            }
            Role_::Following(f) if f.phase == FollowerPhase::Active => {
                out.push(Output::Send {
                    to: f.leader,
                    msg: Msg::SyncReq { id: origin },
                });
            }
            _ => out.push(Output::Barrier {
                origin,
                result: Err(BackendError::Unavailable(
                    "no leader (election in progress)".into(),
                )),
            }),
        }
    }

    fn touch(&mut self, sessions: Vec<SessionId>) {
        let now = self.now;
        match &mut self.role {
            Role_::Leading(l) => {
                for s in sessions {
                    l.sessions.touch(s, now);
                }
            }
            Role_::Following(f) => f.touched.extend(sessions),
            Role_::Looking(_) => {}
        }
    }

    fn expire_sessions(&mut self, out: &mut Vec<Output>) {
        let now = self.now;
        let Role_::Leading(l) = &mut self.role else {
            return;
        };
        let expired = l.sessions.expired(now);
        for id in expired {
            tracing::info!(
                sid = self.cfg.id,
                session = format!("{id:#x}"),
                "session expired"
            );
            metrics::counter!("roster_sessions_expired_total").increment(1);
            let env = Envelope {
                session: id,
                ..Envelope::internal(Request::CloseSession)
            };
            self.submit(Origin::None, env, out);
        }
    }

    fn sweep_containers(&mut self, out: &mut Vec<Output>) {
        let now = self.now;
        let Role_::Leading(l) = &mut self.role else {
            return;
        };
        if now.saturating_sub(l.last_container_check) < self.cfg.container_check_ms {
            return;
        }
        l.last_container_check = now;
        let due = self.tree.read().expired_containers(wall_ms());
        for path in due {
            self.submit(
                Origin::None,
                Envelope::internal(Request::DeleteContainer { path }),
                out,
            );
        }
    }

    // ---------------------------------------------------------------- follower

    fn follower_message(&mut self, msg: Msg, out: &mut Vec<Output>) {
        let now = self.now;
        let observer = self.cfg.is_observer();
        let Role_::Following(f) = &mut self.role else {
            return;
        };
        f.last_heard = now;
        let leader = f.leader;
        match msg {
            Msg::LeaderInfo { epoch } => {
                if epoch < self.accepted_epoch {
                    tracing::warn!(
                        sid = self.cfg.id,
                        leader,
                        epoch,
                        accepted = self.accepted_epoch,
                        "leader proposes an old epoch; looking"
                    );
                    return self.look(out);
                }
                let fresh = epoch > self.accepted_epoch;
                if fresh {
                    if let Err(e) = self.log.set_accepted_epoch(epoch) {
                        return self.storage_failed(e, out);
                    }
                    self.accepted_epoch = epoch;
                }
                f.phase = FollowerPhase::Sync;
                out.push(Output::Send {
                    to: leader,
                    msg: Msg::AckEpoch {
                        current_epoch: self.current_epoch,
                        last_zxid: self.last_logged,
                        fresh,
                    },
                });
            }
            Msg::Trunc { to } => {
                tracing::info!(sid = self.cfg.id, to = format!("{to:#x}"), "TRUNC");
                self.unapplied.retain(|z, _| *z <= to);
                self.to_log.retain(|t| t.zxid <= to);
                if let Err(e) = self.log.truncate_after(to) {
                    return self.storage_failed(e, out);
                }
                self.last_logged = to;
                if self.tree.read().last_zxid() > to {
                    // Our state holds txns the new leader does not: rebuild it from disk.
                    match recover(&self.log) {
                        Ok(t) if t.last_zxid() == to => self.tree.write().replace_state(t),
                        _ => {
                            out.push(Output::Send {
                                to: leader,
                                msg: Msg::NeedSnap,
                            });
                        }
                    }
                }
            }
            Msg::Diff { committed, txns } => {
                // Our own logged-but-unapplied txns up to `committed` are part of the leader's
                // history: apply them and the diff together, in zxid order.
                let mut todo: BTreeMap<Zxid, (Arc<Txn>, bool)> = BTreeMap::new();
                let keep = self.unapplied.split_off(&(committed + 1));
                for (z, t) in std::mem::replace(&mut self.unapplied, keep) {
                    todo.insert(z, (t, false));
                }
                for t in txns {
                    todo.entry(t.zxid).or_insert((t, true));
                }
                for (z, (t, from_leader)) in todo {
                    if z <= self.tree.read().last_zxid() {
                        continue;
                    }
                    if from_leader && z > self.last_logged {
                        self.last_logged = z;
                        self.to_log.push(t.clone());
                    }
                    self.apply(&t);
                }
                self.flush_quietly(out);
            }
            Msg::Snap { zxid, data } => match Tree::restore(&data) {
                Ok(t) => {
                    let res = self
                        .log
                        .clear()
                        .and_then(|()| self.log.save_snapshot(zxid, data));
                    if let Err(e) = res {
                        return self.storage_failed(e, out);
                    }
                    self.tree.write().replace_state(t);
                    self.unapplied.clear();
                    self.to_log.clear();
                    self.last_logged = zxid;
                    tracing::info!(
                        sid = self.cfg.id,
                        zxid = format!("{zxid:#x}"),
                        "installed the leader's snapshot"
                    );
                }
                Err(e) => {
                    tracing::error!(sid = self.cfg.id, error = %e, "corrupt snapshot from the leader");
                    self.look(out);
                }
            },
            Msg::NewLeader { epoch, .. } => {
                self.flush_quietly(out);
                if let Err(e) = self.log.set_current_epoch(epoch) {
                    return self.storage_failed(e, out);
                }
                self.current_epoch = epoch;
                out.push(Output::Send {
                    to: leader,
                    msg: Msg::AckNewLeader,
                });
            }
            Msg::UpToDate => {
                f.phase = FollowerPhase::Active;
                if let Some(t) = self.looking_since.take() {
                    metrics::histogram!("roster_zab_election_seconds")
                        .record(now.saturating_sub(t) as f64 / 1000.0);
                }
                tracing::info!(
                    sid = self.cfg.id,
                    leader,
                    epoch = self.current_epoch,
                    "following: up to date"
                );
            }
            Msg::Proposal { txn, origin } => {
                if let Some(o) = origin {
                    f.waiting.insert(txn.zxid, o);
                }
                if txn.zxid > self.last_logged {
                    self.last_logged = txn.zxid;
                    self.to_log.push(txn.clone());
                    self.unapplied.insert(txn.zxid, txn);
                }
            }
            Msg::Commit { zxid } => {
                // Apply in order everything up to zxid (commits arrive in zxid order).
                let ready: Vec<Zxid> = self.unapplied.range(..=zxid).map(|(z, _)| *z).collect();
                if !self.to_log.is_empty() {
                    self.flush_quietly(out);
                }
                for z in ready {
                    let txn = self.unapplied.remove(&z).expect("listed above");
                    if txn.zxid <= self.tree.read().last_zxid() {
                        continue;
                    }
                    let outcome = self.apply(&txn);
                    if let Role_::Following(f) = &mut self.role
                        && let Some(o) = f.waiting.remove(&z)
                    {
                        out.push(Output::Reply {
                            origin: o,
                            result: Ok(Applied { zxid: z, outcome }),
                        });
                    }
                }
            }
            Msg::Inform { txn, origin } if observer => {
                if txn.zxid > self.tree.read().last_zxid() {
                    if txn.zxid > self.last_logged {
                        self.last_logged = txn.zxid;
                        self.to_log.push(txn.clone());
                    }
                    let outcome = self.apply(&txn);
                    if let Some(o) = origin {
                        out.push(Output::Reply {
                            origin: o,
                            result: Ok(Applied {
                                zxid: txn.zxid,
                                outcome,
                            }),
                        });
                    }
                }
            }
            Msg::Failed { id, outcome } => {
                let zxid = self.tree.read().last_zxid();
                out.push(Output::Reply {
                    origin: id,
                    result: Ok(Applied { zxid, outcome }),
                });
            }
            Msg::Ping { seq } => out.push(Output::Send {
                to: leader,
                msg: Msg::Pong { seq },
            }),
            Msg::SyncDone { id } => {
                let zxid = self.tree.read().last_zxid();
                out.push(Output::Barrier {
                    origin: id,
                    result: Ok(zxid),
                });
            }
            other => tracing::debug!(
                sid = self.cfg.id,
                leader,
                kind = other.kind(),
                "unexpected message for a follower"
            ),
        }
    }

    /// Log what is pending without sending ACKs (sync-phase txns are acknowledged by NEWLEADER).
    fn flush_quietly(&mut self, out: &mut Vec<Output>) {
        if self.to_log.is_empty() {
            return;
        }
        let txns = std::mem::take(&mut self.to_log);
        let mut acks = Vec::new();
        // Proposals among them still need their ACK.
        for t in &txns {
            if self.unapplied.contains_key(&t.zxid) {
                acks.push(t.zxid);
            }
        }
        let mut wb = WriteBatch::default();
        TxnLog::stage(&mut wb, &txns);
        if let Err(e) = self.log.commit(wb) {
            return self.storage_failed(e, out);
        }
        if let Role_::Following(f) = &self.role
            && !self.cfg.is_observer()
        {
            for zxid in acks {
                out.push(Output::Send {
                    to: f.leader,
                    msg: Msg::Ack { zxid },
                });
            }
        }
    }

    // ---------------------------------------------------------------- apply

    fn apply_unapplied(&mut self) {
        let txns: Vec<Arc<Txn>> = std::mem::take(&mut self.unapplied).into_values().collect();
        for t in txns {
            if t.zxid > self.tree.read().last_zxid() {
                self.apply(&t);
            }
        }
    }

    fn apply(&mut self, txn: &Arc<Txn>) -> Outcome {
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
        if self.applied_since_snapshot >= self.cfg.snapshot_every && self.serving() {
            self.applied_since_snapshot = 0;
            self.snapshot();
        }
        outcome
    }

    fn snapshot(&mut self) {
        // Only committed state may be snapshotted: flush first so the log covers it.
        let t0 = std::time::Instant::now();
        let (zxid, bytes) = {
            let t = self.tree.read();
            (t.last_zxid(), t.snapshot())
        };
        let res = self
            .log
            .save_snapshot(zxid, bytes)
            .and_then(|()| self.log.purge(self.cfg.snapshots_retained));
        metrics::histogram!("roster_backend_snapshot_seconds").record(t0.elapsed().as_secs_f64());
        if let Err(e) = res {
            tracing::warn!(sid = self.cfg.id, error = %e, "snapshot failed; the log is kept");
        }
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
