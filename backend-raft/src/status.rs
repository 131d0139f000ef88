//! What this member reports: `ClusterStatus` for 4lw and status pages, and Prometheus metrics
//! kept in step with openraft's own metrics.

use crate::backend::RaftBackend;
use openraft::Instant as _;
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use roster_core::backend::{ClusterStatus, Role};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

fn role(state: ServerState) -> Role {
    match state {
        ServerState::Leader => Role::Leader,
        ServerState::Follower => Role::Follower,
        ServerState::Learner => Role::Observer,
        ServerState::Candidate | ServerState::Shutdown => Role::Looking,
    }
}

pub(crate) fn status(b: &RaftBackend) -> ClusterStatus {
    let m = b.raft.metrics().borrow_watched().clone();
    let last = b.shared.tree.read().last_zxid();
    let members = m.membership_config.voter_ids().count();
    ClusterStatus {
        backend: "raft",
        role: role(m.state),
        server_id: b.cfg.node_id,
        leader: m.current_leader,
        epoch: m.current_term,
        last_zxid: last,
        // Raft commits by log index; this member's applied zxid is what it can vouch for.
        committed_zxid: last,
        members,
        voters: members,
        outstanding: b.shared.outstanding.lock().len(),
        ready: !b.is_shut_down()
            && m.current_leader.is_some()
            && m.running_state.is_ok()
            && in_touch(b, &m),
        synced_followers: synced(b, &m, true),
        synced_observers: synced(b, &m, false),
        elections: b.elections.load(Ordering::Relaxed),
    }
}

/// Has this member heard from the other side recently (within the longest election timeout)?
/// A leader: a quorum acknowledged it (a cluster of one always has); a follower or learner: the
/// leader's appends or heartbeats reached it. A member cut off from the quorum reports not ready,
/// so ZooKeeper clients move to a member that can serve them (as ZooKeeper's LOOKING member).
fn in_touch(b: &RaftBackend, m: &openraft::RaftMetrics<crate::types::TypeConfig>) -> bool {
    let lease = b.cfg.election_timeout_max_ms;
    match m.state {
        ServerState::Leader => {
            let voters = m.membership_config.voter_ids().count();
            voters <= 1
                || m.last_quorum_acked
                    .as_ref()
                    .is_some_and(|t| t.elapsed().as_millis() as u64 <= lease)
        }
        ServerState::Follower | ServerState::Learner => {
            let at = b.leader_contact_ms.load(Ordering::Relaxed);
            at != u64::MAX && b.shared.now_ms().saturating_sub(at) <= lease
        }
        ServerState::Candidate | ServerState::Shutdown => false,
    }
}

/// On the leader: voters (`voters = true`, this member excluded) or learners that acknowledged
/// a heartbeat or an append within the election timeout (ZooKeeper's "synced followers").
fn synced(
    b: &RaftBackend,
    m: &openraft::RaftMetrics<crate::types::TypeConfig>,
    voters: bool,
) -> Option<usize> {
    let hb = m.heartbeat.as_ref()?;
    let voter_ids: std::collections::BTreeSet<u64> = m.membership_config.voter_ids().collect();
    let fresh = std::time::Duration::from_millis(b.cfg.election_timeout_min_ms);
    Some(
        hb.iter()
            .filter(|(id, _)| **id != b.cfg.node_id && voter_ids.contains(id) == voters)
            .filter(|(_, at)| at.as_ref().is_some_and(|t| t.elapsed() < fresh))
            .count(),
    )
}

/// Keep gauges in step with openraft's metrics; count leader changes seen.
pub(crate) fn spawn_metrics(me: &Arc<RaftBackend>, retain_from: Arc<AtomicU64>) {
    let mut rx = me.raft.metrics();
    let weak = Arc::downgrade(me);
    tokio::spawn(async move {
        let mut last_leader: Option<(u64, u64)> = None;
        let mut last_state = ServerState::Learner;
        // Peers with a lag series: reset to 0 when they leave or this member stops leading, so
        // no stale lag is left behind (the label set is bounded by the membership).
        let mut lag_peers: std::collections::BTreeSet<u64> = Default::default();
        while rx.changed().await.is_ok() {
            let Some(me) = weak.upgrade() else { return };
            let m = rx.borrow_watched().clone();
            metrics::gauge!("roster_raft_term").set(m.current_term as f64);
            if m.state == ServerState::Candidate && last_state != ServerState::Candidate {
                // This member stood for election (pre-vote passed).
                metrics::counter!("roster_raft_candidacies_total").increment(1);
            }
            last_state = m.state;
            metrics::gauge!("roster_raft_commit_index")
                .set(m.local_committed.as_ref().map(|l| l.index()).unwrap_or(0) as f64);
            metrics::gauge!("roster_raft_applied_index")
                .set(m.last_applied.as_ref().map(|l| l.index()).unwrap_or(0) as f64);
            metrics::gauge!("roster_raft_last_log_index").set(m.last_log_index.unwrap_or(0) as f64);
            metrics::gauge!("roster_raft_leader_id").set(m.current_leader.unwrap_or(0) as f64);
            for r in [Role::Leader, Role::Follower, Role::Observer, Role::Looking] {
                let on = role(m.state) == r;
                metrics::gauge!("roster_backend_role", "role" => r.as_str()).set(if on {
                    1.0
                } else {
                    0.0
                });
            }
            if let Some(leader) = m.current_leader {
                let key = (m.current_term, leader);
                if last_leader != Some(key) {
                    last_leader = Some(key);
                    metrics::counter!("roster_raft_elections_total").increment(1);
                    me.elections.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        node = me.cfg.node_id,
                        term = m.current_term,
                        leader,
                        "leader known"
                    );
                }
            }
            // Keep what the slowest member's replication may still read (see `LogStore`).
            let floor = match &m.replication {
                Some(repl) => repl
                    .iter()
                    .filter(|(peer, _)| **peer != me.cfg.node_id)
                    .map(|(_, matched)| matched.as_ref().map(|l| l.index() + 1).unwrap_or(0))
                    .min()
                    .unwrap_or(u64::MAX),
                None => u64::MAX,
            };
            retain_from.store(floor, Ordering::Release);
            let mut now_peers = std::collections::BTreeSet::new();
            if let (Some(repl), Some(last)) = (&m.replication, m.last_log_index) {
                for (peer, matched) in repl {
                    if *peer == me.cfg.node_id {
                        continue;
                    }
                    let lag = last.saturating_sub(matched.as_ref().map(|l| l.index()).unwrap_or(0));
                    metrics::gauge!("roster_raft_replication_lag_entries", "peer" => peer.to_string())
                        .set(lag as f64);
                    now_peers.insert(*peer);
                }
            }
            for gone in lag_peers.difference(&now_peers) {
                metrics::gauge!("roster_raft_replication_lag_entries", "peer" => gone.to_string())
                    .set(0.0);
            }
            lag_peers = now_peers;
        }
    });
}
