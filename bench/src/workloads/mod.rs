//! The workloads. Each opens its own sessions, prepares what it needs under
//! `/roster-bench/<run-id>`, measures, and (unless told to keep it) removes its tree.

mod fanout;
mod fault;
mod latencies;
mod nacos;
mod native;
mod registry;
mod simple;
mod storm;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::load::{self, ErrorKind, Knee, OutcomeOf, Stop};
use crate::native::{ApiTarget, Protocol};
use crate::record::{OpStats, Progress, Recorder, TimelinePoint};
use crate::server_stats::ServerStats;
use crate::zk::SessionSpec;

pub use fault::{FaultPlan, FaultRecord, run_with_fault};
pub use nacos::Nacos;
pub use native::NativeKind;
pub use simple::{Simple, mix};

/// A named workload.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workload {
    /// One of the single-operation workloads (create, set, get, delete, mixed).
    Simple(Simple),
    /// The zk-latencies sequence: create, set, get, delete, ephemeral create, watch ×5.
    ZkLatencies,
    /// One writer, many watchers: notification latency.
    WatchFanout,
    /// Thousands of sessions connect, each with an ephemeral, then all expire at once.
    SessionStorm,
    /// Many sessions register ephemerals as fast as they can, then all close at once.
    EphemeralStorm,
    /// Roster's native API (registry, config or lock) over HTTP or gRPC.
    Native(NativeKind, Protocol),
    /// nacos-bench-style load on the Nacos HTTP v1 open API, open loop.
    Nacos(Nacos),
    /// Eureka renew storm: `--keys` instances renewing every 30 s, open loop.
    EurekaRenew,
    /// Register through one protocol, time until visible (and gone) through another.
    RegistryCross,
}

/// Every workload name `--workload` accepts.
pub const NAMES: &[&str] = &[
    "create",
    "set",
    "get",
    "delete",
    "mixed",
    "zk-latencies",
    "watch-fanout",
    "session-storm",
    "ephemeral-storm",
    "api-registry",
    "api-config",
    "api-lock",
    "nacos-register",
    "nacos-query",
    "nacos-subscribe",
    "nacos-config-publish",
    "nacos-config-get",
    "eureka-renew",
    "registry-cross",
];

impl Workload {
    /// Parses a name; `mixed` is expanded once per read share and `api-*` once per protocol
    /// by the caller.
    pub fn parse(
        name: &str,
        read_share_percent: f64,
        protocol: Protocol,
    ) -> anyhow::Result<Workload> {
        Ok(match name {
            "create" => Workload::Simple(Simple::Create),
            "set" => Workload::Simple(Simple::Set),
            "get" => Workload::Simple(Simple::Get),
            "delete" => Workload::Simple(Simple::Delete),
            "mixed" => Workload::Simple(Simple::Mixed {
                read_percent: read_share_percent,
            }),
            "zk-latencies" => Workload::ZkLatencies,
            "watch-fanout" => Workload::WatchFanout,
            "session-storm" => Workload::SessionStorm,
            "ephemeral-storm" => Workload::EphemeralStorm,
            "api-registry" => Workload::Native(NativeKind::Registry, protocol),
            "api-config" => Workload::Native(NativeKind::Config, protocol),
            "api-lock" => Workload::Native(NativeKind::Lock, protocol),
            "nacos-register" => Workload::Nacos(Nacos::Register),
            "nacos-query" => Workload::Nacos(Nacos::Query),
            "nacos-subscribe" => Workload::Nacos(Nacos::Subscribe),
            "nacos-config-publish" => Workload::Nacos(Nacos::ConfigPublish),
            "nacos-config-get" => Workload::Nacos(Nacos::ConfigGet),
            "eureka-renew" => Workload::EurekaRenew,
            "registry-cross" => Workload::RegistryCross,
            other => anyhow::bail!("unknown workload {other:?}; known: {}", NAMES.join(", ")),
        })
    }

