//! roster-bench: the load harness. A client-only binary: it drives servers over the wire like
//! any ZooKeeper client (through the `zookeeper-client` crate) — Roster's or Apache
//! ZooKeeper's — and never links server code. `run` measures one target; `compare` runs the same
//! workloads on Roster and ZooKeeper side by side; `machine` prints the machine figures.

mod availability;
mod chart;
mod compare;
mod deploy;
mod eureka;
mod http;
mod load;
mod machine;
mod nacos;
mod native;
mod record;
mod report;
mod server_stats;
mod workloads;
mod zk;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::load::Stop;
use crate::native::{ApiTarget, Protocol};
use crate::report::{Report, RunRecord};
use crate::workloads::{KneeOpts, Params, Workload};

#[derive(Parser)]
#[command(
    name = "roster-bench",
    about = "Load harness for Roster and Apache ZooKeeper",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run workloads against one server and write a report.
    Run(Box<RunArgs>),
    /// Run the same workloads on Roster and Apache ZooKeeper, alternating, and compare.
    Compare(Box<CompareArgs>),
    /// Measure and print the machine figures (CPU, fsync, loopback round trip).
    Machine {
        /// Directory where fsync is measured.
        #[arg(long, default_value = "/var/tmp")]
        fsync_dir: PathBuf,
    },
}

#[derive(Args, Clone)]
struct LoadArgs {
    /// Workloads, comma-separated. ZooKeeper protocol: create, set, get, delete, mixed,
    /// zk-latencies, watch-fanout, session-storm, ephemeral-storm. Roster's native API (`run`
    /// only, needs --http): api-registry, api-config, api-lock. Nacos HTTP v1 open API (`run`
    /// only, needs --http): nacos-register, nacos-query, nacos-subscribe,
    /// nacos-config-publish, nacos-config-get. Registry across protocols (`run` only, needs
    /// --http): eureka-renew (a renew storm of --keys Eureka instances, each every 30 s),
    /// registry-cross (register through one protocol, time until visible through another; with
    /// --target the ZooKeeper/Curator layout joins).
    #[arg(long, default_value = "create,set,get,delete", value_delimiter = ',')]
    workload: Vec<String>,
    /// Sessions (watchers for watch-fanout, storm size for session-storm).
    #[arg(long, default_value_t = 16)]
    sessions: usize,
    /// Outstanding requests per session (closed loop).
    #[arg(long, default_value_t = 8)]
    depth: usize,
    /// Operations per measured phase (rounds for watch-fanout, nodes for zk-latencies).
    #[arg(long)]
    ops: Option<u64>,
    /// Seconds per measured phase (default 10 when --ops is not given).
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds of unmeasured load before each measured phase.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Open loop at this many ops/s instead of closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Ramp the open-loop rate (from --rate, default 500/s) until p99 crosses --knee-p99-ms.
    #[arg(long)]
    find_knee: bool,
    /// Rate multiplier per knee step.
    #[arg(long, default_value_t = 1.5)]
    knee_factor: f64,
    /// Seconds per knee step.
    #[arg(long, default_value_t = 3.0)]
    knee_step: f64,
    /// Most knee steps.
    #[arg(long, default_value_t = 20)]
    knee_max_steps: usize,
    /// The p99 bound of the knee search, ms.
    #[arg(long, default_value_t = 10.0)]
    knee_p99_ms: f64,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Preloaded keys read and written by set, get and mixed.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Read share(s) of `mixed`, percent, comma-separated (one run each), e.g. 0,50,90,100.
    #[arg(long, default_value = "90", value_delimiter = ',')]
    read_share: Vec<f64>,
    /// Transport(s) of the api-* workloads, comma-separated (one run each): http, grpc.
    #[arg(long, default_value = "http", value_delimiter = ',')]
    protocol: Vec<String>,
    /// Session timeout asked for, ms.
    #[arg(long, default_value_t = 4000)]
    session_timeout_ms: u64,
    /// Output directory for report.json, report.md and charts.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// fsync samples taken at start.
    #[arg(long, default_value_t = 200)]
    fsync_samples: u64,
}

