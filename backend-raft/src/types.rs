//! The openraft type configuration: what a log entry carries (a batch of prepared `Txn`s), node
//! ids and addresses, and the leader id. The *standard* leader id (one leader per term) is what
//! makes `zxid = term << 32 | counter` unique and increasing: a term is never shared by two
//! leaders, so no two leaders can mint the same zxid.

use roster_core::txn::Txn;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What one Raft log entry carries: transactions the leader prepared, in zxid order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub txns: Vec<Txn>,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.txns.first(), self.txns.last()) {
            (Some(a), Some(b)) => write!(
                f,
                "Proposal({} txns, zxid {:#x}..={:#x})",
                self.txns.len(),
                a.zxid,
                b.zxid
            ),
            _ => write!(f, "Proposal(empty)"),
        }
    }
}

/// A member's id (ZooKeeper's `myid`).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Roster's Raft types.
    pub TypeConfig:
        D = Proposal,
        R = (),
        NodeId = NodeId,
        Node = openraft::BasicNode,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, NodeId>,
);

pub type Raft = openraft::Raft<TypeConfig, crate::storage::StateMachine>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// A state-machine snapshot: the Raft metadata, and the tree's state as a stream
/// ([`SnapData`](crate::storage::SnapData)).
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, crate::storage::SnapData>;
pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<TypeConfig>;
pub type VoteRequest = openraft::raft::VoteRequest<TypeConfig>;
pub type VoteResponse = openraft::raft::VoteResponse<TypeConfig>;
pub type SnapshotResponse = openraft::raft::SnapshotResponse<TypeConfig>;
