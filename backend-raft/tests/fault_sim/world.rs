//! The members of one run: live backends, every member's engine (its disk), crashes,
//! restarts (from disk or wiped) and the safety rule for wiping.

use super::net::FaultNet;
use parking_lot::Mutex;
use rand::Rng;
use rand::rngs::StdRng;
use roster_core::backend::Backend;
use roster_core::conformance::flawed::{Flaw, Flawed};
use roster_core::storage::{Engine, MemEngine, Space, WriteBatch};
use roster_raft::openraft::ServerState;
use roster_raft::openraft::async_runtime::WatchReceiver;
use roster_raft::types::NodeId;
use roster_raft::{RaftBackend, RaftConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

fn sim_cfg(id: NodeId) -> RaftConfig {
    RaftConfig {
        node_id: id,
        addr: format!("sim:{id}"),
        tick_ms: 100,
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        snapshot_every: 40,
        logs_kept_after_snapshot: 5,
        container_check_ms: 1_000,
        request_timeout_ms: 2_000,
        allow_log_reversion: true,
        ..RaftConfig::default()
    }
}

/// Shut a member down; a member whose Raft core panicked may never finish, so give up after a
/// while (the panic is reported as damage).
async fn stop_member(n: &RaftBackend) {
    if tokio::time::timeout(Duration::from_secs(5), n.shutdown())
        .await
        .is_err()
    {
        eprintln!("member {} did not shut down within 5 s", n.id());
    }
}

/// A copy of everything `e` holds.
fn copy_engine(e: &MemEngine) -> Arc<MemEngine> {
    let mut batch = WriteBatch::default();
    for space in Space::ALL {
        e.scan(space, &[], &mut |k, v| {
            batch.put(space, k, v);
            true
        })
        .expect("scan a MemEngine");
    }
    let copy = Arc::new(MemEngine::default());
    copy.write(batch, true).expect("write a MemEngine");
    copy
}

/// The members of one run: the live ones, and every member's engine (its disk).
pub struct World {
    pub net: FaultNet,
    pub ids: Vec<NodeId>,
    pub live: Mutex<BTreeMap<NodeId, Arc<RaftBackend>>>,
    pub engines: Mutex<BTreeMap<NodeId, Arc<MemEngine>>>,
    /// Clients talk to members through this flaw (the broken variant), if any.
    pub flaw: Option<Flaw>,
}

impl World {
    pub async fn start(seed: u64, n: u64, flaw: Option<Flaw>) -> Arc<World> {
        let w = Arc::new(World {
            net: FaultNet::new(seed),
            ids: (1..=n).collect(),
            live: Mutex::new(BTreeMap::new()),
            engines: Mutex::new(BTreeMap::new()),
            flaw,
        });
        for id in 1..=n {
            w.engines.lock().insert(id, Arc::new(MemEngine::default()));
            w.open(id).await;
        }
        let voters = (1..=n).map(|id| (id, format!("sim:{id}"))).collect();
        w.node(1)
            .expect("member 1")
            .initialize(voters)
            .await
            .expect("initialize");
        w
    }

    async fn open(&self, id: NodeId) {
        let engine: Arc<dyn Engine> = self.engines.lock()[&id].clone();
        let node = RaftBackend::open(sim_cfg(id), engine, self.net.endpoint(id))
            .await
            .expect("open raft backend");
        self.net.register(&node);
        self.live.lock().insert(id, node);
    }

    pub fn node(&self, id: NodeId) -> Option<Arc<RaftBackend>> {
        self.live.lock().get(&id).cloned()
    }

    pub fn down(&self) -> Vec<NodeId> {
        let live = self.live.lock();
        self.ids
            .iter()
            .copied()
            .filter(|i| !live.contains_key(i))
            .collect()
    }

    pub fn leader(&self) -> Option<NodeId> {
        let live = self.live.lock();
        let l: Vec<NodeId> = live
            .iter()
            .filter(|(_, n)| n.is_leading())
            .map(|(i, _)| *i)
            .collect();
        (l.len() == 1).then(|| l[0])
    }

    /// Kill a member: from now on nothing it sends gets out, and it restarts from what its
    /// engine held at this instant (whatever it writes while shutting down is lost, as with
    /// `kill -9`).
    pub async fn crash(&self, id: NodeId) {
        let n = self.live.lock().remove(&id);
        if let Some(n) = n {
            self.net.unregister(id);
            let disk = copy_engine(&self.engines.lock()[&id]);
            stop_member(&n).await;
            self.engines.lock().insert(id, disk);
        }
    }

    /// May member `id` (down) come back with an empty disk? Raft assumes durable logs and
    /// votes: a voter that lost its disk can, with a lagging member, form a majority that
    /// elects a leader without committed entries (openraft then trips over the committed entry
    /// it is asked to overwrite: seed 5), or vote twice in a term. It is safe only when every
    /// other member is up, follows one leader in one term, and holds the leader's whole
    /// committed log: then every majority it can join holds every committed entry, and every
    /// future election is in a term it never voted in.
    pub fn safe_to_wipe(&self, id: NodeId) -> bool {
        let live = self.live.lock();
        if live.contains_key(&id) || live.len() + 1 != self.ids.len() {
            return false;
        }
        let ms: Vec<_> = live
            .values()
            .map(|n| n.raft().metrics().borrow_watched().clone())
            .collect();
        let Some(l) = ms.iter().find(|m| m.state == ServerState::Leader) else {
            return false;
        };
        let committed = l.cluster_committed.as_ref().map(|c| c.index);
        ms.iter().all(|m| {
            m.current_term == l.current_term
                && m.current_leader == Some(l.id)
                && m.last_log_index >= committed
        })
    }

    /// Restart a crashed member from its engine, or from an empty one if `wipe`.
    pub async fn restart(&self, id: NodeId, wipe: bool) {
        if wipe {
            self.engines
                .lock()
                .insert(id, Arc::new(MemEngine::default()));
        }
        self.open(id).await;
    }

    /// A live member for a client: mostly its home member (ZooKeeper clients stay on one
    /// member), else any; through the run's flaw if any.
    pub fn pick(&self, home: NodeId, rng: &mut StdRng) -> Option<Arc<dyn Backend>> {
        let live: Vec<Arc<RaftBackend>> = self.live.lock().values().cloned().collect();
        if live.is_empty() {
            return None;
        }
        let n: Arc<dyn Backend> = match live.iter().find(|n| n.id() == home) {
            Some(h) if rng.gen_bool(0.9) => h.clone(),
            _ => live[rng.gen_range(0..live.len())].clone(),
        };
        Some(match self.flaw {
            Some(f) => Flawed::wrap(n, f),
            None => n,
        })
    }

    /// Every member has applied the same state.
    pub fn converged(&self) -> bool {
        let live = self.live.lock();
        let states: BTreeSet<(i64, u32)> = live
            .values()
            .map(|n| {
                let t = n.tree();
                let t = t.read();
                (t.last_zxid(), t.digest())
            })
            .collect();
        live.len() == self.ids.len() && states.len() == 1
    }

    pub async fn shutdown(&self) {
        let nodes: Vec<_> = std::mem::take(&mut *self.live.lock())
            .into_values()
            .collect();
        for n in nodes {
            stop_member(&n).await;
        }
    }
}