    /// Name as shown in reports (`mixed-90` for 90 % reads).
    pub fn label(&self) -> String {
        match self {
            Workload::Simple(s) => s.label(),
            Workload::ZkLatencies => "zk-latencies".into(),
            Workload::WatchFanout => "watch-fanout".into(),
            Workload::SessionStorm => "session-storm".into(),
            Workload::EphemeralStorm => "ephemeral-storm".into(),
            Workload::Native(k, proto) => format!("api-{}-{}", k.name(), proto.name()),
            Workload::Nacos(n) => n.name().into(),
            Workload::EurekaRenew => "eureka-renew".into(),
            Workload::RegistryCross => "registry-cross".into(),
        }
    }

    /// Whether it speaks the ZooKeeper protocol (the others need `--http`, and only `run`
    /// drives them: Apache ZooKeeper has no such API to compare with).
    pub fn is_zookeeper(&self) -> bool {
        !matches!(
            self,
            Workload::Native(..)
                | Workload::Nacos(_)
                | Workload::EurekaRenew
                | Workload::RegistryCross
        )
    }
}

/// Open-loop rate ramp to find where p99 crosses a bound.
#[derive(Clone, Debug)]
pub struct KneeOpts {
    pub start_rate: f64,
    pub factor: f64,
    pub step: Duration,
    pub max_steps: usize,
    pub p99_bound_ms: f64,
}

/// How to drive a workload.
#[derive(Clone, Debug)]
pub struct Params {
    pub spec: SessionSpec,
    pub sessions: usize,
    pub depth: usize,
    pub stop: Stop,
    pub warmup: Duration,
    /// Open loop at this rate (ops/s) instead of closed loop.
    pub rate: Option<f64>,
    pub knee: Option<KneeOpts>,
    pub value_size: usize,
    pub keys: u64,
    /// Remove the run's tree afterwards (not needed on a throw-away server).
    pub cleanup: bool,
    /// Unique per run; names the base path.
    pub run_id: String,
    /// Server processes to sample during the measured phase (an ensemble's members summed).
    pub server_pids: Vec<u32>,
    /// Where the native and Nacos APIs listen (`--http`, `--grpc`).
    pub api: Option<ApiTarget>,
}

impl Params {
    fn base(&self) -> String {
        format!("/roster-bench/{}", self.run_id)
    }

    /// Starts sampling the server processes, if any are known.
    fn watch(&self) -> Option<crate::server_stats::Watch> {
        (!self.server_pids.is_empty())
            .then(|| crate::server_stats::Watch::start_many(self.server_pids.clone()))
    }

    fn api(&self) -> anyhow::Result<&ApiTarget> {
        self.api
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the API and Nacos workloads need --http host:port"))
    }

    /// A name unique to the run, usable as a group, service or lock name.
    fn run_name(&self) -> String {
        format!("bench-{}", self.run_id)
    }

    fn value(&self) -> Vec<u8> {
        (0..self.value_size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect()
    }
}

/// What one workload measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkloadResult {
    pub workload: String,
    /// `closed(16x8)`, `open(5000/s)` or `knee`.
    pub mode: String,
    /// The measured phase, seconds.
    pub elapsed_s: f64,
    pub ops: Vec<OpStats>,
    /// Figures particular to a workload (expiry times, notifications per round…).
    pub extras: BTreeMap<String, f64>,
    pub timeline: Vec<TimelinePoint>,
    pub knee: Option<Knee>,
    pub server: Option<ServerStats>,
    /// The fault injected during the measured phase, and the availability it left.
    #[serde(default)]
    pub fault: Option<FaultRecord>,
}

impl WorkloadResult {
    /// A measured phase as the recorder saw it (the workload's name is filled in by the caller,
    /// no fault).
    pub fn measured(
        mode: String,
        elapsed: Duration,
        rec: &Recorder,
        extras: BTreeMap<String, f64>,
        knee: Option<Knee>,
        server: Option<ServerStats>,
    ) -> WorkloadResult {
        WorkloadResult {
            workload: String::new(),
            mode,
            elapsed_s: elapsed.as_secs_f64(),
            ops: rec.summarize(),
            extras,
            timeline: rec.timeline(),
            knee,
            server,
            fault: None,
        }
    }
}

