//! The tree as openraft's state machine. Applying an entry applies its `Txn`s to the tree in
//! zxid order, fires watches, publishes them, and answers the leader's waiting submitters.
//! Snapshots are the tree's snapshot encoding plus the Raft metadata they cover, kept as a
//! file in the snapshot directory on a server (`SnapStore`, format in `snapdata`; in the
//! engine's `Space::Snapshot` without one, and read from there when an older version left it
//! there); installing one replaces the tree (this node's watches carry over).
//! Building one takes an O(1) frozen view of the tree under its lock and streams it into its
//! file on a blocking thread while openraft goes on applying entries; installing one restores
//! it off the lock too (as it arrives, when it came over TCP), which is then held only to swap
//! the state in.

use super::snapdata::{self, SnapData};
use super::{SNAPSHOT_KEY, decode, encode, io_err};
use crate::network::ForwardError;
use crate::types::{Entry, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use futures::StreamExt;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use parking_lot::Mutex;
use roster_core::backend::{BackendError, TreeView};
use roster_core::session::SessionTracker;
use roster_core::snapfiles::SnapshotFiles;
use roster_core::storage::{Engine, Space, WriteBatch};
use roster_core::tree::Tree;
use roster_core::tree::prep::Outstanding;
use roster_core::tree::snapshot::SnapshotView;
use roster_core::txn::{Applied, Outcome, Txn, TxnOp};
use roster_core::{SessionId, Zxid};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;
use tokio::sync::{broadcast, oneshot, watch};

/// Where this node's state machine is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Last applied zxid.
    pub zxid: Zxid,
    /// Index of the last applied log entry.
    pub index: u64,
}

pub(crate) type Reply = oneshot::Sender<Result<Applied, ForwardError>>;

/// Someone waiting for the state machine to reach a zxid.
pub(crate) enum Waiter {
    /// The submitter of the txn with this zxid.
    Txn(Reply),
    /// A request that failed prep: answered once everything prepared before it is applied, so
    /// replies keep submission order.
    Failed(Outcome, Reply),
    /// A barrier: answered once everything prepared before it is applied.
    Barrier(oneshot::Sender<Result<Progress, ForwardError>>),
}

impl Waiter {
    pub(crate) fn fail(self, e: ForwardError) {
        match self {
            Waiter::Txn(r) | Waiter::Failed(_, r) => {
                let _ = r.send(Err(e));
            }
            Waiter::Barrier(r) => {
                let _ = r.send(Err(e));
            }
        }
    }
}

/// The Raft position the state machine has reached, changed together with the tree.
pub(crate) struct SmMeta {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// State shared by the state machine, the leader's proposer and the backend front.
pub(crate) struct Shared {
    pub tree: TreeView,
    pub meta: Mutex<SmMeta>,
    /// Prepared but not yet applied (leader only).
    pub outstanding: Mutex<Outstanding>,
    /// Session expiry (acted on by the leader only).
    pub sessions: Mutex<SessionTracker>,
    pub tick_ms: u64,
    /// Submitters and barriers waiting for a zxid to be applied (leader only).
    pub waiters: Mutex<BTreeMap<Zxid, Vec<Waiter>>>,
    pub applied_tx: broadcast::Sender<Arc<Txn>>,
    pub progress: watch::Sender<Progress>,
    pub started: Instant,
    /// The term this node leads and prepares in; 0 when it is not (ready to be) the leader.
    pub leading_term: AtomicU64,
}

impl Shared {
    pub fn new(tree: Tree, meta: SmMeta, tick_ms: u64) -> Shared {
        let progress = Progress {
            zxid: tree.last_zxid(),
            index: meta.last_applied.as_ref().map(|l| l.index()).unwrap_or(0),
        };
        let (applied_tx, _) = broadcast::channel(4096);
        Shared {
            tree: Arc::new(parking_lot::RwLock::new(tree)),
            meta: Mutex::new(meta),
            outstanding: Mutex::new(Outstanding::default()),
            sessions: Mutex::new(SessionTracker::new(tick_ms)),
            tick_ms,
            waiters: Mutex::new(BTreeMap::new()),
            applied_tx,
            progress: watch::channel(progress).0,
            started: Instant::now(),
            leading_term: AtomicU64::new(0),
        }
    }

