//! Membership changes: add a learner (a non-voting member that receives the log, ZooKeeper's
//! observer), promote a learner to voter, remove a member. Any member accepts them and forwards
//! to the leader, which runs them through openraft's joint consensus.

use crate::backend::{RaftBackend, Route};
use crate::network::{AdminOp, Forward, ForwardError, ForwardReply};
use crate::types::{NodeId, StoredMembership};
use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, ChangeMembers};
use roster_core::backend::BackendError;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The cluster's members as this member knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// Voters (in a joint configuration, the union of both sides).
    pub voters: BTreeMap<NodeId, String>,
    pub learners: BTreeMap<NodeId, String>,
}

impl Members {
    fn of(m: &StoredMembership) -> Members {
        let voters: BTreeSet<NodeId> = m.voter_ids().collect();
        let mut out = Members {
            voters: BTreeMap::new(),
            learners: BTreeMap::new(),
        };
        for (id, node) in m.nodes() {
            if voters.contains(id) {
                out.voters.insert(*id, node.addr.clone());
            } else {
                out.learners.insert(*id, node.addr.clone());
            }
        }
        out
    }
}

impl RaftBackend {
    /// Add a learner: it receives the log (or a snapshot) and applies it but does not vote.
    /// Returns once the learner has caught up with the leader.
    pub async fn add_learner(&self, id: NodeId, addr: String) -> Result<(), BackendError> {
        self.admin(AdminOp::AddLearner { id, addr }).await?;
        self.until_seen_here(|m| m.learners.contains_key(&id) || m.voters.contains_key(&id))
            .await;
        Ok(())
    }

    /// Make a learner a voter.
    pub async fn promote(&self, id: NodeId) -> Result<(), BackendError> {
        self.admin(AdminOp::Promote { id }).await?;
        self.until_seen_here(|m| m.voters.contains_key(&id)).await;
        Ok(())
    }

    /// Remove a voter or a learner. A removed leader steps down once the change commits.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), BackendError> {
        self.admin(AdminOp::Remove { id }).await?;
        self.until_seen_here(|m| !m.voters.contains_key(&id) && !m.learners.contains_key(&id))
            .await;
        Ok(())
    }

    /// After a change committed at the leader (perhaps through another member), wait until this
    /// member's own view shows it, so that whoever asked here reads the membership they just
    /// changed (the admin API answers with this member's view). Bounded by the request timeout:
    /// the change is committed either way, and a lagging view catches up on its own.
    async fn until_seen_here(&self, seen: impl Fn(&Members) -> bool + Send + Sync) {
        let limit = Duration::from_millis(self.cfg.request_timeout_ms.max(100));
        let waited = self
            .raft
            .wait(Some(limit))
            .metrics(
                |m| seen(&Members::of(&m.membership_config)),
                "this member applies the membership change",
            )
            .await;
        if let Err(e) = waited {
            tracing::warn!(error = %e, "membership change committed, but this member has not applied it yet");
        }
    }

    /// Voters and learners with their addresses.
    pub fn members(&self) -> Members {
        Members::of(&self.raft.metrics().borrow_watched().membership_config)
    }

    async fn admin(&self, op: AdminOp) -> Result<(), BackendError> {
        self.retry_at_leader(|route| {
            let op = op.clone();
            async move {
                match route {
                    Route::Local => self.run_admin(op).await,
                    Route::Remote(peer) => {
                        match self.transport.forward(&peer, Forward::Admin(op)).await? {
                            ForwardReply::Admin => Ok(()),
                            other => Err(BackendError::Unavailable(format!(
                                "unexpected reply to a membership change: {other:?}"
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

    /// Run a membership change on this member (the leader).
    pub(crate) async fn run_admin(&self, op: AdminOp) -> Result<(), ForwardError> {
        tracing::info!(?op, "membership change");
        // Catching up a learner can take a snapshot transfer: allow more than a request.
        let limit = Duration::from_millis(self.cfg.request_timeout_ms.saturating_mul(6));
        let run = async {
            match op {
                AdminOp::AddLearner { id, addr } => self
                    .raft
                    .add_learner(id, BasicNode { addr }, true)
                    .await
                    .map(|_| ()),
                AdminOp::Promote { id } => self
                    .raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map(|_| ()),
                AdminOp::Remove { id } => {
                    let is_voter = self.members().voters.contains_key(&id);
                    let change = if is_voter {
                        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                    } else {
                        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                    };
                    // retain = false: a removed voter does not stay on as a learner.
                    self.raft.change_membership(change, false).await.map(|_| ())
                }
            }
        };
        match tokio::time::timeout(limit, run).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                if let Some(f) = e.forward_to_leader() {
                    return Err(ForwardError::NotLeader(f.leader_id));
                }
                Err(BackendError::Unavailable(format!("membership change: {e}")).into())
            }
            Err(_) => Err(BackendError::Unavailable(format!(
                "membership change did not finish within {limit:?}"
            ))
            .into()),
        }
    }
}
