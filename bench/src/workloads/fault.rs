//! A single-operation workload with a fault injected during its measured phase: closed loop as
//! usual, but each session re-opens itself when it expires or closes (as an application's
//! client library would), a request that has not answered after twice the session timeout counts
//! as a `ClientTimeout` error, and a worker pauses 10 ms after an error instead of spinning.
//! The fault is injected `at` into the phase and healed `duration` later; the 100 ms timeline
//! then gives the recovery time (`crate::availability`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use zookeeper_client as zkc;

use super::simple::{Simple, op};
use super::{Params, WorkloadResult};
use crate::availability::{self, Criteria, Recovery};
use crate::deploy::{Deployment, Fault, FaultKind};
use crate::load::{self, Stop};
use crate::record::{Progress, Recorder};
use crate::zk::{self, Client, SessionSpec};

/// When and for how long a fault hits.
#[derive(Clone, Copy, Debug)]
pub struct FaultPlan {
    pub fault: Fault,
    /// Into the measured phase.
    pub at: Duration,
    /// Until it is healed: a killed member restarted, a partition healed. None: kill and
    /// partition last to the end of the run; a restart starts the member again at once.
    pub duration: Option<Duration>,
    pub criteria: Criteria,
}

/// What was injected, and the availability it left.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaultRecord {
    /// `kill-leader`, `partition-follower`, ….
    pub fault: String,
    /// The member hit (1-based).
    pub member: usize,
    /// The member leading before the fault.
    pub leader_before: Option<usize>,
    /// The member leading when the run ended.
    pub leader_after: Option<usize>,
    /// Seconds since the timeline's origin.
    pub injected_at_s: f64,
    pub healed_at_s: Option<f64>,
    pub recovery: Recovery,
    /// Sessions re-opened after they expired or closed.
    pub sessions_reopened: u64,
}

/// One session that replaces itself when it ends for good.
struct Slot {
    spec: SessionSpec,
    client: RwLock<Client>,
    renewing: AtomicBool,
}

impl Slot {
    fn client(&self) -> Client {
        self.client.read().clone()
    }

    /// Opens a new session in the background (once at a time), retrying until `until`.
    fn renew(self: &Arc<Self>, reopened: Arc<AtomicU64>, until: Instant) {
        if self.renewing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            while Instant::now() < until {
                if let Ok(c) = zk::connect(&me.spec).await {
                    *me.client.write() = c;
                    reopened.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            me.renewing.store(false, Ordering::Release);
        });
    }
}

/// Errors after which a session is gone for good.
fn ends_session(e: &zkc::Error) -> bool {
    matches!(
        e,
        zkc::Error::SessionExpired
            | zkc::Error::SessionMoved
            | zkc::Error::ClientClosed
            | zkc::Error::AuthFailed
    )
}

