//! Hand-written histories: accepted concurrent ones, classic violations, never-returned ops.

use super::models::{Register, RegisterInput as RI, RegisterOutput as RO};
use super::models::{Znode, ZnodeInput as ZI, ZnodeOutput as ZO};
use super::*;

const BUDGET: u64 = 1_000_000;

type ROp = Op<RI<u32>, RO<u32>>;

fn w(client: u64, call: u64, ret: u64, v: u32) -> ROp {
    Op::completed(client, call, ret, RI::Write(v), RO::Written)
}
fn r(client: u64, call: u64, ret: u64, v: Option<u32>) -> ROp {
    Op::completed(client, call, ret, RI::Read, RO::Read(v))
}
fn cas(client: u64, call: u64, ret: u64, expected: u32, new: u32, ok: bool) -> ROp {
    Op::completed(client, call, ret, RI::Cas { expected, new }, RO::Cas(ok))
}
fn w_lost(client: u64, call: u64, v: u32) -> ROp {
    Op::pending(client, call, RI::Write(v))
}

fn reg(history: &[ROp]) -> Verdict {
    check(&Register::new(), history, BUDGET)
}

#[track_caller]
fn assert_lin(history: &[ROp]) {
    let v = reg(history);
    assert!(v.is_linearizable(), "{}", v.explain(history));
}

#[track_caller]
fn assert_not_lin(history: &[ROp]) -> (Vec<usize>, usize) {
    match reg(history) {
        Verdict::NotLinearizable {
            longest_prefix,
            unplaceable,
        } => (longest_prefix, unplaceable),
        v => panic!("expected a violation, got {v:?}"),
    }
}

#[test]
fn empty_and_sequential_histories() {
    assert_lin(&[]);
    assert_lin(&[
        r(0, 0, 1, None),
        w(0, 2, 3, 1),
        r(0, 4, 5, Some(1)),
        w(0, 6, 7, 2),
        r(0, 8, 9, Some(2)),
    ]);
}

#[test]
fn concurrent_histories_are_accepted() {
    // Reads overlapping a write may see either value, in either order across clients so long as
    // each client's view moves forward.
    assert_lin(&[
        w(0, 0, 10, 1),
        w(1, 20, 100, 2),
        r(2, 30, 40, Some(1)),
        r(3, 30, 50, Some(2)),
        r(2, 60, 70, Some(2)),
        r(4, 110, 120, Some(2)),
    ]);
    // Two concurrent writes: a later read fixes which one came last.
    assert_lin(&[w(0, 0, 10, 1), w(1, 0, 10, 2), r(2, 20, 30, Some(1))]);
    assert_lin(&[w(0, 0, 10, 1), w(1, 0, 10, 2), r(2, 20, 30, Some(2))]);
    // A read overlapping a write may return the old value even if it returned after the write.
    assert_lin(&[w(0, 0, 10, 1), w(0, 11, 30, 2), r(1, 5, 40, Some(1))]);
    // Touching intervals are concurrent (closed intervals).
    assert_lin(&[w(0, 0, 10, 1), r(1, 10, 20, None)]);
}

#[test]
fn stale_read_after_completed_write_is_rejected() {
    let (prefix, stuck) = assert_not_lin(&[w(0, 0, 10, 1), w(0, 11, 20, 2), r(1, 30, 40, Some(1))]);
    assert_eq!(prefix, vec![0, 1]);
    assert_eq!(stuck, 2);
    assert_not_lin(&[w(0, 0, 10, 1), r(1, 11, 20, None)]);
}

#[test]
fn reads_in_an_impossible_order_are_rejected() {
    // Two concurrent writes; one client sees 1 then 2, another 2 then 1.
    assert_not_lin(&[
        w(0, 0, 100, 1),
        w(1, 0, 100, 2),
        r(2, 10, 20, Some(1)),
        r(2, 30, 40, Some(2)),
        r(3, 10, 20, Some(2)),
        r(3, 30, 40, Some(1)),
    ]);
    // One client alone going back in time.
    assert_not_lin(&[
        w(0, 0, 100, 1),
        w(1, 0, 100, 2),
        r(2, 10, 20, Some(2)),
        r(2, 30, 40, Some(1)),
        r(2, 110, 120, Some(2)),
    ]);
    // A value read before it was ever written.
    assert_not_lin(&[r(0, 0, 10, Some(1)), w(1, 20, 30, 1)]);
}

