//! A follower or observer: accepting the epoch, being synchronised, logging and acknowledging
//! proposals, applying commits.

use super::msg::Msg;
use super::peer::*;
use crate::txnlog::TxnLog;
use roster_core::Zxid;
use roster_core::txn::{Applied, Txn};
use std::collections::BTreeMap;
use std::sync::Arc;

impl Peer {
    pub(super) fn follower_message(&mut self, msg: Msg, out: &mut Vec<Output>) {
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
            Msg::Diff { .. }
            | Msg::NewLeader { .. }
            | Msg::Proposal { .. }
            | Msg::Commit { .. }
                if f.awaiting_snap => {}
            // Broadcast traffic from before this synchronisation began (we may have timed out and
            // rejoined): the sync will bring us everything.
            Msg::Proposal { .. } | Msg::Commit { .. } | Msg::Inform { .. }
                if f.phase == FollowerPhase::Discovery => {}
            Msg::Trunc { to } => {
                tracing::info!(sid = self.cfg.id, to = format!("{to:#x}"), "TRUNC");
                // The leader truncates to the last zxid it has at or below ours; that is a common
                // point only if we hold it too. Otherwise our history departed earlier: SNAP.
                let has = match self.log.contains(to) {
                    Ok(h) => h || to == 0,
                    Err(e) => return self.storage_failed(e, out),
                };
                if !has {
                    tracing::info!(
                        sid = self.cfg.id,
                        to = format!("{to:#x}"),
                        "TRUNC point not in our log; asking for a snapshot"
                    );
                    f.awaiting_snap = true;
                    out.push(Output::Send {
                        to: leader,
                        msg: Msg::NeedSnap,
                    });
                    return;
                }
                self.unapplied.retain(|z, _| *z <= to);
                self.to_log.retain(|t| t.zxid <= to);
                self.snapshotter.wait_idle();
                if let Err(e) = self.log.truncate_after(to) {
                    return self.storage_failed(e, out);
                }
                self.last_logged = to;
                if self.tree.read().last_zxid() > to {
                    // Our state holds txns the new leader does not: rebuild it from disk.
                    match recover(&self.log) {
                        Ok(t) if t.last_zxid() == to => self.tree.write().replace_state(t),
                        _ => {
                            if let Role_::Following(f) = &mut self.role {
                                f.awaiting_snap = true;
                            }
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
            Msg::Snap { zxid, state } => match state.into_tree() {
                Ok(t) if t.last_zxid() != zxid => {
                    tracing::error!(
                        sid = self.cfg.id,
                        zxid = format!("{zxid:#x}"),
                        restored = format!("{:#x}", t.last_zxid()),
                        "snapshot from the leader is not of the zxid announced"
                    );
                    self.look(out);
                }
                Ok(t) => {
                    f.awaiting_snap = false;
                    self.snapshotter.wait_idle();
                    // Written from the restored state (streamed into its file), as the leader's
                    // encoding was never held whole.
                    let res = self
                        .log
                        .clear()
                        .and_then(|()| self.log.save_view(&t.snapshot_view()).map(drop));
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
                    // Proposals of one epoch are numbered without gaps; a gap means we missed one
                    // (our link was reset behind our back): re-synchronise rather than diverge.
                    let same_epoch = txn.zxid >> 32 == self.last_logged >> 32;
                    let contiguous = if same_epoch {
                        txn.zxid == self.last_logged + 1
                    } else {
                        txn.zxid & 0xffff_ffff == 1
                    };
                    if !contiguous {
                        tracing::warn!(
                            sid = self.cfg.id,
                            leader,
                            zxid = format!("{:#x}", txn.zxid),
                            last = format!("{:#x}", self.last_logged),
                            "gap in the proposal stream; re-synchronising"
                        );
                        return self.look(out);
                    }
                    self.last_logged = txn.zxid;
                    self.to_log.push(txn.clone());
                    self.unapplied.insert(txn.zxid, txn);
                }
            }
            Msg::Commit { zxid }
                if zxid > self.tree.read().last_zxid() && !self.unapplied.contains_key(&zxid) =>
            {
                tracing::warn!(
                    sid = self.cfg.id,
                    leader,
                    zxid = format!("{zxid:#x}"),
                    "commit for a proposal we never received; re-synchronising"
                );
                self.look(out);
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
    pub(super) fn flush_quietly(&mut self, out: &mut Vec<Output>) {
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
        TxnLog::stage(&mut self.staged, &txns);
        if let Err(e) = self.log.commit(&self.staged) {
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
}
