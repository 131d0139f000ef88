//! Linearizability checking of recorded client histories.
//!
//! The cluster fault harness records, for every client operation, when it was invoked, when (and
//! whether) it returned, what it asked for and what it got. [`check`] decides whether some
//! sequential execution of a [`Model`] explains that history while respecting real time: an
//! operation that returned before another was invoked must take effect first.
//!
//! The search is Wing & Gong's, with Lowe's memoization, as Porcupine implements it: call and
//! return events are kept in a doubly linked list ordered by time; the checker repeatedly tries to
//! linearize one of the calls that precede the earliest pending return, removes it from the list
//! when the model accepts it, and backtracks when it reaches a return whose operation has not been
//! linearized. A cache of (set of linearized operations, model state) pairs prunes every
//! configuration that was already explored, which turns the exponential search into one that is
//! roughly linear in the history length for typical (bounded-concurrency) histories.
//!
//! Operations that never returned (`ret == None`: a timeout, a lost connection, a crashed client)
//! may have taken effect at any point after their call, or never. They get no return event, so
//! they never force backtracking, and the search succeeds as soon as every *completed* operation
//! is linearized — a never-returned operation that is still unplaced is one that "never happened".
//!
//! Intervals are closed: an operation that returned at `t` and another invoked at the same `t`
//! are treated as concurrent (the permissive reading, so clock granularity cannot produce false
//! alarms).
//!
//! Linearizability is compositional: a history over independent objects (ZooKeeper paths,
//! registers) is linearizable iff each object's sub-history is. [`check_per_key`] uses that to
//! keep each search small. Ready-made sequential specifications live in [`models`].

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Debug, Write as _};
use std::hash::Hash;

pub mod models;

#[cfg(test)]
mod tests;

/// One operation in a history: invoked at `call`, completed at `ret` (logical or monotonic time,
/// any unit). `ret = None` means it never completed — a timeout or crash: it may or may not have
/// taken effect, so the checker allows both, treating its return as +infinity.
///
/// `output` is what the client observed; `None` means "unknown" and the model accepts any result
/// (normally paired with `ret = None`; a completed op with an unknown result must still take
/// effect inside its interval). `client` is carried for diagnostics only: the real-time order
/// comes from the intervals.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Op<I, O> {
    pub client: u64,
    pub call: u64,
    pub ret: Option<u64>,
    pub input: I,
    pub output: Option<O>,
}

impl<I, O> Op<I, O> {
    /// An operation that returned `output` at `ret`.
    pub fn completed(client: u64, call: u64, ret: u64, input: I, output: O) -> Self {
        Op {
            client,
            call,
            ret: Some(ret),
            input,
            output: Some(output),
        }
    }

    /// An operation invoked at `call` that never returned.
    pub fn pending(client: u64, call: u64, input: I) -> Self {
        Op {
            client,
            call,
            ret: None,
            input,
            output: None,
        }
    }
}

/// An operation of `M`'s history.
pub type ModelOp<M> = Op<<M as Model>::Input, <M as Model>::Output>;

/// An operation of a keyed history for [`check_per_key`]: `M`'s input paired with its key.
pub type KeyedOp<K, M> = Op<(K, <M as Model>::Input), <M as Model>::Output>;

/// A sequential specification. It must be deterministic: given a state and an input there is at
/// most one next state for each legal output.
pub trait Model {
    type State: Clone + Eq + Hash;
    type Input;
    type Output;

    fn init(&self) -> Self::State;

    /// Apply `input` to `state`; return the new state if `output` is a legal result, else `None`.
    /// For an op that never returned (`output == None`), any result is legal.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;
}

