//! Availability around a fault, from the 100 ms timeline: the pre-fault baseline, when the
//! disruption began (the first bucket after the fault with an error or under a share of the
//! baseline) and when service was back (the start of the first window of `sustain` buckets with
//! no error and no empty bucket whose mean is at least that share of the baseline — a window,
//! not every bucket, because on a loaded machine single buckets dip without any fault). Pure
//! functions over [`TimelinePoint`]s, so the arithmetic is tested without servers.

use serde::{Deserialize, Serialize};

use crate::record::{BUCKET, TimelinePoint};

/// What counts as healthy, and for how long it must last.
#[derive(Clone, Copy, Debug)]
pub struct Criteria {
    /// Share of the baseline below which a bucket (disruption) or a window's mean (recovery)
    /// is not healthy.
    pub healthy_fraction: f64,
    /// Buckets in the window that makes a recovery (10 = one second).
    pub sustain: usize,
    /// Buckets at the start of the run left out of the baseline (connection ramp-up).
    pub skip_first: usize,
}

impl Default for Criteria {
    fn default() -> Self {
        Criteria {
            healthy_fraction: 0.5,
            sustain: 10,
            skip_first: 10,
        }
    }
}

/// Availability figures of one fault run. Times are seconds since the timeline's origin.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// Median successes per bucket before the fault, as ops/s.
    pub baseline_ops_s: f64,
    /// Start of the first unhealthy bucket at or after the fault (None: nothing noticeable).
    pub disrupted_at_s: Option<f64>,
    /// Start of the first sustained run of healthy buckets after the disruption
    /// (None: not back before the run ended).
    pub recovered_at_s: Option<f64>,
    /// recovered_at − disrupted_at: the recovery time (0 when there was no disruption).
    pub recovery_s: Option<f64>,
    /// Buckets with no success at all between the fault and the recovery, in seconds.
    pub zero_success_s: f64,
    /// Failed operations between the fault and the recovery (or the end).
    pub errors: u64,
}

fn start_of(p: &TimelinePoint) -> f64 {
    p.t_s - BUCKET.as_secs_f64()
}

fn median(mut v: Vec<u64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2] as f64
    } else {
        (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0
    }
}

