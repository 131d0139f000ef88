//! A leader cut off from the others may not know it has been deposed. Whatever it answers must
//! still be linearizable: it may not answer from its stale replica as if it were current.

mod common;

use common::*;
use roster_core::CreateMode;
use roster_core::backend::Backend;
use roster_core::txn::{OpResult, Outcome, Request, WriteOp};
use std::time::Duration;

fn set(path: &str, data: &[u8], version: i32) -> Request {
    Request::Op(WriteOp::SetData {
        path: path.into(),
        data: data.to_vec(),
        version,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deposed_leader_does_not_fail_a_cas_against_its_stale_replica() {
    let c = Cluster::start(3).await;
    let old = c.wait_leader(10).await;
    let s = new_session(c.node(old).as_ref(), 60_000).await;
    c.node(old)
        .submit(env(s, create("/x", CreateMode::Persistent)))
        .await
        .unwrap();
    c.wait_converged(10).await;
    c.router.isolate(old);
    let others: Vec<_> = c.nodes().into_iter().filter(|n| n.id() != old).collect();
    wait_for(10, "a new leader among the others", || {
        others.iter().any(|n| n.is_leading())
    })
    .await;
    let a = retry(10, "set at the new leader", || {
        others[0].submit(env(s, set("/x", b"new", 0)))
    })
    .await;
    assert!(
        matches!(a.outcome, Outcome::Op(OpResult::DataSet { stat }) if stat.version == 1),
        "{a:?}"
    );
    eprintln!(
        "old leader {old} still leading in its own eyes: {}",
        c.node(old).is_leading()
    );
    // The current version is 1. The old leader's replica says 0: it must not answer BadVersion
    // (nor anything else) from that.
    let r = tokio::time::timeout(
        Duration::from_secs(8),
        c.node(old).submit(env(s, set("/x", b"cas", 1))),
    )
    .await;
    eprintln!("CAS at the deposed leader: {r:?}");
    match r {
        Err(_) | Ok(Err(_)) => {}
        Ok(Ok(a)) => panic!("a deposed leader answered a CAS at the current version with {a:?}"),
    }
    // And a set that its stale state would accept must not be acknowledged either.
    let r = tokio::time::timeout(
        Duration::from_secs(8),
        c.node(old).submit(env(s, set("/x", b"cas0", 0))),
    )
    .await;
    if let Ok(Ok(a)) = r {
        panic!("a deposed leader acknowledged {a:?}");
    }
    c.shutdown().await;
}

/// openraft 0.10 restores a restarted leader's leadership in its old term by default. Our log
/// store serves appended entries to replication before they are synced, so a leader that
/// crashed could come back without entries its followers hold, and hand out the same log ids
/// and zxids again (fault harness seed 5: a CAS answered with another write's outcome). A
/// restarted leader must come back as a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_leader_does_not_resume_its_old_term() {
    use roster_raft::openraft::ServerState;
    use roster_raft::openraft::async_runtime::WatchReceiver;
    let mut c = Cluster::start(3).await;
    let old = c.wait_leader(10).await;
    let term = c.node(old).status().epoch;
    let engine = c.stop(old).await;
    c.router.isolate(old);
    let n = c.open(old, engine).await;
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        let m = n.raft().metrics().borrow_watched().clone();
        assert!(
            m.state != ServerState::Leader,
            "member {old} came back as leader of term {} (led term {term} before)",
            m.current_term
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.router.heal(old);
    c.wait_converged(10).await;
    c.shutdown().await;
}
