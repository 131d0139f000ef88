//! The leader's prep stage (ZooKeeper's PrepRequestProcessor, etcd's propose): one task takes
//! requests in order, checks each against the tree plus its not-yet-applied changes
//! (`Outstanding`), decides zxid, time and session ids, and proposes the resulting `Txn`s as one
//! Raft entry per batch. The state machine answers the submitters when the entry is applied;
//! requests that fail prep are answered once everything prepared before them is applied, so
//! replies keep submission order.
//!
//! zxid = `term << 32 | counter`. Only the leader of a term proposes in it (standard leader id),
//! every proposal is conditional on that leadership (`with_leader`), and the counter starts
//! after the last applied zxid once the new leader has applied everything before its term. So
//! zxids strictly increase along the log, across leader changes and restarts.

use crate::network::ForwardError;
use crate::storage::{Progress, Reply, Shared, Waiter};
use crate::types::{Proposal, Raft, TypeConfig};
use openraft::async_runtime::WatchReceiver;
use openraft::impls::ProgressResponder;
use openraft::{ReadPolicy, ServerState};
use roster_core::backend::BackendError;
use roster_core::tree::prep::{PrepOptions, create_session};
use roster_core::txn::{Applied, Envelope, Request, Txn};
use roster_core::{SessionId, Zxid};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// What the prep stage receives.
pub(crate) enum Msg {
    Submit(Envelope, Reply),
    /// Resolves once leadership is confirmed and everything accepted before it is applied.
    Barrier(oneshot::Sender<Result<Progress, ForwardError>>),
}

pub(crate) struct ProposerConfig {
    pub server_id: u64,
    pub prep: PrepOptions,
    pub max_batch: usize,
    /// How long a new leader waits to apply its predecessors' entries before it gives up.
    pub ready_timeout: Duration,
}

struct Lead {
    term: u64,
    next_zxid: Zxid,
    /// Last zxid prepared (or applied when leadership began).
    last_prepared: Zxid,
}

pub(crate) fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn not_leader(raft: &Raft) -> ForwardError {
    let leader = raft.metrics().borrow_watched().current_leader;
    ForwardError::NotLeader(leader)
}

fn leadership_lost() -> ForwardError {
    ForwardError::Backend(BackendError::Unavailable(
        "leadership changed before the write was applied; its outcome is unknown".into(),
    ))
}

pub(crate) struct Proposer {
    shared: Arc<Shared>,
    raft: Raft,
    cfg: ProposerConfig,
    lead: Option<Lead>,
    /// The last (term, next zxid) this node led with, so a term is never re-counted.
    used: Option<(u64, Zxid)>,
    next_session: SessionId,
    lost_tx: mpsc::UnboundedSender<u64>,
}