#[test]
fn cas_succeeding_twice_is_rejected() {
    assert_not_lin(&[
        w(0, 0, 10, 0),
        cas(1, 20, 30, 0, 1, true),
        cas(2, 20, 30, 0, 2, true),
    ]);
    assert_not_lin(&[
        w(0, 0, 10, 0),
        cas(1, 20, 30, 0, 1, true),
        cas(2, 20, 30, 0, 1, true),
    ]);
    // One success, one failure is fine; so is a CAS that failed against an older value.
    assert_lin(&[
        w(0, 0, 10, 0),
        cas(1, 20, 30, 0, 1, true),
        cas(2, 20, 30, 0, 2, false),
    ]);
    assert_lin(&[
        w(0, 0, 10, 0),
        cas(1, 20, 30, 0, 1, true),
        cas(2, 20, 30, 1, 2, true),
        r(3, 40, 50, Some(2)),
    ]);
    // A CAS that failed although the expected value was definitely there.
    assert_not_lin(&[
        w(0, 0, 10, 0),
        cas(1, 20, 30, 0, 1, false),
        r(1, 40, 50, Some(0)),
    ]);
}

#[test]
fn a_write_that_never_returned_may_take_effect() {
    // Observed by a read: it took effect.
    assert_lin(&[w_lost(0, 0, 1), r(1, 10, 20, Some(1))]);
    // Not observed: it may never have happened.
    assert_lin(&[w_lost(0, 0, 1), r(1, 10, 20, None), r(1, 30, 40, None)]);
    // Or happened late, after other reads, even long after its client gave up.
    assert_lin(&[
        w_lost(0, 0, 1),
        r(1, 10, 20, None),
        w(2, 30, 40, 2),
        r(1, 1000, 1010, Some(1)),
    ]);
    // A lost CAS whose effect is observed.
    assert_lin(&[
        w(0, 0, 10, 0),
        Op::pending(
            1,
            20,
            RI::Cas {
                expected: 0,
                new: 5,
            },
        ),
        r(2, 30, 40, Some(5)),
    ]);
}

#[test]
fn a_write_that_never_returned_cannot_act_before_its_call() {
    let (prefix, stuck) = assert_not_lin(&[w_lost(0, 50, 1), r(1, 10, 20, Some(1))]);
    assert!(prefix.is_empty());
    assert_eq!(stuck, 1);
    // Nor twice: once observed and then overwritten, it cannot reappear.
    assert_not_lin(&[
        w_lost(0, 0, 1),
        r(1, 10, 20, Some(1)),
        w(1, 30, 40, 2),
        r(1, 50, 60, Some(1)),
    ]);
}

#[test]
fn identical_never_returned_writes_each_take_effect_at_most_once() {
    let reads_of_1_between_writes_of_2 = |n: usize| {
        let mut h = vec![w_lost(0, 0, 1), w_lost(1, 0, 1)];
        for k in 0..n as u64 {
            h.push(w(2, 100 * k + 10, 100 * k + 20, 2));
            h.push(r(2, 100 * k + 30, 100 * k + 40, Some(1)));
        }
        h
    };
    assert_lin(&reads_of_1_between_writes_of_2(2));
    let (prefix, stuck) = assert_not_lin(&reads_of_1_between_writes_of_2(3));
    assert_eq!(stuck, 7);
    // write 2, lost 1, read 1, twice; then write 2 and no lost write left for the last read.
    assert_eq!(prefix.len(), 7);
    assert_eq!(&prefix[..3], &[2, 0, 3]);
}

#[test]
fn a_completed_op_with_unknown_result_must_fall_inside_its_interval() {
    let unknown = Op {
        client: 0,
        call: 0,
        ret: Some(10),
        input: RI::Write(1),
        output: None,
    };
    assert_lin(&[unknown.clone(), r(1, 20, 30, Some(1))]);
    assert_not_lin(&[unknown, r(1, 20, 30, None)]);
}

#[test]
fn budget_exhaustion_is_unknown() {
    let history = [w(0, 0, 10, 1), w(1, 0, 10, 2), r(2, 20, 30, Some(1))];
    assert_eq!(check(&Register::new(), &history, 1), Verdict::Unknown);
    assert_eq!(
        check(&Register::new(), &history, 100),
        Verdict::Linearizable
    );
}

#[test]
#[should_panic(expected = "malformed history")]
fn a_return_before_the_call_is_rejected() {
    reg(&[w(0, 10, 5, 1)]);
}

#[test]
fn explanation_names_the_prefix_and_the_stuck_op() {
    let history = [w(0, 0, 10, 1), r(1, 20, 30, Some(2))];
    let text = reg(&history).explain(&history);
    assert!(
        text.contains("#0 client 0 [0, 10] Write(1) -> Written"),
        "{text}"
    );
    assert!(
        text.contains("cannot place #1 client 1 [20, 30] Read -> Read(Some(2))"),
        "{text}"
    );
}

