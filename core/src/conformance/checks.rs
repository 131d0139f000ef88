//! The checks themselves. Each runs on a fresh deployment, writes through every member in turn
//! and reads each member's own replica (after a barrier where the contract only promises
//! sequential consistency).

use super::{
    Check, CheckResult, Ctx, barrier, create_req, delete_req, ensure, env, eventually, must_create,
    new_session, retry, set_req, submit,
};
use crate::backend::{Backend, BackendError};
use crate::txn::{Applied, OpResult, Outcome, Request, Txn, TxnOp, WriteOp};
use crate::watch::{EventType, WatchKind, WatchSink, WatchedEvent};
use crate::{Code, CreateMode, Zxid};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

pub(crate) async fn run(check: Check, c: &mut Ctx<'_>) -> CheckResult {
    match check {
        Check::Crud => crud(c).await,
        Check::ConditionalWrites => conditional_writes(c).await,
        Check::SequentialNodes => sequential_nodes(c).await,
        Check::EphemeralsOnClose => ephemerals_on_close(c).await,
        Check::EphemeralsOnExpiry => ephemerals_on_expiry(c).await,
        Check::TouchKeepsAlive => touch_keeps_alive(c).await,
        Check::MultiAtomicity => multi_atomicity(c).await,
        Check::WatchesAndAppliedOrder => watches_and_applied_order(c).await,
        Check::Barrier => barrier_sees_committed(c).await,
        Check::Capabilities => capabilities(c).await,
        Check::Recovery => recovery(c).await,
    }
}

/// `path`'s data and stat on member `b`'s replica.
fn read(b: &Arc<dyn Backend>, path: &str) -> Option<(Vec<u8>, crate::Stat)> {
    let t = b.tree();
    let t = t.read();
    t.get(path).map(|n| (n.data.clone(), n.stat))
}

fn failed(a: &Applied) -> Option<Code> {
    match a.outcome {
        Outcome::Failed(c) => Some(c),
        _ => None,
    }
}

/// Every member, after a barrier, holds `path` with `data` (or lacks it, for `None`).
async fn everywhere(c: &Ctx<'_>, path: &str, data: Option<&[u8]>) -> CheckResult {
    for (i, b) in c.members.iter().enumerate() {
        barrier(b).await?;
        let got = read(b, path).map(|(d, _)| d);
        ensure!(
            got.as_deref() == data,
            "member #{i}: {path} is {got:?} after a barrier, expected {data:?}"
        );
    }
    Ok(())
}