impl Proposer {
    /// Start the prep task; returns its queue.
    pub fn start(
        shared: Arc<Shared>,
        raft: Raft,
        cfg: ProposerConfig,
        queue_depth: usize,
    ) -> mpsc::Sender<Msg> {
        let (tx, rx) = mpsc::channel(queue_depth);
        let (lost_tx, lost_rx) = mpsc::unbounded_channel();
        // As ZooKeeper: the server id in the top byte, wall-clock ms below.
        let next_session =
            (((wall_ms() as u64) << 24) >> 8) as i64 | ((cfg.server_id as i64 & 0xff) << 56);
        let p = Proposer {
            shared,
            raft,
            cfg,
            lead: None,
            used: None,
            next_session,
            lost_tx,
        };
        tokio::spawn(p.run(rx, lost_rx));
        tx
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, mut lost_rx: mpsc::UnboundedReceiver<u64>) {
        let mut metrics = self.raft.metrics();
        let mut buf = Vec::with_capacity(self.cfg.max_batch);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut buf, self.cfg.max_batch) => {
                    if n == 0 {
                        break;
                    }
                    self.handle(&mut buf).await;
                }
                Some(term) = lost_rx.recv() => {
                    if self.lead.as_ref().is_some_and(|l| l.term == term) {
                        self.step_down("a proposal was refused");
                    }
                }
                r = metrics.changed() => {
                    if r.is_err() {
                        break;
                    }
                    let (state, term) = {
                        let m = metrics.borrow_watched();
                        (m.state, m.current_term)
                    };
                    if self.lead.as_ref().is_some_and(|l| state != ServerState::Leader || l.term != term) {
                        self.step_down("no longer leader");
                    }
                    // Become ready at once (not on the first request): session expiry and the
                    // container manager run only on a ready leader.
                    if state == ServerState::Leader && self.lead.is_none() {
                        self.ensure_leading().await;
                    }
                }
            }
        }
        self.step_down("shutting down");
    }

    fn step_down(&mut self, why: &str) {
        if let Some(l) = self.lead.take() {
            tracing::info!(term = l.term, why, "stopped leading");
            self.used = Some((l.term, l.next_zxid));
            self.shared.leading_term.store(0, Ordering::Release);
            self.shared.outstanding.lock().clear();
            self.shared.fail_waiters(leadership_lost());
        }
    }

    /// Is this node the leader, with everything before its term applied?
    async fn ensure_leading(&mut self) -> bool {
        let leader = match self.raft.as_leader() {
            Ok(l) => l,
            Err(_) => {
                self.step_down("no longer leader");
                return false;
            }
        };
        let term = leader.term();
        if self.lead.as_ref().is_some_and(|l| l.term == term) {
            return true;
        }
        self.step_down("a new term began");
        // ReadIndex on a new leader covers its first (blank) entry: once it is applied, so is
        // everything committed before this term, and prep sees the whole tree.
        match tokio::time::timeout(
            self.cfg.ready_timeout,
            self.raft.ensure_linearizable(ReadPolicy::ReadIndex),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::info!(term, error = %e, "not ready to lead");
                return false;
            }
            Err(_) => {
                tracing::warn!(term, "timed out applying the previous terms' entries");
                return false;
            }
        }
        if self.raft.as_leader().map(|l| l.term()).ok() != Some(term) {
            return false;
        }
        let last = self.shared.tree.read().last_zxid();
        let mut next: Zxid = ((term as i64) << 32) | 1;
        if let Some((t, n)) = self.used
            && t == term
        {
            next = next.max(n);
        }
        next = next.max(last + 1);
        self.shared.outstanding.lock().clear();
        // A new leader gives every session its full timeout again (as ZooKeeper).
        self.shared.rearm_sessions();
        self.lead = Some(Lead {
            term,
            next_zxid: next,
            last_prepared: last,
        });
        self.shared.leading_term.store(term, Ordering::Release);
        tracing::info!(
            term,
            next_zxid = format!("{next:#x}"),
            sessions = self.shared.tree.read().sessions().len(),
            "leading"
        );
        true
    }

    async fn handle(&mut self, buf: &mut Vec<Msg>) {
        if !self.ensure_leading().await {
            let e = not_leader(&self.raft);
            for m in buf.drain(..) {
                match m {
                    Msg::Submit(_, r) => {
                        let _ = r.send(Err(e.clone()));
                    }
                    Msg::Barrier(r) => {
                        let _ = r.send(Err(e.clone()));
                    }
                }
            }
            return;
        }
        let txns = self.prep(buf);
        if txns.is_empty() {
            return;
        }
        let lead = self.lead.as_ref().expect("leading after ensure_leading");
        let term = lead.term;
        metrics::histogram!("roster_backend_commit_batch_txns").record(txns.len() as f64);
        let (responder, done) = ProgressResponder::<TypeConfig, _>::complete_only();
        let sent = self
            .raft
            .write(Proposal { txns })
            .with_leader(term)
            .responder(responder)
            .await;
        if sent.is_err() {
            self.step_down("raft stopped");
            return;
        }
        let lost = self.lost_tx.clone();
        tokio::spawn(async move {
            match done.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::info!(term, error = %e, "proposal refused");
                    let _ = lost.send(term);
                }
                Err(_) => {
                    let _ = lost.send(term);
                }
            }
        });
    }

    /// Prep a batch: txns to propose; waiters registered for every request.
    fn prep(&mut self, buf: &mut Vec<Msg>) -> Vec<Txn> {
        let lead = self.lead.as_mut().expect("leading");
        let mut txns = Vec::new();
        let mut refusals: Vec<(oneshot::Receiver<Result<Applied, ForwardError>>, Reply)> =
            Vec::new();
        let tree = self.shared.tree.read();
        let mut outstanding = self.shared.outstanding.lock();
        let mut waiters = self.shared.waiters.lock();
        let applied = tree.last_zxid();
        for msg in buf.drain(..) {
            match msg {
                Msg::Barrier(reply) => {
                    let (tx, rx) = oneshot::channel();
                    if lead.last_prepared <= applied {
                        let index = self.shared.progress.borrow().index;
                        let _ = tx.send(Ok(Progress {
                            zxid: applied,
                            index,
                        }));
                    } else {
                        waiters
                            .entry(lead.last_prepared)
                            .or_default()
                            .push(Waiter::Barrier(tx));
                    }
                    let raft = self.raft.clone();
                    tokio::spawn(async move {
                        let confirmed = raft.ensure_linearizable(ReadPolicy::ReadIndex).await;
                        let res = match confirmed {
                            Ok(_) => rx.await.unwrap_or_else(|_| Err(leadership_lost())),
                            Err(e) => Err(ForwardError::Backend(BackendError::Unavailable(
                                format!("leadership not confirmed: {e}"),
                            ))),
                        };
                        let _ = reply.send(res);
                    });
                }
                Msg::Submit(env, reply) => {
                    let time = wall_ms();
                    let zxid = lead.next_zxid;
                    let prepared = match &env.request {
                        Request::CreateSession { timeout_ms } => Ok(create_session(
                            &tree,
                            &mut self.next_session,
                            *timeout_ms,
                            rand::random(),
                        )),
                        _ => outstanding
                            .prepare(&tree, &env, zxid, time, &self.cfg.prep)
                            .map(|op| (env.session, op)),
                    };
                    match prepared {
                        Ok((session, op)) => {
                            txns.push(Txn {
                                zxid,
                                time,
                                session,
                                op,
                            });
                            waiters.entry(zxid).or_default().push(Waiter::Txn(reply));
                            lead.next_zxid += 1;
                            lead.last_prepared = zxid;
                        }
                        Err(outcome) => {
                            let (tx, rx) = oneshot::channel();
                            if lead.last_prepared <= applied {
                                let _ = tx.send(Ok(Applied {
                                    zxid: applied,
                                    outcome,
                                }));
                            } else {
                                waiters
                                    .entry(lead.last_prepared)
                                    .or_default()
                                    .push(Waiter::Failed(outcome, tx));
                            }
                            refusals.push((rx, reply));
                        }
                    }
                }
            }
        }
        if !refusals.is_empty() {
            self.answer_refusals(refusals);
        }
        txns
    }

    /// A refusal (BadVersion, NoNode, NodeExists…) is decided from this leader's replica, so
    /// it is a read of it: answer only once leadership is confirmed (ReadIndex) after the
    /// check. A leader cut off from the others does not know it has been deposed, and would
    /// otherwise refuse a conditional write that the current state allows.
    fn answer_refusals(
        &self,
        refusals: Vec<(oneshot::Receiver<Result<Applied, ForwardError>>, Reply)>,
    ) {
        let raft = self.raft.clone();
        let within = self.cfg.ready_timeout;
        tokio::spawn(async move {
            let confirmed =
                match tokio::time::timeout(within, raft.ensure_linearizable(ReadPolicy::ReadIndex))
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("leadership not confirmed: {e}")),
                    Err(_) => Err(format!("leadership not confirmed within {within:?}")),
                };
            for (rx, reply) in refusals {
                let res = match &confirmed {
                    Ok(()) => rx.await.unwrap_or_else(|_| Err(leadership_lost())),
                    Err(e) => Err(ForwardError::Backend(BackendError::Unavailable(e.clone()))),
                };
                let _ = reply.send(res);
            }
        });
    }
}
