//! Registry workloads across protocols (docs/benchmarks.md):
//!
//! - `eureka-renew`: a Eureka renew storm. `--keys` instances (default 1000) registered through
//!   the Eureka REST API, each renewing once per [`RENEW_INTERVAL_S`] seconds as Eureka clients
//!   do: open loop at `keys / 30` renews per second unless `--rate` says otherwise.
//! - `registry-cross`: cross-protocol discovery latency. Each round registers an instance through
//!   one protocol and polls another until the instance is visible there (`{from}>{to}`), then
//!   deregisters it and polls until it is gone (`{from}>{to}-gone`); rounds cycle through every
//!   ordered pair of native (HTTP), nacos (v1 HTTP), eureka (REST) and — with `--target` —
//!   zookeeper (a Curator service-discovery node, docs/registry-model.md). Every instance is in
//!   `public`/`DEFAULT_GROUP`, the one scope all protocols share.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hyper::{Method, StatusCode};

use super::{Params, WARM_BIT, WorkloadResult};
use crate::eureka::EurekaClient;
use crate::http::{Body, Http, enc};
use crate::load::{Failure, OutcomeOf};
use crate::nacos::NacosClient;
use crate::record::Recorder;
use crate::server_stats::Watch;

/// Seconds between two renews of one Eureka instance (Eureka's default).
pub const RENEW_INTERVAL_S: u64 = 30;
/// Lease duration of the storm's instances (Eureka's default).
const LEASE_DURATION_S: u64 = 90;
/// Instances of `eureka-renew` when `--keys` is not given.
pub const DEFAULT_RENEW_INSTANCES: u64 = 1000;
/// Applications the storm's instances spread over.
const APPS: u64 = 10;
/// Concurrent requests of a preload or cleanup.
const PREP_PARALLEL: usize = 64;
/// A change not visible after this long counts as `NotifyTimeout`.
const VISIBLE_WAIT: Duration = Duration::from_secs(10);
/// Pause between two polls of the reading protocol.
const POLL_GAP: Duration = Duration::from_millis(2);
/// The address every cross-protocol instance uses (ports differ).
const CROSS_IP: &str = "10.254.0.1";

/// Instance `n` of the storm: (application, instance id, ip, port).
fn storm_instance(run: &str, n: u64) -> (String, String, String, u16) {
    let ip = format!(
        "10.{}.{}.{}",
        128 + ((n >> 16) & 127),
        (n >> 8) & 255,
        n & 255
    );
    let port = 8080 + (n >> 23) as u16;
    (
        format!("{run}-renew-{}", n % APPS),
        format!("{ip}:{port}"),
        ip,
        port,
    )
}