async fn crud(c: &mut Ctx<'_>) -> CheckResult {
    let s = new_session(c.m(0), 60_000).await?;
    let (a, p) = must_create(c.m(0), s, "/crud", b"v0", CreateMode::Persistent).await?;
    ensure!(p == "/crud", "create returned path {p}");
    // Submit resolves once applied on the member that answered.
    let (data, stat) = read(c.m(0), "/crud").ok_or("created node not readable on its member")?;
    ensure!(data == b"v0", "data {data:?}");
    ensure!(
        stat.version == 0 && stat.czxid == a.zxid && stat.mzxid == a.zxid,
        "stat of a new node: {stat:?}, reply zxid {:#x}",
        a.zxid
    );
    let mut last = a.zxid;
    // Unconditional writes through every member; each reply's zxid increases.
    for i in 0..c.n().max(3) {
        let b = c.m(i).clone();
        let data = format!("v{}", i + 1).into_bytes();
        let r = submit(&b, s, set_req("/crud", &data, -1)).await?;
        match &r.outcome {
            Outcome::Op(OpResult::DataSet { stat }) => {
                ensure!(
                    stat.version == i as i32 + 1,
                    "version after {} sets: {stat:?}",
                    i + 1
                );
                ensure!(
                    stat.mzxid == r.zxid,
                    "mzxid {:#x} != reply {:#x}",
                    stat.mzxid,
                    r.zxid
                );
            }
            o => return Err(format!("setData -1: {o:?}")),
        }
        ensure!(r.zxid > last, "zxid {:#x} after {last:#x}", r.zxid);
        last = r.zxid;
        let here = read(&b, "/crud").map(|(d, _)| d);
        ensure!(
            here.as_deref() == Some(&data[..]),
            "member did not apply its own reply: {here:?}"
        );
    }
    must_create(c.m(1), s, "/crud/child", b"c", CreateMode::Persistent).await?;
    let (_, parent) = read(c.m(1), "/crud").ok_or("parent gone")?;
    ensure!(
        parent.num_children == 1,
        "num_children {}",
        parent.num_children
    );
    // Error codes; a failed write changes nothing.
    barrier(c.m(2)).await?;
    let before = c.m(2).tree().read().digest();
    let dup = submit(c.m(2), s, create_req("/crud", b"x", CreateMode::Persistent)).await?;
    ensure!(
        failed(&dup) == Some(Code::NodeExists),
        "duplicate create: {:?}",
        dup.outcome
    );
    let orphan = submit(
        c.m(0),
        s,
        create_req("/nope/x", b"", CreateMode::Persistent),
    )
    .await?;
    ensure!(
        failed(&orphan) == Some(Code::NoNode),
        "create without parent: {:?}",
        orphan.outcome
    );
    let missing = submit(c.m(1), s, set_req("/nope", b"", -1)).await?;
    ensure!(
        failed(&missing) == Some(Code::NoNode),
        "set missing: {:?}",
        missing.outcome
    );
    let nonempty = submit(c.m(2), s, delete_req("/crud", -1)).await?;
    ensure!(
        failed(&nonempty) == Some(Code::NotEmpty),
        "delete non-empty: {:?}",
        nonempty.outcome
    );
    barrier(c.m(2)).await?;
    ensure!(
        c.m(2).tree().read().digest() == before,
        "failed writes changed the tree"
    );
    // Deletes.
    let d = submit(c.m(0), s, delete_req("/crud/child", -1)).await?;
    ensure!(
        d.outcome == Outcome::Op(OpResult::Deleted),
        "delete: {:?}",
        d.outcome
    );
    let d = submit(c.m(1), s, delete_req("/crud", -1)).await?;
    ensure!(
        d.outcome == Outcome::Op(OpResult::Deleted),
        "delete: {:?}",
        d.outcome
    );
    ensure!(
        read(c.m(1), "/crud").is_none(),
        "deleted node still readable on its member"
    );
    let again = submit(c.m(0), s, delete_req("/crud", -1)).await?;
    ensure!(
        failed(&again) == Some(Code::NoNode),
        "second delete: {:?}",
        again.outcome
    );
    // Re-created, the version starts over.
    let (_, _) = must_create(c.m(2), s, "/crud", b"again", CreateMode::Persistent).await?;
    ensure!(
        read(c.m(2), "/crud").map(|(_, s)| s.version) == Some(0),
        "version of a re-created node"
    );
    everywhere(c, "/crud", Some(b"again")).await?;
    everywhere(c, "/crud/child", None).await?;
    // Every member ends with the same stat.
    let stats: Vec<_> = c
        .members
        .iter()
        .map(|b| read(b, "/crud").map(|(_, s)| s))
        .collect();
    ensure!(
        stats.windows(2).all(|w| w[0] == w[1]),
        "members disagree on the stat: {stats:?}"
    );
    Ok(())
}

