//! The same requests give the same answers and the same tree (up to zxids and times) on a Raft
//! cluster as on standalone ZAB: sequential names, versions, cversions, multi, error codes.

mod common;

use common::*;
use roster_core::acl::Acl;
use roster_core::backend::Backend;
use roster_core::storage::MemEngine;
use roster_core::txn::{OpResult, Outcome, Request, WriteOp};
use roster_core::{CreateMode, Stat};
use roster_zab::{Standalone, ZabConfig};
use std::sync::Arc;

fn set(path: &str, version: i32) -> Request {
    Request::Op(WriteOp::SetData {
        path: path.into(),
        data: b"v".to_vec(),
        version,
    })
}

fn delete(path: &str, version: i32) -> Request {
    Request::Op(WriteOp::Delete {
        path: path.into(),
        version,
    })
}

/// The request shapes of the ZAB tests plus the classic failure cases.
fn script() -> Vec<Request> {
    let mut r = vec![
        create("/q", CreateMode::Persistent),
        create("/q", CreateMode::Persistent),
        create("/missing/child", CreateMode::Persistent),
    ];
    for _ in 0..5 {
        r.push(create("/q/n-", CreateMode::PersistentSequential));
    }
    r.push(create("/q/e-", CreateMode::EphemeralSequential));
    r.extend([
        set("/q", -1),
        set("/q", 1),
        set("/q", 0),
        delete("/q/n-0000000000", 5),
        delete("/q/n-0000000000", 0),
        create("/q/n-", CreateMode::PersistentSequential),
        delete("/q", -1),
        Request::Multi(vec![
            WriteOp::Create {
                path: "/m".into(),
                data: vec![],
                acl: Acl::open_unsafe(),
                mode: CreateMode::Persistent,
                ttl: 0,
            },
            WriteOp::Check {
                path: "/m".into(),
                version: 0,
            },
            WriteOp::SetData {
                path: "/m".into(),
                data: b"x".to_vec(),
                version: 0,
            },
        ]),
        Request::Multi(vec![
            WriteOp::SetData {
                path: "/m".into(),
                data: b"y".to_vec(),
                version: 1,
            },
            WriteOp::Check {
                path: "/m".into(),
                version: 7,
            },
        ]),
        create("/c", CreateMode::Container),
        create("/c/x", CreateMode::Persistent),
    ]);
    r
}

/// An outcome with zxids and times zeroed.
fn normalize(o: Outcome) -> Outcome {
    fn stat(s: Stat) -> Stat {
        Stat {
            czxid: 0,
            mzxid: 0,
            pzxid: 0,
            ctime: 0,
            mtime: 0,
            ephemeral_owner: if s.ephemeral_owner > 0 {
                1
            } else {
                s.ephemeral_owner
            },
            ..s
        }
    }
    fn op(r: OpResult) -> OpResult {
        match r {
            OpResult::Created { path, stat: s } => OpResult::Created {
                path,
                stat: stat(s),
            },
            OpResult::DataSet { stat: s } => OpResult::DataSet { stat: stat(s) },
            OpResult::AclSet { stat: s } => OpResult::AclSet { stat: stat(s) },
            r => r,
        }
    }
    match o {
        Outcome::Op(r) => Outcome::Op(op(r)),
        Outcome::Multi(rs) => Outcome::Multi(rs.into_iter().map(op).collect()),
        o => o,
    }
}

async fn run(b: &dyn Backend) -> Vec<Outcome> {
    let s = new_session(b, 60_000).await;
    let mut out = Vec::new();
    for req in script() {
        out.push(normalize(b.submit(env(s, req)).await.unwrap().outcome));
    }
    out
}

/// Paths with normalized stats and data.
fn shape(b: &dyn Backend, paths: &[&str]) -> Vec<Option<(Stat, Vec<u8>)>> {
    let t = b.tree();
    let t = t.read();
    paths
        .iter()
        .map(|p| {
            t.get(p).map(|n| {
                let s = n.client_stat();
                (
                    Stat {
                        czxid: 0,
                        mzxid: 0,
                        pzxid: 0,
                        ctime: 0,
                        mtime: 0,
                        ephemeral_owner: s.ephemeral_owner.signum(),
                        ..s
                    },
                    n.data.clone(),
                )
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_answers_like_zab() {
    let zab = Standalone::open(Arc::new(MemEngine::default()), ZabConfig::default()).unwrap();
    let want = run(zab.as_ref()).await;
    let c = Cluster::start(3).await;
    let leader = c.wait_leader(10).await;
    let f = c.nodes().into_iter().find(|n| n.id() != leader).unwrap();
    let got = run(f.as_ref()).await;
    assert_eq!(got, want);
    let paths = [
        "/q",
        "/q/n-0000000000",
        "/q/n-0000000001",
        "/q/n-0000000005",
        "/q/e-0000000005",
        "/q/n-0000000006",
        "/m",
        "/c",
        "/c/x",
    ];
    assert_eq!(shape(f.as_ref(), &paths), shape(zab.as_ref(), &paths));
    zab.close();
    c.shutdown().await;
}
