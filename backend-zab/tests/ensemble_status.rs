//! An ensemble member's `status()` (read by `/metrics`, the gRPC cluster service and the registry
//! layouts, all the time) must never deadlock against the member applying a commit. It once took
//! the tree's read lock twice in one expression: with a writer queued between the two (parking_lot
//! locks are fair, so the second read waits behind the writer, and the writer waits for the first
//! read), a follower under load hung for good — its clients timed out and `/metrics` stopped
//! answering.

use roster_core::backend::Backend;
use roster_core::storage::{Engine, MemEngine};
use roster_core::tree::prep::PrepOptions;
use roster_zab::quorum::PeerConfig;
use roster_zab::{Ensemble, EnsembleConfig, MemberAddr};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_never_deadlocks_against_a_writer() {
    let cfg = EnsembleConfig {
        peer: PeerConfig {
            id: 1,
            voters: [1].into_iter().collect(),
            observers: Default::default(),
            tick_ms: 200,
            init_limit: 10,
            sync_limit: 5,
            prep: PrepOptions {
                extended_types: true,
            },
            snapshot: roster_zab::SnapshotPolicy::count(100_000),
            snapshots_retained: 3,
            container_check_ms: 60_000,
            broken_quorum: None,
            snapshot_inline: false,
            snapshot_dir: None,
            log_dir: None,
        },
        members: HashMap::from([(
            1,
            MemberAddr {
                host: "127.0.0.1".into(),
                quorum_port: free_port(),
                election_port: free_port(),
            },
        )]),
    };
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::default());
    let ens = Ensemble::start(cfg, engine).await.unwrap();
    let tree = ens.tree();
    let stop = Arc::new(AtomicBool::new(false));
    // A writer that keeps queueing for the tree's write lock, as the member's apply does under load.
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                drop(tree.write());
            }
        })
    };
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let reader = {
        let ens = ens.clone();
        std::thread::spawn(move || {
            for _ in 0..300_000 {
                std::hint::black_box(ens.status());
            }
            let _ = done_tx.send(());
        })
    };
    let finished = done_rx.recv_timeout(Duration::from_secs(30)).is_ok();
    stop.store(true, Ordering::Relaxed);
    assert!(
        finished,
        "status() deadlocked against a queued writer (the reader thread is stuck)"
    );
    reader.join().unwrap();
    writer.join().unwrap();
}
