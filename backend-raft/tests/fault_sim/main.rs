//! Seeded fault schedules against in-process Raft clusters (3 and 5 members on `MemEngine`s,
//! kept across restarts), with clients recording histories that are checked for
//! linearizability (`roster_core::linearizability`) and for lost acknowledged writes.
//!
//! **Time is real, not simulated.** openraft and the backend time out with `std::time::Instant`
//! and run on tokio's multi-threaded runtime, so tokio's paused clock cannot drive them and task
//! interleavings are up to the scheduler. What the seed fixes is the *schedule*: which faults
//! happen, in which order, after which delays, which messages are dropped or delayed (one seeded
//! generator decides each message's fate), which member each client talks to and what it asks.
//! A failing seed therefore reproduces the same storm, usually with the same outcome, not the
//! same instruction-level run; run it a few times with `RAFT_SIM_SEED=<seed>`.
//!
//! Faults (the [`net::FaultNet`] transport and the nemesis): symmetric partitions (a random minority,
//! or the leader alone), asymmetric link cuts (a→b dropped, b→a delivered; a request across it
//! is lost, a reply across it is lost after the request ran), random message drops (before or
//! after delivery), random delays, crashes (a crashed member's old incarnation can send nothing
//! more, and it restarts from what its engine held when it died), restarts from the member's own
//! engine, restarts with a wiped engine (it catches up by snapshot; `allow_log_reversion` is on —
//! see `dependencies.md` — and only when that is safe, see [`World::safe_to_wipe`]), and leader
//! kills under load.
//!
//! Five clients, each mostly on its home member: three do unconditional `setData` (unique
//! values), version-checked `setData` (CAS) and `barrier` + local `getData` on four registers,
//! and creates of unique keys; two "careful" ones only read and CAS on the newest version any
//! client has seen (so a stale member's refusals show rather than being hidden behind writes
//! it prepared). At the end every fault is healed, crashed members restart from disk, and the
//! run checks: the register history is linearizable; every acknowledged create is in every
//! member's tree; no key appears that no client asked for; every member has applied the same
//! state; nothing panicked on the run's threads (openraft's internal assertions included).
//!
//! Bugs it found (regression tests in `deposed_leader.rs` and `storage::state_machine`): a
//! restarted leader resumed its old term (openraft's leader restore) without entries it had
//! replicated unsynced, reusing log ids and zxids (seeds 5 and 29); a refusal judged against a
//! prepared write was answered as a refusal though another leader's entries replaced that
//! write (seed 5); a deposed leader refused a CAS from its stale replica.
//!
//! Environment: `RAFT_SIM_SEED=<n>` runs only that seed (in every test of this file),
//! `RAFT_SIM_SEEDS=<n>` runs n seeds per test instead of the default,
//! `RAFT_SIM_SCHEDULE=1` prints every run's fault schedule (it is always printed for a damaged
//! run), `RAFT_SIM_TRACE=1` turns on `roster_raft=info` logs.

mod net;
mod world;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roster_core::acl::{Acl, AuthInfo};
use roster_core::backend::{Backend, BackendError};
use roster_core::conformance::flawed::Flaw;
use roster_core::linearizability as lin;
use roster_core::linearizability::models::{Znode, ZnodeInput, ZnodeOutput, ZnodeState};
use roster_core::txn::{Applied, Envelope, OpResult, Outcome, Request, WriteOp};
use roster_core::{Code, CreateMode, SessionId};
use roster_raft::RaftBackend;
use roster_raft::types::NodeId;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use world::World;

// ---- clients ----

const REGS: usize = 4;

type RegOp = lin::KeyedOp<usize, Created>;

/// What one client did.
#[derive(Default)]
struct ClientLog {
    history: Vec<RegOp>,
    /// Creates acknowledged as created.
    acked: Vec<String>,
    /// Every create asked for (acknowledged or not).
    asked: Vec<String>,
}

fn env(session: SessionId, request: Request) -> Envelope {
    Envelope {
        session,
        auth: Arc::new(AuthInfo::default()),
        request,
    }
}

/// A logical clock shared by all clients: ticks at every call and every return, so an operation
/// that returned before another was invoked has a smaller return stamp than the other's call.
struct Clock(AtomicU64);

