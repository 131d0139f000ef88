//! Sessions on a Raft cluster: the leader expires them and commits the close on every member;
//! touches on a follower are relayed; a new leader re-arms every session with its full timeout.

mod common;

use common::*;
use roster_core::CreateMode;
use roster_core::backend::Backend;
use roster_core::txn::Outcome;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_session_loses_its_ephemerals_on_every_member() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader(10).await;
    let f = c.nodes().into_iter().find(|n| n.id() != leader).unwrap();
    let doomed = new_session(f.as_ref(), 400).await;
    let kept = new_session(f.as_ref(), 400).await;
    f.submit(env(doomed, create("/e1", CreateMode::Ephemeral)))
        .await
        .unwrap();
    f.submit(env(kept, create("/e2", CreateMode::Ephemeral)))
        .await
        .unwrap();
    c.wait_converged(10).await;
    // `kept` is touched on the follower only; the relay keeps it alive at the leader.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        f.touch(&[kept]).await.unwrap();
        let gone = c
            .nodes()
            .iter()
            .all(|n| n.tree().read().get("/e1").is_none());
        if gone {
            break;
        }
        assert!(Instant::now() < deadline, "session did not expire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Well past the 400 ms timeout, the touched session still holds its node everywhere.
    let until = Instant::now() + Duration::from_millis(800);
    while Instant::now() < until {
        f.touch(&[kept]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.wait_converged(10).await;
    for n in c.nodes() {
        let t = n.tree();
        let t = t.read();
        assert!(t.get("/e2").is_some(), "touched session expired");
        assert!(!t.sessions().contains_key(&doomed));
    }
    let late = f
        .submit(env(doomed, create("/late", CreateMode::Persistent)))
        .await
        .unwrap();
    assert_eq!(
        late.outcome,
        Outcome::Failed(roster_core::Code::SessionExpired)
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_rearms_sessions_and_still_expires_silent_ones() {
    let mut c = Cluster::start(3).await;
    let old = c.wait_leader(10).await;
    let f = c.nodes().into_iter().find(|n| n.id() != old).unwrap();
    let alive = new_session(f.as_ref(), 1_000).await;
    let silent = new_session(f.as_ref(), 1_000).await;
    f.submit(env(alive, create("/alive", CreateMode::Ephemeral)))
        .await
        .unwrap();
    f.submit(env(silent, create("/silent", CreateMode::Ephemeral)))
        .await
        .unwrap();
    c.wait_converged(10).await;
    c.stop(old).await;
    let new = c.wait_leader(10).await;
    assert_ne!(new, old);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(10);
    loop {
        f.touch(&[alive]).await.unwrap();
        if f.tree().read().get("/silent").is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "silent session never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.wait_converged(10).await;
    for n in c.nodes() {
        assert!(
            n.tree().read().get("/alive").is_some(),
            "a touched session survived the leader change"
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn empty_containers_are_removed_by_the_leader() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader(10).await;
    let f = c.nodes().into_iter().find(|n| n.id() != leader).unwrap();
    let s = new_session(f.as_ref(), 30_000).await;
    f.submit(env(s, create("/c", CreateMode::Container)))
        .await
        .unwrap();
    f.submit(env(s, create("/c/x", CreateMode::Persistent)))
        .await
        .unwrap();
    f.submit(env(
        s,
        roster_core::txn::Request::Op(roster_core::txn::WriteOp::Delete {
            path: "/c/x".into(),
            version: -1,
        }),
    ))
    .await
    .unwrap();
    let nodes = c.nodes();
    wait_for(10, "container removed everywhere", || {
        nodes.iter().all(|n| n.tree().read().get("/c").is_none())
    })
    .await;
    c.shutdown().await;
}
