//! ZooKeeper's result codes: the tree's error vocabulary (every API maps onto the tree).

use serde::{Deserialize, Serialize};

/// `KeeperException.Code`, with the numeric values clients expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[repr(i32)]
pub enum Code {
    #[error("ok")]
    Ok = 0,
    #[error("system error")]
    SystemError = -1,
    #[error("runtime inconsistency")]
    RuntimeInconsistency = -2,
    #[error("data inconsistency")]
    DataInconsistency = -3,
    #[error("connection loss")]
    ConnectionLoss = -4,
    #[error("marshalling error")]
    MarshallingError = -5,
    #[error("unimplemented")]
    Unimplemented = -6,
    #[error("operation timeout")]
    OperationTimeout = -7,
    #[error("bad arguments")]
    BadArguments = -8,
    #[error("unknown session")]
    UnknownSession = -12,
    #[error("new config has no quorum")]
    NewConfigNoQuorum = -13,
    #[error("reconfig in progress")]
    ReconfigInProgress = -14,
    #[error("API error")]
    ApiError = -100,
    #[error("no node")]
    NoNode = -101,
    #[error("not authenticated")]
    NoAuth = -102,
    #[error("bad version")]
    BadVersion = -103,
    #[error("ephemeral nodes may not have children")]
    NoChildrenForEphemerals = -108,
    #[error("node exists")]
    NodeExists = -110,
    #[error("directory not empty")]
    NotEmpty = -111,
    #[error("session expired")]
    SessionExpired = -112,
    #[error("invalid callback")]
    InvalidCallback = -113,
    #[error("invalid ACL")]
    InvalidAcl = -114,
    #[error("authentication failed")]
    AuthFailed = -115,
    #[error("session moved")]
    SessionMoved = -118,
    #[error("not a read-only call")]
    NotReadOnly = -119,
    #[error("ephemeral node on local session")]
    EphemeralOnLocalSession = -120,
    #[error("no such watcher")]
    NoWatcher = -121,
    #[error("request timeout")]
    RequestTimeout = -122,
    #[error("reconfig disabled")]
    ReconfigDisabled = -123,
    #[error("session closed because client failed to authenticate")]
    SessionClosedRequireSaslAuth = -124,
    #[error("quota exceeded")]
    QuotaExceeded = -125,
    #[error("operation throttled")]
    Throttled = -127,
}

impl Code {
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    pub fn from_i32(v: i32) -> Option<Code> {
        use Code::*;
        Some(match v {
            0 => Ok,
            -1 => SystemError,
            -2 => RuntimeInconsistency,
            -3 => DataInconsistency,
            -4 => ConnectionLoss,
            -5 => MarshallingError,
            -6 => Unimplemented,
            -7 => OperationTimeout,
            -8 => BadArguments,
            -12 => UnknownSession,
            -13 => NewConfigNoQuorum,
            -14 => ReconfigInProgress,
            -100 => ApiError,
            -101 => NoNode,
            -102 => NoAuth,
            -103 => BadVersion,
            -108 => NoChildrenForEphemerals,
            -110 => NodeExists,
            -111 => NotEmpty,
            -112 => SessionExpired,
            -113 => InvalidCallback,
            -114 => InvalidAcl,
            -115 => AuthFailed,
            -118 => SessionMoved,
            -119 => NotReadOnly,
            -120 => EphemeralOnLocalSession,
            -121 => NoWatcher,
            -122 => RequestTimeout,
            -123 => ReconfigDisabled,
            -124 => SessionClosedRequireSaslAuth,
            -125 => QuotaExceeded,
            -127 => Throttled,
            _ => return None,
        })
    }

    /// A stable lower-case label for metrics.
    pub fn label(self) -> &'static str {
        use Code::*;
        match self {
            Ok => "ok",
            NoNode => "no_node",
            NodeExists => "node_exists",
            BadVersion => "bad_version",
            NotEmpty => "not_empty",
            NoAuth => "no_auth",
            BadArguments => "bad_arguments",
            SessionExpired => "session_expired",
            NoChildrenForEphemerals => "no_children_for_ephemerals",
            InvalidAcl => "invalid_acl",
            AuthFailed => "auth_failed",
            Unimplemented => "unimplemented",
            NoWatcher => "no_watcher",
            _ => "other",
        }
    }
}