/// The checker's answer. Operation numbers are indices into the history slice given to
/// [`check`] / [`check_per_key`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable {
        /// The longest sequence of operations the search managed to linearize (in linearization
        /// order) before getting stuck; for [`check_per_key`], on the first failing key.
        longest_prefix: Vec<usize>,
        /// The operation whose return was reached without any way to place it after that prefix.
        unplaceable: usize,
    },
    /// The search budget ran out before a verdict was reached.
    Unknown,
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }

    pub fn is_violation(&self) -> bool {
        matches!(self, Verdict::NotLinearizable { .. })
    }

    /// A human-readable explanation against the history the verdict was computed on, for test
    /// failure messages.
    pub fn explain<I: Debug, O: Debug>(&self, history: &[Op<I, O>]) -> String {
        match self {
            Verdict::Linearizable => "linearizable".to_string(),
            Verdict::Unknown => "unknown: search budget exhausted".to_string(),
            Verdict::NotLinearizable {
                longest_prefix,
                unplaceable,
            } => {
                let mut s = format!(
                    "not linearizable; longest linearizable prefix ({} ops):\n",
                    longest_prefix.len()
                );
                for &i in longest_prefix {
                    let _ = writeln!(s, "  #{i} {}", OpDisplay(&history[i]));
                }
                let _ = write!(
                    s,
                    "cannot place #{unplaceable} {}",
                    OpDisplay(&history[*unplaceable])
                );
                s
            }
        }
    }
}

struct OpDisplay<'a, I, O>(&'a Op<I, O>);

impl<I: Debug, O: Debug> fmt::Display for OpDisplay<'_, I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = self.0;
        write!(f, "client {} [{}, ", op.client, op.call)?;
        match op.ret {
            Some(r) => write!(f, "{r}]")?,
            None => write!(f, "∞)")?,
        }
        write!(f, " {:?} -> ", op.input)?;
        match &op.output {
            Some(o) => write!(f, "{o:?}"),
            None => write!(f, "?"),
        }
    }
}

/// Check a whole history against `model` as one object. `budget` bounds the number of model steps
/// tried (a few million is plenty for thousands of operations); when it runs out the answer is
/// [`Verdict::Unknown`].
///
/// Panics if some operation returned before it was invoked.
pub fn check<M: Model>(model: &M, history: &[ModelOp<M>], budget: u64) -> Verdict {
    let ops: Vec<ModelEntry<'_, M>> = history
        .iter()
        .enumerate()
        .map(|(idx, op)| Entry::of(idx, op, &op.input))
        .collect();
    search(model, &ops, budget)
}

/// Partition a history by key and check each key's sub-history independently against `model`
/// (P-compositionality). Each input is a `(key, input)` pair; the model only sees the input.
/// `budget` applies to each key. A violation on any key is reported (keys are checked in key
/// order); otherwise the answer is `Unknown` if any key ran out of budget.
pub fn check_per_key<K, M>(model: &M, history: &[KeyedOp<K, M>], budget: u64) -> Verdict
where
    K: Ord,
    M: Model,
{
    let mut by_key: BTreeMap<&K, Vec<ModelEntry<'_, M>>> = BTreeMap::new();
    for (idx, op) in history.iter().enumerate() {
        by_key
            .entry(&op.input.0)
            .or_default()
            .push(Entry::of(idx, op, &op.input.1));
    }
    let mut unknown = false;
    for ops in by_key.values() {
        match search(model, ops, budget) {
            Verdict::Linearizable => {}
            Verdict::Unknown => unknown = true,
            v @ Verdict::NotLinearizable { .. } => return v,
        }
    }
    if unknown {
        Verdict::Unknown
    } else {
        Verdict::Linearizable
    }
}

/// A borrowed view of one operation, remembering its index in the caller's history.
struct Entry<'a, I, O> {
    idx: usize,
    call: u64,
    ret: Option<u64>,
    input: &'a I,
    output: Option<&'a O>,
}

impl<'a, I, O> Entry<'a, I, O> {
    fn of<J>(idx: usize, op: &'a Op<J, O>, input: &'a I) -> Self {
        if let Some(ret) = op.ret {
            assert!(
                ret >= op.call,
                "malformed history: operation {idx} returned at {ret} before its call at {}",
                op.call
            );
        }
        Entry {
            idx,
            call: op.call,
            ret: op.ret,
            input,
            output: op.output.as_ref(),
        }
    }
}