/// Runs `kind` closed loop for the phase `p.stop` (a duration), injecting `plan.fault` into
/// `dep` during it.
pub async fn run_with_fault(
    kind: Simple,
    p: &Params,
    plan: &FaultPlan,
    dep: &mut dyn Deployment,
) -> anyhow::Result<WorkloadResult> {
    anyhow::ensure!(
        matches!(
            kind,
            Simple::Create | Simple::Set | Simple::Get | Simple::Mixed { .. }
        ),
        "faults run with create, set, get or mixed, not {}",
        kind.label()
    );
    let duration = match p.stop {
        Stop::For(d) | Stop::OpsOrFor(_, d) => d,
        Stop::Ops(_) => anyhow::bail!("a fault run needs --duration"),
    };
    anyhow::ensure!(
        plan.at < duration,
        "the fault ({:?} in) must fall inside the run ({duration:?})",
        plan.at
    );
    let clients = zk::connect_many(&p.spec, p.sessions.max(1), 64, |_, _| {}).await?;
    let admin = clients[0].clone();
    let base = p.base();
    let value = Arc::new(p.value());
    let keys_dir = format!("{base}/k");
    let work_dir = format!("{base}/w");
    zk::ensure_path(&admin, &keys_dir).await?;
    zk::ensure_path(&admin, &work_dir).await?;
    let dir = if kind == Simple::Create {
        work_dir
    } else {
        eprintln!("preparing {} keys of {} B", p.keys, p.value_size);
        let prep = Arc::new(Recorder::new());
        let f = op(Simple::Create, &keys_dir, value.clone(), p.keys);
        load::closed_loop(&clients, p.depth, Stop::Ops(p.keys), prep.clone(), f).await;
        let (_, errors) = prep.counts();
        anyhow::ensure!(errors == 0, "preloading keys: {errors} errors");
        keys_dir
    };
    if !p.warmup.is_zero() {
        let f = op(kind, &dir, value.clone(), p.keys);
        let warm = Arc::new(Recorder::new());
        load::closed_loop(&clients, p.depth, Stop::For(p.warmup), warm, f).await;
    }

    let slots: Vec<Arc<Slot>> = clients
        .into_iter()
        .map(|c| {
            Arc::new(Slot {
                spec: p.spec.clone(),
                client: RwLock::new(c),
                renewing: AtomicBool::new(false),
            })
        })
        .collect();
    let reopened = Arc::new(AtomicU64::new(0));
    let op_timeout = p.spec.session_timeout * 2;
    let f = Arc::new(op(kind, &dir, value.clone(), p.keys));
    let rec = Arc::new(Recorder::new());
    let t0 = rec.start();
    let until = t0 + duration;
    let watch = p.watch();
    let progress = Progress::start(
        format!("{} + {}", kind.label(), plan.fault.label()),
        rec.clone(),
    );
    let counter = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for slot in &slots {
        for _ in 0..p.depth.max(1) {
            let (slot, f, rec, counter, reopened) = (
                slot.clone(),
                f.clone(),
                rec.clone(),
                counter.clone(),
                reopened.clone(),
            );
            workers.push(tokio::spawn(async move {
                while Instant::now() < until {
                    let seq = counter.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    let error = match tokio::time::timeout(op_timeout, f(slot.client(), seq)).await
                    {
                        Ok(Some((name, Ok(())))) => {
                            rec.record(name, t, Instant::now(), None);
                            continue;
                        }
                        Ok(Some((name, Err(e)))) => {
                            rec.record(name, t, Instant::now(), Some(zk::error_kind(&e)));
                            ends_session(&e)
                        }
                        Ok(None) => break,
                        Err(_) => {
                            rec.record("timeout", t, Instant::now(), Some("ClientTimeout".into()));
                            false
                        }
                    };
                    if error {
                        slot.renew(reopened.clone(), until);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }));
        }
    }
    let load = async {
        for w in workers {
            let _ = w.await;
        }
    };
    let schedule = async {
        tokio::time::sleep_until((t0 + plan.at).into()).await;
        let leader_before = tokio::task::block_in_place(|| dep.leader());
        let hit = tokio::task::block_in_place(|| dep.inject(plan.fault))?;
        let (member, injected) = (hit.member, hit.at);
        eprintln!(
            "fault: {} hit member {member} at {:.2} s (leader was {leader_before:?})",
            plan.fault.label(),
            injected.duration_since(t0).as_secs_f64()
        );
        let heal_after = match (plan.fault.kind, plan.duration) {
            (_, Some(d)) => Some(d),
            (FaultKind::Restart, None) => Some(Duration::ZERO),
            _ => None,
        };
        let mut healed = None;
        if let Some(d) = heal_after
            && injected + d < until
        {
            tokio::time::sleep_until((injected + d).into()).await;
            tokio::task::block_in_place(|| dep.heal(plan.fault, member))?;
            let at = Instant::now();
            eprintln!(
                "fault: healed member {member} at {:.2} s",
                at.duration_since(t0).as_secs_f64()
            );
            healed = Some(at);
        }
        anyhow::Ok((member, leader_before, injected, healed))
    };
    let ((), scheduled) = tokio::join!(load, schedule);
    drop(progress);
    let server = watch.map(crate::server_stats::Watch::finish);
    let (member, leader_before, injected, healed) = scheduled?;
    let leader_after = tokio::task::block_in_place(|| dep.leader());
    let timeline = rec.timeline();
    let injected_at_s = injected.duration_since(t0).as_secs_f64();
    let recovery = availability::recovery(&timeline, injected_at_s, plan.criteria);
    let mut extras = std::collections::BTreeMap::new();
    let nan = f64::NAN;
    extras.insert("recovery_s".into(), recovery.recovery_s.unwrap_or(nan));
    extras.insert(
        "fault_to_recovered_s".into(),
        recovery
            .recovered_at_s
            .map_or(nan, |r| (r - injected_at_s).max(0.0)),
    );
    extras.insert("zero_success_s".into(), recovery.zero_success_s);
    extras.insert("errors_during_recovery".into(), recovery.errors as f64);
    extras.insert("baseline_ops_s".into(), recovery.baseline_ops_s);
    if p.cleanup {
        // The admin session may have died with its member; the tree goes with the server.
        let _ = tokio::time::timeout(
            Duration::from_secs(30),
            super::cleanup(p, &slots[0].client()),
        )
        .await;
    }
    Ok(WorkloadResult {
        workload: format!("{}-{}", kind.label(), plan.fault.label()),
        mode: format!("closed({}x{})", p.sessions, p.depth),
        elapsed_s: t0.elapsed().as_secs_f64(),
        ops: rec.summarize(),
        extras,
        timeline,
        knee: None,
        server,
        fault: Some(FaultRecord {
            fault: plan.fault.label(),
            member,
            leader_before,
            leader_after,
            injected_at_s,
            healed_at_s: healed.map(|h| h.duration_since(t0).as_secs_f64()),
            recovery,
            sessions_reopened: reopened.load(Ordering::Relaxed),
        }),
    })
}