impl Clock {
    fn now(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

fn write_output(r: &Result<Applied, BackendError>) -> Option<ZnodeOutput<Vec<u8>>> {
    match r {
        Ok(Applied {
            outcome: Outcome::Op(OpResult::DataSet { stat }),
            ..
        }) => Some(ZnodeOutput::Version(stat.version)),
        Ok(Applied {
            outcome: Outcome::Failed(Code::BadVersion),
            ..
        }) => Some(ZnodeOutput::BadVersion),
        Ok(Applied {
            outcome: Outcome::Failed(Code::NoNode),
            ..
        }) => Some(ZnodeOutput::NoNode),
        // No answer we can trust: it may or may not have happened.
        _ => None,
    }
}

/// The newest version of each register any client has seen (a hint for CAS).
type Latest = Mutex<[i32; REGS]>;

/// What a client does.
#[derive(Clone, Copy)]
enum Role {
    /// Reads and CAS only: it never makes a member prepare a write its state does not allow,
    /// so a stale member's refusals show.
    Careful,
    /// Reads, plain and conditional sets, creates.
    Mixed,
}

struct ClientCtx {
    w: Arc<World>,
    session: SessionId,
    clock: Arc<Clock>,
    stop: Arc<AtomicBool>,
    latest: Arc<Latest>,
}

async fn client(id: u64, seed: u64, role: Role, home: NodeId, cx: ClientCtx) -> ClientLog {
    let ClientCtx {
        w,
        session,
        clock,
        stop,
        latest,
    } = cx;
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(id));
    let mut log = ClientLog::default();
    let mut seen_version: BTreeMap<usize, i32> = BTreeMap::new();
    let mut n = 0u64;
    let saw = |reg: usize, v: i32, mine: &mut BTreeMap<usize, i32>| {
        mine.insert(reg, v);
        let mut l = latest.lock();
        l[reg] = l[reg].max(v);
    };
    while !stop.load(Ordering::Acquire) {
        n += 1;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(2..12))).await;
        let Some(b) = w.pick(home, &mut rng) else {
            continue;
        };
        // Histories name "client" `10 * client + member`, so a violation shows who answered.
        let who = id * 10 + b.status().server_id;
        let reg = rng.gen_range(0..REGS);
        let path = format!("/reg{reg}");
        let r: f64 = match role {
            // Reads below 0.35, CAS in 0.55..0.8.
            Role::Careful => {
                if rng.gen_bool(0.5) {
                    rng.gen_range(0.0..0.35)
                } else {
                    rng.gen_range(0.55..0.8)
                }
            }
            Role::Mixed => rng.gen_range(0.0..1.0),
        };
        if r < 0.35 {
            // Linearizable read: barrier, then the member's own replica.
            let call = clock.now();
            if b.barrier().await.is_err() {
                continue; // observed nothing
            }
            let out = {
                let t = b.tree();
                let t = t.read();
                match t.get(&path) {
                    Some(node) => {
                        saw(reg, node.stat.version, &mut seen_version);
                        ZnodeOutput::Data(node.data.clone(), node.stat.version)
                    }
                    None => ZnodeOutput::NoNode,
                }
            };
            let ret = clock.now();
            log.history.push(lin::Op::completed(
                who,
                call,
                ret,
                (reg, ZnodeInput::GetData),
                out,
            ));
        } else if r < 0.8 {
            // setData: unconditional, or conditional on the version this client last saw or
            // the newest any client saw.
            let version = if r < 0.55 {
                -1
            } else if rng.gen_bool(0.5) {
                *seen_version.get(&reg).unwrap_or(&0)
            } else {
                latest.lock()[reg]
            };
            let data = format!("{seed}-{id}-{n}").into_bytes();
            let call = clock.now();
            let res = b
                .submit(env(
                    session,
                    Request::Op(WriteOp::SetData {
                        path,
                        data: data.clone(),
                        version,
                    }),
                ))
                .await;
            let input = (reg, ZnodeInput::SetData { data, version });
            match write_output(&res) {
                Some(out) => {
                    if let ZnodeOutput::Version(v) = out {
                        saw(reg, v, &mut seen_version);
                    }
                    let ret = clock.now();
                    log.history
                        .push(lin::Op::completed(who, call, ret, input, out));
                }
                None => log.history.push(lin::Op::pending(who, call, input)),
            }
        } else {
            let key = format!("/k{seed}-{id}-{n}");
            log.asked.push(key.clone());
            let res = b
                .submit(env(
                    session,
                    Request::Op(WriteOp::Create {
                        path: key.clone(),
                        data: Vec::new(),
                        acl: Acl::open_unsafe(),
                        mode: CreateMode::Persistent,
                        ttl: 0,
                    }),
                ))
                .await;
            if let Ok(Applied {
                outcome: Outcome::Op(OpResult::Created { .. }),
                ..
            }) = res
            {
                log.acked.push(key);
            }
        }
    }
    log
}

