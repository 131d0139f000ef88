//! Runtime membership: a learner is added (through a follower), catches up and is promoted; a
//! member is removed; writes continue throughout.

mod common;

use common::*;
use roster_core::CreateMode;
use roster_core::backend::{Backend, Role};
use roster_core::storage::MemEngine;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_learner_is_added_promoted_and_a_member_removed() {
    let mut c = Cluster::start(3).await;
    let leader = c.wait_leader(10).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let s = new_session(c.node(leader).as_ref(), 60_000).await;
    for i in 0..50 {
        c.node(follower)
            .submit(env(s, create(&format!("/m{i}"), CreateMode::Persistent)))
            .await
            .unwrap();
    }
    // A new, empty member joins as a learner (asked through a follower).
    let learner = c.open(4, Arc::new(MemEngine::default())).await;
    c.node(follower)
        .add_learner(4, "mem:4".into())
        .await
        .expect("add learner");
    let members = c.node(leader).members();
    assert!(members.learners.contains_key(&4));
    assert_eq!(members.voters.len(), 3);
    c.wait_converged(10).await;
    wait_for(5, "learner reports observer", || {
        learner.status().role == Role::Observer
    })
    .await;
    // A learner forwards writes like any member.
    learner
        .submit(env(s, create("/from-learner", CreateMode::Persistent)))
        .await
        .unwrap();
    assert!(learner.tree().read().get("/from-learner").is_some());

    learner.promote(4).await.expect("promote");
    let members = c.node(leader).members();
    assert!(members.voters.contains_key(&4));
    assert!(members.learners.is_empty());
    wait_for(5, "promoted member reports follower", || {
        learner.status().role == Role::Follower
    })
    .await;

    // Remove a voter that is not the leader; the cluster goes on with 3 voters.
    let victim = (1..=3).find(|id| *id != leader && *id != follower).unwrap();
    c.node(leader)
        .remove_member(victim)
        .await
        .expect("remove member");
    let members = c.node(leader).members();
    assert!(!members.voters.contains_key(&victim));
    assert!(!members.learners.contains_key(&victim));
    assert_eq!(members.voters.len(), 3);
    c.stop(victim).await;
    for i in 0..10 {
        let a = retry(10, "write after removal", || {
            learner.submit(env(
                s,
                create(&format!("/after{i}"), CreateMode::Persistent),
            ))
        })
        .await;
        assert!(learner.tree().read().get(&created(&a)).is_some());
    }
    c.wait_converged(10).await;
    assert_eq!(c.node(leader).status().members, 3);
    c.shutdown().await;
}