    /// Monotonic ms since start, the session tracker's clock.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Track every committed session afresh with its full timeout (a new leader, as ZooKeeper).
    pub fn rearm_sessions(&self) {
        let tree = self.tree.read();
        let now = self.now_ms();
        let mut t = SessionTracker::new(self.tick_ms);
        for (id, meta) in tree.sessions() {
            t.add(*id, meta.timeout_ms.max(0) as u64, now);
        }
        *self.sessions.lock() = t;
    }

    /// Fail every waiter (this node stopped leading; outcomes are unknown).
    pub fn fail_waiters(&self, e: ForwardError) {
        let all = std::mem::take(&mut *self.waiters.lock());
        for w in all.into_values().flatten() {
            w.fail(e.clone());
        }
    }

    /// Answer waiters up to `zxid`; `outcomes` are the txns just applied.
    fn resolve(&self, zxid: Zxid, index: u64, mut outcomes: HashMap<Zxid, Outcome>) {
        let done = {
            let mut w = self.waiters.lock();
            if w.first_key_value().is_none_or(|(k, _)| *k > zxid) {
                return;
            }
            let rest = w.split_off(&(zxid + 1));
            std::mem::replace(&mut *w, rest)
        };
        for (z, ws) in done {
            // Waiters keyed `z` were registered after the txn at `z` was prepared. If the state
            // moved past `z` without applying it, that txn was never committed (another leader's
            // entries replaced it before this node noticed it had lost its leadership).
            let applied_here = outcomes.contains_key(&z);
            for w in ws {
                match w {
                    Waiter::Txn(r) => {
                        let res = match outcomes.remove(&z) {
                            Some(outcome) => Ok(Applied { zxid: z, outcome }),
                            None => Err(ForwardError::Backend(BackendError::Unavailable(
                                "the state moved past this write by snapshot; outcome unknown"
                                    .into(),
                            ))),
                        };
                        let _ = r.send(res);
                    }
                    // A refusal judged against prepared changes stands only if they committed.
                    Waiter::Failed(outcome, r) => {
                        let res = if applied_here {
                            Ok(Applied { zxid, outcome })
                        } else {
                            Err(ForwardError::Backend(BackendError::Unavailable(
                                "the writes this request was checked against were not \
                                 committed (leadership changed); retry"
                                    .into(),
                            )))
                        };
                        let _ = r.send(res);
                    }
                    Waiter::Barrier(r) => {
                        let _ = r.send(Ok(Progress { zxid, index }));
                    }
                }
            }
        }
    }
}

/// A snapshot as stored in the engine (and in the files of older versions).
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    last_log_id: Option<LogId>,
    membership: StoredMembership,
    data: Vec<u8>,
}

impl StoredSnapshot {
    pub(crate) fn from_parts(meta: &SnapshotMeta, data: Vec<u8>) -> StoredSnapshot {
        StoredSnapshot {
            last_log_id: meta.last_log_id,
            membership: meta.last_membership.clone(),
            data,
        }
    }

    pub(crate) fn into_parts(self) -> (SnapshotMeta, SnapData) {
        let meta = SnapshotMeta {
            last_log_id: self.last_log_id,
            last_membership: self.membership,
        };
        (meta, SnapData::Bytes(self.data))
    }
}

