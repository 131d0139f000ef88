//! nacos-bench-style workloads on the Nacos HTTP v1 open API: one operation per workload, sent
//! open loop at a fixed rate (`--rate`, default [`DEFAULT_RATE`]) spread over `--sessions`
//! clients, with the server's CPU and memory sampled as for every workload.
//!
//! - `nacos-register`: registers a new ephemeral instance per request (no beats: the run is
//!   the instance's life; see docs/benchmarks.md), over about 100 services.
//! - `nacos-query`: lists the instances of one of the preloaded services (`--keys` persistent
//!   instances, 10 per service).
//! - `nacos-subscribe`: what a Nacos 1.x client's subscription is — polling the list of a
//!   service — at the rate, all on one watched service; a probe registers and deregisters an
//!   instance of it and times each until the first poll that sees it
//!   (`subscribe-register`, `subscribe-deregister`).
//! - `nacos-config-publish`: publishes one of `--keys` items.
//! - `nacos-config-get`: gets one of `--keys` preloaded items.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;

use super::{Params, WARM_BIT, WorkloadResult, mix};
use crate::load::{self, Failure, OutcomeOf, Stop};
use crate::nacos::NacosClient;
use crate::record::Recorder;
use crate::server_stats::Watch;

/// Requests per second when `--rate` is not given.
pub const DEFAULT_RATE: f64 = 500.0;
/// Concurrent requests of a preload or cleanup.
const PREP_PARALLEL: usize = 64;
/// Pause between two probe rounds.
const PROBE_GAP: Duration = Duration::from_millis(50);
/// A change no poll has seen after this long counts as `NotifyTimeout`.
const PROBE_WAIT: Duration = Duration::from_secs(10);
/// Instances per preloaded service (query, subscribe).
const PER_SERVICE: u64 = 10;

/// The Nacos workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nacos {
    Register,
    Query,
    Subscribe,
    ConfigPublish,
    ConfigGet,
}

impl Nacos {
    pub fn name(self) -> &'static str {
        match self {
            Nacos::Register => "nacos-register",
            Nacos::Query => "nacos-query",
            Nacos::Subscribe => "nacos-subscribe",
            Nacos::ConfigPublish => "nacos-config-publish",
            Nacos::ConfigGet => "nacos-config-get",
        }
    }
}

/// Instance `n`'s address: distinct for n < 2^24.
fn address(n: u64) -> (String, u16) {
    (
        format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255),
        8080 + (n >> 24) as u16,
    )
}

/// The service of `nacos-register`'s instance `n` (warm-up instances apart).
fn service(warm: bool, n: u64) -> String {
    format!("{}-{}", if warm { "warm" } else { "svc" }, n % 100)
}

/// The change the subscribe probe waits for a poll to see.
struct Expect {
    port: u16,
    present: bool,
    seen: tokio::sync::oneshot::Sender<()>,
}