async fn conditional_writes(c: &mut Ctx<'_>) -> CheckResult {
    if !c.m(0).capabilities().conditional_writes {
        return Ok(()); // refusal is Check::Capabilities' business
    }
    let s = new_session(c.m(0), 60_000).await?;
    must_create(c.m(0), s, "/cas", b"0", CreateMode::Persistent).await?;
    let ok = submit(c.m(1), s, set_req("/cas", b"1", 0)).await?;
    ensure!(
        matches!(ok.outcome, Outcome::Op(OpResult::DataSet { stat }) if stat.version == 1),
        "setData at the current version: {:?}",
        ok.outcome
    );
    let stale = submit(c.m(2), s, set_req("/cas", b"x", 0)).await?;
    ensure!(
        failed(&stale) == Some(Code::BadVersion),
        "setData at a stale version: {:?}",
        stale.outcome
    );
    let del = submit(c.m(0), s, delete_req("/cas", 0)).await?;
    ensure!(
        failed(&del) == Some(Code::BadVersion),
        "delete at a stale version: {:?}",
        del.outcome
    );
    everywhere(c, "/cas", Some(b"1")).await?;
    // Concurrent CAS from every member at the same version: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let b = c.m(i).clone();
        tasks.push(tokio::spawn(async move {
            b.submit(env(s, set_req("/cas", format!("w{i}").as_bytes(), 1)))
                .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.map_err(|e| e.to_string())? {
            Ok(a) if matches!(a.outcome, Outcome::Op(OpResult::DataSet { .. })) => wins += 1,
            Ok(a) if failed(&a) == Some(Code::BadVersion) => {}
            other => return Err(format!("concurrent CAS: {other:?}")),
        }
    }
    ensure!(
        wins == 1,
        "{wins} of 6 concurrent CAS at version 1 succeeded"
    );
    let del = submit(c.m(1), s, delete_req("/cas", 2)).await?;
    ensure!(
        del.outcome == Outcome::Op(OpResult::Deleted),
        "delete at the current version: {:?}",
        del.outcome
    );
    everywhere(c, "/cas", None).await
}

async fn sequential_nodes(c: &mut Ctx<'_>) -> CheckResult {
    if !c.m(0).capabilities().sequential_nodes {
        return Ok(());
    }
    let s = new_session(c.m(0), 60_000).await?;
    must_create(c.m(0), s, "/seq", b"", CreateMode::Persistent).await?;
    let mut tasks = Vec::new();
    for i in 0..30 {
        let b = c.m(i).clone();
        tasks.push(tokio::spawn(async move {
            b.submit(env(
                s,
                create_req("/seq/n-", b"", CreateMode::PersistentSequential),
            ))
            .await
        }));
    }
    let mut names = Vec::new();
    for t in tasks {
        match t.await.map_err(|e| e.to_string())? {
            Ok(Applied {
                outcome: Outcome::Op(OpResult::Created { path, .. }),
                ..
            }) => names.push(path),
            other => return Err(format!("sequential create: {other:?}")),
        }
    }
    names.sort();
    let expect: Vec<String> = (0..30).map(|i| format!("/seq/n-{i:010}")).collect();
    ensure!(names == expect, "sequential names {names:?}");
    // Numbering continues after deletes (it counts creations, not children).
    submit(c.m(1), s, delete_req("/seq/n-0000000029", -1)).await?;
    let (_, p) = must_create(c.m(2), s, "/seq/n-", b"", CreateMode::PersistentSequential).await?;
    ensure!(
        p == "/seq/n-0000000030",
        "after a delete the next name is {p}"
    );
    let (_, p) = must_create(c.m(0), s, "/seq/e-", b"", CreateMode::EphemeralSequential).await?;
    ensure!(
        p == "/seq/e-0000000031",
        "ephemeral sequential shares the counter: {p}"
    );
    Ok(())
}

async fn ephemerals_on_close(c: &mut Ctx<'_>) -> CheckResult {
    let owner = c.m(1).clone();
    let s = new_session(&owner, 60_000).await?;
    let other = new_session(c.m(0), 60_000).await?;
    must_create(&owner, s, "/eph", b"e", CreateMode::Ephemeral).await?;
    must_create(c.m(0), other, "/keep", b"k", CreateMode::Ephemeral).await?;
    let (_, st) = read(&owner, "/eph").ok_or("ephemeral not readable")?;
    ensure!(
        st.ephemeral_owner == s,
        "ephemeral owner {:#x}, session {s:#x}",
        st.ephemeral_owner
    );
    let kid = submit(
        &owner,
        s,
        create_req("/eph/kid", b"", CreateMode::Persistent),
    )
    .await?;
    ensure!(
        failed(&kid) == Some(Code::NoChildrenForEphemerals),
        "child of an ephemeral: {:?}",
        kid.outcome
    );
    everywhere(c, "/eph", Some(b"e")).await?;
    let closed = submit(&owner, s, Request::CloseSession).await?;
    ensure!(
        closed.outcome == Outcome::SessionClosed,
        "close: {:?}",
        closed.outcome
    );
    ensure!(
        read(&owner, "/eph").is_none(),
        "ephemeral still there after the close was answered"
    );
    everywhere(c, "/eph", None).await?;
    everywhere(c, "/keep", Some(b"k")).await?;
    for (i, b) in c.members.iter().enumerate() {
        ensure!(
            !b.tree().read().sessions().contains_key(&s),
            "member #{i} still has the closed session"
        );
    }
    let late = submit(c.m(2), s, create_req("/late", b"", CreateMode::Persistent)).await?;
    ensure!(
        failed(&late) == Some(Code::SessionExpired),
        "write on a closed session: {:?}",
        late.outcome
    );
    Ok(())
}

fn timeout_ms(c: &Ctx<'_>) -> i32 {
    (c.factory.tick_ms() * 4) as i32
}

async fn ephemerals_on_expiry(c: &mut Ctx<'_>) -> CheckResult {
    let t = timeout_ms(c);
    let s = new_session(c.m(1), t).await?;
    must_create(c.m(1), s, "/doomed", b"", CreateMode::Ephemeral).await?;
    let start = Instant::now();
    let within = Duration::from_millis(t as u64 * 3) + Duration::from_secs(5);
    let members = c.members.clone();
    let gone = eventually(within, || {
        members.iter().all(|b| {
            let t = b.tree();
            let t = t.read();
            t.get("/doomed").is_none() && !t.sessions().contains_key(&s)
        })
    })
    .await;
    ensure!(
        gone,
        "an untouched session ({t} ms) and its ephemeral still there after {within:?}"
    );
    ensure!(
        start.elapsed() >= Duration::from_millis(t as u64 / 2),
        "session expired after {:?}, well before its {t} ms timeout",
        start.elapsed()
    );
    let late = submit(c.m(0), s, create_req("/late", b"", CreateMode::Persistent)).await?;
    ensure!(
        failed(&late) == Some(Code::SessionExpired),
        "write on an expired session: {:?}",
        late.outcome
    );
    Ok(())
}

async fn touch_keeps_alive(c: &mut Ctx<'_>) -> CheckResult {
    let t = timeout_ms(c);
    let toucher = c.m(c.n() - 1).clone();
    let kept = new_session(c.m(0), t).await?;
    let silent = new_session(c.m(0), t).await?;
    must_create(c.m(0), kept, "/kept", b"", CreateMode::Ephemeral).await?;
    must_create(c.m(0), silent, "/silent", b"", CreateMode::Ephemeral).await?;
    let half_tick = c.tick() / 2;
    let deadline = Instant::now() + Duration::from_millis(t as u64 * 3) + Duration::from_secs(5);
    // Until the silent one expires, then three timeouts more: touched, it must survive.
    let mut until: Option<Instant> = None;
    loop {
        toucher
            .touch(&[kept])
            .await
            .map_err(|e| format!("touch: {e}"))?;
        let now = Instant::now();
        if until.is_none() && read(c.m(0), "/silent").is_none() {
            until = Some(now + Duration::from_millis(t as u64 * 3));
        }
        match until {
            Some(u) if now >= u => break,
            None if now >= deadline => {
                return Err("the untouched session never expired; cannot judge touches".into());
            }
            _ => {}
        }
        for (i, b) in c.members.iter().enumerate() {
            ensure!(
                b.tree().read().sessions().contains_key(&kept),
                "member #{i}: a session touched every {half_tick:?} expired (timeout {t} ms)"
            );
        }
        tokio::time::sleep(half_tick).await;
    }
    everywhere(c, "/kept", Some(b"")).await
}

async fn multi_atomicity(c: &mut Ctx<'_>) -> CheckResult {
    if !c.m(0).capabilities().multi {
        return Ok(());
    }
    let mut applied = c.m(1).applied();
    let s = new_session(c.m(0), 60_000).await?;
    let ok = submit(
        c.m(1),
        s,
        Request::Multi(vec![
            WriteOp::Create {
                path: "/m".into(),
                data: b"m".to_vec(),
                acl: crate::acl::Acl::open_unsafe(),
                mode: CreateMode::Persistent,
                ttl: 0,
            },
            WriteOp::Create {
                path: "/m/a".into(),
                data: b"a".to_vec(),
                acl: crate::acl::Acl::open_unsafe(),
                mode: CreateMode::Persistent,
                ttl: 0,
            },
            WriteOp::SetData {
                path: "/m".into(),
                data: b"m2".to_vec(),
                version: -1,
            },
        ]),
    )
    .await?;
    match &ok.outcome {
        Outcome::Multi(rs) => {
            ensure!(
                rs.len() == 3 && rs.iter().all(|r| !matches!(r, OpResult::Error(_))),
                "successful multi results {rs:?}"
            );
        }
        o => return Err(format!("multi: {o:?}")),
    }
    ensure!(
        ok.outcome.code() == Code::Ok,
        "multi code {:?}",
        ok.outcome.code()
    );
    // One transaction for the whole multi.
    let txns = collect_until(&mut applied, ok.zxid, Duration::from_secs(10)).await?;
    let mine: Vec<_> = txns.iter().filter(|t| t.zxid == ok.zxid).collect();
    ensure!(
        mine.len() == 1 && matches!(&mine[0].op, TxnOp::Multi(ops) if ops.len() == 3),
        "the multi at {:#x} is not one transaction of 3 ops: {mine:?}",
        ok.zxid
    );
    // A multi that fails in its last op leaves no trace of its first.
    let bad = submit(
        c.m(2),
        s,
        Request::Multi(vec![
            WriteOp::Create {
                path: "/m/b".into(),
                data: Vec::new(),
                acl: crate::acl::Acl::open_unsafe(),
                mode: CreateMode::Persistent,
                ttl: 0,
            },
            WriteOp::SetData {
                path: "/m".into(),
                data: b"never".to_vec(),
                version: -1,
            },
            WriteOp::Delete {
                path: "/missing".into(),
                version: -1,
            },
        ]),
    )
    .await?;
    match &bad.outcome {
        Outcome::Multi(rs) => {
            ensure!(
                rs == &[
                    OpResult::Error(Code::Ok),
                    OpResult::Error(Code::Ok),
                    OpResult::Error(Code::NoNode)
                ],
                "failed multi results {rs:?}"
            );
        }
        o => return Err(format!("failed multi: {o:?}")),
    }
    ensure!(
        bad.outcome.code() == Code::NoNode,
        "failed multi code {:?}",
        bad.outcome.code()
    );
    everywhere(c, "/m/b", None).await?;
    everywhere(c, "/m", Some(b"m2")).await?;
    everywhere(c, "/m/a", Some(b"a")).await
}

/// Drain `rx` until a txn at or past `zxid` arrived.
async fn collect_until(
    rx: &mut broadcast::Receiver<Arc<Txn>>,
    zxid: Zxid,
    within: Duration,
) -> Result<Vec<Arc<Txn>>, String> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if out.last().is_some_and(|t: &Arc<Txn>| t.zxid >= zxid) {
            return Ok(out);
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(t)) => out.push(t),
            Ok(Err(e)) => return Err(format!("applied stream: {e}")),
            Err(_) => {
                return Err(format!(
                    "applied stream did not reach {zxid:#x} within {within:?} (got {} txns)",
                    out.len()
                ));
            }
        }
    }
}