#[test]
fn per_key_checks_keys_independently_and_reports_original_indices() {
    let on = |k: &'static str, op: ROp| Op {
        client: op.client,
        call: op.call,
        ret: op.ret,
        input: (k, op.input),
        output: op.output,
    };
    // Each key on its own is fine; as a single register this would be a stale read.
    let ok = [
        on("a", w(0, 0, 10, 1)),
        on("b", r(1, 20, 30, None)),
        on("a", r(1, 40, 50, Some(1))),
    ];
    assert!(check_per_key(&Register::new(), &ok, BUDGET).is_linearizable());

    let bad = [
        on("a", w(0, 0, 10, 1)),
        on("b", w(0, 0, 10, 7)),
        on("b", r(1, 20, 30, Some(7))),
        on("a", r(1, 20, 30, None)),
    ];
    match check_per_key(&Register::new(), &bad, BUDGET) {
        Verdict::NotLinearizable {
            longest_prefix,
            unplaceable,
        } => {
            assert_eq!(longest_prefix, vec![0]);
            assert_eq!(unplaceable, 3);
        }
        v => panic!("expected a violation on key a, got {v:?}"),
    }
}

type ZOp = Op<ZI<u8>, ZO<u8>>;

fn z(client: u64, call: u64, ret: u64, input: ZI<u8>, output: ZO<u8>) -> ZOp {
    Op::completed(client, call, ret, input, output)
}

fn znode(history: &[ZOp]) -> Verdict {
    check(&Znode::new(), history, BUDGET)
}

#[test]
fn znode_semantics() {
    use ZI::*;
    let (a, b) = (1u8, 2u8);
    // Two concurrent creates: exactly one wins.
    assert!(
        znode(&[
            z(0, 0, 10, Create(a), ZO::Ok),
            z(1, 0, 10, Create(b), ZO::NodeExists)
        ])
        .is_linearizable()
    );
    assert!(
        znode(&[
            z(0, 0, 10, Create(a), ZO::Ok),
            z(1, 0, 10, Create(b), ZO::Ok)
        ])
        .is_violation()
    );
    // Versioned setData: two writers racing on version 0, only one may succeed.
    let base = [z(0, 0, 10, Create(a), ZO::Ok)];
    let race = |o1, o2| {
        let mut h = base.to_vec();
        h.push(z(
            1,
            20,
            30,
            SetData {
                data: b,
                version: 0,
            },
            o1,
        ));
        h.push(z(
            2,
            20,
            30,
            SetData {
                data: a,
                version: 0,
            },
            o2,
        ));
        znode(&h)
    };
    assert!(race(ZO::Version(1), ZO::BadVersion).is_linearizable());
    assert!(race(ZO::BadVersion, ZO::Version(1)).is_linearizable());
    assert!(race(ZO::Version(1), ZO::Version(1)).is_violation());
    // Unconditional setData bumps the version each time; a read sees a consistent pair.
    assert!(
        znode(&[
            z(0, 0, 10, Create(a), ZO::Ok),
            z(
                1,
                20,
                30,
                SetData {
                    data: b,
                    version: -1
                },
                ZO::Version(1)
            ),
            z(
                2,
                20,
                30,
                SetData {
                    data: a,
                    version: -1
                },
                ZO::Version(2)
            ),
            z(3, 40, 50, GetData, ZO::Data(a, 2)),
        ])
        .is_linearizable()
    );
    assert!(
        znode(&[
            z(0, 0, 10, Create(a), ZO::Ok),
            z(
                1,
                20,
                30,
                SetData {
                    data: b,
                    version: -1
                },
                ZO::Version(1)
            ),
            z(3, 40, 50, GetData, ZO::Data(b, 2)),
        ])
        .is_violation()
    );
    // Delete with a version; re-create restarts the version at 0.
    assert!(
        znode(&[
            z(0, 0, 10, Create(a), ZO::Ok),
            z(
                0,
                20,
                30,
                SetData {
                    data: b,
                    version: 0
                },
                ZO::Version(1)
            ),
            z(1, 40, 50, Delete { version: 0 }, ZO::BadVersion),
            z(1, 60, 70, Delete { version: 1 }, ZO::Ok),
            z(2, 80, 90, GetData, ZO::NoNode),
            z(
                2,
                100,
                110,
                SetData {
                    data: b,
                    version: -1
                },
                ZO::NoNode
            ),
            z(2, 120, 130, Delete { version: -1 }, ZO::NoNode),
            z(0, 140, 150, Create(b), ZO::Ok),
            z(1, 160, 170, GetData, ZO::Data(b, 0)),
        ])
        .is_linearizable()
    );
    // A read of a deleted node after the delete returned.
    assert!(
        znode(&[
            z(0, 0, 10, Create(a), ZO::Ok),
            z(1, 20, 30, Delete { version: -1 }, ZO::Ok),
            z(2, 40, 50, GetData, ZO::Data(a, 0)),
        ])
        .is_violation()
    );
    // A create that timed out but was applied explains a later NodeExists.
    assert!(
        znode(&[
            Op::pending(0, 0, Create(a)),
            z(1, 20, 30, Create(b), ZO::NodeExists),
            z(1, 40, 50, GetData, ZO::Data(a, 0))
        ])
        .is_linearizable()
    );
}
