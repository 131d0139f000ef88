//! Storms. Session storm: many sessions connect, each registers one ephemeral, then all
//! connections drop at the same moment without closing their sessions; the figure is how long
//! the server takes to expire them all and remove their ephemerals (versus the session timeout).
//! (Servers cap connections per client address — ZooKeeper's `maxClientCnxns`, Roster's
//! `--max-client-connections`, 60 by default — so a storm needs that cap raised or off.)
//! Ephemeral storm: many sessions register ephemerals as fast as they can (a fleet restarting),
//! then all close at once; the figure is how long until every ephemeral is gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::simple::{Simple, op};
use super::{Params, WorkloadResult, cleanup};
use crate::load;
use crate::record::{Progress, Recorder};
use crate::server_stats::Watch;
use crate::zk::{self, EPHEMERAL, SessionSpec};

/// Handshakes in flight while a storm connects.
const CONNECT_PARALLEL: usize = 64;

pub async fn run_session_storm(p: &Params) -> anyhow::Result<WorkloadResult> {
    let n = p.sessions.max(1);
    let observer = zk::connect(&p.spec).await?;
    let dir = format!("{}/storm", p.base());
    zk::ensure_path(&observer, &dir).await?;
    let rec = Arc::new(Recorder::new());
    let _progress = Progress::start(format!("session-storm ×{n}"), rec.clone());
    let watch = p.watch();
    let t0 = Instant::now();

    let detached = SessionSpec {
        detached: true,
        ..p.spec.clone()
    };
    let r = rec.clone();
    let clients = zk::connect_many(&detached, n, CONNECT_PARALLEL, |a, b| {
        r.record("connect", a, b, None)
    })
    .await?;
    let timeout = clients[0].session_timeout();
    let value = p.value();
    let creates = clients.iter().enumerate().map(|(i, c)| {
        let (path, value, rec) = (format!("{dir}/{i}"), &value, rec.clone());
        async move {
            let t = Instant::now();
            let r = c.create(&path, value, &EPHEMERAL).await;
            rec.record(
                "ephemeral-create",
                t,
                Instant::now(),
                r.err().map(|e| zk::error_kind(&e)),
            );
        }
    });
    futures::stream::iter(creates)
        .buffer_unordered(CONNECT_PARALLEL)
        .collect::<()>()
        .await;
    let count = observer
        .check_stat(&dir)
        .await?
        .map(|s| s.num_children)
        .unwrap_or(0);

    // Drop every connection at once; the sessions stay open on the server until it expires them.
    let dropped = Instant::now();
    drop(clients);
    let deadline = dropped + timeout * 4 + Duration::from_secs(30);
    let mut first_gone = None;
    let all_gone = zk::wait_children(
        &observer,
        &dir,
        Duration::from_millis(20),
        deadline,
        |left| {
            if left < count && first_gone.is_none() {
                first_gone = Some(Instant::now());
            }
            left == 0
        },
    )
    .await?;
    let elapsed = t0.elapsed();
    let server = watch.map(Watch::finish);
    let secs = |t: Option<Instant>| t.map_or(f64::NAN, |t| t.duration_since(dropped).as_secs_f64());
    let mut extras: std::collections::BTreeMap<String, f64> = [
        ("sessions".to_string(), n as f64),
        ("ephemerals_registered".to_string(), count as f64),
        ("session_timeout_s".to_string(), timeout.as_secs_f64()),
        ("first_expired_after_drop_s".to_string(), secs(first_gone)),
        ("all_expired_after_drop_s".to_string(), secs(all_gone)),
    ]
    .into();
    extras.insert(
        "cleanup_beyond_timeout_s".into(),
        secs(all_gone) - timeout.as_secs_f64(),
    );
    if all_gone.is_none() {
        eprintln!("warning: ephemerals of expired sessions still present at the deadline");
    }
    cleanup(p, &observer).await;
    Ok(WorkloadResult {
        workload: String::new(),
        mode: format!("{n} sessions"),
        elapsed_s: elapsed.as_secs_f64(),
        ops: rec.summarize(),
        extras,
        timeline: rec.timeline(),
        knee: None,
        server,
        fault: None,
    })
}

pub async fn run_ephemeral_storm(p: &Params) -> anyhow::Result<WorkloadResult> {
    let observer = zk::connect(&p.spec).await?;
    let dir = format!("{}/eph", p.base());
    zk::ensure_path(&observer, &dir).await?;
    let rec = Arc::new(Recorder::new());
    let r = rec.clone();
    let clients = zk::connect_many(&p.spec, p.sessions.max(1), CONNECT_PARALLEL, |a, b| {
        r.record("connect", a, b, None)
    })
    .await?;
    let _progress = Progress::start("ephemeral-storm".into(), rec.clone());
    let watch = p.watch();
    let t0 = Instant::now();
    let f = op(Simple::Ephemeral, &dir, Arc::new(p.value()), p.keys);
    load::closed_loop(&clients, p.depth, p.stop, rec.clone(), f).await;
    let count = observer
        .check_stat(&dir)
        .await?
        .map(|s| s.num_children)
        .unwrap_or(0);

    let closing = Instant::now();
    drop(clients); // each session sends closeSession: its ephemerals go at once
    let deadline = closing + p.spec.session_timeout * 4 + Duration::from_secs(30);
    let gone = zk::wait_children(
        &observer,
        &dir,
        Duration::from_millis(10),
        deadline,
        |left| left == 0,
    )
    .await?;
    let elapsed = t0.elapsed();
    let server = watch.map(Watch::finish);
    cleanup(p, &observer).await;
    Ok(WorkloadResult {
        workload: String::new(),
        mode: format!("closed({}x{})", p.sessions, p.depth),
        elapsed_s: elapsed.as_secs_f64(),
        ops: rec.summarize(),
        extras: [
            ("ephemerals_registered".to_string(), count as f64),
            (
                "all_removed_after_close_s".to_string(),
                gone.map_or(f64::NAN, |t| (t - closing).as_secs_f64()),
            ),
        ]
        .into(),
        timeline: rec.timeline(),
        knee: None,
        server,
        fault: None,
    })
}