/// The znode model for a register created empty at version 0.
struct Created;

impl lin::Model for Created {
    type State = ZnodeState<Vec<u8>>;
    type Input = ZnodeInput<Vec<u8>>;
    type Output = ZnodeOutput<Vec<u8>>;
    fn init(&self) -> Self::State {
        Some((Vec::new(), 0))
    }
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State> {
        let (next, out) = Znode::apply(state, input);
        match output {
            Some(o) if *o != out => None,
            _ => Some(next),
        }
    }
}

// ---- the nemesis ----

/// One fault schedule, driven by `rng`, for `duration`.
async fn nemesis(w: &World, rng: &mut StdRng, duration: Duration, events: &mut Vec<String>) {
    let n = w.ids.len();
    let max_down = (n - 1) / 2;
    let end = Instant::now() + duration;
    let t0 = Instant::now();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(150..700))).await;
        let at = t0.elapsed().as_millis();
        let live: Vec<NodeId> = w.live.lock().keys().copied().collect();
        let down = w.down();
        let what = rng.gen_range(0..100);
        let ev = match what {
            // A random minority cut off from the rest.
            0..=11 => {
                let k = rng.gen_range(1..=max_down.max(1));
                let mut side: Vec<NodeId> = w.ids.clone();
                while side.len() > k {
                    side.remove(rng.gen_range(0..side.len()));
                }
                for &a in &side {
                    for &b in &w.ids {
                        if !side.contains(&b) {
                            w.net.cut_both(a, b);
                        }
                    }
                }
                format!("partition {side:?}")
            }
            // The leader alone (a leader change under load).
            12..=21 => match w.leader() {
                Some(l) => {
                    for &b in &w.ids {
                        if b != l {
                            w.net.cut_both(l, b);
                        }
                    }
                    format!("isolate leader {l}")
                }
                None => "isolate leader: none".into(),
            },
            // Asymmetric: a few one-way cuts.
            22..=31 => {
                let mut cuts = Vec::new();
                for _ in 0..rng.gen_range(1..=2) {
                    let a = w.ids[rng.gen_range(0..n)];
                    let b = w.ids[rng.gen_range(0..n)];
                    if a != b {
                        w.net.cut_one(a, b);
                        cuts.push((a, b));
                    }
                }
                format!("one-way cuts {cuts:?}")
            }
            32..=41 => {
                let p = rng.gen_range(0.02..0.25);
                w.net.set_drop(p);
                format!("drop {p:.2}")
            }
            42..=49 => {
                let ms = rng.gen_range(5..40);
                w.net.set_delay(ms);
                format!("delay 0..={ms} ms")
            }
            // Crash a member (half the time the leader).
            50..=63 if down.len() < max_down && !live.is_empty() => {
                let victim = match (rng.gen_bool(0.5), w.leader()) {
                    (true, Some(l)) => l,
                    _ => live[rng.gen_range(0..live.len())],
                };
                w.crash(victim).await;
                format!("crash {victim}")
            }
            64..=77 if !down.is_empty() => {
                let id = down[rng.gen_range(0..down.len())];
                let mut wipe = rng.gen_bool(0.6);
                let mut why = "";
                if wipe && !wait_until(Duration::from_millis(1500), || w.safe_to_wipe(id)).await {
                    wipe = false;
                    why = " (not safe to wipe now)";
                }
                w.restart(id, wipe).await;
                format!(
                    "restart {id}{}{why}",
                    if wipe { " with a wiped disk" } else { "" }
                )
            }
            _ => {
                w.net.heal();
                "heal".into()
            }
        };
        events.push(format!("{at:>5} ms: {ev}"));
    }
}

// ---- one run ----

#[derive(Debug, Default)]
struct Damage {
    not_linearizable: Option<String>,
    lost: Vec<String>,
    phantom: Vec<String>,
    diverged: bool,
    /// Panics on the run's threads (openraft's internal assertions, ours).
    panics: Vec<String>,
    /// Clients that did not come back within 30 s of being told to stop.
    stuck_clients: usize,
    completed_reads: usize,
    completed_writes: usize,
    /// Writes whose outcome stayed unknown (no trustworthy answer).
    unknown_writes: usize,
}

