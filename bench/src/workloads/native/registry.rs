//! `api-registry`: register (40 %), list (40 %), lease keep-alive (20 %), and a probe timing
//! register / deregister until the subscribe stream delivers them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::{PROBE_GAP, PROBE_WAIT, Probe, Session, measured, preload};
use crate::native::{ApiTarget, Native, Protocol, SubEvent, instance_id};
use crate::record::Recorder;
use crate::workloads::{Params, WorkloadResult, mix};

/// Instance `k` of session `idx`: a distinct address per (session, k).
fn address(idx: usize, k: u64) -> (String, u16) {
    (
        format!("10.{}.{}.{}", idx % 250, (k >> 8) & 255, k & 255),
        8000 + (idx / 250) as u16 + 100 * (k >> 16) as u16,
    )
}

/// Runs the workload on the sessions.
pub(super) async fn run(
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
            // The stream is in place once its snapshot has come.
            let opened = tokio::time::timeout(PROBE_WAIT, async {
                let mut f = api.subscribe(group, SERVICE).await.map_err(|e| e.kind)?;
                match f.next().await {
                    Some(Ok(SubEvent::Snapshot(_))) => Ok(f),
                    Some(Err(e)) => Err(e.kind),
                    _ => Err("NoSnapshot".to_string()),
                }
            })
            .await;
            let kind = match opened {
                Ok(Ok(f)) => {
                    feed = Some(f);
                    None
                }
                Ok(Err(kind)) => Some(kind),
                Err(_) => Some("NoSnapshot".to_string()),
            };
            if let Some(kind) = kind {
                rec.record("subscribe-register", t, Instant::now(), Some(kind));
                tokio::time::sleep(PROBE_GAP).await;
                continue;
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

#[cfg(test)]
mod tests {
    use super::address;

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
