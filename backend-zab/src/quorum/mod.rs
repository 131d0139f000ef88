//! The replicated ZAB protocol: messages (`msg`) and one member as an I/O-free state machine
//! (`peer`). The async shell in `crate::ensemble` moves messages over TCP and drives time; the
//! simulation tests drive it in one thread with a faulty in-memory network.

mod election;
mod follower;
mod leader;
pub mod msg;
pub mod peer;

pub use msg::{Msg, PeerState, Sid, Vote};
pub use peer::{Input, Output, Peer, PeerConfig, SyncCounts};
