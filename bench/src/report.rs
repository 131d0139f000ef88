//! Reports: `report.json` (every figure), `report.md` (for people) and SVG charts, written to
//! one output directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::chart;
use crate::machine::Machine;
use crate::workloads::WorkloadResult;

/// One measured run of one workload on one system.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub system: String,
    pub target: String,
    /// Round number in a comparison (1-based).
    pub round: Option<usize>,
    /// What the server said of itself before the run (`mntr`): `zk_version` and, from Roster,
    /// `roster_backend`. Empty when it did not answer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub server_info: BTreeMap<String, String>,
    pub result: WorkloadResult,
}

/// One row of a comparison: a figure's median over rounds on each system, and their ratio.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompareRow {
    pub workload: String,
    pub figure: String,
    pub roster: f64,
    pub zookeeper: f64,
    /// roster / zookeeper.
    pub ratio: f64,
    /// Whether a higher figure is better (throughput) or lower (latency, memory).
    pub higher_is_better: bool,
}

/// Everything one invocation measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub version: String,
    /// `run` or `compare`.
    pub kind: String,
    pub command: Vec<String>,
    pub started_unix_s: u64,
    pub machine: Machine,
    pub params: BTreeMap<String, String>,
    pub runs: Vec<RunRecord>,
    pub comparison: Vec<CompareRow>,
}

impl Report {
    /// A report for this process's command line.
    pub fn new(kind: &str, machine: Machine, params: BTreeMap<String, String>) -> Report {
        Report {
            tool: "roster-bench".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: kind.into(),
            command: std::env::args().collect(),
            started_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            machine,
            params,
            runs: Vec::new(),
            comparison: Vec::new(),
        }
    }