impl Damage {
    fn any(&self) -> bool {
        self.not_linearizable.is_some()
            || !self.lost.is_empty()
            || !self.phantom.is_empty()
            || self.diverged
            || !self.panics.is_empty()
            || self.stuck_clients > 0
    }
}

async fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Retry `f` until it succeeds (no faults are active when this is used).
async fn settle<T, Fut: std::future::Future<Output = Result<T, BackendError>>>(
    what: &str,
    mut f: impl FnMut() -> Fut,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(Instant::now() < deadline, "{what}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn chaos(seed: u64, members: u64, flaw: Option<Flaw>) -> Damage {
    take_panics();
    eprintln!(
        "seed {seed}: {members} members{}",
        match flaw {
            Some(f) => format!(", clients see {f:?}"),
            None => String::new(),
        }
    );
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let w = World::start(seed, members, flaw).await;
    assert!(
        wait_until(Duration::from_secs(20), || w.leader().is_some()).await,
        "seed {seed}: no first leader"
    );
    let first = w.node(w.leader().unwrap()).unwrap();
    let session = match settle("session", || {
        first.submit(env(
            0,
            Request::CreateSession {
                timeout_ms: 120_000,
            },
        ))
    })
    .await
    .outcome
    {
        Outcome::SessionCreated { session, .. } => session,
        o => panic!("seed {seed}: {o:?}"),
    };
    for r in 0..REGS {
        let req = Request::Op(WriteOp::Create {
            path: format!("/reg{r}"),
            data: Vec::new(),
            acl: Acl::open_unsafe(),
            mode: CreateMode::Persistent,
            ttl: 0,
        });
        settle("register", || first.submit(env(session, req.clone()))).await;
    }
    drop(first);
    let clock = Arc::new(Clock(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let latest = Arc::new(Mutex::new([0; REGS]));
    let clients: Vec<_> = (0..5u64)
        .map(|c| {
            let role = if c < 2 { Role::Careful } else { Role::Mixed };
            let home = w.ids[(c as usize + seed as usize) % w.ids.len()];
            let cx = ClientCtx {
                w: w.clone(),
                session,
                clock: clock.clone(),
                stop: stop.clone(),
                latest: latest.clone(),
            };
            tokio::spawn(client(c, seed, role, home, cx))
        })
        .collect();
    let mut events = Vec::new();
    nemesis(&w, &mut rng, Duration::from_secs(5), &mut events).await;
    // Heal, bring everyone back from disk, let the clients see a healthy cluster for a moment.
    w.net.heal();
    for id in w.down() {
        w.restart(id, false).await;
        events.push(format!("final restart {id}"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Release);
    let mut logs = Vec::new();
    let mut stuck_clients = 0;
    for c in clients {
        let abort = c.abort_handle();
        match tokio::time::timeout(Duration::from_secs(30), c).await {
            Ok(log) => logs.push(log.expect("client task")),
            Err(_) => {
                abort.abort();
                stuck_clients += 1;
            }
        }
    }
    let diverged = !wait_until(Duration::from_secs(30), || {
        w.leader().is_some() && w.converged()
    })
    .await;
    let mut damage = Damage {
        diverged,
        stuck_clients,
        ..Damage::default()
    };
    let live: Vec<Arc<RaftBackend>> = w.live.lock().values().cloned().collect();
    let acked: Vec<&String> = logs.iter().flat_map(|l| l.acked.iter()).collect();
    let asked: HashSet<&String> = logs.iter().flat_map(|l| l.asked.iter()).collect();
    for n in &live {
        let t = n.tree();
        let t = t.read();
        for k in &acked {
            if t.get(k).is_none() {
                damage.lost.push(format!("{k} on member {}", n.id()));
            }
        }
        for c in &t.get("/").expect("root").children {
            let p = format!("/{c}");
            if p.starts_with("/k") && !asked.contains(&p) {
                damage.phantom.push(format!("{p} on member {}", n.id()));
            }
        }
    }
    let history: Vec<RegOp> = logs
        .iter()
        .flat_map(|l| l.history.iter().cloned())
        .collect();
    for op in &history {
        match (&op.input.1, op.ret) {
            (ZnodeInput::GetData, Some(_)) => damage.completed_reads += 1,
            (_, Some(_)) => damage.completed_writes += 1,
            _ => damage.unknown_writes += 1,
        }
    }
    let verdict = lin::check_per_key(&Created, &history, 1_000_000);
    if verdict.is_violation() {
        damage.not_linearizable = Some(verdict.explain(&history));
    } else if verdict == lin::Verdict::Unknown {
        eprintln!("seed {seed}: the checker ran out of budget (no verdict on some register)");
    }
    w.shutdown().await;
    damage.panics = take_panics();
    eprintln!(
        "seed {seed}: {} reads, {} writes completed ({} unknown), {} creates acknowledged, {:.1} s{}",
        damage.completed_reads,
        damage.completed_writes,
        damage.unknown_writes,
        acked.len(),
        started.elapsed().as_secs_f64(),
        if damage.any() { "; DAMAGED" } else { "" }
    );
    if damage.any() || std::env::var("RAFT_SIM_SCHEDULE").is_ok() {
        eprintln!("seed {seed}: schedule:\n  {}", events.join("\n  "));
    }
    damage
}

/// The seeds a test runs: `RAFT_SIM_SEED` alone if set, else `count` seeds from `first`
/// (`RAFT_SIM_SEEDS` overrides the count), after the seeds that once found a bug.
fn seeds(regressions: &[u64], first: u64, count: u64) -> Vec<u64> {
    if let Some(s) = std::env::var("RAFT_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![s];
    }
    let count = std::env::var("RAFT_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(count);
    let mut out = regressions.to_vec();
    out.extend((first..first + count).filter(|s| !regressions.contains(s)));
    out
}

/// Runs one schedule at a time: they are timing-sensitive, and the machine has few cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn init_tracing() {
    if std::env::var("RAFT_SIM_TRACE").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("roster_raft=info")
            .with_test_writer()
            .try_init();
    }
}

/// Panics seen on the threads of the runtime running on this thread (see [`runtime`]).
static PANICS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

thread_local! {
    static RUNTIME_NAME: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Panics recorded on this test's runtime threads since the last call.
fn take_panics() -> Vec<String> {
    let name = RUNTIME_NAME.with(|n| n.borrow().clone());
    let mut all = PANICS.lock();
    let (mine, others): (Vec<_>, Vec<_>) = all.drain(..).partition(|(t, _)| *t == name);
    *all = others;
    mine.into_iter().map(|(_, m)| m).collect()
}

/// A runtime whose threads are named `name`, with panics on them recorded: openraft runs its
/// core in spawned tasks, so an assertion failing inside it would otherwise only be printed.
fn runtime(name: &str) -> tokio::runtime::Runtime {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(t) = std::thread::current().name()
                && t.starts_with("raft-sim-")
            {
                PANICS.lock().push((t.to_string(), info.to_string()));
            }
            previous(info);
        }));
    });
    RUNTIME_NAME.with(|n| *n.borrow_mut() = name.to_string());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("runtime")
}

