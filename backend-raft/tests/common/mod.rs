//! An in-process cluster of `RaftBackend`s on `MemEngine`s joined by a `Router`.
#![allow(dead_code)]

use roster_core::CreateMode;
use roster_core::acl::{Acl, AuthInfo};
use roster_core::backend::{Backend, BackendError};
use roster_core::storage::{Engine, MemEngine};
use roster_core::txn::{Applied, Envelope, Outcome, Request, WriteOp};
use roster_raft::{RaftBackend, RaftConfig, Router};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn cfg(id: u64) -> RaftConfig {
    RaftConfig {
        node_id: id,
        addr: format!("mem:{id}"),
        tick_ms: 100,
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        snapshot_every: 40,
        logs_kept_after_snapshot: 5,
        container_check_ms: 50,
        request_timeout_ms: 5_000,
        ..RaftConfig::default()
    }
}

/// Poll `cond` every 10 ms until it holds; panic with `what` after `secs`.
pub async fn wait_for<F: FnMut() -> bool>(secs: u64, what: &str, mut cond: F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Retry an async operation that may meet a leader change (Unavailable) until it succeeds.
pub async fn retry<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BackendError>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(Instant::now() < deadline, "{what}: still failing: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

pub fn env(session: i64, request: Request) -> Envelope {
    Envelope {
        session,
        auth: Arc::new(AuthInfo::default()),
        request,
    }
}

pub fn create(path: &str, mode: CreateMode) -> Request {
    Request::Op(WriteOp::Create {
        path: path.into(),
        data: path.as_bytes().to_vec(),
        acl: Acl::open_unsafe(),
        mode,
        ttl: 0,
    })
}

pub async fn new_session(b: &dyn Backend, timeout_ms: i32) -> i64 {
    match b
        .submit(env(0, Request::CreateSession { timeout_ms }))
        .await
        .expect("create session")
        .outcome
    {
        Outcome::SessionCreated { session, .. } => session,
        o => panic!("{o:?}"),
    }
}

pub struct Member {
    pub node: Arc<RaftBackend>,
    pub engine: Arc<MemEngine>,
}

pub struct Cluster {
    pub router: Router,
    pub members: BTreeMap<u64, Member>,
}

impl Cluster {
    /// Start `n` voters (ids 1..=n) and wait for a leader.
    pub async fn start(n: u64) -> Cluster {
        init_tracing();
        let mut c = Cluster {
            router: Router::new(),
            members: BTreeMap::new(),
        };
        for id in 1..=n {
            c.open(id, Arc::new(MemEngine::default())).await;
        }
        let voters = (1..=n).map(|id| (id, format!("mem:{id}"))).collect();
        c.node(1).initialize(voters).await.expect("initialize");
        c.wait_leader(10).await;
        c
    }

    /// Open member `id` on `engine` and make it reachable.
    pub async fn open(&mut self, id: u64, engine: Arc<MemEngine>) -> Arc<RaftBackend> {
        let dyn_engine: Arc<dyn Engine> = engine.clone();
        let node = RaftBackend::open(cfg(id), dyn_engine, self.router.endpoint(id))
            .await
            .expect("open raft backend");
        self.router.register(&node);
        self.members.insert(
            id,
            Member {
                node: node.clone(),
                engine,
            },
        );
        node
    }

    /// Stop member `id`; its engine is kept (returned) for a restart.
    pub async fn stop(&mut self, id: u64) -> Arc<MemEngine> {
        let m = self.members.remove(&id).expect("member");
        self.router.unregister(id);
        m.node.shutdown().await;
        m.engine
    }

    pub fn node(&self, id: u64) -> Arc<RaftBackend> {
        self.members[&id].node.clone()
    }

    pub fn nodes(&self) -> Vec<Arc<RaftBackend>> {
        self.members.values().map(|m| m.node.clone()).collect()
    }

    /// The member that leads and is ready to prepare.
    pub fn leader(&self) -> Option<u64> {
        let leading: Vec<u64> = self
            .members
            .iter()
            .filter(|(_, m)| m.node.is_leading())
            .map(|(id, _)| *id)
            .collect();
        match leading.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    pub async fn wait_leader(&self, secs: u64) -> u64 {
        wait_for(secs, "a leader", || self.leader().is_some()).await;
        self.leader().expect("leader")
    }

    /// Wait until every member has applied the same state.
    pub async fn wait_converged(&self, secs: u64) {
        let nodes = self.nodes();
        wait_for(secs, "all members applied the same tree", || {
            let digests: Vec<(i64, u32)> = nodes
                .iter()
                .map(|n| {
                    let t = n.tree();
                    let t = t.read();
                    (t.last_zxid(), t.digest())
                })
                .collect();
            digests.windows(2).all(|w| w[0] == w[1])
        })
        .await;
    }

    pub async fn shutdown(self) {
        for m in self.members.values() {
            m.node.shutdown().await;
        }
    }
}

/// The created path of a create.
pub fn created(a: &Applied) -> String {
    match &a.outcome {
        Outcome::Op(roster_core::txn::OpResult::Created { path, .. }) => path.clone(),
        o => panic!("not a create: {o:?}"),
    }
}