#[derive(Default)]
struct Sink(Mutex<Vec<WatchedEvent>>);

impl WatchSink for Sink {
    fn notify(&self, event: WatchedEvent) {
        self.0.lock().push(event);
    }
}

async fn watches_and_applied_order(c: &mut Ctx<'_>) -> CheckResult {
    const WATCHER: u64 = 0x5eed_0001;
    let s = new_session(c.m(0), 60_000).await?;
    must_create(c.m(0), s, "/w", b"", CreateMode::Persistent).await?;
    for b in &c.members {
        barrier(b).await?;
    }
    let mut streams = Vec::new();
    let mut sinks = Vec::new();
    for b in &c.members {
        streams.push(b.applied());
        let sink = Arc::new(Sink::default());
        let t = b.tree();
        let t = t.read();
        let mut w = t.watches().lock();
        w.register_sink(WATCHER, sink.clone());
        w.add(WATCHER, WatchKind::Persistent, "/w");
        sinks.push(sink);
    }
    // Writes through every member, some concurrent.
    let mut replies: Vec<(String, Applied, usize)> = Vec::new();
    for round in 0..4 {
        let mut tasks = Vec::new();
        for i in 0..c.n().max(3) {
            let b = c.m(i).clone();
            let which = i % c.n();
            let path = format!("/w/r{round}-{i}");
            tasks.push(tokio::spawn(async move {
                let a = b
                    .submit(env(s, create_req(&path, b"", CreateMode::Persistent)))
                    .await;
                (path, a, which)
            }));
        }
        for t in tasks {
            let (path, a, which) = t.await.map_err(|e| e.to_string())?;
            let a = a.map_err(|e| format!("create {path}: {e}"))?;
            ensure!(
                matches!(a.outcome, Outcome::Op(OpResult::Created { .. })),
                "create {path}: {:?}",
                a.outcome
            );
            replies.push((path, a, which));
        }
    }
    let set = submit(c.m(1), s, set_req("/w", b"changed", -1)).await?;
    replies.push(("/w".into(), set.clone(), 1 % c.n()));
    // The member that answered had already queued the watch event.
    let seen = sinks[1 % c.n()].0.lock().clone();
    ensure!(
        seen.iter()
            .any(|e| e.kind == EventType::NodeDataChanged && e.zxid == set.zxid),
        "no NodeDataChanged at {:#x} queued before the reply: {seen:?}",
        set.zxid
    );
    let last = replies.iter().map(|(_, a, _)| a.zxid).max().unwrap_or(0);
    let by_zxid: BTreeMap<Zxid, &str> = replies
        .iter()
        .map(|(p, a, _)| (a.zxid, p.as_str()))
        .collect();
    ensure!(by_zxid.len() == replies.len(), "two writes share a zxid");
    for (i, b) in c.members.iter().enumerate() {
        barrier(b).await?;
        let txns = collect_until(&mut streams[i], last, Duration::from_secs(10))
            .await
            .map_err(|e| format!("member #{i}: {e}"))?;
        ensure!(
            txns.windows(2).all(|w| w[0].zxid < w[1].zxid),
            "member #{i}: applied stream out of order: {:?}",
            txns.iter().map(|t| t.zxid).collect::<Vec<_>>()
        );
        for (z, p) in &by_zxid {
            let t = txns.iter().find(|t| t.zxid == *z);
            let ok = match t.map(|t| &t.op) {
                Some(TxnOp::Create { path, .. }) => path == p,
                Some(TxnOp::SetData { path, .. }) => path == p,
                _ => false,
            };
            ensure!(
                ok,
                "member #{i}: the applied stream has {t:?} at {z:#x}, expected {p}"
            );
        }
        // Watch events: one per change under /w, in zxid order, each with its change's zxid.
        let events = sinks[i].0.lock().clone();
        let zs: Vec<Zxid> = events.iter().map(|e| e.zxid).collect();
        ensure!(
            zs.windows(2).all(|w| w[0] <= w[1]),
            "member #{i}: watch events out of order: {zs:?}"
        );
        for (z, p) in &by_zxid {
            let want = if *p == "/w" {
                EventType::NodeDataChanged
            } else {
                EventType::NodeChildrenChanged
            };
            ensure!(
                events
                    .iter()
                    .any(|e| e.zxid == *z && e.kind == want && &*e.path == "/w"),
                "member #{i}: no {want:?} on /w at {z:#x}: {events:?}"
            );
        }
    }
    for b in &c.members {
        b.tree().read().watches().lock().remove_watcher(WATCHER);
    }
    Ok(())
}