/// Where this member keeps its one current snapshot.
///
/// With a directory (a server), a file per snapshot named by its log index, written beside the
/// engine rather than through it: a snapshot of a few hundred thousand nodes is a value of
/// 100+ MB, and put through the engine's write-ahead log it made every log append queued behind
/// it wait (measured: a 174 MB snapshot, a 0.35 s stall of every write). Only the newest file
/// is kept; a newest file that fails its checksum is an error, not a reason to fall back: the
/// log behind an older snapshot has been purged, so starting from it would silently lose
/// writes (wipe the member and let the leader send it a snapshot instead). Without a directory
/// (tests), the engine's `Space::Snapshot`; a snapshot an older version left there is still
/// read, and removed once a file replaces it.
#[derive(Clone)]
pub(crate) struct SnapStore {
    engine: Arc<dyn Engine>,
    files: Option<Arc<SnapshotFiles>>,
}

impl SnapStore {
    pub(crate) fn open(engine: Arc<dyn Engine>, dir: Option<&Path>) -> io::Result<SnapStore> {
        let files = match dir {
            Some(d) => Some(Arc::new(SnapshotFiles::open(d)?)),
            None => None,
        };
        Ok(SnapStore { engine, files })
    }

    /// The current snapshot: what it covers, and its state (a file opened at the tree's
    /// encoding; bytes from the engine or an older version's file), if any.
    fn current(&self) -> io::Result<Option<(SnapshotMeta, SnapData)>> {
        if let Some(files) = &self.files
            && let Some(current) =
                open_newest(files, |z| snapdata::open_file(files, z)).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("the raft snapshot cannot be read ({e}); its log is purged, so this member cannot start from an older state: remove its data dir and let the leader send it a snapshot"),
                    )
                })?
        {
            return Ok(Some(current));
        }
        match self
            .engine
            .get(Space::Snapshot, SNAPSHOT_KEY)
            .map_err(io_err)?
        {
            Some(b) => Ok(Some(decode::<StoredSnapshot>("snapshot", &b)?.into_parts())),
            None => Ok(None),
        }
    }

    /// The snapshot just stored for `meta`, opened; if a newer one was installed meanwhile and
    /// replaced it, that one (openraft takes what is returned as its current snapshot).
    fn built(&self, meta: &SnapshotMeta) -> io::Result<(SnapshotMeta, SnapData)> {
        if let Some(files) = &self.files {
            match snapdata::open_file(files, snapdata::file_index(meta)) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => return other,
            }
        }
        self.current()?
            .ok_or_else(|| io::Error::other("no snapshot found after storing one"))
    }

    /// Make `view`, covering `meta`, the current snapshot, durably, before returning; streamed
    /// into its file (blocking: call off the runtime). Returns the bytes stored.
    fn store(&self, meta: &SnapshotMeta, view: &SnapshotView) -> io::Result<u64> {
        match &self.files {
            Some(files) => {
                let n = snapdata::write_file(files, meta, view)?;
                // Only older ones: a snapshot installed while this one was being built is
                // newer, and stays the current one.
                let index = snapdata::file_index(meta);
                files.remove_where(|z| z < index)?;
                let mut b = WriteBatch::default();
                b.delete(Space::Snapshot, SNAPSHOT_KEY);
                self.engine.write(b, true).map_err(io_err)?;
                Ok(n)
            }
            None => {
                let bytes = encode(&StoredSnapshot::from_parts(meta, view.encode()));
                let n = bytes.len() as u64;
                let mut b = WriteBatch::default();
                b.put(Space::Snapshot, SNAPSHOT_KEY, bytes);
                self.engine.write(b, true).map_err(io_err)?;
                Ok(n)
            }
        }
    }
}

/// Open the newest snapshot file with `open`, if there is one. A newer snapshot stored between
/// the listing and the open removes the one listed (a build finishing meanwhile): list again,
/// the newer one is there then.
fn open_newest<T>(
    files: &SnapshotFiles,
    open: impl Fn(Zxid) -> io::Result<T>,
) -> io::Result<Option<T>> {
    let mut tries = 0;
    while let Some(newest) = files.list()?.last().copied() {
        match open(newest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 3 => tries += 1,
            r => return r.map(Some),
        }
    }
    Ok(None)
}

