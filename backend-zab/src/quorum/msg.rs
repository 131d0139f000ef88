//! Messages between ensemble members (election, discovery, synchronisation, broadcast), and votes.

use parking_lot::Mutex;
use roster_core::acl::AuthInfo;
use roster_core::tree::Tree;
use roster_core::tree::snapshot::{SnapshotError, SnapshotView};
use roster_core::txn::{Outcome, Request, Txn};
use roster_core::{SessionId, Zxid};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A member id (`server.N`, ZooKeeper's `myid`).
pub type Sid = u64;

/// What a member says it is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerState {
    Looking,
    Following,
    Leading,
    Observing,
}

/// A vote in fast leader election: for `leader`, whose history ends at (`epoch`, `zxid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub leader: Sid,
    pub zxid: Zxid,
    pub epoch: u32,
}

impl Vote {
    /// ZooKeeper's total order on votes: epoch, then zxid, then server id.
    pub fn beats(&self, other: &Vote) -> bool {
        (self.epoch, self.zxid, self.leader) > (other.epoch, other.zxid, other.leader)
    }
}

/// Every message between members.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Msg {
    /// Fast leader election.
    Notification {
        vote: Vote,
        round: u64,
        state: PeerState,
    },
    /// Discovery: a follower (or observer) introduces itself to the leader it chose.
    FollowerInfo {
        accepted_epoch: u32,
        last_zxid: Zxid,
        observer: bool,
    },
    /// Discovery: the new epoch.
    LeaderInfo {
        epoch: u32,
    },
    /// `fresh` is false when the follower had already accepted this epoch (from any leader):
    /// such an ack does not count toward the new leader's quorum (ZooKeeper sends −1), so two
    /// leaders can never establish the same epoch.
    AckEpoch {
        current_epoch: u32,
        last_zxid: Zxid,
        fresh: bool,
    },
    /// Synchronisation: drop logged txns after `to`.
    Trunc {
        to: Zxid,
    },
    /// Synchronisation: committed txns the follower lacks. Everything the follower logged up to
    /// `committed` (after any TRUNC) is committed too.
    Diff {
        committed: Zxid,
        txns: Vec<Arc<Txn>>,
    },
    /// Synchronisation: the leader's whole committed state. Never encoded as one message: a
    /// link sends [`Msg::SnapHead`] and streams the state's encoding after it, and the receiving
    /// link restores the state as it comes (`ensemble.rs`), so neither member holds the whole
    /// encoding; between members in one process (the simulations) it goes as it is.
    Snap {
        zxid: Zxid,
        state: SnapState,
    },
    /// The follower asks for a snapshot (its log could not be reconciled by TRUNC).
    NeedSnap,
    NewLeader {
        epoch: u32,
        zxid: Zxid,
    },
    AckNewLeader,
    UpToDate,
    /// Broadcast. `origin` is the request id on the receiving member, if it asked for this write.
    Proposal {
        txn: Arc<Txn>,
        origin: Option<u64>,
    },
    Ack {
        zxid: Zxid,
    },
    Commit {
        zxid: Zxid,
    },
    /// A committed txn, for observers.
    Inform {
        txn: Arc<Txn>,
        origin: Option<u64>,
    },
    /// A member forwards a client write to the leader.
    Forward {
        id: u64,
        session: SessionId,
        auth: Arc<AuthInfo>,
        request: Request,
    },
    /// The leader answers a forwarded write that failed its checks (nothing committed).
    Failed {
        id: u64,
        outcome: Outcome,
    },
    /// A member relays its clients' liveness to the leader.
    Touch {
        sessions: Vec<SessionId>,
    },
    /// Leader heartbeat; the answer proves the leader still has its quorum (used by `sync`).
    Ping {
        seq: u64,
    },
    Pong {
        seq: u64,
    },
    /// `sync` from a member: answered once the leader has confirmed its quorum and every earlier
    /// commit was sent (FIFO), so the member has applied them.
    SyncReq {
        id: u64,
    },
    SyncDone {
        id: u64,
    },
    /// On the wire: the snapshot of `zxid` follows as a chain of frames (see [`Msg::Snap`]).
    SnapHead {
        zxid: Zxid,
    },
}

/// The state a [`Msg::Snap`] carries.
#[derive(Clone)]
pub enum SnapState {
    /// At the leader: the frozen state, encoded by the link as it sends it.
    View(SnapshotView),
    /// At the follower: the state the link restored from the stream (taken once).
    Restored(Arc<Mutex<Option<Tree>>>),
}

impl SnapState {
    /// The restored tree: from the link, or (in one process) decoded from the view.
    pub fn into_tree(self) -> Result<Tree, SnapshotError> {
        match self {
            SnapState::View(v) => Tree::restore(&v.encode()),
            SnapState::Restored(t) => t
                .lock()
                .take()
                .ok_or_else(|| SnapshotError::new("the snapshot was already installed".to_owned())),
        }
    }
}

impl std::fmt::Debug for SnapState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapState::View(v) => write!(f, "View({} nodes)", v.node_count()),
            SnapState::Restored(_) => f.write_str("Restored"),
        }
    }
}

/// A snapshot is streamed by the link, never encoded inside a message: encoding or decoding a
/// [`Msg::Snap`] is an error.
impl Serialize for SnapState {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "a snapshot is streamed after SnapHead, not encoded in a message",
        ))
    }
}

impl<'de> Deserialize<'de> for SnapState {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "a snapshot is streamed after SnapHead, not encoded in a message",
        ))
    }
}

impl Msg {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::Notification { .. } => "notification",
            Msg::FollowerInfo { .. } => "followerinfo",
            Msg::LeaderInfo { .. } => "leaderinfo",
            Msg::AckEpoch { .. } => "ackepoch",
            Msg::Trunc { .. } => "trunc",
            Msg::Diff { .. } => "diff",
            Msg::Snap { .. } => "snap",
            Msg::NeedSnap => "needsnap",
            Msg::NewLeader { .. } => "newleader",
            Msg::AckNewLeader => "acknewleader",
            Msg::UpToDate => "uptodate",
            Msg::Proposal { .. } => "proposal",
            Msg::Ack { .. } => "ack",
            Msg::Commit { .. } => "commit",
            Msg::Inform { .. } => "inform",
            Msg::Forward { .. } => "forward",
            Msg::Failed { .. } => "failed",
            Msg::Touch { .. } => "touch",
            Msg::Ping { .. } => "ping",
            Msg::Pong { .. } => "pong",
            Msg::SyncReq { .. } => "syncreq",
            Msg::SyncDone { .. } => "syncdone",
            Msg::SnapHead { .. } => "snaphead",
        }
    }
}
