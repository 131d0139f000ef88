//! `api-lock`: every session contends for one mutex; the grants are checked for strictly
//! increasing fencing tokens and for overlapping holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use super::{ACQUIRE_TIMEOUT_MS, Session, measured};
use crate::load::Failure;
use crate::record::Recorder;
use crate::workloads::{Params, WorkloadResult};

/// What the contenders share: the correctness checks.
#[derive(Default)]
struct LockCheck {
    /// The highest fencing token granted so far.
    last_token: Mutex<u64>,
    /// Someone holds the mutex (between its acquire's answer and its release's send).
    holding: AtomicBool,
    holds: AtomicU64,
    fencing_violations: AtomicU64,
    exclusion_violations: AtomicU64,
    /// Releases in flight (each is its own timed operation).
    releases: Mutex<tokio::task::JoinSet<()>>,
}

impl LockCheck {
    /// A grant of `token` arrived: the failure, if it breaks the mutex's promises — a token
    /// not above every earlier one, or a grant while another holder has not yet released.
    fn enter(&self, token: u64) -> Option<Failure> {
        self.holds.fetch_add(1, Ordering::Relaxed);
        let mut violation = None;
        if self.holding.swap(true, Ordering::SeqCst) {
            self.exclusion_violations.fetch_add(1, Ordering::Relaxed);
            violation = Some(Failure::new(
                "MutualExclusionViolation",
                format!("token {token} granted while another contender held"),
            ));
        }
        let mut last = self.last_token.lock();
        if token <= *last {
            self.fencing_violations.fetch_add(1, Ordering::Relaxed);
            violation = Some(Failure::new(
                "FencingViolation",
                format!("token {token} after {}", *last),
            ));
        }
        *last = (*last).max(token);
        violation
    }

    /// The holder is about to send its release.
    fn exit(&self) {
        self.holding.store(false, Ordering::SeqCst);
    }
}

/// Runs the workload on the sessions.
pub(super) async fn run(sessions: &[Session], p: &Params) -> anyhow::Result<WorkloadResult> {
    let name: Arc<str> = Arc::from(p.run_name());
    let check = Arc::new(LockCheck::default());
    let rec = Arc::new(Recorder::new());
    let (n, c, r) = (name.clone(), check.clone(), rec.clone());
    let op = move |s: Session, _seq: u64| {
        let (name, check, rec) = (n.clone(), c.clone(), r.clone());
        async move {
            let held = match s.api.lock_acquire(&name, s.lease, ACQUIRE_TIMEOUT_MS).await {
                Ok(h) => h,
                Err(e) => return Some(("acquire", Err(e))),
            };
            let violation = check.enter(held.fencing_token);
            // The critical section ends before the release is sent: the next holder can only
            // be granted once the release is applied.
            check.exit();
            let release = async move {
                let t = Instant::now();
                let r = s.api.lock_release(&name, &held.key).await;
                rec.record("release", t, Instant::now(), r.err().map(|e| e.kind));
            };
            check.releases.lock().spawn(release);
            Some(("acquire", violation.map_or(Ok(()), Err)))
        }
    };
    // One contender per session: the contention is `--sessions` wide.
    let mut result = measured(
        sessions,
        1,
        p,
        format!("api-lock ×{}", sessions.len()),
        rec.clone(),
        None,
        op,
    )
    .await;
    let mut releases = std::mem::take(&mut *check.releases.lock());
    while releases.join_next().await.is_some() {}
    // The releases that finished after the phase are in the figures too.
    result.ops = rec.summarize();
    result.timeline = rec.timeline();
    for (k, v) in [
        ("contenders", sessions.len() as u64),
        ("holds", check.holds.load(Ordering::Relaxed)),
        (
            "fencing_violations",
            check.fencing_violations.load(Ordering::Relaxed),
        ),
        (
            "mutual_exclusion_violations",
            check.exclusion_violations.load(Ordering::Relaxed),
        ),
    ] {
        result.extras.insert(k.into(), v as f64);
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::LockCheck;
    use std::sync::atomic::Ordering;

    #[test]
    fn the_lock_check_flags_stale_tokens_and_double_holds() {
        let c = LockCheck::default();
        assert!(c.enter(5).is_none());
        c.exit();
        assert!(c.enter(7).is_none());
        c.exit();
        let stale = c.enter(7).expect("a repeated token is a violation");
        assert_eq!(stale.kind, "FencingViolation");
        c.exit();
        assert!(c.enter(9).is_none());
        let double = c.enter(10).expect("a grant while held is a violation");
        assert_eq!(double.kind, "MutualExclusionViolation");
        c.exit();
        assert_eq!(c.holds.load(Ordering::Relaxed), 5);
        assert_eq!(c.fencing_violations.load(Ordering::Relaxed), 1);
        assert_eq!(c.exclusion_violations.load(Ordering::Relaxed), 1);
    }
}
