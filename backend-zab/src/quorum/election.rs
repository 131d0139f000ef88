//! Fast leader election: rounds, votes, the finalize wait, joining an established leader.

use super::msg::{Msg, PeerState, Sid, Vote};
use super::peer::*;
use roster_core::backend::BackendError;
use roster_core::session::SessionTracker;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

/// ZooKeeper's finalize wait (`finalizeWait`, 200 ms): once a quorum agrees, how long a better
/// vote may still arrive before the vote is final (skipped when every voter has voted).
pub(super) const FINALIZE_WAIT_MS: u64 = 200;

impl Peer {
    /// Enter LOOKING: new round, vote for ourselves.
    pub(super) fn look(&mut self, out: &mut Vec<Output>) {
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

    pub(super) fn on_notification(
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
            // Our leader announces that it now leads: if we are still in discovery, our
            // FOLLOWERINFO may have reached it while it was itself still looking (and been
            // answered with a notification): send it again now rather than at the next tick.
            if let Role_::Following(f) = &self.role
                && f.leader == from
                && f.phase == FollowerPhase::Discovery
                && state == PeerState::Leading
            {
                let msg = Msg::FollowerInfo {
                    accepted_epoch: self.accepted_epoch,
                    last_zxid: self.last_logged,
                    observer: self.cfg.is_observer(),
                };
                out.push(Output::Send { to: from, msg });
                return;
            }
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

    pub(super) fn maybe_decide(&mut self, out: &mut Vec<Output>) {
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
        if !all && now.saturating_sub(since) < FINALIZE_WAIT_MS {
            return;
        }
        let leader = e.vote.leader;
        if leader == me {
            self.lead(out)
        } else {
            self.follow(leader, out)
        }
    }

    pub(super) fn follow(&mut self, leader: Sid, out: &mut Vec<Output>) {
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
            awaiting_snap: false,
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

    pub(super) fn lead(&mut self, out: &mut Vec<Output>) {
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
}
