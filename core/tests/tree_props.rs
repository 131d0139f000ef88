//! Property tests on the tree: random operation sequences, prepared one at a time or pipelined
//! (many prepared before any is applied), replayed from the log, and restored from a snapshot,
//! must all give identical outcomes, state and stats; a snapshot view stays as it was taken.

use proptest::prelude::*;
use roster_core::acl::{Acl, AuthInfo};
use roster_core::tree::Tree;
use roster_core::tree::prep::{Outstanding, PrepOptions};
use roster_core::tree::snapshot::Restorer;
use roster_core::txn::{Envelope, Outcome, Request, Txn, TxnOp, WriteOp};
use roster_core::{CreateMode, SessionId};
use std::sync::Arc;

const PATHS: &[&str] = &["/a", "/a/b", "/a/b/c", "/d", "/d/e", "/a/x", "/c"];

fn arb_path() -> impl Strategy<Value = String> {
    prop::sample::select(PATHS).prop_map(str::to_owned)
}

fn arb_mode() -> impl Strategy<Value = CreateMode> {
    prop::sample::select(vec![
        CreateMode::Persistent,
        CreateMode::Ephemeral,
        CreateMode::PersistentSequential,
        CreateMode::EphemeralSequential,
        CreateMode::Container,
        CreateMode::PersistentWithTtl,
    ])
}

fn arb_write() -> impl Strategy<Value = WriteOp> {
    prop_oneof![
        (
            arb_path(),
            prop::collection::vec(any::<u8>(), 0..8),
            arb_mode()
        )
            .prop_map(|(path, data, mode)| {
                WriteOp::Create {
                    path,
                    data,
                    acl: Acl::open_unsafe(),
                    mode,
                    ttl: 1000,
                }
            }),
        (arb_path(), -1i32..3).prop_map(|(path, version)| WriteOp::Delete { path, version }),
        (
            arb_path(),
            prop::collection::vec(any::<u8>(), 0..8),
            -1i32..3
        )
            .prop_map(|(path, data, version)| WriteOp::SetData {
                path,
                data,
                version
            }),
        (arb_path(), -1i32..2).prop_map(|(path, version)| WriteOp::Check { path, version }),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Op(SessionId, WriteOp),
    Multi(SessionId, Vec<WriteOp>),
    Close(SessionId),
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1i64..4, arb_write()).prop_map(|(s, w)| Step::Op(s, w)),
        2 => (1i64..4, prop::collection::vec(arb_write(), 1..4)).prop_map(|(s, w)| Step::Multi(s, w)),
        1 => (1i64..4).prop_map(Step::Close),
    ]
}

fn env(step: &Step) -> Envelope {
    let (session, request) = match step {
        Step::Op(s, w) => (*s, Request::Op(w.clone())),
        Step::Multi(s, w) => (*s, Request::Multi(w.clone())),
        Step::Close(s) => (*s, Request::CloseSession),
    };
    Envelope {
        session,
        auth: Arc::new(AuthInfo::default()),
        request,
    }
}

/// A tree with sessions 1..=3 open.
fn fresh(log: &mut Vec<Txn>) -> Tree {
    let mut t = Tree::new();
    for s in 1..=3 {
        let txn = Txn {
            zxid: s,
            time: 0,
            session: s,
            op: TxnOp::CreateSession {
                timeout_ms: 4000,
                passwd: vec![0; 16],
            },
        };
        t.apply(&txn);
        log.push(txn);
    }
    t
}

