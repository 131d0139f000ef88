//! The fault-injecting transport: members' messages go through one seeded generator that
//! decides drops and delays, and through directed cuts; a crashed incarnation can send nothing.

use futures::future::BoxFuture;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roster_raft::RaftBackend;
use roster_raft::network::{Forward, ForwardError, ForwardReply, Peer, Transport, TransportError};
use roster_raft::types::{
    AppendEntriesRequest, AppendEntriesResponse, NodeId, Snapshot, SnapshotResponse, Vote,
    VoteRequest, VoteResponse,
};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

#[derive(Default)]
struct Faults {
    /// Directed links that drop everything (`(from, to)`).
    cut: HashSet<(NodeId, NodeId)>,
    /// Chance that a message (request or reply) is dropped.
    drop: f64,
    /// Extra delay per message, uniformly in `0..=max_delay_ms`.
    max_delay_ms: u64,
}

struct NetState {
    nodes: BTreeMap<NodeId, Weak<RaftBackend>>,
    /// Each member's current incarnation (a new one per open); a crashed one has none, and
    /// nothing an old incarnation sends gets out.
    incarnation: BTreeMap<NodeId, u64>,
    next_incarnation: u64,
    faults: Faults,
    rng: StdRng,
}

/// An in-process network whose links can be cut (either direction), lose or delay messages.
#[derive(Clone)]
pub struct FaultNet {
    st: Arc<Mutex<NetState>>,
}

/// What happens to one request/reply exchange, decided up front by the seeded generator.
struct Fate {
    delay_req: Duration,
    delay_reply: Duration,
    drop_req: bool,
    drop_reply: bool,
}

impl FaultNet {
    pub fn new(seed: u64) -> FaultNet {
        FaultNet {
            st: Arc::new(Mutex::new(NetState {
                nodes: BTreeMap::new(),
                incarnation: BTreeMap::new(),
                next_incarnation: 0,
                faults: Faults::default(),
                rng: StdRng::seed_from_u64(seed ^ 0x006e_6574_776f_726b),
            })),
        }
    }

    /// The transport of a new incarnation of member `from`.
    pub fn endpoint(&self, from: NodeId) -> Arc<dyn Transport> {
        let mut st = self.st.lock();
        st.next_incarnation += 1;
        let incarnation = st.next_incarnation;
        st.incarnation.insert(from, incarnation);
        Arc::new(Endpoint {
            from,
            incarnation,
            net: self.clone(),
        })
    }

    fn alive(&self, id: NodeId, incarnation: u64) -> bool {
        self.st.lock().incarnation.get(&id) == Some(&incarnation)
    }

    pub fn register(&self, n: &Arc<RaftBackend>) {
        self.st.lock().nodes.insert(n.id(), Arc::downgrade(n));
    }

    /// `id` crashed: unreachable, and nothing it sends from now on gets out.
    pub fn unregister(&self, id: NodeId) {
        let mut st = self.st.lock();
        st.nodes.remove(&id);
        st.incarnation.remove(&id);
    }

    fn fate(&self) -> Fate {
        let mut st = self.st.lock();
        let (p, max) = (st.faults.drop, st.faults.max_delay_ms);
        let delay = |rng: &mut StdRng| {
            Duration::from_millis(if max > 0 { rng.gen_range(0..=max) } else { 0 })
        };
        let delay_req = delay(&mut st.rng);
        let delay_reply = delay(&mut st.rng);
        let drop_req = p > 0.0 && st.rng.gen_bool(p);
        let drop_reply = p > 0.0 && st.rng.gen_bool(p);
        Fate {
            delay_req,
            delay_reply,
            drop_req,
            drop_reply,
        }
    }

