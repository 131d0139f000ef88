//! Eureka leases on this member and self-preservation.
//!
//! Every Eureka instance is bound to a session of its own whose timeout is the lease duration;
//! renews touch it and the backend's expiry (the CP leader, or the owning member on AP) evicts
//! it. This member remembers the leases registered or renewed through it and counts the renews
//! it received over the last minute. Eureka's rule: with `expected` renews per minute (the sum of
//! `60 / renewalIntervalInSecs` over those leases) the threshold is
//! `⌊expected × renewal_percent_threshold⌋`; while renews in the last minute do not exceed it,
//! the member is in self-preservation and keeps its silent leases alive (touches them) instead
//! of letting the backend evict them — a network problem that silences many clients at once must
//! not empty the registry. Renews recover → the guard stops touching and expiry resumes.

use crate::api::store::Store;
use parking_lot::Mutex;
use roster_core::SessionId;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WINDOW_S: usize = 60;

struct Local {
    last_renew: Instant,
    renewal: Duration,
    duration: Duration,
}

/// The numbers the status page and `/metrics` show.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Snapshot {
    pub enabled: bool,
    pub active: bool,
    pub leases: usize,
    pub expected_renews_per_min: u64,
    pub threshold: u64,
    pub renews_last_min: u64,
}

/// See the module doc.
pub struct Guard {
    enabled: bool,
    percent: f64,
    started: Instant,
    leases: Mutex<HashMap<SessionId, Local>>,
    /// Renews per second, a ring over the last minute (index = second since start mod 60).
    buckets: [AtomicU32; WINDOW_S],
    /// The second each bucket counts (so a stale bucket reads as 0).
    stamps: [AtomicU64; WINDOW_S],
    active: AtomicBool,
}

impl Guard {
    pub fn new(enabled: bool, percent: f64) -> Arc<Guard> {
        Arc::new(Guard {
            enabled,
            percent,
            started: Instant::now(),
            leases: Mutex::new(HashMap::new()),
            buckets: std::array::from_fn(|_| AtomicU32::new(0)),
            stamps: std::array::from_fn(|_| AtomicU64::new(0)),
            active: AtomicBool::new(false),
        })
    }

    fn second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// A lease was registered through this member.
    pub fn registered(&self, lease: SessionId, renewal_s: u64, duration_s: u64) {
        self.leases.lock().insert(
            lease,
            Local {
                last_renew: Instant::now(),
                renewal: Duration::from_secs(renewal_s.max(1)),
                duration: Duration::from_secs(duration_s.max(1)),
            },
        );
    }

    /// A renew arrived for `lease` (settings as the instance records them).
    pub fn renewed(&self, lease: SessionId, renewal_s: u64, duration_s: u64) {
        let now = self.second();
        let i = (now % WINDOW_S as u64) as usize;
        if self.stamps[i].swap(now, Ordering::Relaxed) != now {
            self.buckets[i].store(0, Ordering::Relaxed);
        }
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.registered(lease, renewal_s, duration_s);
    }

    /// A lease was cancelled.
    pub fn cancelled(&self, lease: SessionId) {
        self.leases.lock().remove(&lease);
    }

    fn renews_last_min(&self) -> u64 {
        let now = self.second();
        let counted: u64 = (0..WINDOW_S)
            .filter(|&i| {
                now.saturating_sub(self.stamps[i].load(Ordering::Relaxed)) < WINDOW_S as u64
            })
            .map(|i| u64::from(self.buckets[i].load(Ordering::Relaxed)))
            .sum();
        // During the member's first minute, scale what it has seen to a minute.
        let elapsed = self.started.elapsed().as_secs_f64();
        if elapsed < WINDOW_S as f64 {
            (counted as f64 * WINDOW_S as f64 / elapsed.max(1.0)) as u64
        } else {
            counted
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let (count, expected) = {
            let l = self.leases.lock();
            let expected: f64 = l
                .values()
                .map(|x| 60.0 / x.renewal.as_secs_f64().max(1.0))
                .sum();
            (l.len(), expected)
        };
        let expected = expected.round() as u64;
        let threshold = (expected as f64 * self.percent).floor() as u64;
        Snapshot {
            enabled: self.enabled,
            active: self.active.load(Ordering::Relaxed),
            leases: count,
            expected_renews_per_min: expected,
            threshold,
            renews_last_min: self.renews_last_min(),
        }
    }

    /// Every second: forget leases that are gone, decide self-preservation, and while it is on
    /// keep silent leases alive.
    pub fn start(self: &Arc<Self>, store: Store) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                let Some(g) = me.upgrade() else { return };
                g.tick(&store).await;
            }
        });
    }

    async fn tick(&self, store: &Store) {
        let gone: Vec<SessionId> = {
            let l = self.leases.lock();
            let ids: Vec<SessionId> = l.keys().copied().collect();
            drop(l);
            ids.into_iter()
                .filter(|id| !store.session_exists(*id))
                .collect()
        };
        if !gone.is_empty() {
            let mut l = self.leases.lock();
            for id in gone {
                l.remove(&id);
            }
        }
        let s = self.snapshot();
        let active = s.enabled && s.expected_renews_per_min > 0 && s.renews_last_min <= s.threshold;
        let was = self.active.swap(active, Ordering::Relaxed);
        if active != was {
            if active {
                tracing::warn!(
                    renews_last_min = s.renews_last_min,
                    threshold = s.threshold,
                    leases = s.leases,
                    "Eureka self-preservation ON: renews fell to the threshold; silent leases are kept"
                );
            } else {
                tracing::info!(
                    renews_last_min = s.renews_last_min,
                    threshold = s.threshold,
                    "Eureka self-preservation OFF: silent leases expire again"
                );
            }
        }
        metrics::gauge!("roster_eureka_self_preservation").set(if active { 1.0 } else { 0.0 });
        metrics::gauge!("roster_eureka_renews_last_minute").set(s.renews_last_min as f64);
        metrics::gauge!("roster_eureka_renew_threshold").set(s.threshold as f64);
        metrics::gauge!("roster_eureka_leases").set(s.leases as f64);
        if !active {
            return;
        }
        // Keep alive what has missed a renewal, before it reaches half its duration unrenewed.
        let silent: Vec<SessionId> = self
            .leases
            .lock()
            .iter()
            .filter(|(_, x)| {
                let quiet = x.last_renew.elapsed();
                quiet > x.renewal && quiet > x.duration / 4
            })
            .map(|(id, _)| *id)
            .collect();
        if silent.is_empty() {
            return;
        }
        metrics::counter!("roster_eureka_preserved_renewals_total").increment(silent.len() as u64);
        if let Err(e) = store.touch(&silent).await {
            tracing::warn!(error = %e, leases = silent.len(), "self-preservation: keeping leases alive failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_follows_expected_renews() {
        let g = Guard::new(true, 0.85);
        g.registered(1, 30, 90);
        g.registered(2, 30, 90);
        let s = g.snapshot();
        assert_eq!((s.expected_renews_per_min, s.threshold), (4, 3));
        g.cancelled(1);
        assert_eq!(g.snapshot().expected_renews_per_min, 2);
        g.renewed(2, 30, 90);
        assert!(g.snapshot().renews_last_min >= 1);
    }
}