/// Analyses `timeline` around a fault injected at `fault_at_s`. The last bucket is left out:
/// the measured phase ends inside it, so it is partial.
pub fn recovery(timeline: &[TimelinePoint], fault_at_s: f64, c: Criteria) -> Recovery {
    let points = &timeline[..timeline.len().saturating_sub(1)];
    let eps = 1e-9;
    let before: Vec<u64> = points
        .iter()
        .filter(|p| p.t_s <= fault_at_s + eps)
        .map(|p| p.ok)
        .collect();
    let baseline = if before.len() > c.skip_first {
        median(before[c.skip_first..].to_vec())
    } else {
        median(before)
    };
    let threshold = c.healthy_fraction * baseline;
    // Buckets that end after the fault: the fault can show in the bucket it falls in.
    let after: Vec<&TimelinePoint> = points.iter().filter(|p| p.t_s > fault_at_s + eps).collect();
    let mut r = Recovery {
        baseline_ops_s: baseline / BUCKET.as_secs_f64(),
        ..Recovery::default()
    };
    let Some(first_bad) = after
        .iter()
        .position(|p| p.errors > 0 || (p.ok as f64) < threshold)
    else {
        r.recovery_s = Some(0.0);
        return r;
    };
    r.disrupted_at_s = Some(start_of(after[first_bad]).max(fault_at_s));
    let sustain = c.sustain.max(1);
    let mut end = after.len();
    for start in first_bad..after.len().saturating_sub(sustain - 1) {
        let w = &after[start..start + sustain];
        let mean = w.iter().map(|p| p.ok as f64).sum::<f64>() / sustain as f64;
        if w.iter().all(|p| p.errors == 0 && p.ok > 0) && mean >= threshold {
            end = start;
            r.recovered_at_s = Some(start_of(after[start]));
            break;
        }
    }
    let window = &after[..end];
    r.errors = window.iter().map(|p| p.errors).sum();
    r.zero_success_s = window.iter().filter(|p| p.ok == 0).count() as f64 * BUCKET.as_secs_f64();
    r.recovery_s = match (r.disrupted_at_s, r.recovered_at_s) {
        (Some(d), Some(u)) => Some(u - d),
        _ => None,
    };
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timeline from (ok, errors) per bucket.
    fn timeline(buckets: &[(u64, u64)]) -> Vec<TimelinePoint> {
        buckets
            .iter()
            .enumerate()
            .map(|(i, &(ok, errors))| TimelinePoint {
                t_s: (i as f64 + 1.0) * 0.1,
                ok,
                errors,
                p99_ms: 1.0,
            })
            .collect()
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-6)
    }

    const C: Criteria = Criteria {
        healthy_fraction: 0.5,
        sustain: 3,
        skip_first: 2,
    };

    #[test]
    fn outage_then_sustained_recovery() {
        // 0–1.0 s: 100/bucket (first two ramping), fault at 1.0 s, then 0.3 s of errors, 0.2 s of
        // nothing, one good bucket, an empty one (a relapse), then healthy for good.
        let mut b = vec![(10, 0), (50, 0)];
        b.extend([(100, 0); 8]);
        b.extend([(0, 7), (0, 9), (20, 3), (0, 0), (0, 0), (90, 0), (0, 0)]);
        b.extend([(100, 0); 5]);
        b.push((1, 0)); // the partial last bucket: ignored
        let r = recovery(&timeline(&b), 1.0, C);
        assert!((r.baseline_ops_s - 1000.0).abs() < 1e-6, "{r:?}");
        assert!(close(r.disrupted_at_s, 1.0), "{r:?}");
        // The good bucket at 1.5 s is followed by an empty one: recovery is at 1.7 s.
        assert!(close(r.recovered_at_s, 1.7), "{r:?}");
        assert!(close(r.recovery_s, 0.7), "{r:?}");
        assert_eq!(r.errors, 19);
        assert!((r.zero_success_s - 0.5).abs() < 1e-6, "{r:?}");
    }

    #[test]
    fn a_slow_bucket_inside_a_good_window_does_not_delay_recovery() {
        let mut b = vec![(100, 0); 10];
        b.extend([
            (0, 4),
            (0, 0),
            (90, 0),
            (30, 0),
            (100, 0),
            (100, 0),
            (100, 0),
        ]);
        let r = recovery(&timeline(&b), 1.0, C);
        // Window from 1.2 s: 90, 30, 100 — mean 73 ≥ 50, no error, no empty bucket.
        assert!(close(r.recovered_at_s, 1.2), "{r:?}");
        assert!(close(r.recovery_s, 0.2), "{r:?}");
        assert_eq!(r.errors, 4);
    }

    #[test]
    fn a_slow_window_is_not_a_recovery() {
        // Errors stop but throughput stays at a fifth of the baseline: not recovered.
        let mut b = vec![(100, 0); 10];
        b.extend([(0, 4)]);
        b.extend([(20, 0); 10]);
        let r = recovery(&timeline(&b), 1.0, C);
        assert_eq!(r.recovered_at_s, None, "{r:?}");
    }

    #[test]
    fn no_disruption_means_zero_recovery() {
        let b = vec![(100, 0); 30];
        let r = recovery(&timeline(&b), 1.0, C);
        assert_eq!(r.disrupted_at_s, None);
        assert!(close(r.recovery_s, 0.0));
        assert_eq!(r.errors, 0);
    }

    #[test]
    fn a_gap_without_errors_is_a_disruption() {
        // A partition: requests hang, nothing fails, nothing succeeds.
        let mut b = vec![(100, 0); 10];
        b.extend([(40, 0), (0, 0), (0, 0), (0, 0)]);
        b.extend([(100, 0); 4]);
        let r = recovery(&timeline(&b), 1.05, C);
        // The fault falls inside the bucket ending at 1.1 s; that bucket is short (40 < 50).
        assert!(close(r.disrupted_at_s, 1.05), "{r:?}");
        assert!(close(r.recovered_at_s, 1.4), "{r:?}");
        assert!(close(r.recovery_s, 0.35), "{r:?}");
        assert_eq!(r.errors, 0);
    }

    #[test]
    fn never_recovering_has_no_recovery_time() {
        let mut b = vec![(100, 0); 10];
        b.extend([(0, 5); 10]);
        b.extend([(100, 0); 2]); // fewer than `sustain`, then the partial last bucket
        let r = recovery(&timeline(&b), 1.0, C);
        assert!(close(r.disrupted_at_s, 1.0));
        assert_eq!(r.recovered_at_s, None);
        assert_eq!(r.recovery_s, None);
        assert_eq!(r.errors, 50);
    }
}
