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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use parking_lot::Mutex;

use super::{Params, WorkloadResult, mix};
use crate::load::{self, Failure, OutcomeOf, Stop};
use crate::native::{ApiTarget, Native, Protocol, SubEvent, instance_id};
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
        NativeKind::Registry => registry(&sessions, proto, &target, p).await,
        NativeKind::Config => config(&sessions, proto, &target, p).await,
        NativeKind::Lock => lock(&sessions, p).await,
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
    WorkloadResult {
        workload: String::new(),
        mode,
        elapsed_s: elapsed.as_secs_f64(),
        ops: rec.summarize(),
        extras: Default::default(),
        timeline: rec.timeline(),
        knee,
        server,
        fault: None,
    }
}

// ---------- registry ----------

/// Instance `k` of session `idx`: a distinct address per (session, k).
fn address(idx: usize, k: u64) -> (String, u16) {
    (
        format!("10.{}.{}.{}", idx % 250, (k >> 8) & 255, k & 255),
        8000 + (idx / 250) as u16 + 100 * (k >> 16) as u16,
    )
}

async fn registry(
    sessions: &[Session],
    proto: Protocol,
    target: &ApiTarget,
    p: &Params,
) -> anyhow::Result<WorkloadResult> {
    let group: Arc<str> = Arc::from(p.run_name());
    let keys = p.keys.max(1);
    // About 100 instances per service, so a list is a realistic size.
    let services = (keys / 100).max(1);
    let service = move |x: u64| format!("svc-{}", x % services);
    let per_session = keys.div_ceil(sessions.len() as u64);

    let g = group.clone();
    preload(sessions, keys, "instances", move |s: Session, seq| {
        let g = g.clone();
        async move {
            let (ip, port) = address(s.idx, seq);
            let r = s.api.register(&g, &service(seq), &ip, port, s.lease).await;
            Some(("register", r))
        }
    })
    .await?;

    let rec = Arc::new(Recorder::new());
    let probe = {
        let api = Native::connect(proto, target).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let (rec, s, group, lease) = (rec.clone(), stop.clone(), group.clone(), sessions[0].lease);
        let task = tokio::spawn(async move { subscribe_probe(api, &group, lease, rec, s).await });
        Probe { task, stop }
    };
    let g = group.clone();
    let op = move |s: Session, seq: u64| {
        let g = g.clone();
        async move {
            let r = mix(seq ^ 0x5eed) % 100;
            Some(if r < 40 {
                let k = mix(seq) % per_session;
                let (ip, port) = address(s.idx, k);
                (
                    "register",
                    s.api.register(&g, &service(k), &ip, port, s.lease).await,
                )
            } else if r < 80 {
                ("list", s.api.list(&g, &service(mix(seq))).await.map(drop))
            } else {
                ("keepalive", s.api.keepalive(s.lease).await)
            })
        }
    };
    let label = format!("api-registry-{}", proto.name());
    let mut result = measured(sessions, p.depth, p, label, rec, Some(probe), op).await;
    result.extras.insert("services".into(), services as f64);
    result
        .extras
        .insert("preloaded_instances".into(), keys as f64);
    Ok(result)
}

/// Registers and deregisters an instance of service `watched` in rounds, timing each from
/// its request's send until the subscribe stream delivers it.
async fn subscribe_probe(
    api: Native,
    group: &str,
    lease: i64,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) {
    const SERVICE: &str = "watched";
    let mut feed = None;
    let mut round: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        if feed.is_none() {
            let t = Instant::now();
            match api.subscribe(group, SERVICE).await {
                Ok(mut f) => match tokio::time::timeout(PROBE_WAIT, f.next()).await {
                    Ok(Some(Ok(SubEvent::Snapshot(_)))) => feed = Some(f),
                    other => {
                        let kind = match other {
                            Ok(Some(Err(e))) => e.kind,
                            _ => "NoSnapshot".into(),
                        };
                        rec.record("subscribe-register", t, Instant::now(), Some(kind));
                        tokio::time::sleep(PROBE_GAP).await;
                        continue;
                    }
                },
                Err(e) => {
                    rec.record("subscribe-register", t, Instant::now(), Some(e.kind));
                    tokio::time::sleep(PROBE_GAP).await;
                    continue;
                }
            }
        }
        let Some(f) = feed.as_mut() else { continue };
        round += 1;
        let (ip, port) = ("10.255.255.1", 1 + (round % 60_000) as u16);
        let id = instance_id(ip, port);
        for registering in [true, false] {
            let name = if registering {
                "subscribe-register"
            } else {
                "subscribe-deregister"
            };
            let t = Instant::now();
            let sent = if registering {
                api.register(group, SERVICE, ip, port, lease).await
            } else {
                api.deregister(group, SERVICE, &id).await
            };
            if let Err(e) = sent {
                rec.record(name, t, Instant::now(), Some(e.kind));
                break;
            }
            let seen = tokio::time::timeout(PROBE_WAIT, async {
                while let Some(ev) = f.next().await {
                    match ev {
                        Ok(SubEvent::Change { upserted, removed }) => {
                            let list = if registering { &upserted } else { &removed };
                            if list.contains(&id) {
                                return Ok(());
                            }
                        }
                        Ok(SubEvent::Snapshot(ids)) => {
                            if ids.contains(&id) == registering {
                                return Ok(());
                            }
                        }
                        Err(e) => return Err(e.kind),
                    }
                }
                Err("StreamEnded".to_string())
            })
            .await;
            match seen {
                Ok(Ok(())) => rec.record(name, t, Instant::now(), None),
                Ok(Err(kind)) => {
                    rec.record(name, t, Instant::now(), Some(kind));
                    feed = None;
                    break;
                }
                Err(_) => {
                    rec.record(name, t, Instant::now(), Some("NotifyTimeout".into()));
                    feed = None;
                    break;
                }
            }
        }
        tokio::time::sleep(PROBE_GAP).await;
    }
}

