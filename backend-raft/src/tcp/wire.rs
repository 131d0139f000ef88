//! What travels between members: requests, replies and errors, postcard-encoded in frames.

use crate::network::{AdminOp, Forward, ForwardError, TransportError};
use crate::types::{
    AppendEntriesRequest, AppendEntriesResponse, NodeId, SnapshotMeta, SnapshotResponse, Vote,
    VoteRequest, VoteResponse,
};
use roster_core::backend::BackendError;
use roster_core::txn::{Envelope, Outcome};
use roster_core::{SessionId, Zxid};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireRequest {
    Append(AppendEntriesRequest),
    Vote(VoteRequest),
    PreVote(VoteRequest),
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
    Forward(WireForward),
    /// A piece of a snapshot too large for one frame (over [`TcpConfig::snapshot_chunk`]):
    /// pieces go in order, each answered (`SnapshotPart`) before the next is sent, so the
    /// link carries appends and votes between them; the last is answered with the install's
    /// `Snapshot` reply. (Last in the enum: the variants before keep their wire tags.)
    ///
    /// [`TcpConfig::snapshot_chunk`]: super::TcpConfig::snapshot_chunk
    SnapshotChunk {
        vote: Vote,
        meta: SnapshotMeta,
        offset: u64,
        total: u64,
        data: Vec<u8>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireForward {
    Submit(Envelope),
    Touch(Vec<SessionId>),
    Barrier,
    AddLearner { id: NodeId, addr: String },
    Promote { id: NodeId },
    Remove { id: NodeId },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireResponse {
    Append(AppendEntriesResponse),
    Vote(VoteResponse),
    Snapshot(SnapshotResponse),
    Applied {
        zxid: Zxid,
        outcome: Outcome,
    },
    Touched,
    Barrier {
        zxid: Zxid,
        index: u64,
    },
    Admin,
    Error(WireError),
    /// A snapshot piece was received (not the last).
    SnapshotPart,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireError {
    NotLeader(Option<NodeId>),
    Unavailable(String),
    Overloaded,
    Storage(String),
    ShuttingDown,
    Unreachable(String),
    Lost(String),
    Remote(String),
}

impl From<Forward> for WireForward {
    fn from(f: Forward) -> Self {
        match f {
            Forward::Submit(e) => WireForward::Submit(e),
            Forward::Touch(ids) => WireForward::Touch(ids),
            Forward::Barrier => WireForward::Barrier,
            Forward::Admin(AdminOp::AddLearner { id, addr }) => {
                WireForward::AddLearner { id, addr }
            }
            Forward::Admin(AdminOp::Promote { id }) => WireForward::Promote { id },
            Forward::Admin(AdminOp::Remove { id }) => WireForward::Remove { id },
        }
    }
}

impl From<WireForward> for Forward {
    fn from(f: WireForward) -> Self {
        match f {
            WireForward::Submit(e) => Forward::Submit(e),
            WireForward::Touch(ids) => Forward::Touch(ids),
            WireForward::Barrier => Forward::Barrier,
            WireForward::AddLearner { id, addr } => {
                Forward::Admin(AdminOp::AddLearner { id, addr })
            }
            WireForward::Promote { id } => Forward::Admin(AdminOp::Promote { id }),
            WireForward::Remove { id } => Forward::Admin(AdminOp::Remove { id }),
        }
    }
}

impl From<TransportError> for WireError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Unreachable(s) => WireError::Unreachable(s),
            TransportError::Lost(s) => WireError::Lost(s),
            TransportError::Remote(s) => WireError::Remote(s),
        }
    }
}

impl From<ForwardError> for WireError {
    fn from(e: ForwardError) -> Self {
        match e {
            ForwardError::NotLeader(l) => WireError::NotLeader(l),
            ForwardError::Transport(t) => t.into(),
            ForwardError::Backend(b) => match b {
                BackendError::Unavailable(s) => WireError::Unavailable(s),
                BackendError::Overloaded => WireError::Overloaded,
                BackendError::Storage(s) => WireError::Storage(s),
                BackendError::ShuttingDown => WireError::ShuttingDown,
                other @ BackendError::Unsupported { .. } => {
                    WireError::Unavailable(other.to_string())
                }
            },
        }
    }
}

impl From<WireError> for ForwardError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::NotLeader(l) => ForwardError::NotLeader(l),
            WireError::Unavailable(s) => BackendError::Unavailable(s).into(),
            WireError::Overloaded => BackendError::Overloaded.into(),
            WireError::Storage(s) => BackendError::Storage(s).into(),
            WireError::ShuttingDown => BackendError::ShuttingDown.into(),
            WireError::Unreachable(s) => TransportError::Unreachable(s).into(),
            WireError::Lost(s) => TransportError::Lost(s).into(),
            WireError::Remote(s) => TransportError::Remote(s).into(),
        }
    }
}

/// An error reply to an openraft RPC: the peer's own failure.
pub(crate) fn remote(e: WireError) -> TransportError {
    match ForwardError::from(e) {
        ForwardError::Transport(t) => t,
        other => TransportError::Remote(other.to_string()),
    }
}

pub(crate) fn unexpected(what: &str, r: &WireResponse) -> TransportError {
    TransportError::Remote(format!("unexpected reply to {what}: {r:?}"))
}
