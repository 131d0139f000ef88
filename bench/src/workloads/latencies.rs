//! The zk-latencies sequence: on the same N nodes, create, set, get and delete; then create N
//! ephemerals; then five rounds of watches (arm a data watch on each of up to 1000 nodes, change
//! every node, and time each notification from the change's send to its arrival).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::simple::{Simple, op};
use super::{Params, WorkloadResult, cleanup};
use crate::load::{self, Stop};
use crate::record::{Progress, Recorder};
use crate::server_stats::Watch;
use crate::zk;

/// Watch rounds in the sequence.
const WATCH_ROUNDS: usize = 5;
/// Nodes watched per round (bounded: all changes of a round are in flight at once).
const MAX_WATCHED: usize = 1000;

pub async fn run(p: &Params) -> anyhow::Result<WorkloadResult> {
    let n = match p.stop {
        Stop::Ops(n) | Stop::OpsOrFor(n, _) => n,
        Stop::For(_) => 10_000,
    };
    let clients = zk::connect_many(&p.spec, p.sessions.max(2), 64, |_, _| {}).await?;
    let admin = clients[0].clone();
    let base = p.base();
    let (dir, edir) = (format!("{base}/z"), format!("{base}/ze"));
    zk::ensure_path(&admin, &dir).await?;
    zk::ensure_path(&admin, &edir).await?;
    let value = Arc::new(p.value());
    let rec = Arc::new(Recorder::new());
    let _progress = Progress::start("zk-latencies".into(), rec.clone());
    let watch = p.watch();
    let t0 = Instant::now();

    // Set and get address keys by hash; with keys = n they touch the created nodes.
    for (kind, d) in [
        (Simple::Create, &dir),
        (Simple::Set, &dir),
        (Simple::Get, &dir),
        (Simple::Delete, &dir),
        (Simple::Ephemeral, &edir),
    ] {
        eprintln!("zk-latencies: {} × {n}", kind.label());
        load::closed_loop(
            &clients,
            p.depth,
            Stop::Ops(n),
            rec.clone(),
            op(kind, d, value.clone(), n),
        )
        .await;
    }

    let watched = (n as usize).min(MAX_WATCHED);
    let (watcher, writer) = (clients[0].clone(), clients[1].clone());
    for round in 0..WATCH_ROUNDS {
        eprintln!(
            "zk-latencies: watch round {} of {WATCH_ROUNDS} on {watched} nodes",
            round + 1
        );
        let mut armed = Vec::with_capacity(watched);
        let arm_t = Instant::now();
        let arms: Vec<_> = (0..watched)
            .map(|i| watcher.get_and_watch_data(&format!("{edir}/{i}")))
            .collect();
        for (i, a) in futures::future::join_all(arms)
            .await
            .into_iter()
            .enumerate()
        {
            match a {
                Ok((_, _, w)) => {
                    rec.record("watch-arm", arm_t, Instant::now(), None);
                    armed.push((i, w));
                }
                Err(e) => rec.record("watch-arm", arm_t, Instant::now(), Some(zk::error_kind(&e))),
            }
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (i, w) in armed {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = w.changed().await;
                let _ = tx.send((i, Instant::now()));
            });
        }
        drop(tx);
        let mut sent = vec![None; watched];
        let mut sets = Vec::with_capacity(watched);
        for (i, slot) in sent.iter_mut().enumerate() {
            *slot = Some(Instant::now());
            sets.push(writer.set_data(&format!("{edir}/{i}"), &value, None));
        }
        for r in futures::future::join_all(sets).await {
            if let Err(e) = r {
                rec.record(
                    "watch-trigger",
                    t0,
                    Instant::now(),
                    Some(zk::error_kind(&e)),
                );
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while let Ok(Some((i, at))) = tokio::time::timeout_at(deadline, rx.recv()).await {
            if let Some(from) = sent[i] {
                rec.record("watch-notify", from, at, None);
            }
        }
    }
    let elapsed = t0.elapsed();
    let server = watch.map(Watch::finish);
    cleanup(p, &admin).await;
    Ok(WorkloadResult {
        workload: String::new(),
        mode: format!("closed({}x{}) × {n} nodes", clients.len(), p.depth),
        elapsed_s: elapsed.as_secs_f64(),
        ops: rec.summarize(),
        extras: [
            ("nodes".to_string(), n as f64),
            ("watched_nodes".to_string(), watched as f64),
        ]
        .into(),
        timeline: rec.timeline(),
        knee: None,
        server,
        fault: None,
    })
}
