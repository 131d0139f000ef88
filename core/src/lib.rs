//! roster-core: the data model every Roster protocol and backend shares — ZooKeeper's tree
//! (nodes, `Stat`, ACLs), sessions, deterministic transactions — and the one contract between
//! protocol front ends and consistency backends. It knows no wire protocol and no storage engine.

pub mod acl;
pub mod error;
pub mod stat;

pub use error::Code;
pub use stat::{CreateMode, SessionId, Stat, Zxid};
