//! ZooKeeper semantics of the tree, checked op by op (values as Apache ZooKeeper 3.8 gives them).

use roster_core::acl::{self, Acl, AuthInfo, Id, perms};
use roster_core::tree::Tree;
use roster_core::tree::prep::{Outstanding, PrepOptions};
use roster_core::txn::{Envelope, OpResult, Outcome, Request, Txn, TxnOp, WriteOp};
use roster_core::{Code, CreateMode};
use std::sync::Arc;

struct Zk {
    tree: Tree,
    out: Outstanding,
    zxid: i64,
    auth: Arc<AuthInfo>,
}

impl Zk {
    fn new() -> Zk {
        let mut tree = Tree::new();
        tree.apply(&Txn {
            zxid: 1,
            time: 0,
            session: 7,
            op: TxnOp::CreateSession {
                timeout_ms: 4000,
                passwd: vec![],
            },
        });
        Zk {
            tree,
            out: Outstanding::default(),
            zxid: 2,
            auth: Arc::new(AuthInfo::default()),
        }
    }
    fn req(&mut self, session: i64, request: Request) -> Outcome {
        let env = Envelope {
            session,
            auth: self.auth.clone(),
            request,
        };
        let opts = PrepOptions {
            extended_types: true,
        };
        match self
            .out
            .prepare(&self.tree, &env, self.zxid, 1000 * self.zxid, &opts)
        {
            Ok(op) => {
                let txn = Txn {
                    zxid: self.zxid,
                    time: 1000 * self.zxid,
                    session,
                    op,
                };
                self.zxid += 1;
                let o = self.tree.apply(&txn);
                self.out.applied(txn.zxid);
                o
            }
            Err(o) => o,
        }
    }
    fn op(&mut self, w: WriteOp) -> Outcome {
        self.req(7, Request::Op(w))
    }
    fn create(&mut self, path: &str, mode: CreateMode) -> Outcome {
        self.op(WriteOp::Create {
            path: path.into(),
            data: b"x".to_vec(),
            acl: Acl::open_unsafe(),
            mode,
            ttl: 0,
        })
    }
}

fn created(o: &Outcome) -> String {
    match o {
        Outcome::Op(OpResult::Created { path, .. }) => path.clone(),
        other => panic!("expected a create, got {other:?}"),
    }
}

#[test]
fn sequential_names_come_from_creations_and_cversion_counts_both() {
    let mut zk = Zk::new();
    zk.create("/p", CreateMode::Persistent);
    assert_eq!(
        created(&zk.create("/p/x", CreateMode::PersistentSequential)),
        "/p/x0000000000"
    );
    zk.op(WriteOp::Delete {
        path: "/p/x0000000000".into(),
        version: -1,
    });
    // ZooKeeper 3.8: the next name is ...01 and the client-visible cversion is 3.
    assert_eq!(
        created(&zk.create("/p/x", CreateMode::PersistentSequential)),
        "/p/x0000000001"
    );
    let st = zk.tree.get("/p").unwrap().client_stat();
    assert_eq!((st.cversion, st.num_children), (3, 1));
    assert_eq!(st.pzxid, zk.tree.last_zxid());
}

#[test]
fn versions_and_errors() {
    let mut zk = Zk::new();
    assert_eq!(
        zk.create("/a", CreateMode::Persistent),
        Outcome::Op(OpResult::Created {
            path: "/a".into(),
            stat: zk.tree.get("/a").unwrap().stat
        })
    );
    assert_eq!(
        zk.create("/a", CreateMode::Persistent),
        Outcome::Failed(Code::NodeExists)
    );
    assert_eq!(
        zk.create("/no/parent", CreateMode::Persistent),
        Outcome::Failed(Code::NoNode)
    );
    assert_eq!(
        zk.create("/bad/", CreateMode::Persistent),
        Outcome::Failed(Code::BadArguments)
    );
    assert_eq!(
        zk.op(WriteOp::SetData {
            path: "/a".into(),
            data: vec![1],
            version: 3
        }),
        Outcome::Failed(Code::BadVersion)
    );
    match zk.op(WriteOp::SetData {
        path: "/a".into(),
        data: vec![1, 2],
        version: 0,
    }) {
        Outcome::Op(OpResult::DataSet { stat }) => {
            assert_eq!((stat.version, stat.data_length), (1, 2))
        }
        o => panic!("{o:?}"),
    }
    zk.create("/a/b", CreateMode::Persistent);
    assert_eq!(
        zk.op(WriteOp::Delete {
            path: "/a".into(),
            version: -1
        }),
        Outcome::Failed(Code::NotEmpty)
    );
    assert_eq!(
        zk.op(WriteOp::Delete {
            path: "/zookeeper/quota".into(),
            version: -1
        }),
        Outcome::Failed(Code::BadArguments)
    );
    assert!(zk.tree.get("/zookeeper/config").is_some());
}

#[test]
fn ephemerals_die_with_their_session_and_take_no_children() {
    let mut zk = Zk::new();
    zk.create("/e", CreateMode::Ephemeral);
    assert_eq!(zk.tree.get("/e").unwrap().stat.ephemeral_owner, 7);
    assert_eq!(
        zk.create("/e/c", CreateMode::Persistent),
        Outcome::Failed(Code::NoChildrenForEphemerals)
    );
    assert_eq!(zk.req(7, Request::CloseSession), Outcome::SessionClosed);
    assert!(zk.tree.get("/e").is_none());
    assert_eq!(
        zk.create("/x", CreateMode::Persistent),
        Outcome::Failed(Code::SessionExpired)
    );
}

