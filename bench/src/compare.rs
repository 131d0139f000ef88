//! Side by side: the same workloads on Roster and Apache ZooKeeper, alternating which goes
//! first each round, each run on a freshly started server with a fresh data dir (or on servers
//! attached to), then the median of each figure over rounds and the ratio Roster / ZooKeeper.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::deploy::{
    Attached, Deployment, EnsembleSpec, RosterStandalone, ScriptEnsemble, ZooKeeperStandalone,
};
use crate::report::{CompareRow, Report, RunRecord, main_rate};
use crate::server_stats::pid_listening_on;
use crate::workloads::{self, FaultPlan, Params, Workload};

/// Where the two systems come from.
pub struct Systems {
    pub roster_bin: Option<PathBuf>,
    pub zookeeper_start: Option<PathBuf>,
    pub roster_addr: Option<String>,
    pub zookeeper_addr: Option<String>,
    pub roster_pid: Option<u32>,
    pub zookeeper_pid: Option<u32>,
    /// Fresh data dirs are made under here.
    pub work_dir: PathBuf,
    /// Start ensembles (through `roster_cluster` and `zookeeper_ensemble`) instead of
    /// standalone servers.
    pub ensemble: Option<EnsembleSpec>,
    /// `deploy/local/cluster.sh`.
    pub roster_cluster: PathBuf,
    /// `compat/zookeeper/ensemble.sh`.
    pub zookeeper_ensemble: PathBuf,
    /// Which of "roster", "zookeeper" to run.
    pub only: Vec<String>,
    /// Start standalone servers pinned to these CPUs (`taskset -c`).
    pub server_cpus: Option<String>,
    /// `roster --backend` of the Roster servers started (zab, raft, ap).
    pub roster_backend: String,
}

impl Systems {
    fn start(&self, system: &str, dir: &Path) -> anyhow::Result<Box<dyn Deployment>> {
        let attached = |addr: &String, pid: Option<u32>| -> Box<dyn Deployment> {
            let port = addr.rsplit(':').next().and_then(|p| p.parse().ok());
            Box::new(Attached {
                system: system.to_string(),
                addr: addr.clone(),
                pid: pid.or_else(|| port.and_then(pid_listening_on)),
            })
        };
        if let Some(spec) = &self.ensemble {
            let attached_addr = match system {
                "roster" => &self.roster_addr,
                _ => &self.zookeeper_addr,
            };
            if let Some(a) = attached_addr {
                return Ok(attached(a, None));
            }
            return Ok(Box::new(match system {
                "roster" => ScriptEnsemble::start(
                    "roster",
                    &self.roster_cluster,
                    self.roster_bin.as_deref(),
                    &self.roster_backend,
                    spec,
                    dir,
                )?,
                _ => ScriptEnsemble::start(
                    "zookeeper",
                    &self.zookeeper_ensemble,
                    None,
                    "",
                    spec,
                    dir,
                )?,
            }));
        }
        Ok(match system {
            "roster" => match (&self.roster_addr, &self.roster_bin) {
                (Some(a), _) => attached(a, self.roster_pid),
                (None, Some(bin)) => Box::new(RosterStandalone::start(
                    bin,
                    &self.roster_backend,
                    dir,
                    self.server_cpus.as_deref(),
                )?),
                (None, None) => anyhow::bail!("give --roster-bin PATH or --roster ADDR"),
            },
            _ => match (&self.zookeeper_addr, &self.zookeeper_start) {
                (Some(a), _) => attached(a, self.zookeeper_pid),
                (None, Some(script)) => Box::new(ZooKeeperStandalone::start(
                    script,
                    dir,
                    self.server_cpus.as_deref(),
                )?),
                (None, None) => anyhow::bail!("give --zookeeper-start PATH or --zookeeper ADDR"),
            },
        })
    }
}

