//! The AP backend through the `Backend` trait (one member, in-memory engine): writes, ephemerals
//! and their session, capability refusals, zxids, and recovery of persistent data on reopen.

use roster_ap::{AP_CAPABILITIES, ApBackend, ApConfig};
use roster_core::acl::Acl;
use roster_core::backend::{Backend, BackendError};
use roster_core::storage::{Engine, MemEngine};
use roster_core::txn::{Envelope, OpResult, Outcome, Request, WriteOp};
use roster_core::{Code, CreateMode, SessionId};
use std::sync::Arc;

fn cfg() -> ApConfig {
    ApConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ApConfig::default()
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

async fn submit(b: &ApBackend, session: SessionId, r: Request) -> Result<Outcome, BackendError> {
    b.submit(Envelope {
        session,
        ..Envelope::internal(r)
    })
    .await
    .map(|a| a.outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_what_ap_supports_refuses_the_rest_and_recovers() {
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::default());
    let b = ApBackend::open(engine.clone(), cfg()).await.unwrap();
    assert_eq!(b.capabilities(), AP_CAPABILITIES);
    let o = submit(&b, 0, create("/a", CreateMode::Persistent))
        .await
        .unwrap();
    assert!(matches!(o, Outcome::Op(OpResult::Created { .. })), "{o:?}");
    assert_eq!(
        submit(&b, 0, create("/a", CreateMode::Persistent))
            .await
            .unwrap(),
        Outcome::Failed(Code::NodeExists)
    );
    assert_eq!(
        submit(&b, 0, create("/x/y", CreateMode::Persistent))
            .await
            .unwrap(),
        Outcome::Failed(Code::NoNode)
    );
    let set = Request::Op(WriteOp::SetData {
        path: "/a".into(),
        data: b"v2".to_vec(),
        version: -1,
    });
    let Outcome::Op(OpResult::DataSet { stat }) = submit(&b, 0, set).await.unwrap() else {
        panic!()
    };
    assert_eq!(stat.version, 1);
    let z1 = stat.mzxid;

    // Sessions and ephemerals.
    let Outcome::SessionCreated { session, .. } =
        submit(&b, 0, Request::CreateSession { timeout_ms: 30_000 })
            .await
            .unwrap()
    else {
        panic!()
    };
    submit(&b, session, create("/a/e", CreateMode::Ephemeral))
        .await
        .unwrap();
    assert_eq!(
        b.tree().read().get("/a/e").unwrap().stat.ephemeral_owner,
        session
    );
    submit(&b, session, Request::CloseSession).await.unwrap();
    assert!(b.tree().read().get("/a/e").is_none());
    assert!(b.tree().read().last_zxid() > z1);

    // Refusals.
    for r in [
        create("/a/s-", CreateMode::PersistentSequential),
        create("/a/t", CreateMode::PersistentWithTtl),
        Request::Op(WriteOp::SetData {
            path: "/a".into(),
            data: vec![],
            version: 1,
        }),
        Request::Op(WriteOp::Delete {
            path: "/a".into(),
            version: 0,
        }),
        Request::Multi(vec![WriteOp::Check {
            path: "/a".into(),
            version: 1,
        }]),
    ] {
        match submit(&b, 0, r.clone()).await {
            Err(BackendError::Unsupported { backend: "ap", .. }) => {}
            other => panic!("{r:?}: {other:?}"),
        }
    }
    let del = Request::Op(WriteOp::Delete {
        path: "/a".into(),
        version: -1,
    });
    submit(&b, 0, create("/b", CreateMode::Persistent))
        .await
        .unwrap();
    submit(&b, 0, create("/b/c", CreateMode::Persistent))
        .await
        .unwrap();
    assert_eq!(
        submit(
            &b,
            0,
            Request::Op(WriteOp::Delete {
                path: "/b".into(),
                version: -1
            })
        )
        .await
        .unwrap(),
        Outcome::Failed(Code::NotEmpty)
    );
    submit(&b, 0, del).await.unwrap();
    let before = b.tree().read().last_zxid();
    drop(b);

    // Reopen on the same engine: persistent data back, a new incarnation, higher zxids.
    let b2 = ApBackend::open(engine, cfg()).await.unwrap();
    assert_eq!(b2.incarnation(), 2);
    {
        let t = b2.tree();
        let t = t.read();
        assert!(t.get("/a").is_none(), "the delete survived");
        assert_eq!(t.get("/b/c").unwrap().data, b"/b/c");
        assert!(t.last_zxid() > before);
    }
}
