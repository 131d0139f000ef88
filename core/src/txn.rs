//! Requests as the backend receives them, and the deterministic transactions the leader turns
//! them into (ZooKeeper's "prep" output). Every replica applies the same `Txn` to the same state.

use crate::acl::{Acl, AclList, AuthInfo};
use crate::{Code, CreateMode, SessionId, Stat, Zxid};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One write operation, as a client asked for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteOp {
    Create {
        path: String,
        data: Vec<u8>,
        acl: Vec<Acl>,
        mode: CreateMode,
        ttl: i64,
    },
    Delete {
        path: String,
        version: i32,
    },
    SetData {
        path: String,
        data: Vec<u8>,
        version: i32,
    },
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        version: i32,
    },
    Check {
        path: String,
        version: i32,
    },
}

/// What a front end submits to the backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    Op(WriteOp),
    /// All or nothing (`multi`).
    Multi(Vec<WriteOp>),
    /// Open a session; the leader assigns id and password.
    CreateSession {
        timeout_ms: i32,
    },
    /// Close the envelope's session (client close or expiry): its ephemerals are deleted.
    CloseSession,
    /// Remove an empty container or an expired TTL node (the container manager's request).
    DeleteContainer {
        path: String,
    },
}

/// A request with who sent it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub session: SessionId,
    pub auth: Arc<AuthInfo>,
    pub request: Request,
}

impl Envelope {
    /// A request on behalf of the server itself (no session, super user).
    pub fn internal(request: Request) -> Envelope {
        Envelope {
            session: 0,
            auth: Arc::new(AuthInfo {
                ids: vec![crate::acl::Id::new("super", "roster")],
            }),
            request,
        }
    }
}

/// A committed change, decided completely by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub zxid: Zxid,
    /// Leader wall clock, ms since the epoch (ctime/mtime, TTL).
    pub time: i64,
    pub session: SessionId,
    pub op: TxnOp,
}

/// The state change itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    CreateSession {
        timeout_ms: i32,
        passwd: Vec<u8>,
    },
    /// Deletes every ephemeral node the session owns at apply time, in path order.
    CloseSession,
    Create {
        path: String,
        data: Vec<u8>,
        #[serde(deserialize_with = "crate::acl::interned")]
        acl: AclList,
        owner: i64,
        parent_cversion: i32,
    },
    Delete {
        path: String,
    },
    SetData {
        path: String,
        data: Vec<u8>,
        version: i32,
    },
    SetAcl {
        path: String,
        #[serde(deserialize_with = "crate::acl::interned")]
        acl: AclList,
        version: i32,
    },
    /// Version check inside a multi: no change.
    Check {
        path: String,
    },
    Multi(Vec<TxnOp>),
}

/// Result of one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Created {
        path: String,
        stat: Stat,
    },
    Deleted,
    DataSet {
        stat: Stat,
    },
    AclSet {
        stat: Stat,
    },
    Checked,
    /// Inside a failed multi: `Ok` for ops before the failing one, its code, then
    /// `RuntimeInconsistency` for the rest.
    Error(Code),
}

/// What a submitted request came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Op(OpResult),
    /// Per-op results; on failure every entry is `OpResult::Error`.
    Multi(Vec<OpResult>),
    SessionCreated {
        session: SessionId,
        timeout_ms: i32,
        passwd: Vec<u8>,
    },
    SessionClosed,
    /// The request failed its checks; nothing changed.
    Failed(Code),
}

impl Outcome {
    /// The ZooKeeper reply-header error for this outcome.
    pub fn code(&self) -> Code {
        match self {
            Outcome::Failed(c) => *c,
            Outcome::Multi(rs) => rs
                .iter()
                .find_map(|r| match r {
                    OpResult::Error(c) if *c != Code::Ok => Some(*c),
                    _ => None,
                })
                .unwrap_or(Code::Ok),
            _ => Code::Ok,
        }
    }
}

/// The result of submitting a request: the zxid it committed at (or the last applied zxid when it
/// changed nothing) and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub zxid: Zxid,
    pub outcome: Outcome,
}
