//! How members talk. [`Transport`] carries openraft's RPCs (append, vote, snapshot) and Roster's
//! own requests to the leader ([`Forward`]: writes, session touches, barriers, membership
//! changes). The receiving side hands each message to `RaftBackend::handle_*`. [`Router`] is an
//! in-process transport with fault injection, so a cluster of `RaftBackend`s runs in one test;
//! a TCP/gRPC transport implements the same trait.

use crate::backend::RaftBackend;
use crate::storage::Progress;
use crate::types::{
    AppendEntriesRequest, AppendEntriesResponse, NodeId, Snapshot, SnapshotResponse, TypeConfig,
    Vote, VoteRequest, VoteResponse,
};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::{BasicNode, OptionalSend, RaftNetworkFactory, RaftNetworkV2};
use parking_lot::Mutex;
use roster_core::backend::BackendError;
use roster_core::txn::{Applied, Envelope};
use roster_core::{SessionId, Zxid};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// A member as the membership records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: NodeId,
    pub addr: String,
}

/// A message that did not get an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// Not delivered (no route, refused, partitioned): nothing ran, safe to retry.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Sent, but no answer: it may or may not have run.
    #[error("no answer: {0}")]
    Lost(String),
    /// The peer answered with an error.
    #[error("remote error: {0}")]
    Remote(String),
}

/// Why a forwarded request (or a local one on its way to the leader) failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ForwardError {
    /// The receiver is not the leader (nothing ran; retry at the leader it names).
    #[error("not the leader (leader: {0:?})")]
    NotLeader(Option<NodeId>),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// A membership change, run by the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOp {
    /// Add a non-voting member that receives the log (ZooKeeper's observer).
    AddLearner { id: NodeId, addr: String },
    /// Make a learner a voter.
    Promote { id: NodeId },
    /// Remove a voter or learner from the cluster.
    Remove { id: NodeId },
}

/// Roster's requests to the leader.
#[derive(Debug, Clone)]
pub enum Forward {
    /// A write from a follower's client.
    Submit(Envelope),
    /// Sessions whose clients a follower heard from.
    Touch(Vec<SessionId>),
    /// ReadIndex for a follower's barrier: answers once the leader has confirmed its leadership
    /// and applied everything it had accepted before the barrier.
    Barrier,
    Admin(AdminOp),
}

/// Answers to [`Forward`].
#[derive(Debug, Clone)]
pub enum ForwardReply {
    Applied(Applied),
    Touched,
    /// The leader's applied position; the follower waits until it has applied as far.
    Barrier {
        zxid: Zxid,
        index: u64,
    },
    Admin,
}

impl ForwardReply {
    pub(crate) fn barrier(p: Progress) -> ForwardReply {
        ForwardReply::Barrier {
            zxid: p.zxid,
            index: p.index,
        }
    }
}

/// Carries messages to other members.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    async fn append_entries(
        &self,
        to: &Peer,
        rpc: AppendEntriesRequest,
    ) -> Result<AppendEntriesResponse, TransportError>;
    async fn vote(&self, to: &Peer, rpc: VoteRequest) -> Result<VoteResponse, TransportError>;
    async fn pre_vote(&self, to: &Peer, rpc: VoteRequest) -> Result<VoteResponse, TransportError>;
    async fn install_snapshot(
        &self,
        to: &Peer,
        vote: Vote,
        snapshot: Snapshot,
    ) -> Result<SnapshotResponse, TransportError>;
    async fn forward(&self, to: &Peer, req: Forward) -> Result<ForwardReply, ForwardError>;
    /// The peer just reached us: a link to it waiting out a re-dial backoff may dial at once.
    fn peer_is_up(&self, _peer: NodeId) {}
}

// ---- openraft adapter ----

pub(crate) struct NetworkFactory {
    pub transport: Arc<dyn Transport>,
}

pub(crate) struct PeerClient {
    transport: Arc<dyn Transport>,
    peer: Peer,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            transport: self.transport.clone(),
            peer: Peer {
                id: target,
                addr: node.addr.clone(),
            },
        }
    }
}

