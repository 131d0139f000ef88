//! The leader: discovery (new epoch), synchronising followers (DIFF / TRUNC / SNAP), proposing,
//! committing on a quorum, sessions and containers.

use super::msg::{Msg, Sid, SnapState};
use super::peer::*;
use roster_core::backend::BackendError;
use roster_core::storage::StorageError;
use roster_core::tree::prep::create_session;
use roster_core::txn::{Applied, Envelope, Request, Txn};
use roster_core::{SessionId, Zxid};
use std::collections::HashSet;
use std::sync::Arc;

impl Peer {
    pub(super) fn leader_message(&mut self, from: Sid, msg: Msg, out: &mut Vec<Output>) {
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
                } else {
                    // A follower (re)starting its synchronisation, even one we thought was in
                    // sync (it may have timed out on us): start over from the epoch.
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
                l.queue_barrier(Origin::Remote(from, id), out);
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

    pub(super) fn maybe_new_epoch(&mut self, out: &mut Vec<Output>) {
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

    pub(super) fn committed_zxid(&self) -> Zxid {
        self.tree.read().last_zxid()
    }

    /// Bring a follower up to date: DIFF, TRUNC+DIFF or SNAP, then the pending proposals, then
    /// NEWLEADER. From here on it receives proposals and commits.
    pub(super) fn sync_follower(&mut self, to: Sid, last: Zxid, out: &mut Vec<Output>) {
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
                let mut txns = Vec::new();
                let res = self.log.replay_contiguous(from, committed, &mut |t: Txn| {
                    txns.push(Arc::new(t));
                });
                let gap = match res {
                    Ok((_, gap)) => gap,
                    Err(e) => return self.storage_failed(e, out),
                };
                if let Some((before, after)) = gap {
                    // A DIFF across it would leave the follower without the transactions in
                    // between, silently: send the state instead.
                    tracing::warn!(
                        sid = self.cfg.id,
                        follower = to,
                        before = format!("{before:#x}"),
                        after = format!("{after:#x}"),
                        "the log has a gap where the follower's DIFF would read it; sending a snapshot"
                    );
                    return self.send_snap(to, out);
                }
                if from != last {
                    out.push(Output::Send {
                        to,
                        msg: Msg::Trunc { to: from },
                    });
                    metrics::counter!("roster_zab_syncs_total", "kind" => "trunc").increment(1);
                    self.syncs.trunc += 1;
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

    pub(super) fn send_snap(&mut self, to: Sid, out: &mut Vec<Output>) {
        // The view is O(1) under the lock; the link encodes it as it sends it, off this loop
        // and without holding the encoding whole.
        let view = self.tree.read().snapshot_view();
        let zxid = view.last_zxid();
        tracing::info!(
            sid = self.cfg.id,
            follower = to,
            zxid = format!("{zxid:#x}"),
            nodes = view.node_count(),
            "SNAP"
        );
        metrics::counter!("roster_zab_syncs_total", "kind" => "snap").increment(1);
        self.syncs.snap += 1;
        out.push(Output::Send {
            to,
            msg: Msg::Snap {
                zxid,
                state: SnapState::View(view),
            },
        });
        self.finish_sync(to, out);
    }

    pub(super) fn finish_sync(&mut self, to: Sid, out: &mut Vec<Output>) {
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
        let committed = self.tree.read().last_zxid();
        if let Some(k) = l.links.get_mut(&to) {
            // It now holds everything committed: its lag counts from here.
            k.acked = k.acked.max(committed);
            k.state = LinkState::Synced;
        }
    }

    pub(super) fn maybe_activate(&mut self, out: &mut Vec<Output>) {
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

    pub(super) fn next_zxid(l: &mut Leader) -> Zxid {
        l.counter += 1;
        ((l.epoch as i64) << 32) | l.counter as i64
    }

    pub(super) fn submit(&mut self, origin: Origin, env: Envelope, out: &mut Vec<Output>) {
        match &mut self.role {
            Role_::Leading(l) if l.phase == LeaderPhase::Active => {
                let zxid = Self::next_zxid(l);
                let time = wall_ms();
                let op = match &env.request {
                    Request::CreateSession { timeout_ms } => Ok(create_session(
                        &self.tree.read(),
                        &mut l.next_session,
                        *timeout_ms,
                        rand::random(),
                    )),
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
                        let seq = l.confirm_leadership(out);
                        l.pending.push_back(Pending::Failed {
                            origin,
                            outcome,
                            seq,
                        });
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

    pub(super) fn propose(&mut self, txn: Arc<Txn>, origin: Origin, out: &mut Vec<Output>) {
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

    pub(super) fn try_commit(&mut self, out: &mut Vec<Output>) {
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
                Some(Pending::Failed { seq, .. }) | Some(Pending::Barrier { seq, .. }) => {
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
                Pending::Failed {
                    origin, outcome, ..
                } => match origin {
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

    pub(super) fn barrier(&mut self, origin: u64, out: &mut Vec<Output>) {
        match &mut self.role {
            Role_::Leading(l) if l.phase == LeaderPhase::Active => {
                l.queue_barrier(Origin::Local(origin), out);
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

    pub(super) fn touch(&mut self, sessions: Vec<SessionId>) {
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

    pub(super) fn expire_sessions(&mut self, out: &mut Vec<Output>) {
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

    pub(super) fn sweep_containers(&mut self, out: &mut Vec<Output>) {
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
}

impl Leader {
    /// Queue a `sync` behind everything pending and ask the voters for a fresh heartbeat: it is
    /// answered once a quorum has confirmed this leadership after the request.
    fn queue_barrier(&mut self, origin: Origin, out: &mut Vec<Output>) {
        let seq = self.confirm_leadership(out);
        self.pending.push_back(Pending::Barrier { origin, seq });
    }

    /// Ask the voters for a fresh heartbeat; what waits for `pong >= seq` from a quorum waits for
    /// this leadership to be confirmed after now.
    fn confirm_leadership(&mut self, out: &mut Vec<Output>) -> u64 {
        self.seq += 1;
        let seq = self.seq;
        for (s, k) in &self.links {
            if k.state != LinkState::Epoch && !k.observer {
                out.push(Output::Send {
                    to: *s,
                    msg: Msg::Ping { seq },
                });
            }
        }
        seq
    }
}
