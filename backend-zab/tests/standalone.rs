//! The standalone pipeline against the in-memory engine: group commit, ordering, recovery of the
//! tree, sessions and zxids, and session expiry committed as a transaction.

use roster_core::CreateMode;
use roster_core::acl::{Acl, AuthInfo};
use roster_core::backend::Backend;
use roster_core::storage::{Engine, MemEngine};
use roster_core::txn::{Envelope, OpResult, Outcome, Request, WriteOp};
use roster_zab::{Standalone, ZabConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env(session: i64, request: Request) -> Envelope {
    Envelope {
        session,
        auth: Arc::new(AuthInfo::default()),
        request,
    }
}

fn create(path: &str, mode: CreateMode) -> Request {
    Request::Op(WriteOp::Create {
        path: path.into(),
        data: path.as_bytes().to_vec(),
        acl: Acl::open_unsafe(),
        mode,
        ttl: 0,
    })
}

async fn new_session(b: &Standalone, timeout_ms: i32) -> i64 {
    match b
        .submit(env(0, Request::CreateSession { timeout_ms }))
        .await
        .unwrap()
        .outcome
    {
        Outcome::SessionCreated { session, .. } => session,
        o => panic!("{o:?}"),
    }
}

fn cfg() -> ZabConfig {
    ZabConfig {
        tick_ms: 100,
        container_check_ms: 50,
        snapshot_every: 50,
        ..ZabConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_commit_in_order_and_survive_recovery() {
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::default());
    let b = Standalone::open(engine.clone(), cfg()).unwrap();
    let s = new_session(&b, 10_000).await;
    b.submit(env(s, create("/q", CreateMode::Persistent)))
        .await
        .unwrap();
    // 200 concurrent sequential creates: all distinct names, zxids strictly increasing per reply.
    let mut handles = Vec::new();
    for _ in 0..200 {
        let b = b.clone();
        handles.push(tokio::spawn(async move {
            b.submit(env(s, create("/q/n-", CreateMode::PersistentSequential)))
                .await
                .unwrap()
        }));
    }
    let mut names = Vec::new();
    for h in handles {
        let a = h.await.unwrap();
        match a.outcome {
            Outcome::Op(OpResult::Created { path, stat }) => {
                assert_eq!(stat.czxid, a.zxid);
                names.push(path);
            }
            o => panic!("{o:?}"),
        }
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 200);
    b.submit(env(s, create("/eph", CreateMode::Ephemeral)))
        .await
        .unwrap();
    let digest = b.tree().read().digest();
    let last = b.tree().read().last_zxid();
    let epoch = b.epoch();
    b.close();
    drop(b);

    // Recover from the same engine (snapshots were taken every 50 txns, plus the log tail).
    let b2 = Standalone::open(engine, cfg()).unwrap();
    assert_eq!(
        b2.tree().read().digest(),
        digest,
        "tree, stats and sessions restored"
    );
    assert_eq!(b2.tree().read().last_zxid(), last);
    assert!(b2.epoch() > epoch, "a restart starts a new epoch");
    let a = b2
        .submit(env(s, create("/after", CreateMode::Persistent)))
        .await
        .unwrap();
    assert!(a.zxid > last, "zxids keep increasing across restarts");
    assert!(
        b2.tree().read().get("/eph").is_some(),
        "the live session's ephemeral survives"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_loses_its_ephemerals() {
    let b = Standalone::open(Arc::new(MemEngine::default()), cfg()).unwrap();
    let s = new_session(&b, 300).await;
    let keep = new_session(&b, 60_000).await;
    b.submit(env(s, create("/e1", CreateMode::Ephemeral)))
        .await
        .unwrap();
    b.submit(env(keep, create("/e2", CreateMode::Ephemeral)))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.tree().read().get("/e1").is_some() {
        assert!(Instant::now() < deadline, "session did not expire");
        b.touch(&[keep]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b.tree().read().get("/e2").is_some());
    assert!(!b.tree().read().sessions().contains_key(&s));
    let o = b
        .submit(env(s, create("/late", CreateMode::Persistent)))
        .await
        .unwrap()
        .outcome;
    assert_eq!(o, Outcome::Failed(roster_core::Code::SessionExpired));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_containers_are_removed() {
    let b = Standalone::open(Arc::new(MemEngine::default()), cfg()).unwrap();
    let s = new_session(&b, 60_000).await;
    b.submit(env(s, create("/c", CreateMode::Container)))
        .await
        .unwrap();
    b.submit(env(s, create("/c/x", CreateMode::Persistent)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        b.tree().read().get("/c").is_some(),
        "a container with a child stays"
    );
    b.submit(env(
        s,
        Request::Op(WriteOp::Delete {
            path: "/c/x".into(),
            version: -1,
        }),
    ))
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.tree().read().get("/c").is_some() {
        assert!(Instant::now() < deadline, "container not removed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barrier_waits_for_earlier_writes() {
    let b = Standalone::open(Arc::new(MemEngine::default()), cfg()).unwrap();
    let s = new_session(&b, 60_000).await;
    for i in 0..20 {
        // join! polls the write first, so it is queued before the barrier.
        let (w, z) = tokio::join!(
            b.submit(env(s, create(&format!("/w{i}"), CreateMode::Persistent))),
            b.barrier()
        );
        let w = w.unwrap();
        assert!(
            z.unwrap() >= w.zxid,
            "barrier resolved before an earlier write was applied"
        );
    }
}
