//! Watch fan-out: one writer changes one node; every other session holds a data watch on it.
//! Per round the writer waits until all watchers have re-armed, sets the node, and each watcher
//! times its notification from the set's send. Also timed: the set, and the round until the
//! last watcher heard of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Params, WorkloadResult, cleanup};
use crate::load::Stop;
use crate::record::{Progress, Recorder};
use crate::server_stats::Watch;
use crate::zk::{self, PERSISTENT};

enum Msg {
    Notified(Instant),
    Armed,
    Failed(String),
}

pub async fn run(p: &Params) -> anyhow::Result<WorkloadResult> {
    let watchers = p.sessions.max(1);
    let clients = zk::connect_many(&p.spec, watchers + 1, 64, |_, _| {}).await?;
    let writer = clients[0].clone();
    let base = p.base();
    zk::ensure_path(&writer, &base).await?;
    let node = format!("{base}/fanout");
    let value = p.value();
    match writer.create(&node, &value, &PERSISTENT).await {
        Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
        Err(e) => return Err(e.into()),
    }

    let rec = Arc::new(Recorder::new());
    let sent_at = Arc::new(Mutex::new(Instant::now()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for c in clients.iter().skip(1) {
        let (c, tx, node, sent_at, rec) = (
            c.clone(),
            tx.clone(),
            node.clone(),
            sent_at.clone(),
            rec.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let w = match c.get_and_watch_data(&node).await {
                    Ok((_, _, w)) => w,
                    Err(e) => {
                        let _ = tx.send(Msg::Failed(zk::error_kind(&e)));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.send(Msg::Armed).is_err() {
                    return;
                }
                let _ = w.changed().await;
                let at = Instant::now();
                rec.record("notify", *sent_at.lock(), at, None);
                let _ = tx.send(Msg::Notified(at));
            }
        }));
    }
    drop(tx);

    let (max_rounds, max_time) = match p.stop {
        Stop::Ops(n) => (n, None),
        Stop::For(d) => (u64::MAX, Some(d)),
        Stop::OpsOrFor(n, d) => (n, Some(d)),
    };
    let _progress = Progress::start(format!("watch-fanout ×{watchers}"), rec.clone());
    let watch = p.watch();
    let t0 = Instant::now();
    let wait = Duration::from_secs(30);
    let mut armed = 0usize;
    let mut rounds = 0u64;
    let mut lost = 0u64;
    while rounds < max_rounds && max_time.is_none_or(|d| t0.elapsed() < d) {
        // Every watcher armed (first round) or notified and re-armed (later rounds).
        while armed < watchers {
            match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Some(Msg::Armed)) => armed += 1,
                Ok(Some(Msg::Failed(kind))) => rec.record("arm", t0, Instant::now(), Some(kind)),
                Ok(Some(Msg::Notified(_))) => {}
                _ => anyhow::bail!("watch-fanout: watchers did not arm within {wait:?}"),
            }
        }
        armed = 0;
        let t = Instant::now();
        *sent_at.lock() = t;
        let r = writer.set_data(&node, &value, None).await;
        rec.record(
            "set",
            t,
            Instant::now(),
            r.err().map(|e| zk::error_kind(&e)),
        );
        let mut notified = 0usize;
        let mut last = t;
        while notified < watchers {
            match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Some(Msg::Notified(at))) => {
                    notified += 1;
                    last = last.max(at);
                }
                Ok(Some(Msg::Armed)) => armed += 1,
                Ok(Some(Msg::Failed(kind))) => rec.record("arm", t0, Instant::now(), Some(kind)),
                _ => {
                    lost += (watchers - notified) as u64;
                    break;
                }
            }
        }
        rec.record("round-all-notified", t, last, None);
        rounds += 1;
    }
    let elapsed = t0.elapsed();
    let server = watch.map(Watch::finish);
    for t in tasks {
        t.abort();
    }
    cleanup(p, &writer).await;
    Ok(WorkloadResult {
        workload: String::new(),
        mode: format!("1 writer, {watchers} watchers"),
        elapsed_s: elapsed.as_secs_f64(),
        ops: rec.summarize(),
        extras: [
            ("watchers".to_string(), watchers as f64),
            ("rounds".to_string(), rounds as f64),
            ("notifications_lost".to_string(), lost as f64),
        ]
        .into(),
        timeline: rec.timeline(),
        knee: None,
        server,
        fault: None,
    })
}
