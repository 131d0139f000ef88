//! `api-config`: get (80 %) and put (20 %) of preloaded items, and a probe timing a put until a
//! listener hears of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::StreamExt;

use super::{PREP_PARALLEL, PROBE_GAP, PROBE_WAIT, Probe, Session, measured, preload};
use crate::load::Failure;
use crate::native::{ApiTarget, Native, Protocol};
use crate::record::Recorder;
use crate::workloads::{Params, WorkloadResult, mix};

/// Runs the workload on the sessions.
pub(super) async fn run(
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