/// `eureka-renew`.
pub async fn run_renew(p: &Params) -> anyhow::Result<WorkloadResult> {
    let target = p.api()?;
    let clients: Vec<EurekaClient> = (0..p.sessions.max(1))
        .map(|_| EurekaClient::new(&target.http))
        .collect();
    let run: Arc<str> = Arc::from(p.run_name());
    let n = if p.keys > 1 {
        p.keys
    } else {
        DEFAULT_RENEW_INSTANCES
    };
    eprintln!("registering {n} Eureka instances");
    let failed = for_each(n, |i| {
        let (c, run) = (clients[i as usize % clients.len()].clone(), run.clone());
        async move {
            let (app, id, ip, port) = storm_instance(&run, i);
            c.register(&app, &id, &ip, port, RENEW_INTERVAL_S, LEASE_DURATION_S)
                .await
        }
    })
    .await;
    anyhow::ensure!(
        failed == 0,
        "registering the storm's instances: {failed} of {n} failed"
    );

    let rec = Arc::new(Recorder::new());
    let r = run.clone();
    let op = move |c: EurekaClient, seq: u64| {
        let r = r.clone();
        async move {
            let (app, id, _, _) = storm_instance(&r, (seq & !WARM_BIT) % n);
            Some(("renew", c.renew(&app, &id).await)) as OutcomeOf<Failure>
        }
    };
    let rate = p
        .rate
        .unwrap_or(n as f64 / RENEW_INTERVAL_S as f64)
        .max(1.0);
    super::warm_up(&clients, p.depth, p, Some(rate), op.clone()).await;
    let watch = p.watch();
    let t0 = Instant::now();
    let (mode, knee) = super::measure(
        &clients,
        p.depth,
        p,
        p.stop,
        Some(rate),
        "eureka-renew".into(),
        rec.clone(),
        op,
    )
    .await;
    let elapsed = t0.elapsed();
    let server = watch.map(Watch::finish);
    if p.cleanup {
        let failed = for_each(n, |i| {
            let (c, run) = (clients[i as usize % clients.len()].clone(), run.clone());
            async move {
                let (app, id, _, _) = storm_instance(&run, i);
                c.cancel(&app, &id).await
            }
        })
        .await;
        if failed > 0 {
            eprintln!("warning: cleanup: {failed} of {n} cancels failed");
        }
    }
    let mut extras = BTreeMap::new();
    extras.insert("instances".into(), n as f64);
    extras.insert("renew_interval_s".into(), RENEW_INTERVAL_S as f64);
    extras.insert("renews_per_s_target".into(), rate);
    Ok(WorkloadResult::measured(
        mode, elapsed, &rec, extras, knee, server,
    ))
}

/// Runs `f(0..n)` with [`PREP_PARALLEL`] in flight; how many failed.
async fn for_each<F, Fut>(n: u64, f: F) -> usize
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    let mut s = futures::stream::iter(0..n)
        .map(f)
        .buffer_unordered(PREP_PARALLEL);
    let mut failed = 0;
    while let Some(r) = s.next().await {
        if let Err(e) = r {
            if failed == 0 {
                eprintln!("  first failure: {}: {}", e.kind, e.message);
            }
            failed += 1;
        }
    }
    failed
}

/// A registry protocol of `registry-cross`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Native,
    Nacos,
    Eureka,
    Zookeeper,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Native => "native",
            Proto::Nacos => "nacos",
            Proto::Eureka => "eureka",
            Proto::Zookeeper => "zookeeper",
        }
    }
}

/// One client of every protocol.
#[derive(Clone)]
struct Cross {
    http: Http,
    nacos: NacosClient,
    eureka: EurekaClient,
    zk: Option<crate::zk::Client>,
}

fn zk_failure(what: &str, e: zookeeper_client::Error) -> Failure {
    Failure::new(crate::zk::error_kind(&e), format!("{what}: {e}"))
}

impl Cross {
    async fn register(&self, p: Proto, service: &str, port: u16) -> Result<(), Failure> {
        match p {
            Proto::Native => {
                let body = serde_json::json!({"ip": CROSS_IP, "port": port, "ephemeral": false});
                let path = format!("/v1/registry/services/{}/instances", enc(service));
                let (status, bytes) = self
                    .http
                    .call(
                        Method::POST,
                        &path,
                        Body::Json(body.to_string().into_bytes()),
                    )
                    .await?;
                status_ok(status, &path, &bytes)
            }
            Proto::Nacos => {
                self.nacos
                    .register("DEFAULT_GROUP", service, CROSS_IP, port, false)
                    .await
            }
            Proto::Eureka => {
                self.eureka
                    .register(
                        service,
                        &format!("{CROSS_IP}:{port}"),
                        CROSS_IP,
                        port,
                        30,
                        90,
                    )
                    .await
            }
            Proto::Zookeeper => {
                let zk = self.zk.as_ref().expect("zookeeper leg needs --target");
                let dir = format!("/services/{service}");
                crate::zk::ensure_path(zk, &dir)
                    .await
                    .map_err(|e| Failure::new("ZkError", format!("{dir}: {e:#}")))?;
                let data = serde_json::json!({
                    "name": service, "id": format!("{CROSS_IP}#{port}"), "address": CROSS_IP,
                    "port": port, "sslPort": null, "payload": null, "registrationTimeUTC": 0,
                    "serviceType": "DYNAMIC", "uriSpec": null,
                });
                let node = format!("{dir}/{CROSS_IP}#{port}");
                zk.create(&node, data.to_string().as_bytes(), &crate::zk::EPHEMERAL)
                    .await
                    .map(drop)
                    .map_err(|e| zk_failure(&node, e))
            }
        }
    }

