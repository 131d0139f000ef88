//! One AP member as a state machine without I/O: local requests, peer messages, liveness changes
//! and timer ticks go in; what to persist, which paths changed, which sessions opened or closed
//! and what to send come out ([`Actions`]), once per batch ([`Member::flush`]). The shell
//! persists (one fsync per batch), applies the changed paths to the tree, replies, then sends.
//! The seeded simulation drives the very same code.

use crate::expiry::{Decision, Expiry, ExpiryConfig};
use crate::hlc::{Clock, Hlc, MemberId, Stamp};
use crate::model::{DeltaResult, OwnerOp, OwnerState, PEntry, Replica};
use crate::proto::{Msg, owner_messages, persist_chunks};
use roster_core::SessionId;
use roster_core::backend::BackendError;
use roster_core::txn::Outcome;
use std::collections::{BTreeMap, BTreeSet};

mod prep;
pub use prep::outcome;

/// Settings of the protocol core.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub id: MemberId,
    /// Dead members' ephemerals go after this long, share permitting.
    pub expiry: ExpiryConfig,
    /// Tombstones older than this are forgotten (ms).
    pub tombstone_ttl_ms: u64,
    /// Interval of the digest exchange (ms).
    pub anti_entropy_ms: u64,
}

/// How to answer a local request once its batch is durable and applied.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Nothing changed; answer this.
    Done(Outcome),
    Refused(BackendError),
    Created(String),
    DataSet(String),
    AclSet(String),
    Deleted,
    SessionCreated {
        session: SessionId,
        timeout_ms: i32,
        passwd: Vec<u8>,
    },
    SessionClosed(SessionId),
}

impl Plan {
    /// True if the request changed state (so its reply must wait for the fsync).
    pub fn writes(&self) -> bool {
        !matches!(self, Plan::Done(_) | Plan::Refused(_))
    }
}

/// A logged event worth a log line in the shell.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Self-preservation started or ended; the owners it keeps.
    Preservation {
        on: bool,
        owners: Vec<MemberId>,
        total: usize,
    },
    /// A dead member's ephemerals were removed.
    Expired { owner: MemberId, ephemerals: usize },
    /// A peer's owner state was (re)pulled.
    Pulled { owner: MemberId },
}

/// What a batch came to.
#[derive(Debug, Default)]
pub struct Actions {
    /// Registers to store (`None`: delete the key — a collected tombstone).
    pub persist: Vec<(String, Option<PEntry>)>,
    /// True if the batch holds local writes (they need an fsync before their ack).
    pub durable: bool,
    /// Paths whose visible state may have changed.
    pub changed: BTreeSet<String>,
    /// Local sessions opened (id, timeout, password) and closed, in order.
    pub opened: Vec<(SessionId, i32, Vec<u8>)>,
    pub closed: Vec<SessionId>,
    pub send: Vec<(MemberId, Msg)>,
    pub events: Vec<Event>,
    /// Remote writes applied: their age (ms) when they got here.
    pub lags_ms: Vec<u64>,
}

/// Counters for metrics.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub repairs: u64,
    pub pulls: u64,
    pub deltas_in: u64,
    pub gaps: u64,
}

/// The member.
pub struct Member {
    cfg: MemberConfig,
    incarnation: u64,
    clock: Clock,
    model: Replica,
    peers: BTreeSet<MemberId>,
    expiry: Expiry,
    preserving: bool,
    last_ae: u64,
    last_gc: u64,
    next_session: u64,
    rng: u64,
    delta_from: Option<u64>,
    own_ops: Vec<OwnerOp>,
    fresh: Vec<(String, PEntry)>,
    /// Owner states arriving in parts: what has come so far, and the next part's index.
    pulling: BTreeMap<MemberId, (OwnerState, u32)>,
    acts: Actions,
    pub stats: Stats,
}