/// Load the stored snapshot, if any, as the starting tree and Raft position; restored as it is
/// read.
pub(crate) fn load(store: &SnapStore) -> io::Result<(Tree, SmMeta)> {
    match store.current()? {
        Some((meta, data)) => Ok((
            data.into_tree()?,
            SmMeta {
                last_applied: meta.last_log_id,
                membership: meta.last_membership,
            },
        )),
        None => Ok((
            Tree::new(),
            SmMeta {
                last_applied: None,
                membership: StoredMembership::default(),
            },
        )),
    }
}

/// The tree as openraft's state machine.
pub struct StateMachine {
    pub(crate) shared: Arc<Shared>,
    store: SnapStore,
}

impl StateMachine {
    pub(crate) fn new(shared: Arc<Shared>, store: SnapStore) -> StateMachine {
        StateMachine { shared, store }
    }

    fn apply_entry(&self, entry: Entry) {
        let log_id = entry.log_id;
        let mut outcomes = HashMap::new();
        let zxid = {
            let mut tree = self.shared.tree.write();
            match entry.payload {
                EntryPayload::Normal(p) => {
                    let n = p.txns.len();
                    for txn in p.txns {
                        if txn.zxid <= tree.last_zxid() {
                            // Broken invariant (zxids increase along the log); applying it twice
                            // would diverge, so it is skipped loudly.
                            tracing::error!(zxid = format!("{:#x}", txn.zxid), last = format!("{:#x}", tree.last_zxid()), %log_id, "txn does not advance the zxid; skipped");
                            continue;
                        }
                        let outcome = tree.apply(&txn);
                        self.shared.outstanding.lock().applied(txn.zxid);
                        self.track_session(&txn);
                        let zxid = txn.zxid;
                        let _ = self.shared.applied_tx.send(Arc::new(txn));
                        outcomes.insert(zxid, outcome);
                    }
                    metrics::counter!("roster_backend_txns_total").increment(n as u64);
                }
                EntryPayload::Membership(m) => {
                    self.shared.meta.lock().membership = StoredMembership::new(Some(log_id), m);
                }
                EntryPayload::Blank => {}
            }
            self.shared.meta.lock().last_applied = Some(log_id);
            tree.last_zxid()
        };
        metrics::gauge!("roster_raft_applied_index").set(log_id.index() as f64);
        self.shared.progress.send_replace(Progress {
            zxid,
            index: log_id.index(),
        });
        self.shared.resolve(zxid, log_id.index(), outcomes);
    }

    fn track_session(&self, txn: &Txn) {
        let id: SessionId = txn.session;
        match &txn.op {
            TxnOp::CreateSession { timeout_ms, .. } => {
                let now = self.shared.now_ms();
                self.shared
                    .sessions
                    .lock()
                    .add(id, (*timeout_ms).max(0) as u64, now);
            }
            TxnOp::CloseSession => self.shared.sessions.lock().remove(id),
            _ => {}
        }
    }
}

