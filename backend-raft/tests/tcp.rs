//! Members joined by the real TCP transport (`roster_raft::tcp`) on loopback: forwarding,
//! restart from the store, a wiped member catching up by snapshot (whole, and in pieces when it
//! is larger than a frame), zxids across leader changes, and the frame limit.

mod common;

use common::{create, env, init_tracing, retry, wait_for};
use roster_core::CreateMode;
use roster_core::acl::Acl;
use roster_core::backend::Backend;
use roster_core::storage::{Engine, MemEngine};
use roster_core::txn::{Request, WriteOp};
use roster_raft::network::{Forward, Peer, Transport, TransportError};
use roster_raft::{ForwardError, RaftBackend, RaftConfig, TcpConfig, TcpTransport, tcp};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

struct Member {
    node: Arc<RaftBackend>,
    engine: Arc<MemEngine>,
    server: JoinHandle<()>,
}

struct TcpCluster {
    addrs: BTreeMap<u64, String>,
    members: BTreeMap<u64, Member>,
    tcp: TcpConfig,
    /// Each member's snapshot directory, as on a server (a wiped member gets a new one).
    dirs: BTreeMap<u64, tempfile::TempDir>,
}

fn cfg(id: u64, addr: &str, snapshot_dir: &std::path::Path) -> RaftConfig {
    RaftConfig {
        addr: addr.to_string(),
        snapshot_dir: Some(snapshot_dir.to_path_buf()),
        ..common::cfg(id)
    }
}

impl TcpCluster {
    async fn start(n: u64) -> TcpCluster {
        TcpCluster::start_with(n, TcpConfig::default()).await
    }