pub async fn run(w: Nacos, p: &Params) -> anyhow::Result<WorkloadResult> {
    let target = p.api()?;
    let clients: Vec<NacosClient> = (0..p.sessions.max(1))
        .map(|_| NacosClient::new(&target.http))
        .collect();
    let admin = clients[0].clone();
    let group: Arc<str> = Arc::from(p.run_name());
    let keys = p.keys.max(1);
    let value: Arc<str> = Arc::from(String::from_utf8_lossy(&p.value()).into_owned());
    let query_services = keys.div_ceil(PER_SERVICE);

    // Preload.
    match w {
        Nacos::Query | Nacos::Subscribe => {
            let g = group.clone();
            let count = if w == Nacos::Query { keys } else { PER_SERVICE };
            preload(&clients, count, "persistent instances", move |c, n| {
                let g = g.clone();
                async move {
                    let (ip, port) = address(n);
                    let svc = if w == Nacos::Query {
                        format!("svc-{}", n % query_services)
                    } else {
                        "watched".to_string()
                    };
                    Some(("register", c.register(&g, &svc, &ip, port, false).await))
                }
            })
            .await?;
        }
        Nacos::ConfigGet => {
            let (g, v) = (group.clone(), value.clone());
            preload(&clients, keys, "config items", move |c, n| {
                let (g, v) = (g.clone(), v.clone());
                async move {
                    let r = c.config_publish(&g, &format!("cfg-{n}"), &v).await;
                    Some(("publish", r))
                }
            })
            .await?;
        }
        Nacos::Register | Nacos::ConfigPublish => {}
    }

    let rec = Arc::new(Recorder::new());
    let expect: Arc<Mutex<Option<Expect>>> = Arc::new(Mutex::new(None));
    let stop_probe = Arc::new(AtomicBool::new(false));
    let probe = (w == Nacos::Subscribe).then(|| {
        let (c, g, e, r, s) = (
            admin.clone(),
            group.clone(),
            expect.clone(),
            rec.clone(),
            stop_probe.clone(),
        );
        tokio::spawn(async move { subscribe_probe(c, &g, e, r, s).await })
    });
    // How many instances nacos-register registered (sequence numbers below it), measured and
    // in the warm-up.
    let registered = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);

    let (g, v, e, reg) = (
        group.clone(),
        value.clone(),
        expect.clone(),
        registered.clone(),
    );
    let op = move |c: NacosClient, seq: u64| {
        let (g, v, e, reg) = (g.clone(), v.clone(), e.clone(), reg.clone());
        async move {
            Some(match w {
                Nacos::Register => {
                    let warm = seq & WARM_BIT != 0;
                    let n = seq & !WARM_BIT;
                    reg[usize::from(warm)].fetch_max(n + 1, Ordering::Relaxed);
                    let (ip, port) = address(n);
                    (
                        "register",
                        c.register(&g, &service(warm, n), &ip, port, true).await,
                    )
                }
                Nacos::Query => {
                    let svc = format!("svc-{}", mix(seq) % query_services);
                    ("query", c.list(&g, &svc).await.map(drop))
                }
                Nacos::Subscribe => {
                    let r = c.list(&g, "watched").await;
                    if let Ok(ports) = &r {
                        let mut slot = e.lock();
                        if slot
                            .as_ref()
                            .is_some_and(|x| ports.contains(&x.port) == x.present)
                            && let Some(tx) = slot.take().map(|x| x.seen)
                        {
                            let _ = tx.send(());
                        }
                    }
                    ("poll", r.map(drop))
                }
                Nacos::ConfigPublish => {
                    let key = format!("cfg-{}", mix(seq) % keys);
                    ("publish", c.config_publish(&g, &key, &v).await)
                }
                Nacos::ConfigGet => {
                    let key = format!("cfg-{}", mix(seq) % keys);
                    ("get", c.config_get(&g, &key).await.map(drop))
                }
            })
        }
    };

    let rate = p.rate.or(Some(DEFAULT_RATE));
    super::warm_up(&clients, p.depth, p, rate, op.clone()).await;
    let watch = p.watch();
    let t0 = Instant::now();
    let (mode, knee) = super::measure(
        &clients,
        p.depth,
        p,
        p.stop,
        rate,
        w.name().to_string(),
        rec.clone(),
        op,
    )
    .await;
    let elapsed = t0.elapsed();
    stop_probe.store(true, Ordering::Relaxed);
    if let Some(probe) = probe {
        // Without polls nothing more can be seen: a round in progress is dropped, not failed.
        probe.abort();
        let _ = probe.await;
    }
    let server = watch.map(Watch::finish);

    let mut extras = std::collections::BTreeMap::new();
    if p.cleanup {
        cleanup(w, &admin, &group, keys, query_services, &registered).await;
    }
    match w {
        Nacos::Register => {
            extras.insert(
                "instances_registered".into(),
                registered[0].load(Ordering::Relaxed) as f64,
            );
        }
        Nacos::Query => {
            extras.insert("services".into(), query_services as f64);
            extras.insert("instances".into(), keys as f64);
        }
        Nacos::Subscribe => {
            extras.insert("subscribers".into(), clients.len() as f64);
        }
        Nacos::ConfigPublish | Nacos::ConfigGet => {
            extras.insert("items".into(), keys as f64);
        }
    }
    Ok(WorkloadResult::measured(
        mode, elapsed, &rec, extras, knee, server,
    ))
}

