//! Load shapes. Closed loop: N sessions × D outstanding requests, each worker sending its next
//! request when the previous one answers. Open loop: requests at a fixed rate, latency measured
//! from the *intended* send time, so a stalled server is charged for the requests it delayed (no
//! coordinated omission). Knee search: open loop at rising rates until p99 crosses a bound.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::record::Recorder;

/// An operation's failure as the report names it (`NodeExists`, `LOCK_HELD`, `ClientIo`…).
pub trait ErrorKind {
    /// A short, stable name for the errors-by-kind table.
    fn kind(&self) -> String;
}

impl ErrorKind for zookeeper_client::Error {
    fn kind(&self) -> String {
        crate::zk::error_kind(self)
    }
}

/// A failed request of a protocol other than ZooKeeper's: the kind the report counts (the
/// API's error code, `HTTP_503`, `ClientIo`, `Timeout`, `FencingViolation`…) and what happened.
#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: String,
    pub message: String,
}

impl Failure {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Failure {}

impl ErrorKind for Failure {
    fn kind(&self) -> String {
        self.kind.clone()
    }
}

/// When a phase ends.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// After this many operations (over all workers).
    Ops(u64),
    /// After this long.
    For(Duration),
    /// After this many operations or this long, whichever comes first.
    OpsOrFor(u64, Duration),
}

impl Stop {
    fn limit(self) -> (Option<u64>, Option<Duration>) {
        match self {
            Stop::Ops(n) => (Some(n), None),
            Stop::For(d) => (None, Some(d)),
            Stop::OpsOrFor(n, d) => (Some(n), Some(d)),
        }
    }
}