/// Builds a snapshot of what the tree held when the builder was made: a frozen view and the
/// Raft position it covers, taken together under the tree's lock. Holds no lock itself, so
/// entries keep being applied while it serializes.
pub struct SnapshotBuilder {
    view: Option<(SnapshotView, SnapshotMeta)>,
    store: SnapStore,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (view, meta) = self
            .view
            .take()
            .ok_or_else(|| io::Error::other("snapshot builder used twice"))?;
        let t0 = Instant::now();
        let nodes = view.node_count();
        let store = self.store.clone();
        let m = meta.clone();
        // Encoded into its file as it is written: never whole in memory.
        let bytes = tokio::task::spawn_blocking(move || store.store(&m, &view))
            .await
            .map_err(|e| io::Error::other(format!("snapshot serialization failed: {e}")))??;
        let took = t0.elapsed();
        metrics::histogram!("roster_backend_snapshot_seconds").record(took.as_secs_f64());
        metrics::counter!("roster_backend_snapshots_total").increment(1);
        tracing::info!(last_log_id = ?meta.last_log_id, nodes, bytes, ms = took.as_millis() as u64, "snapshot stored");
        let (meta, snapshot) = self.store.built(&meta)?;
        Ok(Snapshot { meta, snapshot })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let m = self.shared.meta.lock();
        Ok((m.last_applied, m.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            self.apply_entry(entry);
            if let Some(r) = responder {
                r.send(());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        // Under the tree's read lock so the view and the position agree; the view is O(1).
        let view = {
            let tree = self.shared.tree.read();
            let m = self.shared.meta.lock();
            let meta = SnapshotMeta {
                last_log_id: m.last_applied,
                last_membership: m.membership.clone(),
            };
            (tree.snapshot_view(), meta)
        };
        SnapshotBuilder {
            view: Some(view),
            store: self.store.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapData,
    ) -> Result<(), io::Error> {
        let t0 = Instant::now();
        let store = self.store.clone();
        let m = meta.clone();
        // Restored (unless it was as it arrived) and made durable first, off the runtime: once
        // the tree says it holds this state, a restart must too.
        let new_tree = tokio::task::spawn_blocking(move || {
            let tree = snapshot.into_tree()?;
            store.store(&m, &tree.snapshot_view())?;
            Ok::<_, io::Error>(tree)
        })
        .await
        .map_err(|e| io::Error::other(format!("snapshot install failed: {e}")))??;
        let zxid = {
            let mut tree = self.shared.tree.write();
            // This node's clients keep their watches; stream consumers are told to resync.
            tree.replace_state(new_tree);
            let mut m = self.shared.meta.lock();
            m.last_applied = meta.last_log_id;
            m.membership = meta.last_membership.clone();
            self.shared.outstanding.lock().clear();
            tree.last_zxid()
        };
        self.shared.rearm_sessions();
        metrics::counter!("roster_raft_snapshots_installed_total").increment(1);
        metrics::histogram!("roster_raft_snapshot_install_seconds")
            .record(t0.elapsed().as_secs_f64());
        let index = meta.last_log_id.as_ref().map(|l| l.index()).unwrap_or(0);
        self.shared.progress.send_replace(Progress { zxid, index });
        self.shared.resolve(zxid, index, HashMap::new());
        tracing::info!(last_log_id = ?meta.last_log_id, zxid = format!("{zxid:#x}"), ms = t0.elapsed().as_millis() as u64, "installed snapshot");
        Ok(())
    }

    /// The current snapshot as its file opened at the tree's encoding: cheap (openraft asks for
    /// it at start and before each send), and read only as it is sent.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self
            .store
            .current()?
            .map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn shared() -> Shared {
        let meta = SmMeta {
            last_applied: None,
            membership: StoredMembership::default(),
        };
        Shared::new(Tree::new(), meta, 100)
    }

    fn create(zxid: Zxid, path: &str) -> Txn {
        Txn {
            zxid,
            time: 0,
            session: 0,
            op: TxnOp::Create {
                path: path.to_owned(),
                data: vec![7; 64],
                acl: roster_core::acl::Acl::open_unsafe().into(),
                owner: 0,
                parent_cversion: 0,
            },
        }
    }

    fn entry(index: u64, txns: Vec<Txn>) -> Entry {
        Entry {
            log_id: LogId::new_term_index(1, index),
            payload: EntryPayload::Normal(crate::types::Proposal { txns }),
        }
    }

    /// A snapshot is the state at the position the builder was made at, whatever is applied
    /// after, and serializing it needs no lock on the tree: with a writer holding the tree's
    /// write lock for the whole build (as applying does), the build still finishes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // The write guard is held across the build on purpose: the build must not need the tree.
    #[allow(clippy::await_holding_lock)]
    async fn snapshots_serialize_off_the_tree_lock_at_the_builder_position() {
        let shared = Arc::new(shared());
        let engine: Arc<dyn Engine> = Arc::new(roster_core::storage::MemEngine::default());
        let store = SnapStore::open(engine, None).unwrap();
        let mut sm = StateMachine::new(shared.clone(), store.clone());
        sm.apply_entry(entry(
            1,
            (1..=500).map(|i| create(i, &format!("/n{i}"))).collect(),
        ));
        let expected = shared.tree.read().snapshot();
        let mut builder = sm.get_snapshot_builder().await;
        // Applied after the builder was made: not in the snapshot.
        sm.apply_entry(entry(2, vec![create(501, "/late")]));
        let writer = shared.tree.write();
        let built = tokio::time::timeout(Duration::from_secs(20), builder.build_snapshot())
            .await
            .expect("building a snapshot waited for the tree lock")
            .expect("build");
        drop(writer);
        assert_eq!(built.meta.last_log_id, Some(LogId::new_term_index(1, 1)));
        let restored = built.snapshot.into_tree().expect("restore");
        assert_eq!(restored.snapshot(), expected);
        assert!(restored.get("/n500").is_some());
        assert!(restored.get("/late").is_none());
        assert!(shared.tree.read().get("/late").is_some());
        // And it is what a restart loads.
        let (loaded, meta) = load(&store).expect("load");
        assert_eq!(loaded.snapshot(), expected);
        assert_eq!(meta.last_applied, Some(LogId::new_term_index(1, 1)));
    }

    async fn snapshot_now(sm: &mut StateMachine) {
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build a snapshot");
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// With a snapshot directory (as on a server) a snapshot is a file, not an engine value (a
    /// 100+ MB value in the engine's WAL stalls every log append behind it); only the newest
    /// file is kept; a snapshot an older version left in the engine is read until a file
    /// replaces it; and a damaged file stops the start instead of loading an empty or older
    /// state whose log is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshots_are_files_the_legacy_one_is_read_and_a_damaged_one_refuses_to_load() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = dir.path().join("raft-snapshots");
        let engine: Arc<dyn Engine> = Arc::new(roster_core::storage::MemEngine::default());
        // An older version's snapshot, in the engine.
        let legacy = {
            let shared = Arc::new(shared());
            let mut sm = StateMachine::new(
                shared.clone(),
                SnapStore::open(engine.clone(), None).unwrap(),
            );
            sm.apply_entry(entry(1, vec![create(1, "/old")]));
            snapshot_now(&mut sm).await;
            shared.tree.read().snapshot()
        };
        assert!(engine.get(Space::Snapshot, SNAPSHOT_KEY).unwrap().is_some());
        let store = SnapStore::open(engine.clone(), Some(&snaps)).unwrap();
        let (loaded, meta) = load(&store).unwrap();
        assert_eq!(
            loaded.snapshot(),
            legacy,
            "the engine's snapshot is read while no file exists"
        );
        assert_eq!(meta.last_applied, Some(LogId::new_term_index(1, 1)));

        let shared = Arc::new(shared());
        let mut sm = StateMachine::new(shared.clone(), store.clone());
        sm.apply_entry(entry(1, vec![create(1, "/a")]));
        snapshot_now(&mut sm).await;
        sm.apply_entry(entry(2, vec![create(2, "/b")]));
        snapshot_now(&mut sm).await;
        let expected = shared.tree.read().snapshot();
        assert_eq!(files_in(&snaps), vec!["snapshot.0000000000000002"]);
        assert!(
            engine.get(Space::Snapshot, SNAPSHOT_KEY).unwrap().is_none(),
            "the engine's copy is removed once a file holds the snapshot"
        );
        let (loaded, meta) = load(&SnapStore::open(engine.clone(), Some(&snaps)).unwrap()).unwrap();
        assert_eq!(loaded.snapshot(), expected);
        assert_eq!(meta.last_applied, Some(LogId::new_term_index(1, 2)));
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert!(
            matches!(current.snapshot, SnapData::File(_)),
            "handed out as its file, not read whole"
        );
        assert_eq!(current.snapshot.into_tree().unwrap().snapshot(), expected);

        // One flipped byte in the middle: refuse, loudly.
        let f = snaps.join("snapshot.0000000000000002");
        let mut bytes = std::fs::read(&f).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&f, bytes).unwrap();
        let err = load(&SnapStore::open(engine, Some(&snaps)).unwrap())
            .err()
            .expect("a damaged snapshot must not load as an empty tree");
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    /// openraft asks for the current snapshot while a build may be finishing: the file listed
    /// as the newest can be gone by the time it is opened, replaced by a newer one. That is not
    /// an error (openraft would stop the member on it): the newer one is opened.
    #[test]
    fn a_snapshot_replaced_between_listing_and_opening_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path()).unwrap();
        files.write_bytes(5, b"five").unwrap();
        let raced = std::sync::atomic::AtomicBool::new(false);
        let opened = open_newest(&files, |z| {
            if !raced.swap(true, std::sync::atomic::Ordering::SeqCst) {
                // A build stores snapshot 9 and removes the older ones, just before this open.
                files.write_bytes(9, b"nine").unwrap();
                files.remove_where(|z| z < 9).unwrap();
            }
            files.read(z)
        })
        .unwrap();
        assert_eq!(opened, Some(b"nine".to_vec()));
        // Nothing there: none; a damaged file: its error.
        let empty = tempfile::tempdir().unwrap();
        let none = SnapshotFiles::open(empty.path()).unwrap();
        assert!(open_newest(&none, |z| none.read(z)).unwrap().is_none());
        std::fs::write(dir.path().join("snapshot.0000000000000009"), b"torn").unwrap();
        assert!(open_newest(&files, |z| files.read(z)).is_err());
    }

    fn failed_waiter(s: &Shared, key: Zxid) -> oneshot::Receiver<Result<Applied, ForwardError>> {
        let (tx, rx) = oneshot::channel();
        s.waiters
            .lock()
            .entry(key)
            .or_default()
            .push(Waiter::Failed(
                Outcome::Failed(roster_core::Code::BadVersion),
                tx,
            ));
        rx
    }

    /// Seed 5 of the fault harness: a leader prepared a write at zxid 5 and refused a CAS
    /// against it; it was deposed before the write committed, and the new leader's entries
    /// (zxids past 5) were applied before it noticed. The refusal must not be answered as if
    /// the write had happened.
    #[test]
    fn a_refusal_behind_an_uncommitted_write_is_not_answered_as_a_refusal() {
        let s = shared();
        let (txn_tx, txn_rx) = oneshot::channel();
        s.waiters
            .lock()
            .entry(5)
            .or_default()
            .push(Waiter::Txn(txn_tx));
        let mut refusal = failed_waiter(&s, 5);
        // Another leader's txn at zxid 9 is applied; 5 never was.
        s.resolve(9, 3, HashMap::from([(9, Outcome::SessionClosed)]));
        assert!(matches!(
            refusal.try_recv(),
            Ok(Err(ForwardError::Backend(BackendError::Unavailable(_))))
        ));
        assert!(matches!(
            txn_rx.blocking_recv(),
            Ok(Err(ForwardError::Backend(BackendError::Unavailable(_))))
        ));
        // When the write it was judged against is applied, the refusal stands.
        let mut refusal = failed_waiter(&s, 12);
        s.resolve(12, 4, HashMap::from([(12, Outcome::SessionClosed)]));
        assert!(matches!(
            refusal.try_recv(),
            Ok(Ok(Applied {
                outcome: Outcome::Failed(roster_core::Code::BadVersion),
                ..
            }))
        ));
    }
}