    async fn deregister(&self, p: Proto, service: &str, port: u16) -> Result<(), Failure> {
        match p {
            Proto::Native => {
                let path = format!(
                    "/v1/registry/services/{}/instances/{}",
                    enc(service),
                    enc(&format!("{CROSS_IP}#{port}#DEFAULT"))
                );
                let (status, bytes) = self.http.call(Method::DELETE, &path, Body::Empty).await?;
                status_ok(status, &path, &bytes)
            }
            Proto::Nacos => {
                self.nacos
                    .deregister("DEFAULT_GROUP", service, CROSS_IP, port, false)
                    .await
            }
            Proto::Eureka => {
                self.eureka
                    .cancel(service, &format!("{CROSS_IP}:{port}"))
                    .await
            }
            Proto::Zookeeper => {
                let zk = self.zk.as_ref().expect("zookeeper leg needs --target");
                let node = format!("/services/{service}/{CROSS_IP}#{port}");
                zk.delete(&node, None)
                    .await
                    .map_err(|e| zk_failure(&node, e))
            }
        }
    }

    /// The ports of `service`'s instances as protocol `p` lists them.
    async fn ports(&self, p: Proto, service: &str) -> Result<Vec<u16>, Failure> {
        match p {
            Proto::Native => {
                let path = format!("/v1/registry/services/{}/instances", enc(service));
                let (status, bytes) = self.http.call(Method::GET, &path, Body::Empty).await?;
                if status == StatusCode::NOT_FOUND {
                    return Ok(Vec::new());
                }
                status_ok(status, &path, &bytes)?;
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| Failure::new("BadResponse", format!("{path}: {e}")))?;
                Ok(v["instances"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["port"].as_u64().and_then(|p| u16::try_from(p).ok()))
                    .collect())
            }
            Proto::Nacos => self.nacos.list("DEFAULT_GROUP", service).await,
            Proto::Eureka => self.eureka.ports(service).await,
            Proto::Zookeeper => {
                let zk = self.zk.as_ref().expect("zookeeper leg needs --target");
                let dir = format!("/services/{service}");
                match zk.list_children(&dir).await {
                    // Mirrors are named `{ip}#{port}#{cluster}`.
                    Ok(names) => Ok(names
                        .iter()
                        .filter_map(|n| n.split('#').nth(1).and_then(|p| p.parse().ok()))
                        .collect()),
                    Err(zookeeper_client::Error::NoNode) => Ok(Vec::new()),
                    Err(e) => Err(zk_failure(&dir, e)),
                }
            }
        }
    }

    /// Polls `p` until `port` is (or is no longer) listed; `NotifyTimeout` after [`VISIBLE_WAIT`].
    async fn wait(&self, p: Proto, service: &str, port: u16, present: bool) -> Result<(), Failure> {
        let deadline = Instant::now() + VISIBLE_WAIT;
        loop {
            if self.ports(p, service).await?.contains(&port) == present {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Failure::new(
                    "NotifyTimeout",
                    format!(
                        "{service}:{port} not {} through {}",
                        if present { "listed" } else { "gone" },
                        p.name()
                    ),
                ));
            }
            tokio::time::sleep(POLL_GAP).await;
        }
    }
}

fn status_ok(status: StatusCode, path: &str, bytes: &[u8]) -> Result<(), Failure> {
    if status.is_success() {
        Ok(())
    } else {
        Err(Failure::new(
            format!("HTTP_{}", status.as_u16()),
            format!("{path}: {}", String::from_utf8_lossy(bytes).trim()),
        ))
    }
}

