//! Property and size tests for the linearizability checker.
//!
//! Histories are produced by simulating concurrent clients against the models' own sequential
//! semantics: each operation is invoked, takes effect at one instant (its linearization point),
//! and returns later — or its client crashes before or after the effect, leaving it pending. The
//! resulting intervals are therefore consistent with a real sequential order, so the checker must
//! accept them; changing one read to a value never written must be caught.

use std::collections::BTreeMap;
use std::time::Instant;

use proptest::prelude::*;
use roster_core::linearizability::models::{
    Register, RegisterInput as RI, RegisterOutput as RO, Znode, ZnodeInput as ZI, ZnodeOutput as ZO,
};
use roster_core::linearizability::{Model, Op, Verdict, check, check_per_key};

const BUDGET: u64 = 50_000_000;

/// A small deterministic generator (xorshift64*), so a proptest seed fixes the whole history.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

#[derive(Clone, Debug)]
struct Shape {
    clients: usize,
    ops: usize,
    /// Chance (percent) that a client crashes at each step of an operation.
    crash_pct: u64,
}

enum Phase<O> {
    Idle,
    Invoked(usize),
    Applied(usize, O),
}

/// Simulate `shape.clients` concurrent clients issuing `shape.ops` operations in total against a
/// sequential object with semantics `apply`, then shuffle the history and the client ids.
fn simulate<S, I, O>(
    rng: &mut Rng,
    shape: &Shape,
    mut state: S,
    mut input: impl FnMut(&mut Rng) -> I,
    apply: impl Fn(&S, &I) -> (S, O),
) -> Vec<Op<I, O>> {
    let mut history: Vec<Op<I, O>> = Vec::with_capacity(shape.ops);
    let mut clients: Vec<(u64, Phase<O>)> = (0..shape.clients as u64)
        .map(|id| (id, Phase::Idle))
        .collect();
    let mut next_id = shape.clients as u64;
    let mut now = 0u64;
    loop {
        let busy = |p: &Phase<O>| !matches!(p, Phase::Idle);
        let ready: Vec<usize> = (0..clients.len())
            .filter(|&c| busy(&clients[c].1) || history.len() < shape.ops)
            .collect();
        if ready.is_empty() {
            break;
        }
        let c = ready[rng.below(ready.len() as u64) as usize];
        now += rng.below(3); // sometimes 0: equal timestamps must be handled too
        let crash = rng.percent(shape.crash_pct);
        let (id, phase) = &mut clients[c];
        match std::mem::replace(phase, Phase::Idle) {
            Phase::Idle => {
                history.push(Op::pending(*id, now, input(rng)));
                *phase = Phase::Invoked(history.len() - 1);
            }
            Phase::Invoked(_) if crash => {
                // Crashed before the operation took effect: it stays pending forever.
                (*id, next_id) = (next_id, next_id + 1);
            }
            Phase::Invoked(i) => {
                let (next, out) = apply(&state, &history[i].input);
                state = next;
                *phase = Phase::Applied(i, out);
            }
            Phase::Applied(_, _) if crash => {
                // Crashed after the effect, before the reply: pending, but it happened.
                (*id, next_id) = (next_id, next_id + 1);
            }
            Phase::Applied(i, out) => {
                history[i].ret = Some(now);
                history[i].output = Some(out);
            }
        }
    }
    // The checker must not depend on the order ops are listed in, nor on client numbering.
    let mut ids: Vec<u64> = (0..next_id).collect();
    shuffle(rng, &mut ids);
    for op in &mut history {
        op.client = ids[op.client as usize];
    }
    shuffle(rng, &mut history);
    history
}

fn shuffle<T>(rng: &mut Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
}

fn register_input(rng: &mut Rng) -> RI<u32> {
    match rng.below(3) {
        0 => RI::Write(rng.below(5) as u32),
        1 => RI::Read,
        _ => RI::Cas {
            expected: rng.below(5) as u32,
            new: rng.below(5) as u32,
        },
    }
}

fn register_history(seed: u64, shape: &Shape) -> Vec<Op<RI<u32>, RO<u32>>> {
    simulate(
        &mut Rng::new(seed),
        shape,
        None,
        register_input,
        Register::apply,
    )
}

fn znode_input(rng: &mut Rng) -> ZI<u8> {
    let version = rng.below(4) as i32 - 1;
    match rng.below(5) {
        0 => ZI::Create(rng.below(4) as u8),
        1 => ZI::SetData {
            data: rng.below(4) as u8,
            version,
        },
        2 => ZI::Delete { version },
        _ => ZI::GetData,
    }
}