fn rpc_err(e: TransportError) -> RPCError<TypeConfig> {
    match e {
        TransportError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

/// The least time an append may take before it counts as lost (see `append_entries`).
const MIN_APPEND_TTL: Duration = Duration::from_secs(1);

async fn within<T>(
    ttl: Duration,
    f: impl Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    match tokio::time::timeout(ttl, f).await {
        Ok(r) => r,
        Err(_) => Err(TransportError::Lost(format!("no answer within {ttl:?}"))),
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = crate::storage::SnapData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError<TypeConfig>> {
        // openraft's TTL for appends is the heartbeat interval (100 ms by default), but an append
        // answers only after the follower's fsync, which on a busy disk takes longer: cutting it
        // off there turned every slow fsync into a "network error" and a resend with backoff.
        within(
            option.hard_ttl().max(MIN_APPEND_TTL),
            self.transport.append_entries(&self.peer, rpc),
        )
        .await
        .map_err(rpc_err)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError<TypeConfig>> {
        within(option.hard_ttl(), self.transport.vote(&self.peer, rpc))
            .await
            .map_err(rpc_err)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError<TypeConfig>> {
        within(option.hard_ttl(), self.transport.pre_vote(&self.peer, rpc))
            .await
            .map_err(rpc_err)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse, StreamingError<TypeConfig>> {
        let send = within(
            option.hard_ttl(),
            self.transport.install_snapshot(&self.peer, vote, snapshot),
        );
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = send => r.map_err(|e| match e {
                TransportError::Unreachable(_) => StreamingError::Unreachable(Unreachable::new(&e)),
                _ => StreamingError::Network(NetworkError::new(&e)),
            }),
        }
    }
}

// ---- in-process router ----

#[derive(Default)]
struct RouterState {
    nodes: HashMap<NodeId, Weak<RaftBackend>>,
    isolated: HashSet<NodeId>,
    snapshot_delay: Duration,
}

/// An in-process network: members registered here reach each other by direct calls. Tests cut
/// a member off with [`Router::isolate`].
#[derive(Clone, Default)]
pub struct Router {
    state: Arc<Mutex<RouterState>>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    /// The transport a member with id `from` sends through.
    pub fn endpoint(&self, from: NodeId) -> Arc<dyn Transport> {
        Arc::new(Endpoint {
            from,
            router: self.clone(),
        })
    }

    /// Make `node` reachable under its id (replacing an earlier registration).
    pub fn register(&self, node: &Arc<RaftBackend>) {
        self.state
            .lock()
            .nodes
            .insert(node.id(), Arc::downgrade(node));
    }

    pub fn unregister(&self, id: NodeId) {
        self.state.lock().nodes.remove(&id);
    }

    /// Drop every message to or from `id`.
    pub fn isolate(&self, id: NodeId) {
        self.state.lock().isolated.insert(id);
    }

    pub fn heal(&self, id: NodeId) {
        self.state.lock().isolated.remove(&id);
    }

    /// Make every snapshot transfer take at least `d` (a large snapshot, a slow link).
    pub fn delay_snapshots(&self, d: Duration) {
        self.state.lock().snapshot_delay = d;
    }

    fn target(&self, from: NodeId, to: NodeId) -> Result<Arc<RaftBackend>, TransportError> {
        let st = self.state.lock();
        if st.isolated.contains(&from) || st.isolated.contains(&to) {
            return Err(TransportError::Unreachable(format!(
                "{from} -> {to}: partitioned"
            )));
        }
        st.nodes
            .get(&to)
            .and_then(Weak::upgrade)
            .filter(|n| !n.is_shut_down())
            .ok_or_else(|| TransportError::Unreachable(format!("{from} -> {to}: no such member")))
    }
}

struct Endpoint {
    from: NodeId,
    router: Router,
}

#[async_trait::async_trait]
impl Transport for Endpoint {
    async fn append_entries(
        &self,
        to: &Peer,
        rpc: AppendEntriesRequest,
    ) -> Result<AppendEntriesResponse, TransportError> {
        let n = self.router.target(self.from, to.id)?;
        n.handle_append_entries(rpc).await
    }

    async fn vote(&self, to: &Peer, rpc: VoteRequest) -> Result<VoteResponse, TransportError> {
        let n = self.router.target(self.from, to.id)?;
        n.handle_vote(rpc).await
    }

    async fn pre_vote(&self, to: &Peer, rpc: VoteRequest) -> Result<VoteResponse, TransportError> {
        let n = self.router.target(self.from, to.id)?;
        n.handle_pre_vote(rpc).await
    }

    async fn install_snapshot(
        &self,
        to: &Peer,
        vote: Vote,
        snapshot: Snapshot,
    ) -> Result<SnapshotResponse, TransportError> {
        let delay = self.router.state.lock().snapshot_delay;
        tokio::time::sleep(delay).await;
        let n = self.router.target(self.from, to.id)?;
        n.handle_install_snapshot(vote, snapshot).await
    }

    async fn forward(&self, to: &Peer, req: Forward) -> Result<ForwardReply, ForwardError> {
        let n = self.router.target(self.from, to.id)?;
        n.handle_forward(req).await
    }
}
