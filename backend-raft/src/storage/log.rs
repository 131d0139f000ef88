//! The Raft log and vote in the storage engine (`Space::Log` keyed by big-endian index,
//! `Space::Meta` for vote, committed and purged pointers). Appends are queued to the group-commit
//! writer and acknowledged to openraft only once synced; until then they are served from an
//! in-memory tail so readers see them as soon as `append` returns (openraft's contract).

use super::writer::{WriteCmd, Writer};
use super::{COMMITTED_KEY, PURGED_KEY, VOTE_KEY, decode, encode, index_key, io_err};
use crate::types::{Entry, LogId, TypeConfig, Vote};
use openraft::OptionalSend;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use parking_lot::Mutex;
use roster_core::storage::{Engine, Space, WriteBatch};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

struct Inner {
    engine: Arc<dyn Engine>,
    writer: Writer,
    /// Appended but not yet durable, by index.
    tail: Mutex<BTreeMap<u64, Entry>>,
    /// Last purged and last present log ids.
    state: Mutex<(Option<LogId>, Option<LogId>)>,
    /// Entries from this index on are kept even when purged: a leader's replication stream
    /// to a lagging member may have planned to read them (openraft does not re-plan a stream
    /// whose start was purged under it). Set from the leader's replication progress; members
    /// that left the membership stop holding it back. `u64::MAX` when not leading.
    retain_from: Arc<AtomicU64>,
    /// Purged entries not yet deleted because of `retain_from`: delete up to here.
    purge_pending: Mutex<u64>,
}

/// openraft's log store over an [`Engine`].
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

impl LogStore {
    /// Open the log in `engine` and start its writer thread.
    pub fn open(engine: Arc<dyn Engine>, max_batch: usize, node_id: u64) -> io::Result<LogStore> {
        let purged: Option<LogId> = match engine.get(Space::Meta, PURGED_KEY).map_err(io_err)? {
            Some(b) => Some(decode("purged log id", &b)?),
            None => None,
        };
        let last: Option<LogId> = match engine.last(Space::Log).map_err(io_err)? {
            Some((_, v)) => Some(decode::<Entry>("log entry", &v)?.log_id),
            None => purged,
        };
        let writer = Writer::start(engine.clone(), max_batch, format!("raft-log-{node_id}"));
        Ok(LogStore {
            inner: Arc::new(Inner {
                engine,
                writer,
                tail: Mutex::new(BTreeMap::new()),
                state: Mutex::new((purged, last)),
                retain_from: Arc::new(AtomicU64::new(u64::MAX)),
                purge_pending: Mutex::new(0),
            }),
        })
    }

    /// The first index a replication stream may still read (see `Inner::retain_from`).
    pub(crate) fn retain_from(&self) -> Arc<AtomicU64> {
        self.inner.retain_from.clone()
    }

    fn read_range(&self, from: u64, to: u64) -> io::Result<Vec<Entry>> {
        if from >= to {
            return Ok(Vec::new());
        }
        let out = self.read_present(from, to)?;
        // A range whose start is gone reads as empty, never as a later part of the range (that
        // would not follow the request's `prev_log_id`). Purge keeps what replication may
        // still read, so this only happens for a range that was never there.
        if out.first().is_some_and(|e| e.log_id.index() != from) {
            return Ok(Vec::new());
        }
        Ok(out)
    }