#[derive(Args)]
struct RunArgs {
    /// ZooKeeper connect string of the server (host:port[,host:port…]); needed by the
    /// ZooKeeper-protocol workloads.
    #[arg(long)]
    target: Option<String>,
    /// HTTP address (host:port) of Roster's native API and Nacos API; needed by the api-* and
    /// nacos-* workloads.
    #[arg(long)]
    http: Option<String>,
    /// gRPC address (host:port) of the native API; default: the --http port + 1000.
    #[arg(long, requires = "http")]
    grpc: Option<String>,
    /// Name of the system in reports.
    #[arg(long, default_value = "target")]
    label: String,
    /// Server pid to sample (RSS, CPU); default: the process listening on the target's port.
    #[arg(long)]
    server_pid: Option<u32>,
    /// File holding the server pid.
    #[arg(long, conflicts_with = "server_pid")]
    server_pid_file: Option<PathBuf>,
    /// Directory where fsync is measured (ideally the server's data dir).
    #[arg(long, default_value = "/var/tmp")]
    fsync_dir: PathBuf,
    /// Leave the benchmark's nodes on the server.
    #[arg(long)]
    keep: bool,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args)]
struct CompareArgs {
    /// The roster binary to start (fresh data dir per run).
    #[arg(long)]
    roster_bin: Option<PathBuf>,
    /// ZooKeeper's start script (`start.sh <port> <dir>`; `stop.sh <dir>` beside it).
    #[arg(long)]
    zookeeper_start: Option<PathBuf>,
    /// Attach to a running Roster instead of starting one.
    #[arg(long)]
    roster: Option<String>,
    /// Attach to a running ZooKeeper instead of starting one.
    #[arg(long)]
    zookeeper: Option<String>,
    #[arg(long)]
    roster_pid: Option<u32>,
    #[arg(long)]
    zookeeper_pid: Option<u32>,
    /// Rounds (each runs every workload on both systems; the order alternates).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where fresh data dirs are made (and fsync is measured).
    #[arg(long, default_value = "/var/tmp/roster-bench-work")]
    work_dir: PathBuf,
    /// Members per system: 1 starts standalone servers; more start a Roster ensemble
    /// through --roster-cluster and a ZooKeeper ensemble through --zookeeper-ensemble.
    #[arg(long, default_value_t = 1)]
    ensemble: usize,
    /// The consistency backend of the Roster servers this starts (`roster --backend`), standalone
    /// or ensemble. Ignored when attaching with --roster.
    #[arg(long, default_value = "zab", value_parser = ["zab", "raft", "ap"])]
    roster_backend: String,
    /// Run each ensemble member in its own network namespace (bench/net.sh; needs root), so
    /// it can be partitioned. Without it members share 127.0.0.1.
    #[arg(long)]
    netns: bool,
    /// tickTime of both ensembles, ms (initLimit 10 and syncLimit 5 ticks on both).
    #[arg(long, default_value_t = 2000)]
    tick_ms: u64,
    /// The Roster ensemble runner. Relative paths (as these defaults) are taken from the working
    /// directory: run from the repository root, or give the path. (Not the build's source path:
    /// a target dir shared between clones would point every binary at whichever clone built it.)
    #[arg(long, default_value = "deploy/local/cluster.sh")]
    roster_cluster: PathBuf,
    /// The ZooKeeper ensemble runner (relative: from the working directory).
    #[arg(long, default_value = "compat/zookeeper/ensemble.sh")]
    zookeeper_ensemble: PathBuf,
    /// The network namespace helper (relative: from the working directory).
    #[arg(long, default_value = "bench/net.sh")]
    net_script: PathBuf,
    /// Systems to run, comma-separated.
    #[arg(long, default_value = "roster,zookeeper", value_delimiter = ',')]
    systems: Vec<String>,
    /// Fault injected during each measured phase: kill-leader, kill-follower,
    /// partition-leader, partition-follower, restart-leader, restart-follower (ensembles only).
    #[arg(long)]
    fault: Option<String>,
    /// Seconds into the measured phase when the fault hits.
    #[arg(long, default_value_t = 5.0)]
    fault_at: f64,
    /// Seconds until the fault is healed (killed member restarted, partition healed); default:
    /// kill and partition last to the end, restart starts the member again at once.
    #[arg(long)]
    fault_duration: Option<f64>,
    /// Start each standalone server pinned to these CPUs (`taskset -c LIST`, e.g. `1`): the
    /// server is started that way, so a JVM sizes its heap and threads for them. With
    /// --client-cpus, the load generator and the servers do not share cores.
    #[arg(long, value_name = "LIST")]
    server_cpus: Option<String>,
    /// Pin this load generator to these CPUs (`taskset -c LIST` on all its threads, e.g. `0`).
    #[arg(long, value_name = "LIST")]
    client_cpus: Option<String>,
    /// Recovered = this long of consecutive healthy 100 ms buckets, ms.
    #[arg(long, default_value_t = 1000)]
    recovery_sustain_ms: u64,
    /// Healthy bucket = no error and at least this share of the pre-fault median throughput.
    #[arg(long, default_value_t = 0.5)]
    recovery_healthy_fraction: f64,
    #[command(flatten)]
    load: LoadArgs,
}

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name unique to this process and call, for a run's base path.
pub fn run_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!(
        "{}-{ms}-{}",
        std::process::id(),
        RUN_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl LoadArgs {
    fn workloads(&self) -> anyhow::Result<Vec<Workload>> {
        let mut out = Vec::new();
        let protocols = self
            .protocol
            .iter()
            .map(|p| Protocol::parse(p.trim()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for name in &self.workload {
            let name = name.trim();
            if name == "mixed" {
                for share in &self.read_share {
                    anyhow::ensure!(
                        (0.0..=100.0).contains(share),
                        "--read-share is a percentage: {share}"
                    );
                    out.push(Workload::parse(name, *share, Protocol::Http)?);
                }
            } else if name.starts_with("api-") {
                for proto in &protocols {
                    out.push(Workload::parse(name, 0.0, *proto)?);
                }
            } else {
                out.push(Workload::parse(name, 0.0, Protocol::Http)?);
            }
        }
        Ok(out)
    }

    fn params(&self, target: &str) -> anyhow::Result<Params> {
        let stop = match (self.ops, self.duration) {
            (Some(n), Some(d)) => Stop::OpsOrFor(n, Duration::from_secs_f64(d)),
            (Some(n), None) => Stop::Ops(n),
            (None, Some(d)) => Stop::For(Duration::from_secs_f64(d)),
            (None, None) => Stop::For(Duration::from_secs(10)),
        };
        anyhow::ensure!(self.rate.is_none_or(|r| r > 0.0), "--rate must be positive");
        Ok(Params {
            spec: zk::SessionSpec {
                target: target.to_string(),
                session_timeout: Duration::from_millis(self.session_timeout_ms),
                detached: false,
            },
            sessions: self.sessions,
            depth: self.depth,
            stop,
            warmup: Duration::from_secs_f64(self.warmup),
            rate: self.rate,
            knee: self.find_knee.then(|| KneeOpts {
                start_rate: self.rate.unwrap_or(500.0),
                factor: self.knee_factor,
                step: Duration::from_secs_f64(self.knee_step),
                max_steps: self.knee_max_steps,
                p99_bound_ms: self.knee_p99_ms,
            }),
            value_size: self.value_size,
            keys: self.keys,
            cleanup: true,
            run_id: run_id(),
            server_pids: Vec::new(),
            api: None,
        })
    }

    fn describe(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("sessions".into(), self.sessions.to_string());
        m.insert("depth".into(), self.depth.to_string());
        m.insert("value_size".into(), self.value_size.to_string());
        m.insert("keys".into(), self.keys.to_string());
        if let Some(n) = self.ops {
            m.insert("ops".into(), n.to_string());
        }
        m.insert(
            "duration_s".into(),
            self.duration
                .map_or("10 (default)".into(), |d| d.to_string()),
        );
        m.insert("warmup_s".into(), self.warmup.to_string());
        if let Some(r) = self.rate {
            m.insert("rate".into(), r.to_string());
        }
        if self.workload.iter().any(|w| w.trim().starts_with("api-")) {
            m.insert("protocol".into(), self.protocol.join(","));
        }
        m.insert(
            "session_timeout_ms".into(),
            self.session_timeout_ms.to_string(),
        );
        m
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("roster-bench: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(real_main(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roster-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Machine { fsync_dir } => {
            let m = machine::measure(&fsync_dir, 200, 2000)?;
            println!("{}", serde_json::to_string_pretty(&m)?);
            Ok(())
        }
        Cmd::Run(args) => run(*args).await,
        Cmd::Compare(args) => compare(*args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let workloads = args.load.workloads()?;
    if workloads.iter().any(Workload::is_zookeeper) {
        anyhow::ensure!(
            args.target.is_some(),
            "the ZooKeeper-protocol workloads need --target host:port"
        );
    }
    let api = match &args.http {
        Some(http) => Some(ApiTarget {
            http: http.clone(),
            grpc: match &args.grpc {
                Some(g) => g.clone(),
                None => grpc_beside(http)?,
            },
        }),
        None => {
            anyhow::ensure!(
                workloads.iter().all(Workload::is_zookeeper),
                "the api-* and nacos-* workloads need --http host:port"
            );
            None
        }
    };
    // What reports name the target: the ZooKeeper address, else the HTTP one.
    let target = args
        .target
        .clone()
        .or_else(|| args.http.clone())
        .unwrap_or_default();
    let mut params = args.load.params(args.target.as_deref().unwrap_or(""))?;
    params.api = api;
    params.cleanup = !args.keep;
    params.server_pids = match (&args.server_pid, &args.server_pid_file) {
        (Some(p), _) => Some(*p),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim()
                .parse()
                .with_context(|| format!("pid in {}", f.display()))?,
        ),
        (None, None) => {
            let port = target
                .split(',')
                .next()
                .and_then(|h| h.rsplit(':').next())
                .and_then(|p| p.parse().ok());
            let pid = port.and_then(server_stats::pid_listening_on);
            if pid.is_none() {
                eprintln!(
                    "note: no local process found listening on the target port; server RSS/CPU not sampled"
                );
            }
            pid
        }
    }
    .into_iter()
    .collect();
    eprintln!(
        "measuring the machine (fsync in {}, loopback)",
        args.fsync_dir.display()
    );
    let m = machine::measure(&args.fsync_dir, args.load.fsync_samples, 2000)?;
    let mut report = Report::new("run", m, args.load.describe());
    for w in workloads {
        eprintln!("== {} on {target}", w.label());
        let mut p = params.clone();
        p.run_id = run_id();
        let server_info = deploy::describe_server(&target);
        let result = workloads::run(w, &p)
            .await
            .with_context(|| format!("workload {}", w.label()))?;
        print_summary(&args.label, &result);
        report.runs.push(RunRecord {
            system: args.label.clone(),
            target: target.clone(),
            round: None,
            server_info,
            result,
        });
        report.write(&args.load.out)?;
    }
    report.write(&args.load.out)?;
    eprintln!("report: {}", args.load.out.join("report.md").display());
    Ok(())
}

/// The gRPC address beside an HTTP one: the same host, port + 1000 (Roster's default).
/// A helper script's path, made absolute against the working directory now (see the
/// `--roster-cluster` help).
fn script_path(p: &std::path::Path) -> anyhow::Result<PathBuf> {
    Ok(std::path::absolute(p)?)
}

fn grpc_beside(http: &str) -> anyhow::Result<String> {
    let (host, port) = http
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--http is host:port, not {http:?}"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow::anyhow!("--http is host:port, not {http:?}"))?;
    let grpc = port
        .checked_add(1000)
        .ok_or_else(|| anyhow::anyhow!("--http port {port} + 1000 is no port; give --grpc"))?;
    Ok(format!("{host}:{grpc}"))
}

async fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let workloads = args.load.workloads()?;
    if let Some(w) = workloads.iter().find(|w| !w.is_zookeeper()) {
        anyhow::bail!(
            "{} runs with `run` only: `compare` drives Roster and Apache ZooKeeper, which has no such API",
            w.label()
        );
    }
    let params = args.load.params("")?;
    anyhow::ensure!(
        args.server_cpus.is_none() || args.ensemble <= 1,
        "--server-cpus pins standalone servers only (not --ensemble members)"
    );
    if let Some(cpus) = &args.client_cpus {
        deploy::pin_process(std::process::id(), cpus)?;
    }
    std::fs::create_dir_all(&args.work_dir)?;
    eprintln!(
        "measuring the machine (fsync in {}, loopback)",
        args.work_dir.display()
    );
    let m = machine::measure(&args.work_dir, args.load.fsync_samples, 2000)?;
    let mut describe = args.load.describe();
    describe.insert("rounds".into(), args.rounds.to_string());
    describe.insert("ensemble".into(), args.ensemble.to_string());
    for (k, v) in [
        ("server_cpus", &args.server_cpus),
        ("client_cpus", &args.client_cpus),
    ] {
        if let Some(v) = v {
            describe.insert(k.into(), v.clone());
        }
    }
    for s in &args.systems {
        anyhow::ensure!(
            s == "roster" || s == "zookeeper",
            "--systems takes roster and/or zookeeper, not {s:?}"
        );
    }
    let fault = match &args.fault {
        None => None,
        Some(name) => {
            anyhow::ensure!(args.ensemble > 1, "--fault needs --ensemble 3 (or more)");
            let fault = deploy::Fault::parse(name)?;
            anyhow::ensure!(
                fault.kind != deploy::FaultKind::Partition || args.netns,
                "a partition needs --netns (each member in its own network namespace)"
            );
            describe.insert("fault".into(), fault.label());
            describe.insert("fault_at_s".into(), args.fault_at.to_string());
            if let Some(d) = args.fault_duration {
                describe.insert("fault_duration_s".into(), d.to_string());
            }
            Some(workloads::FaultPlan {
                fault,
                at: Duration::from_secs_f64(args.fault_at),
                duration: args.fault_duration.map(Duration::from_secs_f64),
                criteria: availability::Criteria {
                    healthy_fraction: args.recovery_healthy_fraction,
                    sustain: (args.recovery_sustain_ms / 100).max(1) as usize,
                    ..availability::Criteria::default()
                },
            })
        }
    };
    if args.roster.is_none() {
        describe.insert("roster_backend".into(), args.roster_backend.clone());
    }
    if args.ensemble > 1 {
        describe.insert("tick_ms".into(), args.tick_ms.to_string());
        describe.insert("netns".into(), args.netns.to_string());
    }
    let mut report = Report::new("compare", m, describe);
    let net_script = script_path(&args.net_script)?;
    let systems = compare::Systems {
        roster_bin: args.roster_bin,
        zookeeper_start: args.zookeeper_start,
        roster_addr: args.roster,
        zookeeper_addr: args.zookeeper,
        roster_pid: args.roster_pid,
        zookeeper_pid: args.zookeeper_pid,
        work_dir: args.work_dir,
        ensemble: (args.ensemble > 1).then_some(deploy::EnsembleSpec {
            size: args.ensemble,
            netns: args.netns,
            net_script,
            tick_ms: args.tick_ms,
        }),
        roster_cluster: script_path(&args.roster_cluster)?,
        zookeeper_ensemble: script_path(&args.zookeeper_ensemble)?,
        only: args.systems.clone(),
        server_cpus: args.server_cpus.clone(),
        roster_backend: args.roster_backend.clone(),
    };
    let outcome = compare::compare(
        &systems,
        &workloads,
        args.rounds.max(1),
        &params,
        fault.as_ref(),
        &mut report,
    )
    .await;
    // Whatever was measured is written, even when a later run failed.
    report.comparison = compare::summarize(&report.runs);
    report.write(&args.load.out)?;
    outcome?;
    for row in &report.comparison {
        println!(
            "{:<16} {:<26} roster {:>12.3}  zookeeper {:>12.3}  roster/zookeeper {:>6.2}",
            row.workload, row.figure, row.roster, row.zookeeper, row.ratio
        );
    }
    eprintln!("report: {}", args.load.out.join("report.md").display());
    Ok(())
}

fn print_summary(label: &str, r: &workloads::WorkloadResult) {
    for o in &r.ops {
        println!(
            "{label} {:<16} {:<20} ok {:>8} errors {:>5} {:>9.0} ops/s  p50 {:>8.3} ms  p99 {:>8.3} ms  p99.9 {:>8.3} ms  max {:>8.3} ms",
            r.workload,
            o.op,
            o.ok,
            o.error_count(),
            o.throughput,
            o.p50_ms,
            o.p99_ms,
            o.p999_ms,
            o.max_ms
        );
    }
    for (k, v) in &r.extras {
        println!("{label} {:<16} {k} = {v:.3}", r.workload);
    }
    if let Some(s) = &r.server {
        println!(
            "{label} {:<16} server pid {} RSS peak {:.1} MiB, CPU {:.0}%",
            r.workload, s.pid, s.rss_peak_mb, s.cpu_percent
        );
    }
}