fn znode_history(seed: u64, shape: &Shape) -> Vec<Op<ZI<u8>, ZO<u8>>> {
    simulate(&mut Rng::new(seed), shape, None, znode_input, Znode::apply)
}

type KeyedRegisterOp = Op<(u8, RI<u32>), RO<u32>>;

fn keyed_history(seed: u64, shape: &Shape) -> Vec<KeyedRegisterOp> {
    let input = |rng: &mut Rng| (rng.below(3) as u8, register_input(rng));
    let apply = |s: &BTreeMap<u8, Option<u32>>, (k, i): &(u8, RI<u32>)| {
        let (v, out) = Register::apply(s.get(k).unwrap_or(&None), i);
        let mut s = s.clone();
        s.insert(*k, v);
        (s, out)
    };
    simulate(&mut Rng::new(seed), shape, BTreeMap::new(), input, apply)
}

/// Replace the output of one completed read chosen by `pick` with `bad`; false if none.
fn corrupt_a_read<I, O>(
    history: &mut [Op<I, O>],
    pick: u64,
    is_read: impl Fn(&I) -> bool,
    bad: O,
) -> bool {
    let reads: Vec<usize> = (0..history.len())
        .filter(|&i| history[i].ret.is_some() && is_read(&history[i].input))
        .collect();
    if reads.is_empty() {
        return false;
    }
    history[reads[(pick % reads.len() as u64) as usize]].output = Some(bad);
    true
}

#[track_caller]
fn assert_linearizable<M: Model>(model: &M, history: &[Op<M::Input, M::Output>])
where
    M::Input: std::fmt::Debug,
    M::Output: std::fmt::Debug,
{
    let v = check(model, history, BUDGET);
    assert!(v.is_linearizable(), "{}", v.explain(history));
}

