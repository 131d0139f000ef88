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
//! when the model accepts it, and backtracks when every candidate has failed. A cache of
//! (set of linearized operations, model state) pairs prunes every configuration that was already
//! explored, which turns the exponential search into one that is roughly linear in the history
//! length for typical (bounded-concurrency) histories.
//!
//! Operations that never returned (`ret == None`: a timeout, a lost connection, a crashed client)
//! may have taken effect at any point after their call, or never. They are kept out of the event
//! list (they never force backtracking), and the search succeeds as soon as every *completed*
//! operation is linearized — one still unplaced then is one that "never happened". Between two
//! completed operations the search may insert some of them, fewest first, and the cache treats a
//! configuration as explored if the same completed set and state were reached using a *subset* of
//! them (having more of them left only adds options). Never-returned operations with equal inputs
//! are interchangeable, so only the earliest unused one of each kind is tried.
//!
//! Cost: accepting a linearizable history is fast. Proving a violation means ruling out every
//! alternative, and every never-returned operation is a choice (did it happen, and when): a
//! single-key history of ~500 operations with ~50 never-returned ones takes well under a second,
//! but thousands of operations with dozens of never-returned ones can exhaust any reasonable
//! budget ([`Verdict::Unknown`]). Harnesses should therefore spread operations over several keys
//! (a few hundred per key), write unique values, and prefer reconnecting clients to piling up
//! timeouts. Note also that ZooKeeper reads served by a follower are only sequentially
//! consistent: a harness checking reads for linearizability must `sync` first or read through
//! the leader, or the checker will (rightly) report stale reads.
//!
//! Intervals are closed: an operation that returned at `t` and another invoked at the same `t`
//! are treated as concurrent (the permissive reading, so clock granularity cannot produce false
//! alarms).
//!
//! Linearizability is compositional: a history over independent objects (ZooKeeper paths,
//! registers) is linearizable iff each object's sub-history is. [`check_per_key`] uses that to
//! keep each search small. Ready-made sequential specifications live in [`models`].

use std::collections::{BTreeMap, HashMap};
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
    type Input: PartialEq;
    type Output: PartialEq;

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

/// A node of the event list: the call or return event of a *completed* operation `op` (a
/// position in `ops`). Operations that never returned are kept out of the list (see `search`).
struct Node {
    op: usize,
    time: u64,
    /// For a call node: the index of its return node. For a return node: `NIL`.
    ret: usize,
    prev: usize,
    next: usize,
}

impl Node {
    fn is_call(&self) -> bool {
        self.ret != NIL
    }
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
            if let Some(r) = op.ret {
                events.push((op.call, 0, i));
                events.push((r, 1, i));
            }
        }
        events.sort_unstable();
        let mut nodes = Vec::with_capacity(events.len() + 1);
        nodes.push(Node {
            op: NIL,
            time: 0,
            ret: NIL,
            prev: NIL,
            next: NIL,
        });
        let mut call_node = vec![NIL; ops.len()];
        for (k, &(time, kind, op)) in events.iter().enumerate() {
            let id = k + 1;
            nodes.push(Node {
                op,
                time,
                ret: NIL,
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

    /// Remove a call node and its return node.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.nodes[call].ret);
    }

    /// Undo `lift(call)`; must be called in reverse order of lifts.
    fn unlift(&mut self, call: usize) {
        self.relink(self.nodes[call].ret);
        self.relink(call);
    }

    /// The earliest return event still in the list (there is one while a completed operation is
    /// unlinearized).
    fn first_return(&self) -> usize {
        let mut n = self.nodes[HEAD].next;
        while n != NIL && self.nodes[n].is_call() {
            n = self.nodes[n].next;
        }
        n
    }
}

/// A fixed-size bitset (a set of operations, part of the memoization key).
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Box<[u64]>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)].into_boxed_slice())
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn is_subset(&self, of: &Bits) -> bool {
        self.0.iter().zip(of.0.iter()).all(|(a, b)| a & !b == 0)
    }
}

/// Configurations already reached: (completed ops linearized, state) → the sets of never-returned
/// ops used to get there. A configuration is redundant if a subset of its never-returned ops
/// already reached the same completed set and state: whatever can follow it can follow that one
/// too (never-returned ops constrain nothing, so having more of them left only adds options).
/// With no never-returned ops this is exactly Lowe's (linearized set, state) cache.
struct Memo<S> {
    seen: HashMap<(Bits, S), Vec<Bits>>,
}

impl<S: Eq + Hash> Memo<S> {
    /// Record a configuration; false if it (or one that subsumes it) was reached before.
    fn visit(&mut self, completed: &Bits, state: S, pending: &Bits) -> bool {
        let reached = self.seen.entry((completed.clone(), state)).or_default();
        if reached.iter().any(|q| q.is_subset(pending)) {
            return false;
        }
        reached.retain(|q| !pending.is_subset(q));
        reached.push(pending.clone());
        true
    }
}

/// A state reachable from a frame's configuration by linearizing never-returned ops only.
struct Reach<S> {
    state: S,
    /// Never-returned ops linearized so far (indices into `search`'s `pending`).
    used: Bits,
    /// The `Reach` this one extends (in the same frame), and the never-returned op (index into
    /// `ops`) it added; `NIL` for the frame's own configuration.
    from: usize,
    op: usize,
}