    /// Writes report.json, report.md and the charts into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        let charts = self.charts(dir)?;
        std::fs::write(dir.join("report.md"), self.markdown(&charts))?;
        Ok(())
    }

    /// The runs chosen to represent each (system, workload): the median by main throughput.
    fn representatives(&self) -> Vec<&RunRecord> {
        let mut groups: BTreeMap<(String, String), Vec<&RunRecord>> = BTreeMap::new();
        for r in &self.runs {
            groups
                .entry((r.result.workload.clone(), r.system.clone()))
                .or_default()
                .push(r);
        }
        groups
            .into_values()
            .map(|mut v| {
                v.sort_by(|a, b| main_rate(a).total_cmp(&main_rate(b)));
                v[v.len() / 2]
            })
            .collect()
    }

    fn charts(&self, dir: &Path) -> anyhow::Result<Vec<String>> {
        let mut files = Vec::new();
        let reps = self.representatives();
        let systems: Vec<String> = unique(reps.iter().map(|r| r.system.clone()));
        let workloads: Vec<String> = unique(reps.iter().map(|r| r.result.workload.clone()));

        let multi = systems.len() > 1;
        // Latency percentiles: one chart per workload, a line per system and operation.
        for w in &workloads {
            let series: Vec<(String, Vec<(f64, f64)>)> = reps
                .iter()
                .filter(|r| &r.result.workload == w)
                .flat_map(|r| {
                    r.result
                        .ops
                        .iter()
                        .filter(|o| !o.curve.is_empty())
                        .map(move |o| {
                            let name = if multi {
                                format!("{} {}", r.system, o.op)
                            } else {
                                o.op.clone()
                            };
                            (name, o.curve.clone())
                        })
                })
                .collect();
            if series.is_empty() {
                continue;
            }
            let file = format!("latency-{w}.svg");
            chart::percentiles(
                &dir.join(&file),
                &format!("{w}: latency by percentile"),
                &series,
            )?;
            files.push(file);
        }

        // Throughput of the main operation per workload, a bar per system.
        let series: Vec<(String, Vec<f64>)> = systems
            .iter()
            .map(|s| {
                let values = workloads
                    .iter()
                    .map(|w| {
                        reps.iter()
                            .find(|r| &r.system == s && &r.result.workload == w)
                            .map_or(0.0, |r| main_rate(r))
                    })
                    .collect();
                (s.clone(), values)
            })
            .collect();
        if !workloads.is_empty() {
            let file = "throughput.svg".to_string();
            chart::bars(
                &dir.join(&file),
                "throughput of the main operation",
                "ops/s",
                &workloads,
                &series,
            )?;
            files.push(file);
        }

        for w in &workloads {
            let series: Vec<_> = reps
                .iter()
                .filter(|r| &r.result.workload == w && !r.result.timeline.is_empty())
                .map(|r| (r.system.clone(), r.result.timeline.clone()))
                .collect();
            if series.is_empty() {
                continue;
            }
            let file = format!("timeline-{w}.svg");
            chart::timeline(
                &dir.join(&file),
                &format!("{w}: throughput over time"),
                &series,
            )?;
            files.push(file);
        }

        // Fault runs: the availability view, one chart per workload, the representative run of
        // each system.
        for w in &workloads {
            let series: Vec<chart::FaultSeries> = reps
                .iter()
                .filter(|r| &r.result.workload == w)
                .filter_map(|r| {
                    let f = r.result.fault.as_ref()?;
                    Some(chart::FaultSeries {
                        name: r.system.clone(),
                        timeline: r.result.timeline.clone(),
                        injected_at_s: f.injected_at_s,
                        healed_at_s: f.healed_at_s,
                        recovered_at_s: f.recovery.recovered_at_s,
                    })
                })
                .collect();
            if series.is_empty() {
                continue;
            }
            let file = format!("fault-{w}.svg");
            chart::fault_timeline(
                &dir.join(&file),
                &format!("{w}: availability around the fault"),
                &series,
            )?;
            files.push(file);
        }

        for r in &reps {
            if let Some(k) = &r.result.knee {
                let file = format!("knee-{}-{}.svg", r.system, r.result.workload);
                chart::knee(
                    &dir.join(&file),
                    &format!(
                        "{} {}: latency vs offered rate",
                        r.system, r.result.workload
                    ),
                    k,
                )?;
                files.push(file);
            }
        }
        Ok(files)
    }

    /// The Markdown report.
    pub fn markdown(&self, charts: &[String]) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(s, "# roster-bench {} report\n", self.kind);
        let _ = writeln!(s, "Command: `{}`\n", self.command.join(" "));
        let _ = writeln!(s, "## Machine\n");
        let _ = writeln!(
            s,
            "| CPU | cores | kernel | load avg 1 min | fsync p50 / p99 | loopback RTT p50 / p99 |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} | {:.2} / {:.2} ms ({} × 4 KiB in `{}`) | {:.0} / {:.0} µs |\n",
            m.cpu_model,
            m.cores,
            m.kernel,
            m.load_avg_1m,
            m.fsync_p50_ms,
            m.fsync_p99_ms,
            m.fsync_samples,
            m.fsync_dir,
            m.loopback_rtt_p50_us,
            m.loopback_rtt_p99_us
        );
        if !self.params.is_empty() {
            let _ = writeln!(
                s,
                "Parameters: {}\n",
                self.params
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if !self.comparison.is_empty() {
            let _ = writeln!(s, "## Roster / ZooKeeper (median over rounds)\n");
            let _ = writeln!(
                s,
                "| workload | figure | Roster | ZooKeeper | Roster/ZooKeeper | better |"
            );
            let _ = writeln!(s, "|---|---|---:|---:|---:|---|");
            for c in &self.comparison {
                let better = if (c.ratio > 1.0) == c.higher_is_better {
                    "Roster"
                } else {
                    "ZooKeeper"
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {:.2} | {} |",
                    c.workload,
                    c.figure,
                    fmt_num(c.roster),
                    fmt_num(c.zookeeper),
                    c.ratio,
                    if c.ratio == 1.0 { "—" } else { better }
                );
            }
            s.push('\n');
        }
        let _ = writeln!(s, "## Runs\n");
        let _ = writeln!(
            s,
            "| system | round | workload | mode | op | ok | errors | ops/s | p50 ms | p99 ms | p99.9 ms | max ms | server RSS (anon) peak MiB | server CPU % |"
        );
        let _ = writeln!(
            s,
            "|---|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &self.runs {
            let (rss, cpu) = r
                .result
                .server
                .as_ref()
                .map_or(("—".into(), "—".into()), |v| {
                    (
                        format!("{:.1} ({:.1})", v.rss_peak_mb, v.anon_peak_mb),
                        format!("{:.0}", v.cpu_percent),
                    )
                });
            // "roster (raft)" when the server said which backend it runs.
            let system = match r.server_info.get("roster_backend") {
                Some(b) => format!("{} ({b})", r.system),
                None => r.system.clone(),
            };
            for o in &r.result.ops {
                let errors = if o.errors.is_empty() {
                    "0".to_string()
                } else {
                    o.errors
                        .iter()
                        .map(|(k, n)| format!("{k}: {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} |",
                    system,
                    r.round.map_or("—".into(), |n| n.to_string()),
                    r.result.workload,
                    r.result.mode,
                    o.op,
                    o.ok,
                    errors,
                    o.throughput,
                    o.p50_ms,
                    o.p99_ms,
                    o.p999_ms,
                    o.max_ms,
                    rss,
                    cpu
                );
            }
        }
        s.push('\n');
        let extras: Vec<_> = self
            .runs
            .iter()
            .filter(|r| !r.result.extras.is_empty())
            .collect();
        if !extras.is_empty() {
            let _ = writeln!(s, "## Workload figures\n");
            for r in extras {
                let figs: Vec<String> = r
                    .result
                    .extras
                    .iter()
                    .map(|(k, v)| format!("{k} = {}", fmt_num(*v)))
                    .collect();
                let _ = writeln!(
                    s,
                    "- {} {}: {}",
                    r.system,
                    r.result.workload,
                    figs.join(", ")
                );
            }
            s.push('\n');
        }
        let faulted: Vec<_> = self
            .runs
            .iter()
            .filter_map(|r| Some((r, r.result.fault.as_ref()?)))
            .collect();
        if !faulted.is_empty() {
            let _ = writeln!(s, "## Faults\n");
            let _ = writeln!(
                s,
                "Times in seconds from the start of the measured phase. Disrupted: the first 100 ms \
                 bucket after the fault with an error or under half the pre-fault median \
                 throughput; recovered: the first of a sustained run of buckets without either; \
                 recovery = recovered − disrupted.\n"
            );
            let _ = writeln!(
                s,
                "| system | round | workload | member hit | leader before → after | fault at | healed at | baseline ops/s | disrupted at | recovered at | **recovery s** | no-success s | errors | sessions re-opened |"
            );
            let _ = writeln!(
                s,
                "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            let opt = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2}"));
            let member = |v: Option<usize>| v.map_or("—".to_string(), |v| v.to_string());
            for (r, f) in faulted {
                let rec = &f.recovery;
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} → {} | {:.2} | {} | {:.0} | {} | {} | **{}** | {:.1} | {} | {} |",
                    r.system,
                    r.round.map_or("—".into(), |n| n.to_string()),
                    r.result.workload,
                    f.member,
                    member(f.leader_before),
                    member(f.leader_after),
                    f.injected_at_s,
                    opt(f.healed_at_s),
                    rec.baseline_ops_s,
                    opt(rec.disrupted_at_s),
                    rec.recovered_at_s
                        .map_or("not within the run".to_string(), |v| format!("{v:.2}")),
                    opt(rec.recovery_s),
                    rec.zero_success_s,
                    rec.errors,
                    f.sessions_reopened
                );
            }
            s.push('\n');
        }
        for r in &self.runs {
            if let Some(k) = &r.result.knee {
                let _ = writeln!(
                    s,
                    "## Knee: {} {} (p99 bound {} ms): {}\n",
                    r.system,
                    r.result.workload,
                    k.p99_bound_ms,
                    k.knee_rate
                        .map_or("below the first step".into(), |r| format!("{r:.0} ops/s"))
                );
                let _ = writeln!(
                    s,
                    "| offered/s | achieved/s | p50 ms | p99 ms | errors |\n|---:|---:|---:|---:|---:|"
                );
                for st in &k.steps {
                    let _ = writeln!(
                        s,
                        "| {:.0} | {:.0} | {:.3} | {:.3} | {} |",
                        st.offered_rate, st.achieved_rate, st.p50_ms, st.p99_ms, st.errors
                    );
                }
                s.push('\n');
            }
        }
        if !charts.is_empty() {
            let _ = writeln!(s, "## Charts\n");
            for c in charts {
                let _ = writeln!(s, "![{c}]({c})");
            }
        }
        s
    }
}

/// Successful operations per second of a run's main operation.
pub fn main_rate(r: &RunRecord) -> f64 {
    r.result.main_op().map_or(0.0, |o| o.throughput)
}

fn unique(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for x in it {
        if !v.contains(&x) {
            v.push(x);
        }
    }
    v
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}