#[test]
fn multi_is_all_or_nothing_with_zookeeper_results() {
    let mut zk = Zk::new();
    let ops = vec![
        WriteOp::Create {
            path: "/m".into(),
            data: vec![],
            acl: Acl::open_unsafe(),
            mode: CreateMode::Persistent,
            ttl: 0,
        },
        WriteOp::Create {
            path: "/m/c".into(),
            data: vec![],
            acl: Acl::open_unsafe(),
            mode: CreateMode::Persistent,
            ttl: 0,
        },
        WriteOp::Check {
            path: "/m".into(),
            version: 5,
        },
        WriteOp::Delete {
            path: "/m/c".into(),
            version: -1,
        },
    ];
    let o = zk.req(7, Request::Multi(ops.clone()));
    assert_eq!(
        o,
        Outcome::Multi(vec![
            OpResult::Error(Code::Ok),
            OpResult::Error(Code::Ok),
            OpResult::Error(Code::BadVersion),
            OpResult::Error(Code::RuntimeInconsistency),
        ])
    );
    assert_eq!(o.code(), Code::BadVersion);
    assert!(zk.tree.get("/m").is_none(), "nothing applied");
    let mut ok = ops;
    ok[2] = WriteOp::Check {
        path: "/m".into(),
        version: 0,
    };
    match zk.req(7, Request::Multi(ok)) {
        Outcome::Multi(rs) => {
            assert!(matches!(rs[0], OpResult::Created { .. }));
            assert_eq!(rs[2], OpResult::Checked);
            assert_eq!(rs[3], OpResult::Deleted);
        }
        o => panic!("{o:?}"),
    }
    assert!(zk.tree.get("/m").is_some() && zk.tree.get("/m/c").is_none());
}

#[test]
fn containers_and_ttl_nodes_become_due() {
    let mut zk = Zk::new();
    zk.create("/c", CreateMode::Container);
    assert!(
        zk.tree.expired_containers(i64::MAX).is_empty(),
        "never had a child"
    );
    zk.create("/c/x", CreateMode::Persistent);
    zk.op(WriteOp::Delete {
        path: "/c/x".into(),
        version: -1,
    });
    assert_eq!(zk.tree.expired_containers(0), vec!["/c".to_string()]);
    let o = zk.op(WriteOp::Create {
        path: "/t".into(),
        data: vec![],
        acl: Acl::open_unsafe(),
        mode: CreateMode::PersistentWithTtl,
        ttl: 500,
    });
    let mtime = match o {
        Outcome::Op(OpResult::Created { stat, .. }) => stat.mtime,
        o => panic!("{o:?}"),
    };
    assert!(
        !zk.tree
            .expired_containers(mtime + 499)
            .contains(&"/t".to_string())
    );
    assert!(
        zk.tree
            .expired_containers(mtime + 500)
            .contains(&"/t".to_string())
    );
    let no_ttl = zk.op(WriteOp::Create {
        path: "/t2".into(),
        data: vec![],
        acl: Acl::open_unsafe(),
        mode: CreateMode::PersistentWithTtl,
        ttl: 0,
    });
    assert_eq!(no_ttl, Outcome::Failed(Code::BadArguments));
}

#[test]
fn acls_guard_operations() {
    let mut zk = Zk::new();
    let digest = acl::digest_id("alice:secret");
    let acl = vec![Acl {
        perms: perms::ALL,
        id: Id::new("digest", &digest),
    }];
    zk.op(WriteOp::Create {
        path: "/s".into(),
        data: vec![],
        acl,
        mode: CreateMode::Persistent,
        ttl: 0,
    });
    assert_eq!(
        zk.op(WriteOp::SetData {
            path: "/s".into(),
            data: vec![],
            version: -1
        }),
        Outcome::Failed(Code::NoAuth)
    );
    zk.auth = Arc::new(AuthInfo {
        ids: vec![Id::new("digest", &digest)],
    });
    assert!(matches!(
        zk.op(WriteOp::SetData {
            path: "/s".into(),
            data: vec![],
            version: -1
        }),
        Outcome::Op(_)
    ));
    let bad = vec![Acl {
        perms: perms::ALL,
        id: Id::new("nosuch", "x"),
    }];
    assert_eq!(
        zk.op(WriteOp::SetAcl {
            path: "/s".into(),
            acl: bad,
            version: -1
        }),
        Outcome::Failed(Code::InvalidAcl)
    );
}

/// Every write fires the change feed's recursive watch on `/`, and the feed keeps its events: the
/// events must carry the tree's own copy of the path, not a fresh one per event.
#[test]
fn watch_events_share_the_trees_copy_of_the_path() {
    use roster_core::watch::{WatchKind, WatchSink, WatchedEvent};
    #[derive(Default)]
    struct Keep(parking_lot::Mutex<Vec<WatchedEvent>>);
    impl WatchSink for Keep {
        fn notify(&self, e: WatchedEvent) {
            self.0.lock().push(e);
        }
    }
    let mut zk = Zk::new();
    let keep = Arc::new(Keep::default());
    {
        let mut w = zk.tree.watches().lock();
        w.register_sink(99, keep.clone());
        w.add(99, WatchKind::PersistentRecursive, "/");
    }
    created(&zk.create("/a", CreateMode::Persistent));
    zk.op(WriteOp::SetData {
        path: "/a".into(),
        data: b"y".to_vec(),
        version: -1,
    });
    zk.op(WriteOp::Delete {
        path: "/a".into(),
        version: -1,
    });
    let events = keep.0.lock();
    let paths: Vec<_> = events.iter().filter(|e| &*e.path == "/a").collect();
    assert_eq!(paths.len(), 3, "created, changed, deleted: {events:?}");
    for e in &paths[1..] {
        assert!(
            Arc::ptr_eq(&paths[0].path, &e.path),
            "{:?} carries its own copy of the path",
            e.kind
        );
    }
}