/// Run steps, preparing `chunk` of them before applying any; returns outcomes, tree, log.
fn run(steps: &[Step], chunk: usize) -> (Vec<Outcome>, Tree, Vec<Txn>) {
    let opts = PrepOptions {
        extended_types: true,
    };
    let mut log = Vec::new();
    let mut tree = fresh(&mut log);
    let mut out = Outstanding::default();
    let mut zxid = 100;
    let mut outcomes = Vec::new();
    for group in steps.chunks(chunk.max(1)) {
        let mut prepared = Vec::new();
        for step in group {
            let time = 1_000 + zxid;
            match out.prepare(&tree, &env(step), zxid, time, &opts) {
                Ok(op) => {
                    let session = env(step).session;
                    prepared.push(Ok(Txn {
                        zxid,
                        time,
                        session,
                        op,
                    }));
                    zxid += 1;
                }
                Err(o) => prepared.push(Err(o)),
            }
        }
        for p in prepared {
            match p {
                Ok(txn) => {
                    outcomes.push(tree.apply(&txn));
                    out.applied(txn.zxid);
                    log.push(txn);
                }
                Err(o) => outcomes.push(o),
            }
        }
        assert!(out.is_empty(), "everything prepared was applied");
    }
    (outcomes, tree, log)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn pipelined_prep_matches_one_at_a_time(steps in prop::collection::vec(arb_step(), 1..60), chunk in 2usize..12) {
        let (o1, t1, _) = run(&steps, 1);
        let (o2, t2, _) = run(&steps, chunk);
        prop_assert_eq!(o1, o2);
        prop_assert_eq!(t1.snapshot(), t2.snapshot());
    }

    #[test]
    fn log_replay_and_snapshot_restore_give_identical_state(steps in prop::collection::vec(arb_step(), 1..60)) {
        let (_, tree, log) = run(&steps, 3);
        let mut replayed = Tree::new();
        for txn in &log {
            replayed.apply(txn);
        }
        prop_assert_eq!(replayed.snapshot(), tree.snapshot());
        let restored = Tree::restore(&tree.snapshot()).unwrap();
        prop_assert_eq!(restored.snapshot(), tree.snapshot());
        prop_assert_eq!(restored.last_zxid(), tree.last_zxid());
        prop_assert_eq!(restored.ephemeral_count(), tree.ephemeral_count());
        // Stats are internally consistent: numChildren and dataLength match the node.
        for p in PATHS.iter().chain(["/", "/zookeeper"].iter()) {
            if let Some(n) = tree.get(p) {
                prop_assert_eq!(n.stat.num_children as usize, n.children.len());
                prop_assert_eq!(n.stat.data_length as usize, n.data.len());
            }
        }
    }

    /// A snapshot restored from pieces of any size (a file read a buffer at a time, frames from
    /// a socket) is the state it was taken from, sessions and ephemerals included.
    #[test]
    fn a_snapshot_fed_in_pieces_restores_the_same_state(
        steps in prop::collection::vec(arb_step(), 1..60),
        piece in 1usize..300,
    ) {
        let (_, tree, _) = run(&steps, 3);
        let bytes = tree.snapshot_view().encode();
        let mut r = Restorer::new();
        for c in bytes.chunks(piece) {
            r.push(c).unwrap();
        }
        let restored = r.finish().unwrap();
        prop_assert_eq!(restored.snapshot(), tree.snapshot());
        prop_assert_eq!(restored.ephemeral_count(), tree.ephemeral_count());
        prop_assert_eq!(restored.data_size(), tree.data_size());
        let read = Tree::restore_from(&bytes[..]).unwrap();
        prop_assert_eq!(read.snapshot(), tree.snapshot());
    }

    /// A snapshot view taken at some point is the state at that point whatever is applied to
    /// the tree afterwards (writes after a snapshot copy the nodes they touch instead of
    /// changing what the view shares), and the tree itself ends as if no view had been taken.
    #[test]
    fn a_snapshot_view_is_frozen_at_the_point_it_was_taken(
        steps in prop::collection::vec(arb_step(), 2..60),
        cut in any::<prop::sample::Index>(),
    ) {
        let (_, _, log) = run(&steps, 3);
        let at = cut.index(log.len() + 1);
        let mut tree = Tree::new();
        for txn in &log[..at] {
            tree.apply(txn);
        }
        let expected = tree.snapshot();
        let view = tree.snapshot_view();
        for txn in &log[at..] {
            tree.apply(txn);
        }
        prop_assert_eq!(&view.encode_canonical(), &expected);
        prop_assert_eq!(Tree::restore(&view.encode()).unwrap().snapshot(), expected);
        let mut replayed = Tree::new();
        for txn in &log {
            replayed.apply(txn);
        }
        prop_assert_eq!(tree.snapshot(), replayed.snapshot());
    }
}
