//! Measurement: HdrHistogram latencies per operation kind, errors by kind, and a timeline of
//! 100 ms buckets (successes, errors, p99) — the timeline is what fault runs chart as availability.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Width of one timeline bucket.
pub const BUCKET: Duration = Duration::from_millis(100);
/// Highest latency a histogram tracks (values above are clamped and still counted).
const MAX_MICROS: u64 = 600_000_000;

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, sigfig).expect("static histogram bounds are valid")
}

/// Collects results from many concurrent workers. One short lock per recorded op: on the
/// machines we measure on, that costs far less than the request it records.
pub struct Recorder {
    start: Instant,
    inner: Mutex<Inner>,
    ops: AtomicU64,
    errors: AtomicU64,
}

struct Inner {
    ops: BTreeMap<&'static str, OpAcc>,
    timeline: Vec<Bucket>,
}

struct OpAcc {
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    first: Option<Instant>,
    last: Option<Instant>,
}

struct Bucket {
    ok: u64,
    err: u64,
    hist: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// A recorder whose clock (timeline origin) starts now.
    pub fn new() -> Self {
        Recorder {
            start: Instant::now(),
            inner: Mutex::new(Inner {
                ops: BTreeMap::new(),
                timeline: Vec::new(),
            }),
            ops: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// Origin of the timeline.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Operations and errors recorded so far (for progress lines).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.ops.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }

    /// Records one operation that started (or was meant to start) at `from` and finished at `to`.
    /// Failed operations count as errors by kind; their latency is not in the histogram.
    pub fn record(&self, op: &'static str, from: Instant, to: Instant, error: Option<String>) {
        let micros = to
            .saturating_duration_since(from)
            .as_micros()
            .clamp(1, MAX_MICROS as u128) as u64;
        let slot =
            (to.saturating_duration_since(self.start).as_nanos() / BUCKET.as_nanos()) as usize;
        self.ops.fetch_add(1, Ordering::Relaxed);
        if error.is_some() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut inner = self.inner.lock();
        let acc = inner.ops.entry(op).or_insert_with(|| OpAcc {
            hist: histogram(3),
            errors: BTreeMap::new(),
            first: None,
            last: None,
        });
        acc.first = Some(acc.first.map_or(from, |f| f.min(from)));
        acc.last = Some(acc.last.map_or(to, |l| l.max(to)));
        match &error {
            None => acc.hist.saturating_record(micros),
            Some(kind) => *acc.errors.entry(kind.clone()).or_insert(0) += 1,
        }
        while inner.timeline.len() <= slot {
            inner.timeline.push(Bucket {
                ok: 0,
                err: 0,
                hist: histogram(2),
            });
        }
        let bucket = &mut inner.timeline[slot];
        match error {
            None => {
                bucket.ok += 1;
                bucket.hist.saturating_record(micros);
            }
            Some(_) => bucket.err += 1,
        }
    }

    /// Summaries per operation kind; throughput is over each kind's own window (first start to
    /// last completion), so phases run one after another each get their own rate.
    pub fn summarize(&self) -> Vec<OpStats> {
        let inner = self.inner.lock();
        inner
            .ops
            .iter()
            .map(|(name, acc)| OpStats::from_acc(name, acc))
            .collect()
    }

    /// The 100 ms timeline.
    pub fn timeline(&self) -> Vec<TimelinePoint> {
        let inner = self.inner.lock();
        inner
            .timeline
            .iter()
            .enumerate()
            .map(|(i, b)| TimelinePoint {
                t_s: (i as f64 + 1.0) * BUCKET.as_secs_f64(),
                ok: b.ok,
                errors: b.err,
                p99_ms: if b.ok > 0 {
                    ms(b.hist.value_at_quantile(0.99))
                } else {
                    0.0
                },
            })
            .collect()
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// The figures for one operation kind.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpStats {
    pub op: String,
    /// Successful operations.
    pub ok: u64,
    /// Failed operations by error kind (e.g. `NodeExists`, `ConnectionLoss`).
    pub errors: BTreeMap<String, u64>,
    /// Successful operations per second over the measured window.
    pub throughput: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// (percentile, latency ms) points for the percentile chart.
    pub curve: Vec<(f64, f64)>,
}

/// Percentiles drawn in charts: evenly spaced in "nines" up to 99.999.
pub fn curve_percentiles() -> Vec<f64> {
    (0..=50)
        .map(|i| 100.0 * (1.0 - 10f64.powf(-(i as f64) / 10.0)))
        .collect()
}

impl OpStats {
    fn from_acc(name: &str, acc: &OpAcc) -> OpStats {
        let elapsed = match (acc.first, acc.last) {
            (Some(f), Some(l)) => l.saturating_duration_since(f),
            _ => Duration::ZERO,
        };
        let h = &acc.hist;
        let ok = h.len();
        let q = |p: f64| {
            if ok > 0 {
                ms(h.value_at_quantile(p))
            } else {
                0.0
            }
        };
        let secs = elapsed.as_secs_f64().max(1e-9);
        OpStats {
            op: name.to_string(),
            ok,
            errors: acc.errors.clone(),
            throughput: ok as f64 / secs,
            mean_ms: if ok > 0 { h.mean() / 1000.0 } else { 0.0 },
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: if ok > 0 { ms(h.max()) } else { 0.0 },
            curve: if ok > 0 {
                curve_percentiles()
                    .into_iter()
                    .map(|p| (p, ms(h.value_at_percentile(p))))
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Total failed operations.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// One 100 ms bucket of the timeline; `t_s` is the bucket's end since the recorder started.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TimelinePoint {
    pub t_s: f64,
    pub ok: u64,
    pub errors: u64,
    pub p99_ms: f64,
}

/// Prints a progress line to stderr every second until dropped.
pub struct Progress {
    handle: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts reporting `label` with the counts of `rec`.
    pub fn start(label: String, rec: std::sync::Arc<Recorder>) -> Progress {
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = 0u64;
            loop {
                tick.tick().await;
                let (ops, errors) = rec.counts();
                eprintln!(
                    "[{label}] {:>6.1}s  ops {ops:>9}  rate {:>8}/s  errors {errors}",
                    rec.start().elapsed().as_secs_f64(),
                    ops - last
                );
                last = ops;
            }
        });
        Progress { handle }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_errors_are_summarized() {
        let rec = Recorder::new();
        let t0 = rec.start();
        for i in 1..=1000u64 {
            rec.record("get", t0, t0 + Duration::from_micros(i * 10), None);
        }
        rec.record(
            "get",
            t0,
            t0 + Duration::from_secs(1),
            Some("Timeout".into()),
        );
        rec.record(
            "get",
            t0,
            t0 + Duration::from_millis(1),
            Some("NoNode".into()),
        );
        let stats = rec.summarize();
        assert_eq!(stats.len(), 1);
        let s = &stats[0];
        assert_eq!(s.ok, 1000);
        assert_eq!(s.errors.get("NoNode"), Some(&1));
        assert_eq!(s.error_count(), 2);
        assert!((s.p50_ms - 5.0).abs() < 0.05, "p50 {}", s.p50_ms);
        assert!((s.p99_ms - 9.9).abs() < 0.05, "p99 {}", s.p99_ms);
        assert!((s.max_ms - 10.0).abs() < 0.05);
        assert!((s.throughput - 1000.0).abs() < 1e-6);
        assert!(!rec.timeline().is_empty());
    }

    #[test]
    fn timeline_buckets_by_completion_time() {
        let rec = Recorder::new();
        let t0 = rec.start();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Bucket 0 (0–100 ms): two successes of 1 and 3 ms.
        rec.record("set", at(10), at(11), None);
        rec.record("set", at(50), at(53), None);
        // Started in bucket 0, completed in bucket 2: counted where it completed.
        rec.record("set", at(90), at(250), None);
        // Bucket 2: an error (not in the latency figures).
        rec.record("set", at(200), at(260), Some("ConnectionLoss".into()));
        // Bucket 4; bucket 3 stays empty.
        rec.record("set", at(405), at(407), None);
        let tl = rec.timeline();
        let got: Vec<(u64, u64)> = tl.iter().map(|p| (p.ok, p.errors)).collect();
        assert_eq!(got, vec![(2, 0), (0, 0), (1, 1), (0, 0), (1, 0)]);
        assert!((tl[0].t_s - 0.1).abs() < 1e-9 && (tl[4].t_s - 0.5).abs() < 1e-9);
        assert!((tl[0].p99_ms - 3.0).abs() < 0.05, "{}", tl[0].p99_ms);
        assert!((tl[2].p99_ms - 160.0).abs() < 2.0, "{}", tl[2].p99_ms);
        assert_eq!(tl[1].p99_ms, 0.0);
    }
}
