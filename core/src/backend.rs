//! The one contract between protocol front ends and consistency backends. Every front end works
//! against any `Backend`; one conformance suite, generic over it, runs against all of them.

use crate::tree::Tree;
use crate::txn::{Applied, Envelope, Txn};
use crate::{SessionId, Zxid};
use parking_lot::RwLock;
use std::sync::Arc;
use tokio::sync::broadcast;

/// The local replica, for reads (sequentially consistent, as ZooKeeper).
pub type TreeView = Arc<RwLock<Tree>>;

/// Why a backend could not take a request. Protocol front ends map these to their own errors.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// No quorum / no leader right now; the client should retry or try another member.
    #[error("not available: {0}")]
    Unavailable(String),
    /// The backend cannot honour this request by design (e.g. CP-only features on AP).
    #[error("unsupported by the {backend} backend: {what}; use a CP backend (zab or raft)")]
    Unsupported { backend: &'static str, what: String },
    /// Too much in flight; shed.
    #[error("overloaded")]
    Overloaded,
    /// Storage failed; the node stops accepting writes.
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("shutting down")]
    ShuttingDown,
}

/// What a backend can honour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub linearizable_writes: bool,
    pub sequential_nodes: bool,
    pub conditional_writes: bool,
    pub multi: bool,
    pub locks: bool,
}

impl Capabilities {
    /// Everything (the CP backends).
    pub const CP: Capabilities = Capabilities {
        linearizable_writes: true,
        sequential_nodes: true,
        conditional_writes: true,
        multi: true,
        locks: true,
    };
}

/// This member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standalone,
    Leader,
    Follower,
    Observer,
    Looking,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Observer => "observer",
            Role::Looking => "looking",
        }
    }
}

/// A snapshot of the backend's state for status pages, 4lw and metrics.
#[derive(Debug, Clone)]
pub struct ClusterStatus {
    pub backend: &'static str,
    pub role: Role,
    pub server_id: u64,
    pub leader: Option<u64>,
    pub epoch: u64,
    pub last_zxid: Zxid,
    pub committed_zxid: Zxid,
    pub members: usize,
    /// Voting members (the quorum is a majority of them); 0 where there is no quorum (ap).
    pub voters: usize,
    /// Writes prepared but not yet applied.
    pub outstanding: usize,
    pub ready: bool,
    /// On a leader: followers (voting members) in sync with it.
    pub synced_followers: Option<usize>,
    /// On a leader: observers in sync with it.
    pub synced_observers: Option<usize>,
    /// Elections this member has gone through since it started.
    pub elections: u64,
}

#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Order, replicate, persist and apply one request; resolves once it is applied on this node.
    async fn submit(&self, req: Envelope) -> Result<Applied, BackendError>;
    /// The local replica.
    fn tree(&self) -> TreeView;
    /// Wait until this node has applied everything committed before the call (ZooKeeper `sync`).
    async fn barrier(&self) -> Result<Zxid, BackendError>;
    /// Applied transactions, in order.
    fn applied(&self) -> broadcast::Receiver<Arc<Txn>>;
    /// These sessions' clients are alive (resets their expiry).
    async fn touch(&self, sessions: &[SessionId]) -> Result<(), BackendError>;
    fn capabilities(&self) -> Capabilities;
    fn status(&self) -> ClusterStatus;
}
