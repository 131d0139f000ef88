//! Roster's native API under load, over HTTP or gRPC (`--protocol`). Each session is one
//! client connection holding one lease, kept alive in the background for the whole run.
//!
//! - `api-registry`: register instances bound to the session's lease (40 %), list a service's
//!   instances (40 %), keep the lease alive (20 %); meanwhile a probe registers and deregisters
//!   an instance of a watched service and times each until its event arrives on a subscribe
//!   stream (`subscribe-register`, `subscribe-deregister`).
//! - `api-config`: get (80 %) and put (20 %) of preloaded items; meanwhile a probe puts a
//!   watched item and times each put until a listener hears of it (`listen-notify`).
//! - `api-lock`: every session contends for one mutex; `acquire` latency and rate, `release`
//!   timed apart. Correctness check: the holders' fencing tokens must be strictly increasing
//!   and no two sessions may hold at once; a violation counts as an error of the acquire.

mod config;
mod lock;
mod registry;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{Params, WorkloadResult};
use crate::load::{self, Failure, OutcomeOf, Stop};
use crate::native::{Native, Protocol};
use crate::record::Recorder;
use crate::server_stats::Watch;

/// The native-API workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativeKind {
    Registry,
    Config,
    Lock,
}

impl NativeKind {
    pub fn name(self) -> &'static str {
        match self {
            NativeKind::Registry => "registry",
            NativeKind::Config => "config",
            NativeKind::Lock => "lock",
        }
    }
}

/// Pause between two probe rounds (the probes measure latency, they are not load).
const PROBE_GAP: Duration = Duration::from_millis(50);
/// A probe's event that has not arrived after this long counts as `NotifyTimeout`.
const PROBE_WAIT: Duration = Duration::from_secs(10);
/// How long a contender waits for the mutex before the acquire fails with `LOCK_HELD`.
const ACQUIRE_TIMEOUT_MS: u64 = 10_000;
/// Concurrent requests of a preload or cleanup.
const PREP_PARALLEL: usize = 64;

/// One client connection and the lease it holds.
#[derive(Clone)]
struct Session {
    api: Native,
    idx: usize,
    lease: i64,
}

/// The TTL of the sessions' leases: the session timeout, at least 10 s (a debug server
/// under load must not lose them between two background keep-alives).
fn lease_ttl(p: &Params) -> i64 {
    (p.spec.session_timeout.as_secs() as i64).max(10)
}

pub async fn run(kind: NativeKind, proto: Protocol, p: &Params) -> anyhow::Result<WorkloadResult> {
    let target = p.api()?.clone();
    let ttl = lease_ttl(p);
    let mut sessions = Vec::new();
    for idx in 0..p.sessions.max(1) {
        let api = Native::connect(proto, &target).await?;
        let lease = api
            .grant(ttl)
            .await
            .with_context(|| format!("granting a lease over {}", proto.name()))?;
        sessions.push(Session { api, idx, lease });
    }
    let keeper = keep_alive(&sessions, ttl);
    let result = match kind {
        NativeKind::Registry => registry::run(&sessions, proto, &target, p).await,
        NativeKind::Config => config::run(&sessions, proto, &target, p).await,
        NativeKind::Lock => lock::run(&sessions, p).await,
    };
    keeper.abort();
    if p.cleanup {
        // Revoking a lease removes the instances and lock contenders bound to it.
        for s in &sessions {
            if let Err(e) = s.api.revoke(s.lease).await {
                eprintln!("warning: revoking lease {}: {e}", s.lease);
            }
        }
    }
    let mut result = result?;
    result
        .extras
        .insert("sessions".into(), sessions.len() as f64);
    Ok(result)
}

/// Keeps every session's lease alive every third of its TTL until aborted.
fn keep_alive(sessions: &[Session], ttl: i64) -> tokio::task::JoinHandle<()> {
    let sessions = sessions.to_vec();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(ttl as f64 / 3.0));
        tick.tick().await;
        loop {
            tick.tick().await;
            for s in &sessions {
                if let Err(e) = s.api.keepalive(s.lease).await {
                    eprintln!("warning: background keep-alive of lease {}: {e}", s.lease);
                }
            }
        }
    })
}

/// Runs `op` on `keys` sequence numbers closed-loop and fails on any error.
async fn preload<F, Fut>(sessions: &[Session], keys: u64, what: &str, op: F) -> anyhow::Result<()>
where
    F: Fn(Session, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = OutcomeOf<Failure>> + Send + 'static,
{
    eprintln!("preparing {keys} {what}");
    let rec = Arc::new(Recorder::new());
    let depth = PREP_PARALLEL.div_ceil(sessions.len());
    load::closed_loop(sessions, depth, Stop::Ops(keys), rec.clone(), op).await;
    super::simple::fail_on_errors(&rec, &format!("preparing {what}"))
}

/// A latency probe running beside the load until told to stop.
struct Probe {
    task: tokio::task::JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

/// The measured phase with a probe beside it; returns the result.
async fn measured<F, Fut>(
    sessions: &[Session],
    depth: usize,
    p: &Params,
    label: String,
    rec: Arc<Recorder>,
    probe: Option<Probe>,
    op: F,
) -> WorkloadResult
where
    F: Fn(Session, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = OutcomeOf<Failure>> + Send + 'static,
{
    super::warm_up(sessions, depth, p, p.rate, op.clone()).await;
    let watch = p.watch();
    let t0 = Instant::now();
    let (mode, knee) =
        super::measure(sessions, depth, p, p.stop, p.rate, label, rec.clone(), op).await;
    let elapsed = t0.elapsed();
    if let Some(probe) = probe {
        probe.stop.store(true, Ordering::Relaxed);
        // A probe waiting on an event gives up after PROBE_WAIT.
        let _ = tokio::time::timeout(PROBE_WAIT + Duration::from_secs(5), probe.task).await;
    }
    let server = watch.map(Watch::finish);
    WorkloadResult::measured(mode, elapsed, &rec, Default::default(), knee, server)
}