fn survive(members: u64, seeds: Vec<u64>) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    init_tracing();
    let rt = runtime(&format!("raft-sim-{members}"));
    let (mut reads, mut writes) = (0, 0);
    let n = seeds.len();
    for seed in seeds {
        let d = rt.block_on(chaos(seed, members, None));
        assert!(
            !d.any(),
            "seed {seed} ({members} members) damaged; rerun with RAFT_SIM_SEED={seed}: {d:#?}"
        );
        // A hostile schedule may leave no quorum for most of a run (seed 1022 once completed 8
        // reads); only the runs together must have checked something.
        reads += d.completed_reads;
        writes += d.completed_writes;
    }
    assert!(
        reads >= 20 * n && writes >= 20 * n,
        "too few operations completed for the checks to mean anything: {reads} reads, {writes} \
         writes in {n} runs"
    );
}

#[test]
fn three_members_survive_seeded_fault_schedules() {
    // 5 and 29 found a restarted leader resuming its old term; 5 also a refusal answered
    // after its prepared write was replaced.
    survive(3, seeds(&[5, 29], 1, 10));
}

#[test]
fn five_members_survive_seeded_fault_schedules() {
    survive(5, seeds(&[], 101, 6));
}

/// Clients whose barrier is answered from the member's own replica (what a backend that served
/// "linearizable" reads without ReadIndex would do): the checker must see stale reads.
#[test]
fn the_harness_catches_reads_from_a_stale_replica() {
    init_tracing();
    let rt = runtime("raft-sim-stale-reads");
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let caught = seeds(&[], 201, 3).into_iter().any(|seed| {
        let d = rt.block_on(chaos(seed, 3, Some(Flaw::BarrierDoesNotWait)));
        d.not_linearizable.is_some()
    });
    assert!(caught, "reads from a stale replica went unnoticed");
}