/// Runs `workloads` on both systems for `rounds` rounds (with `fault` injected during each
/// measured phase, if given); appends runs and the comparison.
pub async fn compare(
    systems: &Systems,
    workloads: &[Workload],
    rounds: usize,
    base: &Params,
    fault: Option<&FaultPlan>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let keep_dirs = std::env::var_os("ROSTER_BENCH_KEEP_DATA").is_some();
    for round in 1..=rounds {
        for (wi, w) in workloads.iter().enumerate() {
            let mut order: Vec<&str> = ["roster", "zookeeper"]
                .into_iter()
                .filter(|s| systems.only.iter().any(|o| o == s))
                .collect();
            if (round + wi) % 2 == 0 {
                order.reverse();
            }
            for system in order {
                let dir = systems
                    .work_dir
                    .join(format!("r{round}-{}-{system}", w.label()));
                let _ = std::fs::remove_dir_all(&dir);
                eprintln!("== round {round}/{rounds}: {} on {system}", w.label());
                let mut dep = systems
                    .start(system, &dir)
                    .with_context(|| format!("starting {system}"))?;
                let mut p = base.clone();
                p.spec.target = dep.connect_string();
                p.server_pids = dep.server_pids();
                p.run_id = crate::run_id();
                // A fresh server is thrown away; an attached one is cleaned up after.
                p.cleanup = systems.roster_addr.is_some() || systems.zookeeper_addr.is_some();
                let server_info = crate::deploy::describe_server(&p.spec.target);
                let result = match (fault, w) {
                    (None, _) => workloads::run(*w, &p).await,
                    (Some(plan), Workload::Simple(kind)) => {
                        workloads::run_with_fault(*kind, &p, plan, dep.as_mut()).await
                    }
                    (Some(_), other) => Err(anyhow::anyhow!(
                        "faults run with create, set, get or mixed, not {}",
                        other.label()
                    )),
                };
                let name = dep.system().to_string();
                let stopped = dep.stop();
                drop(dep);
                if !keep_dirs {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                let result = result.with_context(|| format!("{} on {system}", w.label()))?;
                stopped.with_context(|| format!("stopping {system}"))?;
                report.runs.push(RunRecord {
                    system: name,
                    target: p.spec.target,
                    round: Some(round),
                    server_info,
                    result,
                });
            }
        }
    }
    report.comparison = summarize(&report.runs);
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median figures per workload and system, and their ratios.
pub fn summarize(runs: &[RunRecord]) -> Vec<CompareRow> {
    type Figure = (&'static str, bool, fn(&RunRecord) -> f64);
    let figures: [Figure; 10] = [
        ("throughput ops/s", true, main_rate),
        ("p50 ms", false, |r| {
            r.result.main_op().map_or(f64::NAN, |o| o.p50_ms)
        }),
        ("p99 ms", false, |r| {
            r.result.main_op().map_or(f64::NAN, |o| o.p99_ms)
        }),
        ("p99.9 ms", false, |r| {
            r.result.main_op().map_or(f64::NAN, |o| o.p999_ms)
        }),
        ("max ms", false, |r| {
            r.result.main_op().map_or(f64::NAN, |o| o.max_ms)
        }),
        ("errors", false, |r| {
            r.result.ops.iter().map(|o| o.error_count() as f64).sum()
        }),
        ("server RSS peak MiB", false, |r| {
            r.result.server.as_ref().map_or(f64::NAN, |s| s.rss_peak_mb)
        }),
        ("server anon RSS peak MiB", false, |r| {
            r.result
                .server
                .as_ref()
                .map_or(f64::NAN, |s| s.anon_peak_mb)
        }),
        ("server CPU %", false, |r| {
            r.result.server.as_ref().map_or(f64::NAN, |s| s.cpu_percent)
        }),
        ("ops per server CPU-second", true, |r| {
            r.result.server.as_ref().map_or(f64::NAN, |s| {
                main_rate(r) / (s.cpu_percent / 100.0).max(1e-9)
            })
        }),
    ];
    let mut workloads: Vec<String> = Vec::new();
    for r in runs {
        if !workloads.contains(&r.result.workload) {
            workloads.push(r.result.workload.clone());
        }
    }
    let mut rows = Vec::new();
    for w in workloads {
        for (name, higher, f) in figures {
            let of = |sys: &str| {
                median(
                    runs.iter()
                        .filter(|r| r.system == sys && r.result.workload == w)
                        .map(f)
                        .collect(),
                )
            };
            let (ro, zk) = (of("roster"), of("zookeeper"));
            let ratio = if zk == 0.0 && ro == 0.0 { 1.0 } else { ro / zk };
            rows.push(CompareRow {
                workload: w.clone(),
                figure: name.into(),
                roster: ro,
                zookeeper: zk,
                ratio,
                higher_is_better: higher,
            });
        }
        // Workload figures (expiry times, lost notifications…): lower is better for all of them.
        let mut keys: Vec<&String> = runs
            .iter()
            .filter(|r| r.result.workload == w)
            .flat_map(|r| r.result.extras.keys())
            .collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let of = |sys: &str| {
                median(
                    runs.iter()
                        .filter(|r| r.system == sys && r.result.workload == w)
                        .filter_map(|r| r.result.extras.get(k).copied())
                        .collect(),
                )
            };
            let (ro, zk) = (of("roster"), of("zookeeper"));
            rows.push(CompareRow {
                workload: w.clone(),
                figure: k.clone(),
                roster: ro,
                zookeeper: zk,
                ratio: if zk == 0.0 && ro == 0.0 { 1.0 } else { ro / zk },
                // Rates are better higher; times, counts and sizes lower.
                higher_is_better: k.ends_with("_ops_s"),
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_skips_nan() {
        assert_eq!(super::median(vec![3.0, f64::NAN, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(vec![1.0, 2.0]), 1.5);
        assert!(super::median(vec![]).is_nan());
    }
}
