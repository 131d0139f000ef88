//! roster-raft: the Raft backend, on openraft. The tree is the state machine; the leader's prep
//! stage turns requests into deterministic `Txn`s (zxid = term << 32 | counter) and proposes
//! them in batches; the log and the vote live in the storage engine (`Space::Log`,
//! `Space::Meta`) behind one group-commit writer; snapshots are the tree's own. Members talk
//! through a [`network::Transport`] (in-process [`network::Router`] for tests). It knows nothing
//! of wire protocols nor of RocksDB (it persists through `roster_core::storage::Engine`).

pub mod backend;
pub mod membership;
pub mod network;
mod proposer;
mod status;
pub mod storage;
pub mod tcp;
mod timers;
pub mod types;

pub use backend::{OpenError, RaftBackend, RaftConfig};
pub use membership::Members;
pub use network::{
    AdminOp, Forward, ForwardError, ForwardReply, Peer, Router, Transport, TransportError,
};
pub use openraft;
pub use tcp::{TcpConfig, TcpTransport};
pub use types::NodeId;