    async fn start_with(n: u64, tcp: TcpConfig) -> TcpCluster {
        init_tracing();
        let mut addrs = BTreeMap::new();
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.insert(id, l.local_addr().unwrap().to_string());
            listeners.insert(id, l);
        }
        let mut c = TcpCluster {
            addrs,
            members: BTreeMap::new(),
            tcp,
            dirs: BTreeMap::new(),
        };
        for (id, l) in listeners {
            c.open_on(id, Arc::new(MemEngine::default()), l).await;
        }
        c.node(1).initialize(c.addrs.clone()).await.unwrap();
        c.wait_leader(10).await;
        c
    }

    async fn open_on(&mut self, id: u64, engine: Arc<MemEngine>, l: TcpListener) {
        let dyn_engine: Arc<dyn Engine> = engine.clone();
        let transport = TcpTransport::new(id, self.tcp.clone());
        let dir = self
            .dirs
            .entry(id)
            .or_insert_with(|| tempfile::tempdir().unwrap())
            .path()
            .to_path_buf();
        let node = RaftBackend::open(cfg(id, &self.addrs[&id], &dir), dyn_engine, transport)
            .await
            .unwrap();
        let server = tcp::serve(l, Arc::downgrade(&node), self.tcp.clone());
        self.members.insert(
            id,
            Member {
                node,
                engine,
                server,
            },
        );
    }

    async fn open(&mut self, id: u64, engine: Arc<MemEngine>) {
        let l = TcpListener::bind(&self.addrs[&id]).await.unwrap();
        self.open_on(id, engine, l).await;
    }

    async fn stop(&mut self, id: u64) -> Arc<MemEngine> {
        let m = self.members.remove(&id).unwrap();
        m.server.abort();
        // The listener is closed once the aborted task is gone: wait, so the port can be reused.
        let _ = m.server.await;
        m.node.shutdown().await;
        m.engine
    }

    fn node(&self, id: u64) -> Arc<RaftBackend> {
        self.members[&id].node.clone()
    }

    fn leader(&self) -> Option<u64> {
        let l: Vec<u64> = self
            .members
            .iter()
            .filter(|(_, m)| m.node.is_leading())
            .map(|(id, _)| *id)
            .collect();
        (l.len() == 1).then(|| l[0])
    }

    async fn wait_leader(&self, secs: u64) -> u64 {
        wait_for(secs, "a leader", || self.leader().is_some()).await;
        self.leader().unwrap()
    }

    async fn wait_converged(&self, secs: u64) {
        let nodes: Vec<_> = self.members.values().map(|m| m.node.clone()).collect();
        wait_for(secs, "members converged", || {
            let d: Vec<_> = nodes
                .iter()
                .map(|n| {
                    let t = n.tree();
                    let t = t.read();
                    (t.last_zxid(), t.digest())
                })
                .collect();
            d.windows(2).all(|w| w[0] == w[1])
        })
        .await;
    }

    async fn write(&self, via: u64, path: &str) -> i64 {
        let n = self.node(via);
        retry(20, path, || {
            n.submit(env(0, create(path, CreateMode::Persistent)))
        })
        .await
        .zxid
    }

    async fn shutdown(mut self) {
        let ids: Vec<u64> = self.members.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_forward_over_tcp_and_a_wiped_member_catches_up_by_snapshot() {
    let mut c = TcpCluster::start(3).await;
    let leader = c.wait_leader(10).await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    // A write through a follower travels to the leader over TCP and is applied there first.
    c.write(follower, "/a").await;
    c.wait_converged(10).await;

    // Restart a follower on its store: log, vote and snapshot are recovered.
    let other = (1..=3).find(|i| *i != leader && *i != follower).unwrap();
    let kept = c.stop(other).await;
    for i in 0..100 {
        c.write(leader, &format!("/k{i}")).await;
    }
    c.open(other, kept).await;
    c.wait_converged(20).await;

    // Wipe a follower: with snapshots every 40 entries and the log purged behind them, it can
    // only catch up by snapshot (and the leader must accept its log going backwards).
    let _ = c.stop(other).await;
    for i in 0..100 {
        c.write(follower, &format!("/w{i}")).await;
    }
    c.open(other, Arc::new(MemEngine::default())).await;
    c.wait_converged(30).await;
    let t = c.node(other).tree();
    assert!(t.read().get("/w99").is_some());
    assert!(t.read().get("/k0").is_some());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_larger_than_a_frame_reaches_a_wiped_member_in_pieces() {
    // Frames of at most 64 KiB, snapshots in 16 KiB pieces; the state below is ~300 KiB, so
    // the snapshot cannot travel as one frame.
    let small = TcpConfig {
        max_frame: 64 << 10,
        snapshot_chunk: 16 << 10,
        ..TcpConfig::default()
    };
    let mut c = TcpCluster::start_with(3, small).await;
    let leader = c.wait_leader(10).await;
    let wiped = (1..=3).find(|i| *i != leader).unwrap();
    let _ = c.stop(wiped).await;
    let value = vec![7u8; 1000];
    for i in 0..300 {
        let n = c.node(leader);
        let path = format!("/big/n{i:03}");
        if i == 0 {
            c.write(leader, "/big").await;
        }
        retry(20, &path, || {
            n.submit(env(
                0,
                Request::Op(WriteOp::Create {
                    path: path.clone(),
                    data: value.clone(),
                    acl: Acl::open_unsafe(),
                    mode: CreateMode::Persistent,
                    ttl: 0,
                }),
            ))
        })
        .await;
    }
    // Snapshots every 40 entries and the log purged behind them: only a snapshot can bring an
    // empty member up to date.
    c.dirs.remove(&wiped);
    c.open(wiped, Arc::new(MemEngine::default())).await;
    c.wait_converged(30).await;
    let t = c.node(wiped).tree();
    let node = t.read().get("/big/n299").map(|n| n.data.len());
    assert_eq!(node, Some(1000), "the last write reached the wiped member");
    // It stored what it installed as its snapshot file, and starts from it.
    let files = || {
        std::fs::read_dir(c.dirs[&wiped].path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("snapshot."))
            .count()
    };
    assert_eq!(files(), 1, "one snapshot file, whole");
    let engine = c.stop(wiped).await;
    c.open(wiped, engine).await;
    c.wait_converged(30).await;
    assert_eq!(
        c.node(wiped)
            .tree()
            .read()
            .get("/big/n299")
            .map(|n| n.data.len()),
        Some(1000),
        "it starts from the installed snapshot and its log"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zxids_strictly_increase_across_leader_changes_and_restarts() {
    let mut c = TcpCluster::start(3).await;
    let mut zxids = Vec::new();
    for round in 0..3 {
        let leader = c.wait_leader(15).await;
        let via = (1..=3).find(|i| *i != leader).unwrap();
        for i in 0..20 {
            zxids.push(c.write(via, &format!("/r{round}-{i}")).await);
        }
        // Depose the leader (restart it on its own store) so the next round runs in a new term.
        let term = c.node(via).status().epoch;
        let kept = c.stop(leader).await;
        wait_for(15, "a new leader", || {
            c.leader().is_some_and(|l| l != leader) && c.node(via).status().epoch > term
        })
        .await;
        c.open(leader, kept).await;
    }
    // Restart every member: the zxid keeps increasing after recovery.
    for id in 1..=3 {
        let kept = c.stop(id).await;
        c.open(id, kept).await;
    }
    c.wait_leader(15).await;
    zxids.push(c.write(1, "/after-restart").await);
    for w in zxids.windows(2) {
        assert!(w[1] > w[0], "zxid {:#x} after {:#x}", w[1], w[0]);
    }
    // Each round ran in a later term: the high 32 bits moved on.
    let epochs: std::collections::BTreeSet<i64> = zxids.iter().map(|z| z >> 32).collect();
    assert!(epochs.len() >= 4, "terms seen: {epochs:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frames_are_refused_not_sent() {
    init_tracing();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::default());
    let dir = tempfile::tempdir().unwrap();
    let node = RaftBackend::open(
        cfg(1, &addr, dir.path()),
        engine,
        TcpTransport::new(1, TcpConfig::default()),
    )
    .await
    .unwrap();
    node.initialize(BTreeMap::from([(1, addr.clone())]))
        .await
        .unwrap();
    // The server accepts at most 1 KiB frames.
    let small = TcpConfig {
        max_frame: 1024,
        ..TcpConfig::default()
    };
    let server = tcp::serve(l, Arc::downgrade(&node), small.clone());
    let peer = Peer { id: 1, addr };
    let big = env(
        0,
        roster_core::txn::Request::Op(roster_core::txn::WriteOp::Create {
            path: "/big".into(),
            data: vec![7; 4096],
            acl: roster_core::acl::Acl::open_unsafe(),
            mode: CreateMode::Persistent,
            ttl: 0,
        }),
    );
    // A sender with the same limit refuses to send it: nothing ran.
    let client = TcpTransport::new(9, small);
    match client.forward(&peer, Forward::Submit(big.clone())).await {
        Err(ForwardError::Transport(TransportError::Unreachable(m))) => {
            assert!(m.contains("frame limit"), "{m}")
        }
        r => panic!("{r:?}"),
    }
    // A sender with a larger limit sends it; the server drops the link, the request is lost.
    let client = TcpTransport::new(9, TcpConfig::default());
    match client.forward(&peer, Forward::Submit(big)).await {
        Err(ForwardError::Transport(TransportError::Lost(_))) => {}
        r => panic!("{r:?}"),
    }
    // The server is still up and answers normal requests.
    wait_for(10, "leader", || node.is_leading()).await;
    let small_write = env(0, create("/small", CreateMode::Persistent));
    let r = client.forward(&peer, Forward::Submit(small_write)).await;
    assert!(r.is_ok(), "{r:?}");
    server.abort();
    node.shutdown().await;
}
