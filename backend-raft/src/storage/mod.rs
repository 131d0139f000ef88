//! Raft's persistent state in the storage engine: the log and the vote (`log`), written by one
//! group-commit thread (`writer`), and the tree as the state machine with its snapshots
//! (`state_machine`).

mod log;
mod snapdata;
mod state_machine;
mod writer;

pub use log::LogStore;
pub use snapdata::SnapData;
#[cfg(test)]
pub(crate) use snapdata::tree_of;
pub(crate) use snapdata::{Pieces, upto};
pub use state_machine::Progress;
pub use state_machine::StateMachine;
pub(crate) use state_machine::{Reply, Shared, SnapStore, Waiter, load};

use roster_core::storage::StorageError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io;

/// Meta keys (`Space::Meta`).
pub(crate) const VOTE_KEY: &[u8] = b"raft/vote";
pub(crate) const COMMITTED_KEY: &[u8] = b"raft/committed";
pub(crate) const PURGED_KEY: &[u8] = b"raft/purged";
/// The current snapshot (`Space::Snapshot`).
pub(crate) const SNAPSHOT_KEY: &[u8] = b"raft/snapshot";

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("in-memory serialization cannot fail")
}

pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("corrupt raft {what}: {e}"),
        )
    })
}

pub(crate) fn io_err(e: StorageError) -> io::Error {
    io::Error::other(e.0)
}

/// A log index as a key: big-endian so the engine orders keys by index.
pub(crate) fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}