type ModelEntry<'a, M> = Entry<'a, <M as Model>::Input, <M as Model>::Output>;

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// A node of the event list: a call or return event of operation `op` (a position in `ops`).
struct Node {
    op: usize,
    /// For a call node: the index of its return node (`NIL` if the op never returned).
    /// For a return node: `NIL`.
    ret: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

/// The event list: node 0 is a sentinel head; removal and restoration are dancing-links style
/// (restoring in reverse order of removal puts every node back exactly where it was).
struct Events {
    nodes: Vec<Node>,
}

impl Events {
    fn new<I, O>(ops: &[Entry<'_, I, O>]) -> Self {
        // (time, kind, op): calls (kind 0) sort before returns (kind 1) at equal times, so that
        // touching intervals count as concurrent.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.call, 0, i));
            if let Some(r) = op.ret {
                events.push((r, 1, i));
            }
        }
        events.sort_unstable();
        let mut nodes = Vec::with_capacity(events.len() + 1);
        nodes.push(Node {
            op: NIL,
            ret: NIL,
            is_call: false,
            prev: NIL,
            next: NIL,
        });
        let mut call_node = vec![NIL; ops.len()];
        for (k, &(_, kind, op)) in events.iter().enumerate() {
            let id = k + 1;
            nodes.push(Node {
                op,
                ret: NIL,
                is_call: kind == 0,
                prev: id - 1,
                next: NIL,
            });
            nodes[id - 1].next = id;
            if kind == 0 {
                call_node[op] = id;
            } else {
                nodes[call_node[op]].ret = id;
            }
        }
        Events { nodes }
    }

    fn unlink(&mut self, x: usize) {
        let (p, n) = (self.nodes[x].prev, self.nodes[x].next);
        self.nodes[p].next = n;
        if n != NIL {
            self.nodes[n].prev = p;
        }
    }

    fn relink(&mut self, x: usize) {
        let (p, n) = (self.nodes[x].prev, self.nodes[x].next);
        self.nodes[p].next = x;
        if n != NIL {
            self.nodes[n].prev = x;
        }
    }

    /// Remove a call node and its return node (if any).
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let ret = self.nodes[call].ret;
        if ret != NIL {
            self.unlink(ret);
        }
    }

    /// Undo `lift(call)`; must be called in reverse order of lifts.
    fn unlift(&mut self, call: usize) {
        let ret = self.nodes[call].ret;
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// A fixed-size bitset of linearized operations (part of the memoization key).
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Box<[u64]>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)].into_boxed_slice())
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

fn search<M: Model>(model: &M, ops: &[ModelEntry<'_, M>], budget: u64) -> Verdict {
    let mut remaining = ops.iter().filter(|op| op.ret.is_some()).count();
    if remaining == 0 {
        return Verdict::Linearizable;
    }
    let mut events = Events::new(ops);
    let mut state = model.init();
    let mut linearized = Bits::new(ops.len());
    let mut seen: HashSet<(Bits, M::State)> = HashSet::new();
    // The linearization so far: (call node, state before it).
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut best: Option<(Vec<usize>, usize)> = None;
    let mut steps: u64 = 0;
    let mut cur = events.nodes[HEAD].next;
    loop {
        let node = &events.nodes[cur];
        if node.is_call {
            steps += 1;
            if steps > budget {
                return Verdict::Unknown;
            }
            let (op, has_ret, next) = (node.op, node.ret != NIL, node.next);
            let entry = &ops[op];
            if let Some(new_state) = model.step(&state, entry.input, entry.output) {
                let mut bits = linearized.clone();
                bits.set(op);
                if seen.insert((bits, new_state.clone())) {
                    stack.push((cur, std::mem::replace(&mut state, new_state)));
                    linearized.set(op);
                    events.lift(cur);
                    if has_ret {
                        remaining -= 1;
                        if remaining == 0 {
                            return Verdict::Linearizable;
                        }
                    }
                    cur = events.nodes[HEAD].next;
                    continue;
                }
            }
            cur = next;
        } else {
            // The earliest remaining return belongs to an operation not yet linearized: every
            // candidate before it failed, so undo the most recent choice.
            if best
                .as_ref()
                .is_none_or(|(prefix, _)| stack.len() > prefix.len())
            {
                let prefix = stack
                    .iter()
                    .map(|&(c, _)| ops[events.nodes[c].op].idx)
                    .collect();
                best = Some((prefix, ops[node.op].idx));
            }
            let Some((call, prev_state)) = stack.pop() else {
                let (longest_prefix, unplaceable) = best.expect("recorded above");
                return Verdict::NotLinearizable {
                    longest_prefix,
                    unplaceable,
                };
            };
            state = prev_state;
            let op = events.nodes[call].op;
            linearized.clear(op);
            events.unlift(call);
            if events.nodes[call].ret != NIL {
                remaining += 1;
            }
            cur = events.nodes[call].next;
        }
    }
}