async fn barrier_sees_committed(c: &mut Ctx<'_>) -> CheckResult {
    let s = new_session(c.m(0), 60_000).await?;
    for i in 0..10 {
        let writer = c.m(i).clone();
        let reader = c.m(i + 1).clone();
        let path = format!("/b{i}");
        let (w, _) = must_create(&writer, s, &path, b"x", CreateMode::Persistent).await?;
        let z = barrier(&reader).await?;
        ensure!(
            z >= w.zxid,
            "barrier answered {z:#x}, before the write at {:#x}",
            w.zxid
        );
        ensure!(
            read(&reader, &path).is_some(),
            "{path} not visible after a barrier on another member"
        );
    }
    // A barrier queued behind a write on the same member waits for it.
    for i in 0..5 {
        let b = c.m(i + 2).clone();
        let path = format!("/j{i}");
        let (w, z) = tokio::join!(
            b.submit(env(s, create_req(&path, b"", CreateMode::Persistent))),
            b.barrier()
        );
        let (w, z) = (w.map_err(|e| e.to_string())?, z.map_err(|e| e.to_string())?);
        ensure!(
            z >= w.zxid,
            "barrier {z:#x} queued after a write at {:#x}",
            w.zxid
        );
    }
    // A barrier reports at least the last zxid this member has applied.
    for b in &c.members {
        let applied = b.tree().read().last_zxid();
        let z = barrier(b).await?;
        ensure!(
            z >= applied,
            "barrier {z:#x} behind this member's applied {applied:#x}"
        );
    }
    Ok(())
}