fn arb_shape() -> impl Strategy<Value = Shape> {
    (1usize..=6, 1usize..=60, prop_oneof![Just(0u64), 1u64..=10]).prop_map(
        |(clients, ops, crash_pct)| Shape {
            clients,
            ops,
            crash_pct,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn simulated_register_histories_are_linearizable(seed in any::<u64>(), shape in arb_shape()) {
        let history = register_history(seed, &shape);
        let v = check(&Register::new(), &history, BUDGET);
        prop_assert!(v.is_linearizable(), "{}", v.explain(&history));
    }

    #[test]
    fn a_register_read_of_a_value_never_written_is_caught(
        seed in any::<u64>(), shape in arb_shape(), pick in any::<u64>()
    ) {
        let mut history = register_history(seed, &shape);
        prop_assume!(corrupt_a_read(&mut history, pick, |i| *i == RI::Read, RO::Read(Some(999))));
        let v = check(&Register::new(), &history, BUDGET);
        prop_assert!(v.is_violation(), "{v:?}");
    }

    #[test]
    fn simulated_znode_histories_are_linearizable(seed in any::<u64>(), shape in arb_shape()) {
        let history = znode_history(seed, &shape);
        let v = check(&Znode::new(), &history, BUDGET);
        prop_assert!(v.is_linearizable(), "{}", v.explain(&history));
    }

    #[test]
    fn a_znode_read_of_data_never_written_is_caught(
        seed in any::<u64>(), shape in arb_shape(), pick in any::<u64>()
    ) {
        let mut history = znode_history(seed, &shape);
        prop_assume!(corrupt_a_read(&mut history, pick, |i| *i == ZI::GetData, ZO::Data(99, 0)));
        let v = check(&Znode::new(), &history, BUDGET);
        prop_assert!(v.is_violation(), "{v:?}");
    }

    #[test]
    fn simulated_multi_key_histories_are_linearizable_per_key(
        seed in any::<u64>(), shape in arb_shape(), pick in any::<u64>()
    ) {
        let mut history = keyed_history(seed, &shape);
        let v = check_per_key(&Register::new(), &history, BUDGET);
        prop_assert!(v.is_linearizable(), "{}", v.explain(&history));
        if corrupt_a_read(&mut history, pick, |(_, i)| *i == RI::Read, RO::Read(Some(999))) {
            let v = check_per_key(&Register::new(), &history, BUDGET);
            match v {
                Verdict::NotLinearizable { unplaceable, .. } => {
                    prop_assert!(history[unplaceable].ret.is_some());
                }
                v => prop_assert!(false, "expected a violation, got {v:?}"),
            }
        }
    }
}

/// Sizes at which an unmemoized search would not finish: 8 clients × 300 operations on one key.
fn big(crash_pct: u64) -> Shape {
    Shape {
        clients: 8,
        ops: 2400,
        crash_pct,
    }
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    eprintln!("{what}: {:?}", start.elapsed());
    out
}

#[test]
fn large_register_history() {
    for (seed, crash) in [(1, 0), (2, 0), (3, 1), (4, 2)] {
        let history = register_history(seed, &big(crash));
        timed(
            &format!("register 8x300 seed {seed} crash {crash}%"),
            || assert_linearizable(&Register::new(), &history),
        );
    }
}

#[test]
fn large_znode_history() {
    for (seed, crash) in [(5, 0), (6, 1)] {
        let history = znode_history(seed, &big(crash));
        timed(&format!("znode 8x300 seed {seed} crash {crash}%"), || {
            assert_linearizable(&Znode::<u8>::new(), &history)
        });
    }
}

#[test]
fn large_history_with_a_late_violation() {
    // The corrupted read is the last one, so the search has to get through (nearly) the whole
    // history before it can conclude.
    let mut history = register_history(7, &big(0));
    let last_read = (0..history.len())
        .filter(|&i| history[i].input == RI::Read)
        .max_by_key(|&i| history[i].call)
        .unwrap();
    history[last_read].output = Some(RO::Read(Some(999)));
    let v = timed("register 8x300 late violation", || {
        check(&Register::new(), &history, BUDGET)
    });
    match v {
        Verdict::NotLinearizable {
            unplaceable,
            longest_prefix,
        } => {
            assert_eq!(unplaceable, last_read);
            assert!(longest_prefix.len() > 2000, "{}", longest_prefix.len());
        }
        v => panic!("expected a violation, got {v:?}"),
    }
}

#[test]
fn never_returned_ops_observed_much_later() {
    // Many lost writes, each observed (or not) long after its client gave up.
    let mut history: Vec<Op<RI<u32>, RO<u32>>> = Vec::new();
    for k in 0..200u32 {
        history.push(Op::pending(1000 + k as u64, 10 * k as u64, RI::Write(k)));
    }
    let mut t = 5000;
    for k in (0..200u32).rev().step_by(7) {
        history.push(Op::completed(0, t, t + 1, RI::Read, RO::Read(Some(k))));
        t += 2;
    }
    let v = timed("200 lost writes read in reverse", || {
        check(&Register::new(), &history, BUDGET)
    });
    assert!(v.is_linearizable(), "{}", v.explain(&history));
    // And one observed before it was issued is not.
    history.push(Op::completed(0, 0, 1, RI::Read, RO::Read(Some(150))));
    assert!(check(&Register::new(), &history, BUDGET).is_violation());
}
/// Registers written with unique values (as a harness would), so a read names the write it saw.
fn unique_register_history(seed: u64, shape: &Shape) -> Vec<Op<RI<u32>, RO<u32>>> {
    let mut fresh = 0u32;
    let input = move |rng: &mut Rng| {
        fresh += 1;
        match rng.below(3) {
            0 => RI::Write(fresh),
            1 => RI::Read,
            _ => RI::Cas {
                expected: fresh.saturating_sub(2 + rng.below(3) as u32),
                new: fresh,
            },
        }
    };
    simulate(&mut Rng::new(seed), shape, None, input, Register::apply)
}

#[test]
fn late_violation_among_never_returned_ops() {
    // Every never-returned op might or might not have happened: proving a violation means ruling
    // out every combination, which is what the subsumption cache keeps tractable.
    for seed in [7, 8] {
        let shape = Shape {
            clients: 5,
            ops: 500,
            crash_pct: 5,
        };
        let mut history = unique_register_history(seed, &shape);
        let pending = history.iter().filter(|op| op.ret.is_none()).count();
        assert!(pending > 30, "{pending}");
        let v = timed(&format!("register 5x100, {pending} never returned"), || {
            check(&Register::new(), &history, BUDGET)
        });
        assert!(v.is_linearizable(), "{}", v.explain(&history));
        let last_read = (0..history.len())
            .filter(|&i| history[i].input == RI::Read && history[i].ret.is_some())
            .max_by_key(|&i| history[i].call)
            .unwrap();
        history[last_read].output = Some(RO::Read(Some(u32::MAX)));
        let v = timed(
            &format!("register 5x100, {pending} never returned, late violation"),
            || check(&Register::new(), &history, BUDGET),
        );
        match v {
            Verdict::NotLinearizable { unplaceable, .. } => assert_eq!(unplaceable, last_read),
            v => panic!("expected a violation, got {v:?}"),
        }
    }
}
