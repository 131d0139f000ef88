//! The standalone pipeline against the in-memory engine: group commit, ordering, recovery of the
//! tree, sessions and zxids, and session expiry committed as a transaction.

use roster_core::CreateMode;
use roster_core::acl::{Acl, AuthInfo};
use roster_core::backend::Backend;
use roster_core::storage::{Engine, MemEngine};
use roster_core::txn::{Envelope, OpResult, Outcome, Request, WriteOp};
use roster_zab::{SnapshotPolicy, Standalone, ZabConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env(session: i64, request: Request) -> Envelope {
    Envelope {
        session,
        auth: Arc::new(AuthInfo::default()),
        request,
    }
}

fn create(path: &str, mode: CreateMode) -> Request {
    Request::Op(WriteOp::Create {
        path: path.into(),
        data: path.as_bytes().to_vec(),
        acl: Acl::open_unsafe(),
        mode,
        ttl: 0,
    })
}

async fn new_session(b: &Standalone, timeout_ms: i32) -> i64 {
    match b
        .submit(env(0, Request::CreateSession { timeout_ms }))
        .await
        .unwrap()
        .outcome
    {
        Outcome::SessionCreated { session, .. } => session,
        o => panic!("{o:?}"),
    }
}

fn cfg() -> ZabConfig {
    ZabConfig {
        tick_ms: 100,
        container_check_ms: 50,
        // Snapshots by count alone: these tests are about taking and reading them; when they
        // are due is `a_snapshot_waits_for_the_log_to_grow_as_large_as_the_last_one`'s.
        snapshot: SnapshotPolicy::count(50),
        ..ZabConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_commit_in_order_and_survive_recovery() {
    writes_commit_in_order_and_survive_recovery(false, false).await;
}

/// The same with the log and snapshots in files, as on a server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_commit_in_order_and_survive_recovery_from_log_files() {
    writes_commit_in_order_and_survive_recovery(false, true).await;
}

/// The same with the final stage on a thread of its own (the default with more than 2 CPUs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_commit_in_order_and_survive_recovery_with_a_final_thread() {
    writes_commit_in_order_and_survive_recovery(true, false).await;
}

async fn writes_commit_in_order_and_survive_recovery(final_thread: bool, files: bool) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || ZabConfig {
        final_thread,
        snapshot_dir: files.then(|| dir.path().join("snaps")),
        log_dir: files.then(|| dir.path().join("log")),
        ..cfg()
    };
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::default());
    let b = Standalone::open(engine.clone(), cfg()).unwrap();
    let s = new_session(&b, 10_000).await;
    b.submit(env(s, create("/q", CreateMode::Persistent)))
        .await
        .unwrap();
    // 200 concurrent sequential creates: all distinct names, zxids strictly increasing per reply.
    let mut handles = Vec::new();
    for _ in 0..200 {
        let b = b.clone();
        handles.push(tokio::spawn(async move {
            b.submit(env(s, create("/q/n-", CreateMode::PersistentSequential)))
                .await
                .unwrap()
        }));
    }
    let mut names = Vec::new();
    for h in handles {
        let a = h.await.unwrap();
        match a.outcome {
            Outcome::Op(OpResult::Created { path, stat }) => {
                assert_eq!(stat.czxid, a.zxid);
                names.push(path);
            }
            o => panic!("{o:?}"),
        }
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 200);
    b.submit(env(s, create("/eph", CreateMode::Ephemeral)))
        .await
        .unwrap();
    let digest = b.tree().read().digest();
    let last = b.tree().read().last_zxid();
    let epoch = b.epoch();
    b.close();
    drop(b);

    // Recover from the same engine (snapshots were taken every 50 txns, plus the log tail).
    let b2 = Standalone::open(engine, cfg()).unwrap();
    assert_eq!(
        b2.tree().read().digest(),
        digest,
        "tree, stats and sessions restored"
    );
    assert_eq!(b2.tree().read().last_zxid(), last);
    assert!(b2.epoch() > epoch, "a restart starts a new epoch");
    let a = b2
        .submit(env(s, create("/after", CreateMode::Persistent)))
        .await
        .unwrap();
    assert!(a.zxid > last, "zxids keep increasing across restarts");
    assert!(
        b2.tree().read().get("/eph").is_some(),
        "the live session's ephemeral survives"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_loses_its_ephemerals() {
    let b = Standalone::open(Arc::new(MemEngine::default()), cfg()).unwrap();
    let s = new_session(&b, 300).await;
    let keep = new_session(&b, 60_000).await;
    b.submit(env(s, create("/e1", CreateMode::Ephemeral)))
        .await
        .unwrap();
    b.submit(env(keep, create("/e2", CreateMode::Ephemeral)))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.tree().read().get("/e1").is_some() {
        assert!(Instant::now() < deadline, "session did not expire");
        b.touch(&[keep]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b.tree().read().get("/e2").is_some());
    assert!(!b.tree().read().sessions().contains_key(&s));
    let o = b
        .submit(env(s, create("/late", CreateMode::Persistent)))
        .await
        .unwrap()
        .outcome;
    assert_eq!(o, Outcome::Failed(roster_core::Code::SessionExpired));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_containers_are_removed() {
    let b = Standalone::open(Arc::new(MemEngine::default()), cfg()).unwrap();
    let s = new_session(&b, 60_000).await;
    b.submit(env(s, create("/c", CreateMode::Container)))
        .await
        .unwrap();
    b.submit(env(s, create("/c/x", CreateMode::Persistent)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        b.tree().read().get("/c").is_some(),
        "a container with a child stays"
    );
    b.submit(env(
        s,
        Request::Op(WriteOp::Delete {
            path: "/c/x".into(),
            version: -1,
        }),
    ))
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.tree().read().get("/c").is_some() {
        assert!(Instant::now() < deadline, "container not removed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barrier_waits_for_earlier_writes() {
    let b = Standalone::open(Arc::new(MemEngine::default()), cfg()).unwrap();
    let s = new_session(&b, 60_000).await;
    for i in 0..20 {
        // join! polls the write first, so it is queued before the barrier.
        let (w, z) = tokio::join!(
            b.submit(env(s, create(&format!("/w{i}"), CreateMode::Persistent))),
            b.barrier()
        );
        let w = w.unwrap();
        assert!(
            z.unwrap() >= w.zxid,
            "barrier resolved before an earlier write was applied"
        );
    }
}

/// Create `{prefix}0..n` one at a time, pausing after every 50th so that each background
/// snapshot (every 50 txns in `cfg()`) is written before the next one is due.
async fn create_pausing(b: &Standalone, session: i64, prefix: &str, n: usize) {
    for i in 0..n {
        b.submit(env(
            session,
            create(&format!("{prefix}{i}"), CreateMode::Persistent),
        ))
        .await
        .unwrap();
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Entries of `space` kept in the engine itself.
fn engine_entries(engine: &Arc<dyn Engine>, space: roster_core::storage::Space) -> usize {
    let mut n = 0;
    engine
        .scan(space, &[], &mut |_, _| {
            n += 1;
            true
        })
        .unwrap();
    n
}

/// Snapshots kept in the engine itself (where they went before they were files).
fn engine_snapshots(engine: &Arc<dyn Engine>) -> usize {
    engine_entries(engine, roster_core::storage::Space::Snapshot)
}

/// Wait until `dir` holds `n` snapshot files (they are written on a background thread).
async fn snapshot_files(dir: &std::path::Path, n: usize) -> Vec<std::path::PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.to_string_lossy().ends_with(".tmp"))
            .collect();
        files.sort();
        if files.len() >= n || Instant::now() > deadline {
            return files;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_files_and_a_damaged_newest_one_falls_back_to_an_older() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snaps");
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::default());
    let cfg = || ZabConfig {
        snapshot_dir: Some(snaps.clone()),
        log_dir: Some(dir.path().join("log")),
        ..cfg()
    };
    let b = Standalone::open(engine.clone(), cfg()).unwrap();
    let s = new_session(&b, 60_000).await;
    create_pausing(&b, s, "/n", 160).await;
    let files = snapshot_files(&snaps, 3).await;
    assert_eq!(files.len(), 3, "three snapshots retained: {files:?}");
    assert_eq!(
        engine_snapshots(&engine),
        0,
        "snapshots do not go through the engine"
    );
    let digest = b.tree().read().digest();
    b.close();
    drop(b);

    let b2 = Standalone::open(engine.clone(), cfg()).unwrap();
    assert_eq!(
        b2.tree().read().digest(),
        digest,
        "recovered from the newest file"
    );
    b2.close();
    drop(b2);

    // Flip a byte in the middle of the newest snapshot: it fails its checksum, and recovery uses
    // the one before it plus the log kept behind it.
    let newest = files.last().unwrap();
    let mut bytes = std::fs::read(newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(newest, bytes).unwrap();
    let b3 = Standalone::open(engine, cfg()).unwrap();
    assert_eq!(
        b3.tree().read().digest(),
        digest,
        "recovered from an older file"
    );
}

/// Every snapshot damaged, and the log kept only behind the oldest of them: recovery would start
/// from an empty tree and replay a log that begins 50 transactions in. It refuses instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_snapshot_damaged_is_an_error_not_a_tree_missing_the_start_of_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snaps");
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::default());
    let cfg = || ZabConfig {
        snapshot_dir: Some(snaps.clone()),
        log_dir: Some(dir.path().join("log")),
        ..cfg()
    };
    let b = Standalone::open(engine.clone(), cfg()).unwrap();
    let s = new_session(&b, 60_000).await;
    // Snapshots every 50: the fourth makes the purge drop the first log segment.
    create_pausing(&b, s, "/n", 220).await;
    let files = snapshot_files(&snaps, 3).await;
    assert_eq!(files.len(), 3, "three snapshots retained: {files:?}");
    let log_files = || {
        let mut v: Vec<_> = std::fs::read_dir(dir.path().join("log"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while log_files().contains(&"log.0000000100000001".to_string()) {
        assert!(
            Instant::now() < deadline,
            "first segment never purged: {:?}",
            log_files()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.close();
    drop(b);
    for f in &files {
        let mut bytes = std::fs::read(f).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(f, bytes).unwrap();
    }
    let err = Standalone::open(engine, cfg()).err().expect("refused");
    assert!(err.to_string().contains("has a gap"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_an_older_version_kept_in_the_engine_are_still_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::default());
    // Written as before snapshots were files: into the engine.
    let b = Standalone::open(engine.clone(), cfg()).unwrap();
    let s = new_session(&b, 60_000).await;
    for i in 0..120 {
        b.submit(env(s, create(&format!("/old{i}"), CreateMode::Persistent)))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let digest = b.tree().read().digest();
    b.close();
    drop(b);
    let engine_snaps = || engine_snapshots(&engine);
    assert!(engine_snaps() > 0);
    let cfg = ZabConfig {
        snapshot_dir: Some(dir.path().to_path_buf()),
        ..cfg()
    };
    let b2 = Standalone::open(engine.clone(), cfg.clone()).unwrap();
    assert_eq!(b2.tree().read().digest(), digest);
    // New snapshots are files; once three of them exist the engine's old ones are purged.
    create_pausing(&b2, s, "/new", 200).await;
    snapshot_files(dir.path(), 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(engine_snaps(), 0, "the engine's old snapshots were purged");
    let digest = b2.tree().read().digest();
    b2.close();
    drop(b2);
    let b3 = Standalone::open(engine, cfg).unwrap();
    assert_eq!(b3.tree().read().digest(), digest);
}

fn engine_log_entries(engine: &Arc<dyn Engine>) -> usize {
    engine_entries(engine, roster_core::storage::Space::Log)
}

/// A data directory written when the log lived in the engine opens with log files: its log is
/// moved into them (and out of the engine), nothing is lost, and writing goes on in the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_an_older_version_kept_in_the_engine_is_moved_into_log_files() {
    let dir = tempfile::tempdir().unwrap();
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::default());
    let old = ZabConfig {
        snapshot: SnapshotPolicy::count(1_000_000),
        ..cfg()
    };
    let b = Standalone::open(engine.clone(), old.clone()).unwrap();
    let s = new_session(&b, 60_000).await;
    for i in 0..300 {
        b.submit(env(s, create(&format!("/old{i}"), CreateMode::Persistent)))
            .await
            .unwrap();
    }
    let digest = b.tree().read().digest();
    b.close();
    drop(b);
    assert!(engine_log_entries(&engine) >= 301);
    let new = ZabConfig {
        log_dir: Some(dir.path().join("log")),
        ..old
    };
    let b2 = Standalone::open(engine.clone(), new.clone()).unwrap();
    assert_eq!(b2.tree().read().digest(), digest, "the moved log replays");
    assert_eq!(
        engine_log_entries(&engine),
        0,
        "and is gone from the engine"
    );
    b2.submit(env(s, create("/new", CreateMode::Persistent)))
        .await
        .unwrap();
    let digest = b2.tree().read().digest();
    b2.close();
    drop(b2);
    assert_eq!(engine_log_entries(&engine), 0, "new writes go to the files");
    let b3 = Standalone::open(engine, new).unwrap();
    assert_eq!(b3.tree().read().digest(), digest);
    assert!(b3.tree().read().node_count() > 300);
}

/// Create `{prefix}0..n` with `size` bytes of data each, one at a time.
async fn create_sized(b: &Standalone, session: i64, prefix: &str, n: usize, size: usize) {
    for i in 0..n {
        let request = Request::Op(WriteOp::Create {
            path: format!("{prefix}{i}"),
            data: vec![7; size],
            acl: Acl::open_unsafe(),
            mode: CreateMode::Persistent,
            ttl: 0,
        });
        b.submit(env(session, request)).await.unwrap();
    }
}

/// With the default policy a snapshot is due after `snapshot_every` transactions only once the
/// log written since the last snapshot is as large as that snapshot, and at the latest after
/// ten times `snapshot_every` transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_waits_for_the_log_to_grow_as_large_as_the_last_one() {
    let dir = tempfile::tempdir().unwrap();
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::default());
    let cfg = ZabConfig {
        snapshot: SnapshotPolicy {
            every: 20,
            ..SnapshotPolicy::default()
        },
        snapshots_retained: 10,
        snapshot_dir: Some(dir.path().to_path_buf()),
        ..ZabConfig::default()
    };
    assert_eq!(cfg.snapshot.log_ratio, 1.0, "the default ratio");
    let b = Standalone::open(engine, cfg).unwrap();
    let count = || snapshot_files(dir.path(), 0);
    let settled = || async {
        // Snapshots are written in the background: give one that was due time to land.
        tokio::time::sleep(Duration::from_millis(300)).await;
        count().await.len()
    };
    let s = new_session(&b, 60_000).await;
    // The first: 20 txns (the session and 19 creates of 8 KiB) and no snapshot before it.
    create_sized(&b, s, "/big", 19, 8192).await;
    assert_eq!(snapshot_files(dir.path(), 1).await.len(), 1);
    // 100 small writes are five times `snapshot_every`, but their log is a few KiB against a
    // snapshot of ~150 KiB: not yet.
    create_sized(&b, s, "/small", 100, 8).await;
    assert_eq!(settled().await, 1, "deferred while the log is small");
    // 10 writes of 16 KiB more make the log larger than the snapshot.
    create_sized(&b, s, "/more", 10, 16 * 1024).await;
    assert_eq!(snapshot_files(dir.path(), 2).await.len(), 2, "due by size");
    // Small writes again: deferred, but never past 10 × 20 transactions.
    create_sized(&b, s, "/tiny", 150, 8).await;
    assert_eq!(settled().await, 2, "deferred while the log is small");
    create_sized(&b, s, "/tiny-more", 50, 8).await;
    assert_eq!(
        snapshot_files(dir.path(), 3).await.len(),
        3,
        "due after 10 × snapshot_every transactions whatever the log's size"
    );
}

/// Prep runs on the submitting task and admits at most `queue_depth` requests between prep and
/// reply: far more concurrent submitters than that (writes that succeed, writes that fail, and
/// barriers among them) all get their answers, in zxid order per outcome, so every admission is
/// given back when its request is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_submitters_than_the_queue_depth_all_get_answers() {
    let b = Standalone::open(
        Arc::new(MemEngine::default()),
        ZabConfig {
            queue_depth: 4,
            ..cfg()
        },
    )
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..400 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            // Every fourth one creates a node that already exists: a failed request.
            let path = format!("/q{}", if i % 4 == 3 { i - 1 } else { i });
            let a = b
                .submit(env(0, create(&path, CreateMode::Persistent)))
                .await;
            let z = b.barrier().await.unwrap();
            (a.unwrap(), z)
        }));
    }
    let mut created = 0;
    for t in tasks {
        let (a, barrier) = tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("every submitter is answered")
            .unwrap();
        assert!(barrier >= a.zxid);
        if matches!(a.outcome, Outcome::Op(OpResult::Created { .. })) {
            created += 1;
        }
    }
    assert_eq!(created, 300);
    assert_eq!(b.tree().read().node_count(), 300 + 4);
}