fn unsupported(r: &Result<Applied, BackendError>) -> bool {
    matches!(r, Err(BackendError::Unsupported { what, .. }) if !what.is_empty())
}

async fn capabilities(c: &mut Ctx<'_>) -> CheckResult {
    let b = c.m(1).clone();
    let caps = b.capabilities();
    for (i, m) in c.members.iter().enumerate() {
        ensure!(
            m.capabilities() == caps,
            "member #{i} reports other capabilities"
        );
    }
    let s = new_session(&b, 60_000).await?;
    must_create(&b, s, "/caps", b"", CreateMode::Persistent).await?;
    let digest = |b: &Arc<dyn Backend>| b.tree().read().digest();
    // Sequential nodes.
    let before = digest(&b);
    let r = b
        .submit(env(
            s,
            create_req("/caps/s-", b"", CreateMode::PersistentSequential),
        ))
        .await;
    if caps.sequential_nodes {
        ensure!(
            matches!(&r, Ok(Applied { outcome: Outcome::Op(OpResult::Created { path, .. }), .. }) if path == "/caps/s-0000000000"),
            "sequential_nodes offered, but a sequential create gave {r:?}"
        );
    } else {
        ensure!(
            unsupported(&r),
            "sequential_nodes not offered, but a sequential create gave {r:?}"
        );
        ensure!(
            digest(&b) == before,
            "a refused sequential create changed the tree"
        );
    }
    // Locks: the recipes' ephemeral-sequential nodes.
    let before = digest(&b);
    let r = b
        .submit(env(
            s,
            create_req("/caps/l-", b"", CreateMode::EphemeralSequential),
        ))
        .await;
    if caps.locks {
        ensure!(
            matches!(
                &r,
                Ok(Applied {
                    outcome: Outcome::Op(OpResult::Created { .. }),
                    ..
                })
            ),
            "locks offered, but an ephemeral-sequential create gave {r:?}"
        );
    } else {
        ensure!(
            unsupported(&r),
            "locks not offered, but an ephemeral-sequential create gave {r:?}"
        );
        ensure!(digest(&b) == before, "a refused lock node changed the tree");
    }
    // Conditional writes: a version-checked set must not be weakened into an unconditional one.
    let before = digest(&b);
    let r = b.submit(env(s, set_req("/caps", b"v1", 0))).await;
    if caps.conditional_writes {
        ensure!(
            matches!(&r, Ok(Applied { outcome: Outcome::Op(OpResult::DataSet { stat }), .. }) if stat.version == 1),
            "conditional_writes offered, but setData at version 0 gave {r:?}"
        );
        let r = b.submit(env(s, set_req("/caps", b"v2", 0))).await;
        ensure!(
            matches!(&r, Ok(a) if failed(a) == Some(Code::BadVersion)),
            "conditional_writes offered, but setData at a stale version gave {r:?}"
        );
    } else {
        ensure!(
            unsupported(&r),
            "conditional_writes not offered, but setData at version 0 gave {r:?}"
        );
        ensure!(
            digest(&b) == before,
            "a refused conditional set changed the tree"
        );
        let r = b.submit(env(s, delete_req("/caps", 0))).await;
        ensure!(
            unsupported(&r),
            "conditional_writes not offered, but delete at version 0 gave {r:?}"
        );
    }
    // Unconditional writes work whatever is offered.
    let r = submit(&b, s, set_req("/caps", b"plain", -1)).await?;
    ensure!(
        matches!(r.outcome, Outcome::Op(OpResult::DataSet { .. })),
        "setData -1: {:?}",
        r.outcome
    );
    // Multi.
    let before = digest(&b);
    let r = b
        .submit(env(
            s,
            Request::Multi(vec![WriteOp::Create {
                path: "/caps/m".into(),
                data: Vec::new(),
                acl: crate::acl::Acl::open_unsafe(),
                mode: CreateMode::Persistent,
                ttl: 0,
            }]),
        ))
        .await;
    if caps.multi {
        ensure!(
            matches!(&r, Ok(Applied { outcome: Outcome::Multi(rs), .. }) if matches!(rs.as_slice(), [OpResult::Created { .. }])),
            "multi offered, but a one-op multi gave {r:?}"
        );
    } else {
        ensure!(unsupported(&r), "multi not offered, but a multi gave {r:?}");
        ensure!(digest(&b) == before, "a refused multi changed the tree");
    }
    // Linearizable writes come with a barrier that works.
    if caps.linearizable_writes {
        let last = b.tree().read().last_zxid();
        let z = barrier(c.m(0)).await?;
        ensure!(
            z >= last,
            "linearizable_writes offered, but a barrier answered {z:#x} < {last:#x}"
        );
    }
    Ok(())
}