    fn is_registered(&self, id: NodeId, node: &Arc<RaftBackend>) -> bool {
        self.st
            .lock()
            .nodes
            .get(&id)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(node)))
    }

    fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.st.lock().faults.cut.contains(&(from, to))
    }

    fn target(&self, from: NodeId, to: NodeId) -> Result<Arc<RaftBackend>, TransportError> {
        let st = self.st.lock();
        if st.faults.cut.contains(&(from, to)) {
            return Err(TransportError::Unreachable(format!("{from} -> {to}: cut")));
        }
        st.nodes
            .get(&to)
            .and_then(Weak::upgrade)
            .filter(|n| !n.is_shut_down())
            .ok_or_else(|| TransportError::Unreachable(format!("{from} -> {to}: down")))
    }

    /// Carry one exchange from `from` to `to`, applying the faults.
    async fn deliver<T>(
        &self,
        (from, incarnation): (NodeId, u64),
        to: NodeId,
        call: impl FnOnce(Arc<RaftBackend>) -> BoxFuture<'static, Result<T, TransportError>>,
    ) -> Result<T, TransportError> {
        let fate = self.fate();
        if !fate.delay_req.is_zero() {
            tokio::time::sleep(fate.delay_req).await;
        }
        if !self.alive(from, incarnation) {
            return Err(TransportError::Unreachable(format!("{from} crashed")));
        }
        let node = self.target(from, to)?;
        if fate.drop_req {
            return Err(TransportError::Unreachable(format!(
                "{from} -> {to}: dropped"
            )));
        }
        let r = call(node.clone()).await;
        if !self.is_registered(to, &node) {
            // It crashed meanwhile: nothing it says after its crash gets out.
            return Err(TransportError::Lost(format!("{to} crashed")));
        }
        if !fate.delay_reply.is_zero() {
            tokio::time::sleep(fate.delay_reply).await;
        }
        if fate.drop_reply || self.is_cut(to, from) || !self.alive(from, incarnation) {
            return Err(TransportError::Lost(format!("{to} -> {from}: reply lost")));
        }
        r
    }

    // Partitions and faults.

    pub fn cut_both(&self, a: NodeId, b: NodeId) {
        let mut st = self.st.lock();
        st.faults.cut.insert((a, b));
        st.faults.cut.insert((b, a));
    }

    pub fn cut_one(&self, from: NodeId, to: NodeId) {
        self.st.lock().faults.cut.insert((from, to));
    }

    pub fn set_drop(&self, p: f64) {
        self.st.lock().faults.drop = p;
    }

    pub fn set_delay(&self, max_ms: u64) {
        self.st.lock().faults.max_delay_ms = max_ms;
    }

    pub fn heal(&self) {
        self.st.lock().faults = Faults::default();
    }
}

struct Endpoint {
    from: NodeId,
    incarnation: u64,
    net: FaultNet,
}

impl Endpoint {
    fn me(&self) -> (NodeId, u64) {
        (self.from, self.incarnation)
    }
}

#[async_trait::async_trait]
impl Transport for Endpoint {
    async fn append_entries(
        &self,
        to: &Peer,
        rpc: AppendEntriesRequest,
    ) -> Result<AppendEntriesResponse, TransportError> {
        self.net
            .deliver(self.me(), to.id, move |n| {
                Box::pin(async move { n.handle_append_entries(rpc).await })
            })
            .await
    }

    async fn vote(&self, to: &Peer, rpc: VoteRequest) -> Result<VoteResponse, TransportError> {
        self.net
            .deliver(self.me(), to.id, move |n| {
                Box::pin(async move { n.handle_vote(rpc).await })
            })
            .await
    }

    async fn pre_vote(&self, to: &Peer, rpc: VoteRequest) -> Result<VoteResponse, TransportError> {
        self.net
            .deliver(self.me(), to.id, move |n| {
                Box::pin(async move { n.handle_pre_vote(rpc).await })
            })
            .await
    }

    async fn install_snapshot(
        &self,
        to: &Peer,
        vote: Vote,
        snapshot: Snapshot,
    ) -> Result<SnapshotResponse, TransportError> {
        self.net
            .deliver(self.me(), to.id, move |n| {
                Box::pin(async move { n.handle_install_snapshot(vote, snapshot).await })
            })
            .await
    }

    async fn forward(&self, to: &Peer, req: Forward) -> Result<ForwardReply, ForwardError> {
        self.net
            .deliver(self.me(), to.id, move |n| {
                Box::pin(async move { Ok(n.handle_forward(req).await) })
            })
            .await?
    }
}