impl Member {
    /// A member recovered from its stored registers, in its `incarnation` (one more than the
    /// last run's), with a clock that starts after `clock_floor`.
    pub fn new(
        cfg: MemberConfig,
        incarnation: u64,
        clock_floor: Hlc,
        stored: impl IntoIterator<Item = (String, PEntry)>,
        seed: u64,
    ) -> Member {
        let mut model = Replica::new();
        let mut clock = Clock::starting_after(clock_floor);
        for (p, e) in stored {
            clock.observe(e.stamp.hlc);
            model.merge_persistent(&p, e);
        }
        model.apply_own(cfg.id, incarnation, &[]);
        Member {
            incarnation,
            clock,
            model,
            peers: BTreeSet::new(),
            expiry: Expiry::default(),
            preserving: false,
            last_ae: 0,
            last_gc: 0,
            next_session: 1,
            rng: seed | 1,
            delta_from: None,
            own_ops: Vec::new(),
            fresh: Vec::new(),
            pulling: BTreeMap::new(),
            acts: Actions::default(),
            stats: Stats::default(),
            cfg,
        }
    }

    pub fn id(&self) -> MemberId {
        self.cfg.id
    }
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }
    pub fn model(&self) -> &Replica {
        &self.model
    }
    pub fn clock(&self) -> Hlc {
        self.clock.last()
    }
    pub fn peers(&self) -> &BTreeSet<MemberId> {
        &self.peers
    }
    pub fn preserving(&self) -> bool {
        self.preserving
    }
    pub fn is_down(&self, m: MemberId) -> bool {
        self.expiry.is_down(m)
    }
    /// Local sessions.
    pub fn sessions(&self) -> Vec<SessionId> {
        self.model
            .owner(self.cfg.id)
            .map(|s| s.sessions.keys().copied().collect())
            .unwrap_or_default()
    }

    fn stamp(&mut self, wall: u64) -> Stamp {
        Stamp {
            hlc: self.clock.now(wall),
            origin: self.cfg.id,
        }
    }

    fn own(&mut self, op: OwnerOp) {
        if self.delta_from.is_none() {
            self.delta_from = Some(self.model.owner(self.cfg.id).map_or(0, |s| s.version));
        }
        let changed =
            self.model
                .apply_own(self.cfg.id, self.incarnation, std::slice::from_ref(&op));
        self.acts.changed.extend(changed);
        self.own_ops.push(op);
        self.acts.durable = true;
    }

    fn write_register(&mut self, p: &str, e: PEntry) {
        if self.model.merge_persistent(p, e.clone()) {
            self.acts.changed.insert(p.to_owned());
            self.acts.persist.push((p.to_owned(), Some(e.clone())));
            self.fresh.push((p.to_owned(), e));
            self.acts.durable = true;
        }
    }

    /// Take a message from peer `from` at wall time `now`.
    pub fn peer(&mut self, from: MemberId, msg: Msg, now: u64) {
        if from == self.cfg.id {
            return;
        }
        self.peers.insert(from);
        match msg {
            Msg::Hello { .. } => {}
            Msg::Persist { entries, repair } => {
                for (p, e) in entries {
                    self.clock.observe(e.stamp.hlc);
                    let wall = e.stamp.hlc.wall;
                    if self.model.merge_persistent(&p, e.clone()) {
                        self.acts.changed.insert(p.clone());
                        self.acts.persist.push((p, Some(e)));
                        self.acts.lags_ms.push(now.saturating_sub(wall));
                        if repair {
                            self.stats.repairs += 1;
                        }
                    }
                }
            }
            Msg::Delta {
                incarnation,
                from: v,
                ops,
            } => {
                self.stats.deltas_in += 1;
                for op in &ops {
                    if let OwnerOp::Put { eph, .. } = op {
                        self.clock.observe(eph.stamp.hlc);
                        self.acts
                            .lags_ms
                            .push(now.saturating_sub(eph.stamp.hlc.wall));
                    }
                }
                match self.model.apply_delta(from, incarnation, v, &ops) {
                    DeltaResult::Applied(changed) => self.acts.changed.extend(changed),
                    DeltaResult::Stale => {}
                    DeltaResult::Gap => {
                        self.stats.gaps += 1;
                        self.acts.send.push((from, Msg::PullOwner));
                    }
                }
            }
            Msg::Summary { owner, buckets } => {
                let mine = self.model.owner_summary(from);
                if let Some(theirs) = owner
                    && mine != Some(theirs)
                {
                    // Behind, or level with a different checksum: pull. Ahead means their
                    // delta is still on its way to us; nothing to do.
                    let behind = mine.is_none_or(|m| {
                        (m.incarnation, m.version) <= (theirs.incarnation, theirs.version)
                    });
                    if behind {
                        self.acts.send.push((from, Msg::PullOwner));
                    }
                }
                let differ = self.model.differing_buckets(&buckets);
                if !differ.is_empty() {
                    self.acts.send.push((from, Msg::WantBuckets(differ)));
                }
            }
            Msg::PullOwner => {
                let st = self
                    .model
                    .owner(self.cfg.id)
                    .cloned()
                    .unwrap_or_else(|| OwnerState {
                        incarnation: self.incarnation,
                        ..OwnerState::default()
                    });
                for m in owner_messages(st) {
                    self.acts.send.push((from, m));
                }
            }
            Msg::OwnerSnapshot(st) => self.install_pulled(from, st),
            Msg::OwnerPart {
                incarnation,
                version,
                index,
                count,
                sessions,
                ephemerals,
            } => {
                if index == 0 {
                    let st = OwnerState {
                        incarnation,
                        version,
                        ..OwnerState::default()
                    };
                    self.pulling.insert(from, (st, 0));
                }
                match self.pulling.get_mut(&from) {
                    Some((st, next))
                        if (st.incarnation, st.version) == (incarnation, version)
                            && *next == index =>
                    {
                        st.sessions.extend(sessions);
                        st.ephemerals.extend(ephemerals);
                        *next += 1;
                        if *next == count
                            && let Some((st, _)) = self.pulling.remove(&from)
                        {
                            self.install_pulled(from, st);
                        }
                    }
                    // A part missing (dropped from a full queue) or of another pull: what came
                    // is incomplete and never installed; the next anti-entropy round pulls again.
                    _ => {
                        self.pulling.remove(&from);
                        tracing::debug!(
                            owner = from,
                            index,
                            count,
                            "owner state part out of sequence; dropped (pulled again later)"
                        );
                    }
                }
            }
            Msg::WantBuckets(bs) => {
                let entries = self.model.entries_in(&bs);
                for chunk in persist_chunks(&entries) {
                    self.acts.send.push((
                        from,
                        Msg::Persist {
                            entries: chunk.to_vec(),
                            repair: true,
                        },
                    ));
                }
            }
        }
    }

    /// Install an owner's state pulled from it (whole, or its parts reassembled).
    fn install_pulled(&mut self, from: MemberId, st: OwnerState) {
        for e in st.ephemerals.values() {
            self.clock.observe(e.stamp.hlc);
        }
        let changed = self.model.install_owner(from, st);
        self.stats.pulls += 1;
        self.stats.repairs += changed.len() as u64;
        self.acts.events.push(Event::Pulled { owner: from });
        self.acts.changed.extend(changed);
    }

    /// The failure detector says `m` is alive.
    pub fn member_up(&mut self, m: MemberId) {
        if m == self.cfg.id {
            return;
        }
        let was_down = self.expiry.is_down(m);
        self.peers.insert(m);
        self.expiry.up(m);
        // Compare notes at once rather than at the next round: this is what heals partitions.
        self.acts.send.push((m, self.summary()));
        if was_down {
            self.acts.send.push((m, Msg::PullOwner));
        }
    }

    /// The failure detector says `m` is dead.
    pub fn member_down(&mut self, m: MemberId, now: u64) {
        if m != self.cfg.id {
            self.expiry.down(m, now);
            // Its state's remaining parts are not coming.
            self.pulling.remove(&m);
        }
    }

    /// A member known from configuration (a seed), before the failure detector has met it.
    pub fn add_peer(&mut self, m: MemberId) {
        if m != self.cfg.id {
            self.peers.insert(m);
        }
    }

    fn summary(&self) -> Msg {
        Msg::Summary {
            owner: self.model.owner_summary(self.cfg.id),
            buckets: self.model.buckets(),
        }
    }

    /// Timers: anti-entropy round, dead members' expiry, tombstone collection.
    pub fn tick(&mut self, now: u64) {
        if now.saturating_sub(self.last_ae) >= self.cfg.anti_entropy_ms {
            self.last_ae = now;
            let s = self.summary();
            for p in self.peers.clone() {
                if !self.expiry.is_down(p) {
                    self.acts.send.push((p, s.clone()));
                }
            }
        }
        let counts: BTreeMap<MemberId, usize> = self
            .model
            .owner_counts()
            .into_iter()
            .filter(|(m, _)| *m != self.cfg.id)
            .chain(std::iter::once((
                self.cfg.id,
                self.model
                    .owner(self.cfg.id)
                    .map_or(0, |o| o.ephemeral_count()),
            )))
            .collect();
        let Decision {
            drop,
            preserving,
            preserved,
        } = self.expiry.decide(&self.cfg.expiry, now, &counts);
        if preserving != self.preserving {
            self.preserving = preserving;
            self.acts.events.push(Event::Preservation {
                on: preserving,
                owners: preserved,
                total: counts.values().sum(),
            });
        }
        for m in drop {
            let n = counts.get(&m).copied().unwrap_or(0);
            let changed = self.model.drop_owner(m);
            self.acts.changed.extend(changed);
            self.acts.events.push(Event::Expired {
                owner: m,
                ephemerals: n,
            });
        }
        let gc_every = (self.cfg.tombstone_ttl_ms / 10).clamp(1000, 60_000);
        if now.saturating_sub(self.last_gc) >= gc_every {
            self.last_gc = now;
            for p in self
                .model
                .gc_tombstones(now.saturating_sub(self.cfg.tombstone_ttl_ms))
            {
                self.acts.persist.push((p, None));
            }
        }
    }

    /// End of a batch: stream this batch's own changes and fresh registers to every peer, and
    /// hand over the actions.
    pub fn flush(&mut self) -> Actions {
        let peers: Vec<MemberId> = self.peers.iter().copied().collect();
        if let Some(from) = self.delta_from.take() {
            let ops = std::mem::take(&mut self.own_ops);
            for &p in &peers {
                self.acts.send.push((
                    p,
                    Msg::Delta {
                        incarnation: self.incarnation,
                        from,
                        ops: ops.clone(),
                    },
                ));
            }
        }
        if !self.fresh.is_empty() {
            let fresh = std::mem::take(&mut self.fresh);
            for chunk in persist_chunks(&fresh) {
                for &p in &peers {
                    self.acts.send.push((
                        p,
                        Msg::Persist {
                            entries: chunk.to_vec(),
                            repair: false,
                        },
                    ));
                }
            }
        }
        std::mem::take(&mut self.acts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expiry::ExpiryConfig;
    use crate::model::{Eph, SessionInfo, Value};

    fn member(id: MemberId) -> Member {
        let cfg = MemberConfig {
            id,
            expiry: ExpiryConfig {
                grace_ms: 1000,
                max_share: 0.5,
            },
            tombstone_ttl_ms: 3_600_000,
            anti_entropy_ms: 300,
        };
        Member::new(cfg, 1, Hlc::default(), [], 7)
    }

    /// Owner 2's state: 3 000 instances of 4 KB, 12 MB in all.
    fn big_state() -> OwnerState {
        let mut st = OwnerState {
            incarnation: 3,
            version: 3000,
            ..OwnerState::default()
        };
        for i in 0..3000u64 {
            let session = (2 << 56) | i as i64;
            st.sessions
                .insert(session, SessionInfo { timeout_ms: 30_000 });
            st.ephemerals.insert(
                format!("/services/web/i{i:05}"),
                Eph {
                    stamp: Stamp {
                        hlc: Hlc {
                            wall: 1_000 + i,
                            logical: 0,
                        },
                        origin: 2,
                    },
                    session,
                    value: Value {
                        data: vec![b'm'; 4096],
                        acl: roster_core::acl::intern(&roster_core::acl::Acl::open_unsafe()),
                    },
                },
            );
        }
        st
    }

    #[test]
    fn a_large_owner_state_is_pulled_in_parts_and_installed_whole() {
        let st = big_state();
        let parts = owner_messages(st.clone());
        assert!(parts.len() >= 3, "{} messages", parts.len());
        let mut b = member(1);
        for (i, m) in parts.iter().cloned().enumerate() {
            assert!(b.model().owner(2).is_none(), "installed before part {i}");
            b.peer(2, m, 5_000);
        }
        assert_eq!(b.model().owner(2), Some(&st));
        assert_eq!(
            b.flush().changed.len(),
            3000,
            "every instance became visible"
        );

        // A part lost on the way (a full queue drops frames): nothing is installed.
        let mut c = member(1);
        for (i, m) in parts.iter().cloned().enumerate() {
            if i != 1 {
                c.peer(2, m, 5_000);
            }
        }
        assert!(c.model().owner(2).is_none());
        // The next pull, whole, installs it.
        for m in parts {
            c.peer(2, m, 6_000);
        }
        assert_eq!(c.model().owner(2), Some(&st));
    }
}