/// Runs `op` on `n` sequence numbers and fails on any error.
async fn preload<F, Fut>(clients: &[NacosClient], n: u64, what: &str, op: F) -> anyhow::Result<()>
where
    F: Fn(NacosClient, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = OutcomeOf<Failure>> + Send + 'static,
{
    eprintln!("preparing {n} {what}");
    let rec = Arc::new(Recorder::new());
    let depth = PREP_PARALLEL.div_ceil(clients.len());
    load::closed_loop(clients, depth, Stop::Ops(n), rec.clone(), op).await;
    super::simple::fail_on_errors(&rec, &format!("preparing {what}"))
}

/// Removes what the run wrote; failures are reported, not fatal.
async fn cleanup(
    w: Nacos,
    admin: &NacosClient,
    group: &str,
    keys: u64,
    query_services: u64,
    registered: &[AtomicU64; 2],
) {
    // (instance or item number, registered in the warm-up)
    let jobs: Vec<(u64, bool)> = match w {
        Nacos::Register => (0..registered[0].load(Ordering::Relaxed))
            .map(|n| (n, false))
            .chain((0..registered[1].load(Ordering::Relaxed)).map(|n| (n, true)))
            .collect(),
        Nacos::Query => (0..keys).map(|n| (n, false)).collect(),
        Nacos::Subscribe => (0..PER_SERVICE).map(|n| (n, false)).collect(),
        Nacos::ConfigPublish | Nacos::ConfigGet => (0..keys).map(|n| (n, false)).collect(),
    };
    let total = jobs.len();
    let mut done = futures::stream::iter(jobs)
        .map(|(n, warm)| async move {
            match w {
                Nacos::ConfigPublish | Nacos::ConfigGet => {
                    admin.config_delete(group, &format!("cfg-{n}")).await
                }
                _ => {
                    let (ip, port) = address(n);
                    let svc = match w {
                        Nacos::Register => service(warm, n),
                        Nacos::Query => format!("svc-{}", n % query_services),
                        _ => "watched".into(),
                    };
                    admin
                        .deregister(group, &svc, &ip, port, w == Nacos::Register)
                        .await
                }
            }
        })
        .buffer_unordered(PREP_PARALLEL);
    let mut failed = 0usize;
    while let Some(r) = done.next().await {
        failed += usize::from(r.is_err());
    }
    if failed > 0 {
        eprintln!("warning: cleanup: {failed} of {total} deletes failed");
    }
}

/// Registers and deregisters an instance of the watched service in rounds; the polls report
/// when they first see each change.
async fn subscribe_probe(
    c: NacosClient,
    group: &str,
    expect: Arc<Mutex<Option<Expect>>>,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) {
    let ip = "10.255.255.1";
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let port = 1 + (round % 60_000) as u16;
        for present in [true, false] {
            let name = if present {
                "subscribe-register"
            } else {
                "subscribe-deregister"
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            let since = Instant::now();
            *expect.lock() = Some(Expect {
                port,
                present,
                seen: tx,
            });
            let sent = if present {
                c.register(group, "watched", ip, port, true).await
            } else {
                c.deregister(group, "watched", ip, port, true).await
            };
            if let Err(e) = sent {
                expect.lock().take();
                rec.record(name, since, Instant::now(), Some(e.kind));
                break;
            }
            // Charged from the change's send until a poll's answer showed it.
            match tokio::time::timeout(PROBE_WAIT, rx).await {
                Ok(Ok(())) => rec.record(name, since, Instant::now(), None),
                _ => {
                    expect.lock().take();
                    rec.record(name, since, Instant::now(), Some("NotifyTimeout".into()));
                    break;
                }
            }
        }
        tokio::time::sleep(PROBE_GAP).await;
    }
}