// ---------- config ----------

async fn config(
    sessions: &[Session],
    proto: Protocol,
    target: &ApiTarget,
    p: &Params,
) -> anyhow::Result<WorkloadResult> {
    let group: Arc<str> = Arc::from(p.run_name());
    let keys = p.keys.max(1);
    let value: Arc<str> = Arc::from(String::from_utf8_lossy(&p.value()).into_owned());
    let item = |k: u64| format!("cfg-{k}");

    let (g, v) = (group.clone(), value.clone());
    preload(sessions, keys, "config items", move |s: Session, seq| {
        let (g, v) = (g.clone(), v.clone());
        async move { Some(("put", s.api.config_put(&g, &item(seq), &v).await.map(drop))) }
    })
    .await?;

    let rec = Arc::new(Recorder::new());
    let probe = {
        let api = Native::connect(proto, target).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let (rec, s, group) = (rec.clone(), stop.clone(), group.clone());
        let task = tokio::spawn(async move { listen_probe(api, &group, rec, s).await });
        Probe { task, stop }
    };
    let (g, v) = (group.clone(), value.clone());
    let op = move |s: Session, seq: u64| {
        let (g, v) = (g.clone(), v.clone());
        async move {
            let key = item(mix(seq) % keys);
            Some(if mix(seq ^ 0x5eed) % 100 < 80 {
                ("get", s.api.config_get(&g, &key).await.map(drop))
            } else {
                ("put", s.api.config_put(&g, &key, &v).await.map(drop))
            })
        }
    };
    let label = format!("api-config-{}", proto.name());
    let result = measured(sessions, p.depth, p, label, rec, Some(probe), op).await;

    if p.cleanup {
        let admin = sessions[0].api.clone();
        let mut deletes = futures::stream::iter((0..keys).map(item).chain(["watched".into()]))
            .map(|id| {
                let (admin, g) = (admin.clone(), group.clone());
                async move { admin.config_delete(&g, &id).await }
            })
            .buffer_unordered(PREP_PARALLEL);
        let mut failed = 0u64;
        while let Some(r) = deletes.next().await {
            failed += u64::from(r.is_err_and(|e| e.kind != "NOT_FOUND"));
        }
        if failed > 0 {
            eprintln!("warning: {failed} config items of the run could not be deleted");
        }
    }
    let mut result = result;
    result.extras.insert("items".into(), keys as f64);
    Ok(result)
}

/// Puts the item `watched` in rounds, timing each put from its send until a listener on the
/// item (another connection) reports the new md5.
async fn listen_probe(api: Native, group: &str, rec: Arc<Recorder>, stop: Arc<AtomicBool>) {
    const ITEM: &str = "watched";
    let mut listener = None;
    let mut round: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        if listener.is_none() {
            let t = Instant::now();
            // Create the item, then listen holding nothing: the current md5 comes at once,
            // which shows the listener is in place.
            let ready = async {
                let md5 = api.config_put(group, ITEM, "0").await?;
                let mut l = api.config_listen(group, ITEM, "").await?;
                loop {
                    match tokio::time::timeout(PROBE_WAIT, l.next()).await {
                        Ok(Some(Ok(m))) if m == md5 => return Ok(l),
                        Ok(Some(Ok(_))) => continue,
                        Ok(Some(Err(e))) => return Err(e),
                        _ => return Err(Failure::new("NoListenAnswer", "listener silent")),
                    }
                }
            };
            match ready.await {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    rec.record("listen-notify", t, Instant::now(), Some(e.kind));
                    tokio::time::sleep(PROBE_GAP).await;
                    continue;
                }
            }
        }
        let Some(l) = listener.as_mut() else { continue };
        let content = format!("round-{round}");
        let t = Instant::now();
        let md5 = match api.config_put(group, ITEM, &content).await {
            Ok(m) => m,
            Err(e) => {
                rec.record("listen-notify", t, Instant::now(), Some(e.kind));
                tokio::time::sleep(PROBE_GAP).await;
                continue;
            }
        };
        let heard = tokio::time::timeout(PROBE_WAIT, async {
            while let Some(m) = l.next().await {
                match m {
                    Ok(m) if m == md5 => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.kind),
                }
            }
            Err("StreamEnded".to_string())
        })
        .await;
        match heard {
            Ok(Ok(())) => rec.record("listen-notify", t, Instant::now(), None),
            Ok(Err(kind)) => {
                rec.record("listen-notify", t, Instant::now(), Some(kind));
                listener = None;
            }
            Err(_) => {
                rec.record(
                    "listen-notify",
                    t,
                    Instant::now(),
                    Some("NotifyTimeout".into()),
                );
                listener = None;
            }
        }
        tokio::time::sleep(PROBE_GAP).await;
    }
}

// ---------- lock ----------

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

async fn lock(sessions: &[Session], p: &Params) -> anyhow::Result<WorkloadResult> {
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
    use super::{LockCheck, address};
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

    #[test]
    fn addresses_are_distinct_per_session_and_key() {
        let mut seen = std::collections::HashSet::new();
        for idx in 0..600 {
            for k in [0u64, 1, 255, 256, 65_535, 65_536, 70_000] {
                assert!(seen.insert(address(idx, k)), "({idx}, {k}) repeats");
            }
        }
    }
}