async fn recovery(c: &mut Ctx<'_>) -> CheckResult {
    let caps = c.m(0).capabilities();
    let s = new_session(c.m(0), 120_000).await?;
    let mut acked: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    must_create(c.m(0), s, "/rec", b"", CreateMode::Persistent).await?;
    let mut last = 0;
    // Enough writes to pass a snapshot in test configurations (they snapshot every ~50).
    for i in 0..120 {
        let b = c.m(i).clone();
        let path = format!("/rec/k{}", i % 40);
        let data = format!("{i}").into_bytes();
        let a = if i < 40 {
            must_create(&b, s, &path, &data, CreateMode::Persistent)
                .await?
                .0
        } else {
            submit(&b, s, set_req(&path, &data, -1)).await?
        };
        ensure!(
            matches!(
                a.outcome,
                Outcome::Op(OpResult::Created { .. } | OpResult::DataSet { .. })
            ),
            "write {path}: {:?}",
            a.outcome
        );
        last = last.max(a.zxid);
        acked.insert(path, data);
    }
    must_create(c.m(1), s, "/rec-eph", b"e", CreateMode::Ephemeral).await?;
    let seq = if caps.sequential_nodes {
        Some(
            must_create(c.m(2), s, "/rec/s-", b"", CreateMode::PersistentSequential)
                .await?
                .1,
        )
    } else {
        None
    };
    barrier(c.m(2)).await?;
    let versions: Vec<_> = acked
        .keys()
        .map(|p| read(c.m(2), p).map(|(_, s)| s))
        .collect();
    c.members = c.factory.restart().await;
    for (i, b) in c.members.iter().enumerate() {
        barrier(b).await?;
        let t = b.tree();
        let t = t.read();
        for (p, d) in &acked {
            let got = t.get(p).map(|n| n.data.clone());
            ensure!(
                got.as_deref() == Some(&d[..]),
                "member #{i} after restart: {p} is {got:?}, acknowledged {d:?}"
            );
        }
        ensure!(
            t.sessions().contains_key(&s),
            "member #{i} lost a live session on restart"
        );
        ensure!(
            t.get("/rec-eph").is_some(),
            "member #{i} lost a live session's ephemeral on restart"
        );
        if let Some(p) = &seq {
            ensure!(t.get(p).is_some(), "member #{i} lost {p}");
        }
        ensure!(
            t.last_zxid() >= last,
            "member #{i} restarted at {:#x} < {last:#x}",
            t.last_zxid()
        );
    }
    let after: Vec<_> = {
        let b = c.m(0).clone();
        barrier(&b).await?;
        acked.keys().map(|p| read(&b, p).map(|(_, s)| s)).collect()
    };
    ensure!(after == versions, "stats changed across the restart");
    // Writing goes on, with larger zxids and the session still usable.
    let a = retry(Duration::from_secs(20), || {
        c.m(1).submit(env(s, set_req("/rec/k0", b"after", -1)))
    })
    .await
    .map_err(|e| format!("write after restart: {e}"))?;
    ensure!(
        a.zxid > last,
        "zxid after restart {:#x} <= {last:#x}",
        a.zxid
    );
    if caps.sequential_nodes {
        let (_, p) =
            must_create(c.m(2), s, "/rec/s-", b"", CreateMode::PersistentSequential).await?;
        ensure!(
            p == "/rec/s-0000000041",
            "sequential numbering after restart: {p}"
        );
    }
    Ok(())
}