impl WorkloadResult {
    /// The figures of the workload's main operation (the first listed for multi-op workloads).
    pub fn main_op(&self) -> Option<&OpStats> {
        self.ops.iter().max_by_key(|o| o.ok)
    }
}

/// Runs one workload.
pub async fn run(w: Workload, p: &Params) -> anyhow::Result<WorkloadResult> {
    let mut result = match w {
        Workload::Simple(s) => simple::run(s, p).await?,
        Workload::ZkLatencies => latencies::run(p).await?,
        Workload::WatchFanout => fanout::run(p).await?,
        Workload::SessionStorm => storm::run_session_storm(p).await?,
        Workload::EphemeralStorm => storm::run_ephemeral_storm(p).await?,
        Workload::Native(kind, proto) => native::run(kind, proto, p).await?,
        Workload::Nacos(n) => nacos::run(n, p).await?,
        Workload::EurekaRenew => registry::run_renew(p).await?,
        Workload::RegistryCross => registry::run_cross(p).await?,
    };
    result.workload = w.label();
    Ok(result)
}

/// Sequence numbers of warm-up requests carry this bit, so a workload that names things by
/// sequence number (`nacos-register`) keeps warm-up and measured requests apart.
pub(crate) const WARM_BIT: u64 = 1 << 40;

/// Runs `f` unmeasured for `--warmup` (nothing when it is 0): open loop at `rate` if given,
/// else closed loop at `clients × depth`. The sequence numbers it gets carry [`WARM_BIT`].
pub(crate) async fn warm_up<C, E, F, Fut>(
    clients: &[C],
    depth: usize,
    p: &Params,
    rate: Option<f64>,
    f: F,
) where
    C: Clone + Send + Sync + 'static,
    E: ErrorKind,
    F: Fn(C, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = OutcomeOf<E>> + Send + 'static,
{
    if p.warmup.is_zero() {
        return;
    }
    eprintln!("warming up for {:?}", p.warmup);
    let rec = Arc::new(Recorder::new());
    let f = move |c: C, seq: u64| f(c, seq | WARM_BIT);
    match rate {
        Some(rate) => {
            load::open_loop(clients, rate, p.warmup, rec, f).await;
        }
        None => {
            load::closed_loop(clients, depth, Stop::For(p.warmup), rec, f).await;
        }
    }
}

/// Runs the measured phase the way the parameters ask: a knee search (`--find-knee`), open
/// loop at `rate` (`--rate`, or a workload's own default rate), or closed loop at
/// `clients × depth`. Returns the mode as reports name it, and the knee if one was searched.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn measure<C, E, F, Fut>(
    clients: &[C],
    depth: usize,
    p: &Params,
    stop: Stop,
    rate: Option<f64>,
    label: String,
    rec: Arc<Recorder>,
    f: F,
) -> (String, Option<Knee>)
where
    C: Clone + Send + Sync + 'static,
    E: ErrorKind,
    F: Fn(C, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = OutcomeOf<E>> + Send + 'static,
{
    if let Some(k) = &p.knee {
        let knee = load::find_knee(
            clients,
            k.start_rate,
            k.factor,
            k.step,
            k.max_steps,
            k.p99_bound_ms,
            f,
        )
        .await;
        ("knee".to_string(), Some(knee))
    } else if let Some(rate) = rate {
        let _progress = Progress::start(label, rec.clone());
        let duration = match stop {
            Stop::Ops(n) => Duration::from_secs_f64(n as f64 / rate),
            Stop::For(d) | Stop::OpsOrFor(_, d) => d,
        };
        load::open_loop(clients, rate, duration, rec, f).await;
        (format!("open({rate}/s)"), None)
    } else {
        let _progress = Progress::start(label, rec.clone());
        load::closed_loop(clients, depth, stop, rec, f).await;
        (format!("closed({}x{depth})", clients.len()), None)
    }
}

/// Removes the run's tree if asked; a failure is reported, not fatal.
async fn cleanup(p: &Params, client: &crate::zk::Client) {
    if !p.cleanup {
        return;
    }
    if let Err(e) = crate::zk::remove_tree(client, &p.base(), Duration::from_secs(120)).await {
        eprintln!("warning: cleanup of {} failed: {e:#}", p.base());
    }
}
