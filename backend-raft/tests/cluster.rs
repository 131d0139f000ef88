//! A 3-member in-process Raft cluster: election, replication through any member, ordering and
//! ZooKeeper semantics, fail-over, restart recovery, catch-up by snapshot, barriers.

mod common;

use common::*;
use roster_core::CreateMode;
use roster_core::backend::{Backend, Role};
use roster_core::storage::{Engine, MemEngine, Space};
use roster_core::txn::{OpResult, Outcome, Request, WriteOp};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_any_member_apply_everywhere_identically() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader(10).await;
    let statuses: Vec<_> = c.nodes().iter().map(|n| n.status()).collect();
    assert_eq!(
        statuses.iter().filter(|s| s.role == Role::Leader).count(),
        1
    );
    assert!(
        statuses
            .iter()
            .all(|s| s.backend == "raft" && s.members == 3)
    );
    let follower = c.nodes().into_iter().find(|n| n.id() != leader).unwrap();
    let s = new_session(follower.as_ref(), 30_000).await;
    follower
        .submit(env(s, create("/q", CreateMode::Persistent)))
        .await
        .unwrap();
    // Concurrent sequential creates through every member: distinct names, czxid = reply zxid,
    // every reply visible on the member that answered it.
    let mut handles = Vec::new();
    for i in 0..60 {
        let n = c.nodes()[i % 3].clone();
        handles.push(tokio::spawn(async move {
            let a = n
                .submit(env(s, create("/q/n-", CreateMode::PersistentSequential)))
                .await
                .unwrap();
            assert!(
                n.tree().read().get(&created(&a)).is_some(),
                "answered before applied locally"
            );
            a
        }));
    }
    let mut names = Vec::new();
    let mut zxids = Vec::new();
    for h in handles {
        let a = h.await.unwrap();
        match &a.outcome {
            Outcome::Op(OpResult::Created { path, stat }) => {
                assert_eq!(stat.czxid, a.zxid);
                names.push(path.clone());
            }
            o => panic!("{o:?}"),
        }
        zxids.push(a.zxid);
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 60);
    let expect: Vec<String> = (0..60).map(|i| format!("/q/n-{i:010}")).collect();
    assert_eq!(
        names,
        expect.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    );
    zxids.sort();
    zxids.dedup();
    assert_eq!(zxids.len(), 60, "every write got its own zxid");
    c.wait_converged(10).await;
    for n in c.nodes() {
        let t = n.tree();
        let t = t.read();
        assert_eq!(t.get("/q").unwrap().stat.num_children, 60);
        assert!(t.sessions().contains_key(&s));
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn barrier_on_a_follower_sees_writes_made_elsewhere() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader(10).await;
    let others: Vec<_> = c.nodes().into_iter().filter(|n| n.id() != leader).collect();
    let (a, b) = (&others[0], &others[1]);
    let s = new_session(a.as_ref(), 30_000).await;
    for i in 0..20 {
        let w = a
            .submit(env(s, create(&format!("/b{i}"), CreateMode::Persistent)))
            .await
            .unwrap();
        let z = b.barrier().await.unwrap();
        assert!(z >= w.zxid, "barrier returned {z:#x} before {:#x}", w.zxid);
        assert!(b.tree().read().get(&format!("/b{i}")).is_some());
    }
    // On one member, a barrier queued after a write waits for it.
    for i in 0..10 {
        let (w, z) = tokio::join!(
            b.submit(env(s, create(&format!("/j{i}"), CreateMode::Persistent))),
            b.barrier()
        );
        assert!(z.unwrap() >= w.unwrap().zxid);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_shutdown_elects_a_new_leader_and_zxids_keep_increasing() {
    let mut c = Cluster::start(3).await;
    let old = c.wait_leader(10).await;
    let s = new_session(c.node(old).as_ref(), 60_000).await;
    let mut last = 0;
    for i in 0..10 {
        let a = c
            .node(old)
            .submit(env(s, create(&format!("/a{i}"), CreateMode::Persistent)))
            .await
            .unwrap();
        assert!(a.zxid > last);
        last = a.zxid;
    }
    let old_term = c.node(old).status().epoch;
    c.stop(old).await;
    let new = c.wait_leader(10).await;
    assert_ne!(new, old);
    let survivor = c.nodes().into_iter().find(|n| n.id() != new).unwrap();
    for i in 0..10 {
        let a = retry(10, "write after fail-over", || {
            survivor.submit(env(s, create(&format!("/b{i}"), CreateMode::Persistent)))
        })
        .await;
        if let Outcome::Op(OpResult::Created { .. }) = a.outcome {
        } else {
            // A retried create whose first attempt committed reports NodeExists.
            assert_eq!(a.outcome, Outcome::Failed(roster_core::Code::NodeExists));
        }
        assert!(a.zxid > last, "{:#x} after {last:#x}", a.zxid);
        last = a.zxid;
    }
    assert!(
        (last >> 32) as u64 > old_term,
        "the new leader writes in a later term"
    );
    assert!(c.node(new).status().epoch > old_term);
    // The session survived the fail-over.
    c.wait_converged(10).await;
    assert!(survivor.tree().read().sessions().contains_key(&s));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_member_recovers_from_its_engine_and_catches_up() {
    let mut c = Cluster::start(3).await;
    let leader = c.wait_leader(10).await;
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    let s = new_session(c.node(leader).as_ref(), 60_000).await;
    // Enough to cross a snapshot (every 40 entries) and keep a log tail after it.
    for i in 0..70 {
        c.node(leader)
            .submit(env(s, create(&format!("/r{i}"), CreateMode::Persistent)))
            .await
            .unwrap();
    }
    c.wait_converged(10).await;
    let before = c.node(victim).tree().read().last_zxid();
    let digest = c.node(victim).tree().read().digest();
    let engine = c.stop(victim).await;
    // Alone (cut off from the others) it recovers what it had from snapshot + log.
    c.router.isolate(victim);
    let n = c.open(victim, engine.clone()).await;
    wait_for(10, "local recovery", || {
        n.tree().read().last_zxid() >= before
    })
    .await;
    assert_eq!(n.tree().read().digest(), digest);
    // Rejoined, it catches up with what was written while it was away.
    for i in 0..20 {
        c.node(leader)
            .submit(env(s, create(&format!("/late{i}"), CreateMode::Persistent)))
            .await
            .unwrap();
    }
    c.router.heal(victim);
    c.wait_converged(10).await;
    assert!(n.tree().read().get("/late19").is_some());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_with_an_empty_engine_catches_up_by_snapshot() {
    let mut c = Cluster::start(3).await;
    let leader = c.wait_leader(10).await;
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    let s = new_session(c.node(leader).as_ref(), 60_000).await;
    c.stop(victim).await;
    // Far past a snapshot and the kept log tail, so the leader must ship a snapshot.
    for i in 0..120 {
        c.node(leader)
            .submit(env(s, create(&format!("/s{i}"), CreateMode::Persistent)))
            .await
            .unwrap();
    }
    let fresh = Arc::new(MemEngine::default());
    let n = c.open(victim, fresh.clone()).await;
    c.wait_converged(20).await;
    assert!(n.tree().read().get("/s119").is_some());
    assert!(
        fresh
            .get(Space::Snapshot, b"raft/snapshot")
            .unwrap()
            .is_some(),
        "it installed (and stored) a snapshot"
    );
    // And keeps replicating normally afterwards.
    c.node(leader)
        .submit(env(s, create("/after", CreateMode::Persistent)))
        .await
        .unwrap();
    c.wait_converged(10).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_that_takes_seconds_to_send_still_installs() {
    // A snapshot of some hundreds of megabytes takes seconds to send and to install; openraft's
    // own default deadline for the whole transfer is 200 ms, after which it gives up and starts
    // over, so such a member would never catch up.
    let mut c = Cluster::start(3).await;
    let leader = c.wait_leader(10).await;
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    c.stop(victim).await;
    for i in 0..120 {
        c.node(leader)
            .submit(env(0, create(&format!("/s{i}"), CreateMode::Persistent)))
            .await
            .unwrap();
    }
    c.router
        .delay_snapshots(std::time::Duration::from_millis(1500));
    let n = c.open(victim, Arc::new(MemEngine::default())).await;
    c.wait_converged(20).await;
    assert!(n.tree().read().get("/s119").is_some());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_requests_change_nothing_and_answer_with_their_code() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader(10).await;
    let f = c.nodes().into_iter().find(|n| n.id() != leader).unwrap();
    let s = new_session(f.as_ref(), 30_000).await;
    f.submit(env(s, create("/x", CreateMode::Persistent)))
        .await
        .unwrap();
    let dup = f
        .submit(env(s, create("/x", CreateMode::Persistent)))
        .await
        .unwrap();
    assert_eq!(dup.outcome, Outcome::Failed(roster_core::Code::NodeExists));
    let bad = f
        .submit(env(
            s,
            Request::Op(WriteOp::SetData {
                path: "/x".into(),
                data: vec![1],
                version: 7,
            }),
        ))
        .await
        .unwrap();
    assert_eq!(bad.outcome, Outcome::Failed(roster_core::Code::BadVersion));
    c.wait_converged(10).await;
    c.shutdown().await;
}
