//! Session expiry as a state machine without I/O (ZooKeeper's `ExpiryQueue`): sessions are kept
//! in tick-aligned buckets; any packet moves a session to the bucket of `now + timeout`, rounded
//! up to the next tick; `expired(now)` hands out every session whose bucket has passed.

use crate::SessionId;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Tracks when each live session expires. Times are milliseconds on any monotonic clock.
#[derive(Debug)]
pub struct SessionTracker {
    tick_ms: u64,
    sessions: HashMap<SessionId, (u64, u64)>, // timeout, bucket
    buckets: BTreeMap<u64, HashSet<SessionId>>,
}

impl SessionTracker {
    pub fn new(tick_ms: u64) -> SessionTracker {
        SessionTracker {
            tick_ms: tick_ms.max(1),
            sessions: HashMap::new(),
            buckets: BTreeMap::new(),
        }
    }

    fn bucket_for(&self, deadline: u64) -> u64 {
        deadline.div_ceil(self.tick_ms) * self.tick_ms
    }

    /// Start tracking (or re-arm) a session with `timeout_ms`.
    pub fn add(&mut self, id: SessionId, timeout_ms: u64, now: u64) {
        self.sessions.insert(id, (timeout_ms, 0));
        self.touch(id, now);
    }

    /// The session's client was heard from; false if the session is not tracked.
    pub fn touch(&mut self, id: SessionId, now: u64) -> bool {
        let Some(&(timeout, old)) = self.sessions.get(&id) else {
            return false;
        };
        let bucket = self.bucket_for(now + timeout);
        if bucket != old {
            if let Some(set) = self.buckets.get_mut(&old) {
                set.remove(&id);
                if set.is_empty() {
                    self.buckets.remove(&old);
                }
            }
            self.buckets.entry(bucket).or_default().insert(id);
            self.sessions.insert(id, (timeout, bucket));
        }
        true
    }

    /// Stop tracking.
    pub fn remove(&mut self, id: SessionId) {
        if let Some((_, bucket)) = self.sessions.remove(&id)
            && let Some(set) = self.buckets.get_mut(&bucket)
        {
            set.remove(&id);
            if set.is_empty() {
                self.buckets.remove(&bucket);
            }
        }
    }

    pub fn contains(&self, id: SessionId) -> bool {
        self.sessions.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Sessions whose deadline is at or before `now`; they stay tracked until `remove`d (their
    /// close is being committed) but are not handed out twice.
    pub fn expired(&mut self, now: u64) -> Vec<SessionId> {
        let mut out = Vec::new();
        while let Some((&bucket, _)) = self.buckets.first_key_value() {
            if bucket > now {
                break;
            }
            let set = self.buckets.remove(&bucket).expect("first bucket exists");
            for id in set {
                // Park it far away so it is not expired again while its close commits.
                self.sessions.insert(id, (self.sessions[&id].0, u64::MAX));
                out.push(id);
            }
        }
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_after_timeout_rounded_to_tick() {
        let mut t = SessionTracker::new(1000);
        t.add(1, 4000, 0);
        t.add(2, 6000, 0);
        assert!(t.expired(3999).is_empty());
        assert_eq!(t.expired(4000), vec![1]);
        assert!(t.expired(5000).is_empty(), "not handed out twice");
        t.touch(2, 5500); // deadline 11500 -> bucket 12000
        assert!(t.expired(11999).is_empty());
        assert_eq!(t.expired(12000), vec![2]);
        t.remove(1);
        t.remove(2);
        assert!(t.is_empty());
    }
}