/// What one operation reports: its kind, and its outcome. `None` means "nothing left to do".
/// Generic over the error type, so every protocol the harness speaks shares the loops.
pub type OutcomeOf<E> = Option<(&'static str, Result<(), E>)>;
/// The outcome of a ZooKeeper operation.
pub type Outcome = OutcomeOf<zookeeper_client::Error>;

/// Runs `op(client, seq)` closed-loop on `clients.len() × depth` workers until `stop`.
/// `seq` is a global sequence number, unique per call. Returns the measured window.
/// A client is anything cheap to clone that the op drives (a ZooKeeper session, an HTTP or
/// gRPC connection).
pub async fn closed_loop<C, E, F, Fut>(
    clients: &[C],
    depth: usize,
    stop: Stop,
    rec: Arc<Recorder>,
    op: F,
) -> Duration
where
    C: Clone + Send + Sync + 'static,
    E: ErrorKind,
    F: Fn(C, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = OutcomeOf<E>> + Send + 'static,
{
    let op = Arc::new(op);
    let counter = Arc::new(AtomicU64::new(0));
    let (max_ops, max_time) = stop.limit();
    let t0 = Instant::now();
    let deadline = max_time.map(|d| t0 + d);
    let mut workers = Vec::new();
    for client in clients {
        for _ in 0..depth.max(1) {
            let (client, op, counter, rec) =
                (client.clone(), op.clone(), counter.clone(), rec.clone());
            workers.push(tokio::spawn(async move {
                loop {
                    let seq = counter.fetch_add(1, Ordering::Relaxed);
                    if max_ops.is_some_and(|n| seq >= n)
                        || deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        break;
                    }
                    let t = Instant::now();
                    let Some((name, result)) = op(client.clone(), seq).await else {
                        break;
                    };
                    rec.record(name, t, Instant::now(), result.err().map(|e| e.kind()));
                }
            }));
        }
    }
    for w in workers {
        let _ = w.await;
    }
    t0.elapsed()
}

/// Requests beyond this many in flight are not sent; they count as `ClientBacklog` errors.
const MAX_IN_FLIGHT: usize = 20_000;

/// Sends `op` at `rate` per second, spread round-robin over `clients`, for `duration`.
/// Latency runs from each request's intended send time.
pub async fn open_loop<C, E, F, Fut>(
    clients: &[C],
    rate: f64,
    duration: Duration,
    rec: Arc<Recorder>,
    op: F,
) -> Duration
where
    C: Clone + Send + Sync + 'static,
    E: ErrorKind,
    F: Fn(C, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = OutcomeOf<E>> + Send + 'static,
{
    let op = Arc::new(op);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let t0 = Instant::now();
    let total = (duration.as_secs_f64() * rate).floor() as u64;
    let mut tasks = tokio::task::JoinSet::new();
    let mut seq = 0u64;
    while seq < total {
        let now = Instant::now();
        // Issue everything whose intended time has come (the timer wakes at ~1 ms granularity).
        while seq < total {
            let intended = t0 + interval.mul_f64(seq as f64);
            if intended > now {
                break;
            }
            match in_flight.clone().try_acquire_owned() {
                Ok(permit) => {
                    let (client, op, rec) = (
                        clients[seq as usize % clients.len()].clone(),
                        op.clone(),
                        rec.clone(),
                    );
                    let s = seq;
                    tasks.spawn(async move {
                        if let Some((name, result)) = op(client, s).await {
                            rec.record(
                                name,
                                intended,
                                Instant::now(),
                                result.err().map(|e| e.kind()),
                            );
                        }
                        drop(permit);
                    });
                }
                Err(_) => rec.record(
                    "backlog",
                    intended,
                    Instant::now(),
                    Some("ClientBacklog".into()),
                ),
            }
            seq += 1;
        }
        while tasks.try_join_next().is_some() {}
        if seq < total {
            tokio::time::sleep_until((t0 + interval.mul_f64(seq as f64)).into()).await;
        }
    }
    while tasks.join_next().await.is_some() {}
    t0.elapsed()
}

/// One step of a knee search.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KneeStep {
    pub offered_rate: f64,
    pub achieved_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// Result of a knee search: the highest offered rate whose p99 stayed within the bound.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Knee {
    pub p99_bound_ms: f64,
    pub knee_rate: Option<f64>,
    pub steps: Vec<KneeStep>,
}

/// Ramps the open-loop rate from `start` by `factor` per step of `step` until p99 exceeds
/// `bound_ms`, errors exceed 1 %, the server falls 10 % behind the offered rate, or `max_steps`.
pub async fn find_knee<C, E, F, Fut>(
    clients: &[C],
    start: f64,
    factor: f64,
    step: Duration,
    max_steps: usize,
    bound_ms: f64,
    op: F,
) -> Knee
where
    C: Clone + Send + Sync + 'static,
    E: ErrorKind,
    F: Fn(C, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = OutcomeOf<E>> + Send + 'static,
{
    let mut steps = Vec::new();
    let mut knee_rate = None;
    let mut rate = start;
    for _ in 0..max_steps {
        let rec = Arc::new(Recorder::new());
        let progress = crate::record::Progress::start(format!("knee {rate:.0}/s"), rec.clone());
        let elapsed = open_loop(clients, rate, step, rec.clone(), op.clone()).await;
        drop(progress);
        let stats = rec.summarize();
        let ok: u64 = stats.iter().map(|s| s.ok).sum();
        let errors: u64 = stats.iter().map(|s| s.error_count()).sum();
        let worst = |f: fn(&crate::record::OpStats) -> f64| stats.iter().map(f).fold(0.0, f64::max);
        let s = KneeStep {
            offered_rate: rate,
            achieved_rate: ok as f64 / elapsed.as_secs_f64(),
            p50_ms: worst(|s| s.p50_ms),
            p99_ms: worst(|s| s.p99_ms),
            errors,
        };
        eprintln!(
            "knee step: offered {:.0}/s achieved {:.0}/s p50 {:.2} ms p99 {:.2} ms errors {}",
            s.offered_rate, s.achieved_rate, s.p50_ms, s.p99_ms, s.errors
        );
        let total = ok + errors;
        let over = s.p99_ms > bound_ms
            || (total > 0 && errors as f64 / total as f64 > 0.01)
            || s.achieved_rate < 0.9 * s.offered_rate;
        steps.push(s);
        if over {
            break;
        }
        knee_rate = Some(rate);
        rate *= factor;
    }
    Knee {
        p99_bound_ms: bound_ms,
        knee_rate,
        steps,
    }
}
