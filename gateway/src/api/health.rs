//! Server-side health probes. Every member probes the instances it registered (`owner` = its
//! server id) that carry a `health_check`: TCP connect, HTTP GET expecting 2xx, or the standard
//! gRPC health check. Two failures in a row mark an instance unhealthy; one success marks it
//! healthy again (gRPC: `grpc.health.v1` answering SERVING). The change is a normal write, so every protocol sees it (and the protect
//! threshold counts it).

use super::registry::{HealthCheck, Instance, ProbeKind, Registry, ServiceKey};
use super::store::{ROOT, Store};
use roster_core::path;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Consecutive failures before an instance is marked unhealthy.
pub const FAILURES_TO_UNHEALTHY: u32 = 2;
/// Probes in flight at once on one member.
const MAX_IN_FLIGHT: usize = 256;

struct Probe {
    key: ServiceKey,
    id: String,
    check: HealthCheck,
    target: (String, u16),
    next: Instant,
    failures: u32,
    running: bool,
}

/// Run the prober until the runtime ends.
pub fn start(store: Store, registry: Arc<Registry>, server_id: u64) {
    tokio::spawn(async move {
        let mut probes: HashMap<String, Probe> = HashMap::new();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<(String, bool)>(1024);
        let limit = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        let mut scan = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = scan.tick() => {
                    refresh(&store, server_id, &mut probes);
                    let now = Instant::now();
                    for (p, probe) in probes.iter_mut() {
                        if probe.running || probe.next > now {
                            continue;
                        }
                        probe.running = true;
                        probe.next = now + Duration::from_millis(probe.check.interval_ms);
                        let (tx, p, check, target, limit) =
                            (done_tx.clone(), p.clone(), probe.check.clone(), probe.target.clone(), limit.clone());
                        tokio::spawn(async move {
                            let _permit = limit.acquire().await;
                            let ok = run(&check, &target).await;
                            metrics::counter!("roster_registry_probes_total",
                                "type" => kind_label(check.kind), "result" => if ok { "ok" } else { "fail" }).increment(1);
                            let _ = tx.send((p, ok)).await;
                        });
                    }
                }
                Some((p, ok)) = done_rx.recv() => {
                    let Some(probe) = probes.get_mut(&p) else { continue };
                    probe.running = false;
                    probe.failures = if ok { 0 } else { probe.failures + 1 };
                    let healthy = if ok { Some(true) } else if probe.failures >= FAILURES_TO_UNHEALTHY { Some(false) } else { None };
                    let Some(healthy) = healthy else { continue };
                    let current = registry.get(&probe.key, &probe.id).map(|i| i.healthy).ok();
                    if current.is_some_and(|c| c != healthy) {
                        tracing::info!(service = %probe.key.service, instance = %probe.id, healthy,
                            failures = probe.failures, "health probe changed the instance's health");
                        if let Err(e) = registry.update(&probe.key, &probe.id, |i| i.healthy = healthy).await {
                            tracing::warn!(instance = %probe.id, error = %e, "recording a probe result");
                        }
                    }
                }
            }
        }
    });
}

/// Bring the probe table in line with the instances this member owns.
fn refresh(store: &Store, server_id: u64, probes: &mut HashMap<String, Probe>) {
    let owned: Vec<(String, Instance)> = store.read(|t| {
        let mut out = Vec::new();
        let root = format!("{ROOT}/registry");
        let Some(r) = t.get(&root) else { return out };
        for ns in &r.children {
            let nsp = path::join(&root, ns);
            let Some(n) = t.get(&nsp) else { continue };
            for g in &n.children {
                let gp = path::join(&nsp, g);
                let Some(gn) = t.get(&gp) else { continue };
                for s in &gn.children {
                    let sp = path::join(&gp, s);
                    let Some(sn) = t.get(&sp) else { continue };
                    for i in &sn.children {
                        let ip = path::join(&sp, i);
                        if let Some(inst) = super::registry::read_instance(t, &ip)
                            && inst.owner == server_id
                            && inst.health_check.is_some()
                        {
                            out.push((ip, inst));
                        }
                    }
                }
            }
        }
        out
    });
    let live: std::collections::HashSet<&str> = owned.iter().map(|(p, _)| p.as_str()).collect();
    probes.retain(|p, _| live.contains(p.as_str()));
    for (p, inst) in owned {
        let check = inst.health_check.clone().expect("filtered above");
        let target = (inst.ip.clone(), check.port.unwrap_or(inst.port));
        match probes.get_mut(&p) {
            Some(probe) => {
                probe.check = check;
                probe.target = target;
            }
            None => {
                probes.insert(
                    p,
                    Probe {
                        key: ServiceKey {
                            namespace: inst.namespace,
                            group: inst.group,
                            service: inst.service,
                        },
                        id: inst.id,
                        check,
                        target,
                        next: Instant::now(),
                        failures: 0,
                        running: false,
                    },
                );
            }
        }
    }
    metrics::gauge!("roster_registry_probed_instances").set(probes.len() as f64);
}

fn kind_label(k: ProbeKind) -> &'static str {
    match k {
        ProbeKind::Tcp => "tcp",
        ProbeKind::Http => "http",
        ProbeKind::Grpc => "grpc",
    }
}

/// One probe: true when the instance answered as healthy within the timeout.
async fn run(check: &HealthCheck, target: &(String, u16)) -> bool {
    let timeout = Duration::from_millis(check.timeout_ms);
    let fut = async {
        let stream = TcpStream::connect((target.0.as_str(), target.1))
            .await
            .ok()?;
        match check.kind {
            ProbeKind::Tcp => Some(true),
            ProbeKind::Http => http_get(stream, target, check.path.as_deref().unwrap_or("/")).await,
            ProbeKind::Grpc => grpc_health(stream).await,
        }
    };
    matches!(tokio::time::timeout(timeout, fut).await, Ok(Some(true)))
}

async fn http_get(stream: TcpStream, target: &(String, u16), path: &str) -> Option<bool> {
    use http_body_util::Empty;
    use hyper::body::Bytes;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let host = if target.0.contains(':') {
        format!("[{}]:{}", target.0, target.1)
    } else {
        format!("{}:{}", target.0, target.1)
    };
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "roster-health-probe")
        .body(Empty::new())
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    Some(resp.status().is_success())
}

/// The standard gRPC health check (`grpc.health.v1.Health/Check`, empty service name): healthy
/// when the call succeeds and answers SERVING.
async fn grpc_health(stream: TcpStream) -> Option<bool> {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use prost::Message;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let msg = HealthCheckRequest {
        service: String::new(),
    }
    .encode_to_vec();
    // A gRPC message: uncompressed flag, 4-byte big-endian length, the protobuf.
    let mut body = Vec::with_capacity(5 + msg.len());
    body.push(0);
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    let req = hyper::Request::post("/grpc.health.v1.Health/Check")
        .header(hyper::header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .header(hyper::header::USER_AGENT, "roster-health-probe")
        .body(Full::new(Bytes::from(body)))
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    if !resp.status().is_success() {
        return Some(false);
    }
    let header_status = resp.headers().get("grpc-status").cloned();
    let collected = resp.into_body().collect().await.ok()?;
    let status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status").cloned())
        .or(header_status);
    let bytes = collected.to_bytes();
    if status.as_ref().is_none_or(|s| s != "0") || bytes.len() < 5 {
        return Some(false);
    }
    let answer = HealthCheckResponse::decode(&bytes[5..]).ok()?;
    Some(answer.status == ServingStatus::Serving as i32)
}
