//! roster-core: the data model every Roster protocol and backend shares — ZooKeeper's tree
//! (nodes, `Stat`, ACLs), sessions, deterministic transactions, watches — and the one contract
//! between protocol front ends and consistency backends (`backend::Backend`). It knows no wire
//! protocol and no storage engine (storage is reached through the `storage::Engine` trait).

pub mod acl;
pub mod backend;
#[cfg(feature = "testkit")]
pub mod conformance;
pub mod error;
pub mod linearizability;
pub mod net;
pub mod path;
pub mod session;
pub mod snapfiles;
pub mod stat;
pub mod storage;
pub mod transfer;
pub mod tree;
pub mod txn;
pub mod watch;

pub use error::Code;
pub use stat::{CreateMode, SessionId, Stat, Zxid};