/// One level of the search: the configuration reached after linearizing `depth` completed ops.
/// It tries every completed candidate against each state in `reach` in turn (breadth-first:
/// fewer never-returned ops first), growing `reach` lazily.
struct Frame<S> {
    /// The call node linearized to enter this frame (`NIL` for the root).
    entered_by: usize,
    /// The earliest unlinearized return: the candidates are the calls before it.
    frontier: usize,
    /// How many of `search`'s `pending` ops were invoked by then (and so may be linearized now).
    avail: usize,
    reach: Vec<Reach<S>>,
    /// How many `reach` entries have had their successors added.
    expanded: usize,
    /// The `reach` entry being tried, and the next candidate call node to try with it.
    current: usize,
    cursor: usize,
}

fn search<M: Model>(model: &M, ops: &[ModelEntry<'_, M>], budget: u64) -> Verdict {
    let completed = ops.iter().filter(|op| op.ret.is_some()).count();
    if completed == 0 {
        return Verdict::Linearizable;
    }
    let mut events = Events::new(ops);
    // Never-returned ops, by call time: they have no return event, never block the search, and
    // may be linearized any time after their call — or never.
    let mut pending: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].ret.is_none()).collect();
    pending.sort_by_key(|&i| (ops[i].call, i));
    // Never-returned ops with equal inputs (and outputs) are interchangeable once both have been
    // invoked, so only the earliest unused one of each kind is ever tried: `twin[k]` is the
    // previous pending op like `pending[k]`, which must be used before it.
    let twin: Vec<usize> = (0..pending.len())
        .map(|k| {
            let (a, b) = (&ops[pending[k]], |j: &usize| &ops[pending[*j]]);
            (0..k)
                .rev()
                .find(|j| b(j).input == a.input && b(j).output == a.output)
                .unwrap_or(NIL)
        })
        .collect();
    let frame = |events: &Events, entered_by: usize, state: M::State, used: Bits| {
        let frontier = events.first_return();
        let time = events.nodes[frontier].time;
        Frame {
            entered_by,
            frontier,
            avail: pending.partition_point(|&i| ops[i].call <= time),
            reach: vec![Reach {
                state,
                used,
                from: NIL,
                op: NIL,
            }],
            expanded: 0,
            current: 0,
            cursor: events.nodes[HEAD].next,
        }
    };

    let mut memo = Memo {
        seen: HashMap::new(),
    };
    let mut linearized = Bits::new(ops.len());
    let init = model.init();
    memo.visit(&linearized, init.clone(), &Bits::new(pending.len()));
    let mut stack = vec![frame(&events, NIL, init, Bits::new(pending.len()))];
    let mut steps: u64 = 0;
    let mut best: Option<(usize, Vec<usize>, usize)> = None;

    loop {
        let depth = stack.len() - 1;
        let f = stack.last_mut().expect("the root frame is never popped");
        if f.current == f.reach.len() {
            if f.expanded < f.reach.len() {
                // Linearize one more never-returned op on top of an already tried state.
                let base = f.expanded;
                f.expanded += 1;
                for (k, &p) in pending[..f.avail].iter().enumerate() {
                    let used = &f.reach[base].used;
                    if used.get(k) || (twin[k] != NIL && !used.get(twin[k])) {
                        continue;
                    }
                    steps += 1;
                    if steps > budget {
                        return Verdict::Unknown;
                    }
                    let Some(state) = model.step(&f.reach[base].state, ops[p].input, ops[p].output)
                    else {
                        continue;
                    };
                    let mut used = f.reach[base].used.clone();
                    used.set(k);
                    if memo.visit(&linearized, state.clone(), &used) {
                        f.reach.push(Reach {
                            state,
                            used,
                            from: base,
                            op: p,
                        });
                    }
                }
                continue;
            }
            // Every way on from here failed: the op returning at the frontier cannot be placed.
            let (entered_by, stuck) = (f.entered_by, ops[events.nodes[f.frontier].op].idx);
            if best.as_ref().is_none_or(|(d, _, _)| depth > *d) {
                best = Some((depth, prefix(&stack, &events, ops), stuck));
            }
            stack.pop();
            if entered_by == NIL {
                let (_, longest_prefix, unplaceable) = best.expect("recorded above");
                return Verdict::NotLinearizable {
                    longest_prefix,
                    unplaceable,
                };
            }
            events.unlift(entered_by);
            linearized.clear(events.nodes[entered_by].op);
            continue;
        }
        let node = f.cursor;
        if !events.nodes[node].is_call() {
            // Reached the frontier: try the candidates against the next reachable state.
            f.current += 1;
            f.cursor = events.nodes[HEAD].next;
            continue;
        }
        f.cursor = events.nodes[node].next;
        steps += 1;
        if steps > budget {
            return Verdict::Unknown;
        }
        let op = events.nodes[node].op;
        let here = &f.reach[f.current];
        let Some(state) = model.step(&here.state, ops[op].input, ops[op].output) else {
            continue;
        };
        linearized.set(op);
        if !memo.visit(&linearized, state.clone(), &here.used) {
            linearized.clear(op);
            continue;
        }
        if depth + 1 == completed {
            return Verdict::Linearizable;
        }
        let used = here.used.clone();
        events.lift(node);
        let next = frame(&events, node, state, used);
        stack.push(next);
    }
}

/// The linearization the stack represents, as history indices.
fn prefix<I, O, S>(stack: &[Frame<S>], events: &Events, ops: &[Entry<'_, I, O>]) -> Vec<usize> {
    let mut out = Vec::new();
    for w in stack.windows(2) {
        let (parent, child) = (&w[0], &w[1]);
        let mut chain = Vec::new();
        let mut r = parent.current;
        while parent.reach[r].from != NIL {
            chain.push(ops[parent.reach[r].op].idx);
            r = parent.reach[r].from;
        }
        out.extend(chain.into_iter().rev());
        out.push(ops[events.nodes[child.entered_by].op].idx);
    }
    out
}