    fn read_present(&self, from: u64, to: u64) -> io::Result<Vec<Entry>> {
        // The tail first: an entry leaves it only after it is in the engine, so reading it
        // before the engine never misses one.
        let mut out: BTreeMap<u64, Entry> = self
            .inner
            .tail
            .lock()
            .range(from..to)
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let mut err = None;
        self.inner
            .engine
            .scan(Space::Log, &index_key(from), &mut |k, v| {
                let Ok(key) = <[u8; 8]>::try_from(k) else {
                    err = Some(io::Error::new(io::ErrorKind::InvalidData, "bad log key"));
                    return false;
                };
                let idx = u64::from_be_bytes(key);
                if idx >= to {
                    return false;
                }
                if let std::collections::btree_map::Entry::Vacant(slot) = out.entry(idx) {
                    match decode::<Entry>("log entry", v) {
                        Ok(e) => {
                            slot.insert(e);
                        }
                        Err(e) => {
                            err = Some(e);
                            return false;
                        }
                    }
                }
                true
            })
            .map_err(io_err)?;
        if let Some(e) = err {
            return Err(e);
        }
        Ok(out.into_values().collect())
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(x) => *x,
        Bound::Excluded(x) => x.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(x) => x.saturating_add(1),
        Bound::Excluded(x) => *x,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (from, to) = bounds(&range);
        self.read_range(from, to)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        match self
            .inner
            .engine
            .get(Space::Meta, VOTE_KEY)
            .map_err(io_err)?
        {
            Some(b) => Ok(Some(decode("vote", &b)?)),
            None => Ok(None),
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let (purged, last) = *self.inner.state.lock();
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let mut b = WriteBatch::default();
        b.put(Space::Meta, VOTE_KEY, encode(vote));
        self.inner.writer.write_durable(b).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not needed for safety (a restart re-learns it from the leader), so it does not force
        // an fsync of its own; it rides with the next synced batch.
        let mut b = WriteBatch::default();
        match committed {
            Some(c) => b.put(Space::Meta, COMMITTED_KEY, encode(&c)),
            None => b.delete(Space::Meta, COMMITTED_KEY),
        }
        self.inner.writer.send(WriteCmd {
            batch: b,
            sync: false,
            done: None,
        })
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        match self
            .inner
            .engine
            .get(Space::Meta, COMMITTED_KEY)
            .map_err(io_err)?
        {
            Some(b) => Ok(Some(decode("committed log id", &b)?)),
            None => Ok(None),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let mut written: Vec<LogId> = Vec::new();
        {
            let mut tail = self.inner.tail.lock();
            for e in entries {
                let id = e.log_id;
                batch.put(Space::Log, index_key(id.index()), encode(&e));
                tail.insert(id.index(), e);
                written.push(id);
            }
        }
        let Some(last) = written.last().cloned() else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        self.inner.state.lock().1 = Some(last);
        let inner = self.inner.clone();
        self.inner.writer.send(WriteCmd {
            batch,
            sync: true,
            done: Some(Box::new(move |r| {
                if r.is_ok() {
                    let mut tail = inner.tail.lock();
                    for id in &written {
                        // A truncation may have replaced the entry meanwhile: drop only ours.
                        if tail.get(&id.index()).is_some_and(|e| e.log_id == *id) {
                            tail.remove(&id.index());
                        }
                    }
                }
                callback.io_completed(r);
            })),
        })
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.as_ref().map(|l| l.index() + 1).unwrap_or(0);
        {
            let mut tail = self.inner.tail.lock();
            tail.split_off(&from);
            let mut st = self.inner.state.lock();
            st.1 = last_log_id.or_else(|| st.0);
        }
        let mut b = WriteBatch::default();
        b.delete_range(Space::Log, index_key(from), index_key(u64::MAX));
        b.delete(Space::Log, index_key(u64::MAX));
        self.inner.writer.write_durable(b).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let upto = log_id.index() + 1;
        {
            let mut st = self.inner.state.lock();
            st.0 = Some(log_id);
            if st.1.is_none_or(|l| l.index() < log_id.index()) {
                st.1 = Some(log_id);
            }
        }
        let delete_to = {
            let mut pending = self.inner.purge_pending.lock();
            *pending = (*pending).max(upto);
            (*pending).min(self.inner.retain_from.load(Ordering::Acquire))
        };
        {
            let mut tail = self.inner.tail.lock();
            *tail = tail.split_off(&delete_to);
        }
        let mut b = WriteBatch::default();
        b.put(Space::Meta, PURGED_KEY, encode(&log_id));
        b.delete_range(Space::Log, index_key(0), index_key(delete_to));
        self.inner.writer.write_durable(b).await
    }
}