/// An ordered pair and its two op names (kept for the run: `Recorder` names are `'static`).
struct Pair {
    from: Proto,
    to: Proto,
    visible: &'static str,
    gone: &'static str,
    service: String,
}

/// `registry-cross`.
pub async fn run_cross(p: &Params) -> anyhow::Result<WorkloadResult> {
    let target = p.api()?;
    let zk = if p.spec.target.is_empty() {
        None
    } else {
        Some(crate::zk::connect(&p.spec).await?)
    };
    let mut protos = vec![Proto::Native, Proto::Nacos, Proto::Eureka];
    if zk.is_some() {
        protos.push(Proto::Zookeeper);
    }
    let run = p.run_name().to_lowercase();
    let mut pairs = Vec::new();
    for &from in &protos {
        for &to in &protos {
            if from != to {
                let visible = format!("{}>{}", from.name(), to.name());
                pairs.push(Pair {
                    from,
                    to,
                    gone: Box::leak(format!("{visible}-gone").into_boxed_str()),
                    service: format!("{run}-{}-{}", from.name(), to.name()),
                    visible: Box::leak(visible.into_boxed_str()),
                });
            }
        }
    }
    let pairs = Arc::new(pairs);
    let clients: Vec<Cross> = (0..p.sessions.max(1))
        .map(|_| Cross {
            http: Http::new(&target.http),
            nacos: NacosClient::new(&target.http),
            eureka: EurekaClient::new(&target.http),
            zk: zk.clone(),
        })
        .collect();
    let rec = Arc::new(Recorder::new());
    let (r, ps) = (rec.clone(), pairs.clone());
    let op = move |c: Cross, seq: u64| {
        let (r, ps) = (r.clone(), ps.clone());
        async move {
            let warm = seq & WARM_BIT != 0;
            let n = seq & !WARM_BIT;
            let pair = &ps[(n % ps.len() as u64) as usize];
            // Distinct per round of a pair (and apart from the warm-up's) for 20000 rounds.
            let port = if warm { 40_000 } else { 10_000 } + ((n / ps.len() as u64) % 20_000) as u16;
            let since = Instant::now();
            if let Err(e) = c.register(pair.from, &pair.service, port).await {
                return Some(("register", Err(e))) as OutcomeOf<Failure>;
            }
            let seen = c.wait(pair.to, &pair.service, port, true).await;
            if !warm {
                r.record(
                    pair.visible,
                    since,
                    Instant::now(),
                    seen.as_ref().err().map(|e| e.kind.clone()),
                );
            }
            let since = Instant::now();
            if let Err(e) = c.deregister(pair.from, &pair.service, port).await {
                return Some(("deregister", Err(e)));
            }
            let gone = c.wait(pair.to, &pair.service, port, false).await;
            if !warm {
                r.record(
                    pair.gone,
                    since,
                    Instant::now(),
                    gone.as_ref().err().map(|e| e.kind.clone()),
                );
            }
            Some(("round", seen.and(gone)))
        }
    };
    super::warm_up(&clients, p.depth, p, p.rate, op.clone()).await;
    let watch = p.watch();
    let t0 = Instant::now();
    let (mode, knee) = super::measure(
        &clients,
        p.depth,
        p,
        p.stop,
        p.rate,
        "registry-cross".into(),
        rec.clone(),
        op,
    )
    .await;
    let elapsed = t0.elapsed();
    let server = watch.map(Watch::finish);
    let mut extras = BTreeMap::new();
    extras.insert("pairs".into(), pairs.len() as f64);
    extras.insert("poll_gap_ms".into(), POLL_GAP.as_secs_f64() * 1000.0);
    Ok(WorkloadResult::measured(
        mode, elapsed, &rec, extras, knee, server,
    ))
}
