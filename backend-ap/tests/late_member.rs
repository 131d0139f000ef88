//! Two real AP members over loopback: a member started seconds after its peer gets the peer's
//! writes at once, not after the peer's reconnect backoff (which had grown to its 2 s cap while
//! this member was down) — the cluster test saw a fresh cluster's first write missing on a member.

use roster_ap::{ApBackend, ApConfig};
use roster_core::CreateMode;
use roster_core::acl::Acl;
use roster_core::backend::Backend;
use roster_core::storage::{Engine, MemEngine};
use roster_core::txn::{Envelope, Request, WriteOp};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A loopback port free for both TCP and UDP (the member binds both).
fn free_addr() -> SocketAddr {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        if std::net::UdpSocket::bind(addr).is_ok() {
            return addr;
        }
    }
}

fn cfg(id: u64, listen: SocketAddr, peer: (u64, SocketAddr)) -> ApConfig {
    ApConfig {
        server_id: id,
        listen,
        seeds: vec![peer],
        // Anti-entropy would repair the gap after its interval; the link itself must deliver.
        anti_entropy_ms: 600_000,
        ..ApConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_started_late_gets_writes_at_once() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::default());
    let a = ApBackend::open(engine, cfg(1, a_addr, (2, b_addr)))
        .await
        .unwrap();
    // Long enough for a's dialling of b to back off to the cap (50 ms doubling: 3.15 s).
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::default());
    let b = ApBackend::open(engine, cfg(2, b_addr, (1, a_addr)))
        .await
        .unwrap();

    a.submit(Envelope::internal(Request::Op(WriteOp::Create {
        path: "/late".into(),
        data: b"x".to_vec(),
        acl: Acl::open_unsafe(),
        mode: CreateMode::Persistent,
        ttl: 0,
    })))
    .await
    .unwrap();
    let written = Instant::now();
    while b.tree().read().get("/late").is_none() {
        assert!(
            // Without the wake-up it arrives ~1.85 s after b opened (a's 2 s backoff began at
            // 3.15 s); with it, within milliseconds — the margin is for a loaded machine.
            written.elapsed() < Duration::from_millis(1200),
            "the write reached the late member only after its peer's backoff"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
