//! The replicated AP state as pure data and merge rules, with no I/O:
//!
//! - **persistent nodes**: one last-writer-wins register per path, ordered by [`Stamp`]; a delete
//!   is a tombstone (a register with no value) so it can win over an older create it never saw;
//! - **owner states** (Distro style): each member is the only writer of its sessions and their
//!   ephemeral nodes; peers hold a copy with the owner's version and replace it wholesale from the
//!   owner's snapshot when a delta is missing;
//! - **the visible namespace** derived from both: at each path the candidate with the greatest
//!   stamp wins (a tombstone winning hides the path), and a path is visible only when every
//!   ancestor is. The derivation depends on the set of writes only, never on delivery order, so
//!   members that have received the same writes show the same tree.
//! - **digests**: order-independent hashes of the persistent registers in fixed buckets, and a
//!   checksum per owner state, for anti-entropy.

use crate::hlc::{MemberId, Stamp};
use roster_core::SessionId;
use roster_core::acl::AclList;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Buckets of the persistent digest.
pub const BUCKETS: usize = 64;

/// A node's content.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Value {
    pub data: Vec<u8>,
    #[serde(deserialize_with = "roster_core::acl::interned")]
    pub acl: AclList,
}

/// One persistent register: the last write to a path (`value: None` is a delete tombstone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PEntry {
    pub stamp: Stamp,
    pub value: Option<Value>,
}

/// An ephemeral node as its owner holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eph {
    pub stamp: Stamp,
    pub session: SessionId,
    pub value: Value,
}

/// A session as its owner announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub timeout_ms: i32,
}

/// Everything one member owns. Only the owner changes it; `version` counts its changes within
/// one `incarnation` (a restart starts a new incarnation at version 0).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OwnerState {
    pub incarnation: u64,
    pub version: u64,
    pub sessions: BTreeMap<SessionId, SessionInfo>,
    pub ephemerals: BTreeMap<String, Eph>,
}

impl OwnerState {
    /// A checksum of the content (sessions and ephemerals), equal on every holder of equal state.
    pub fn checksum(&self) -> u32 {
        let bytes = postcard::to_stdvec(&(&self.sessions, &self.ephemerals))
            .expect("in-memory serialization cannot fail");
        crc32fast::hash(&bytes)
    }

    /// Ephemeral nodes held.
    pub fn ephemeral_count(&self) -> usize {
        self.ephemerals.len()
    }
}

/// One change an owner makes to its own state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OwnerOp {
    Open {
        session: SessionId,
        info: SessionInfo,
    },
    /// Closes the session and removes every ephemeral node it owns.
    Close {
        session: SessionId,
    },
    Put {
        path: String,
        eph: Eph,
    },
    Remove {
        path: String,
    },
}

/// The owner's summary (gossiped), compared against the copy a peer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerSummary {
    pub incarnation: u64,
    pub version: u64,
    pub checksum: u32,
}

/// What a peer's delta came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaResult {
    /// Applied; these paths may look different now.
    Applied(Vec<String>),
    /// Already had it.
    Stale,
    /// A version is missing (or a new incarnation began mid-stream): pull the owner's snapshot.
    Gap,
}

/// The winner at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visible<'a> {
    pub stamp: Stamp,
    pub value: &'a Value,
    /// `Some(session)` for an ephemeral node.
    pub ephemeral: Option<SessionId>,
}

/// The state one member holds.
#[derive(Debug, Clone)]
pub struct Replica {
    persistent: BTreeMap<String, PEntry>,
    owners: BTreeMap<MemberId, OwnerState>,
    /// Path → owners holding an ephemeral there.
    eph_index: BTreeMap<String, BTreeSet<MemberId>>,
    buckets: Vec<u64>,
}

fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in *p {
            h ^= *b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The digest bucket of a path.
pub fn bucket_of(path: &str) -> usize {
    (fnv64(&[path.as_bytes()]) % BUCKETS as u64) as usize
}

fn entry_hash(path: &str, e: &PEntry) -> u64 {
    let stamp = postcard::to_stdvec(&e.stamp).expect("in-memory serialization cannot fail");
    let live = [e.value.is_some() as u8];
    fnv64(&[path.as_bytes(), &stamp, &live])
}

/// Is this path one of the system nodes every tree has (`/`, `/zookeeper`…)?
pub fn is_system(path: &str) -> bool {
    roster_core::tree::is_special(path)
}

impl Default for Replica {
    fn default() -> Self {
        Replica::new()
    }
}

impl Replica {
    pub fn new() -> Replica {
        Replica {
            persistent: BTreeMap::new(),
            owners: BTreeMap::new(),
            eph_index: BTreeMap::new(),
            buckets: vec![0; BUCKETS],
        }
    }

    // ---- persistent registers ----

    /// Merge one register; true if it replaced what was there (it is newer).
    pub fn merge_persistent(&mut self, path: &str, e: PEntry) -> bool {
        if self.buckets.is_empty() {
            self.buckets = vec![0; BUCKETS];
        }
        let b = bucket_of(path);
        match self.persistent.get(path) {
            Some(old) if old.stamp >= e.stamp => return false,
            Some(old) => self.buckets[b] ^= entry_hash(path, old),
            None => {}
        }
        self.buckets[b] ^= entry_hash(path, &e);
        self.persistent.insert(path.to_owned(), e);
        true
    }

    /// The register at a path.
    pub fn persistent(&self, path: &str) -> Option<&PEntry> {
        self.persistent.get(path)
    }

    /// All registers, in path order.
    pub fn persistent_entries(&self) -> impl Iterator<Item = (&String, &PEntry)> {
        self.persistent.iter()
    }

    /// Drop tombstones written before `wall_ms` (their deletes have had time to spread).
    pub fn gc_tombstones(&mut self, before_wall_ms: u64) -> Vec<String> {
        let dead: Vec<String> = self
            .persistent
            .iter()
            .filter(|(_, e)| e.value.is_none() && e.stamp.hlc.wall < before_wall_ms)
            .map(|(p, _)| p.clone())
            .collect();
        for p in &dead {
            let e = self.persistent.remove(p).expect("listed above");
            self.buckets[bucket_of(p)] ^= entry_hash(p, &e);
        }
        dead
    }

    /// The persistent digest: one order-independent hash per bucket.
    pub fn buckets(&self) -> Vec<u64> {
        if self.buckets.is_empty() {
            vec![0; BUCKETS]
        } else {
            self.buckets.clone()
        }
    }

    /// Buckets where `theirs` differs from ours.
    pub fn differing_buckets(&self, theirs: &[u64]) -> Vec<u16> {
        let ours = self.buckets();
        (0..BUCKETS)
            .filter(|&i| theirs.get(i) != Some(&ours[i]))
            .map(|i| i as u16)
            .collect()
    }

    /// Our registers in these buckets.
    pub fn entries_in(&self, buckets: &[u16]) -> Vec<(String, PEntry)> {
        let want: BTreeSet<usize> = buckets.iter().map(|b| *b as usize).collect();
        self.persistent
            .iter()
            .filter(|(p, _)| want.contains(&bucket_of(p)))
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect()
    }

    // ---- owner states ----

    /// The state held for an owner.
    pub fn owner(&self, owner: MemberId) -> Option<&OwnerState> {
        self.owners.get(&owner)
    }

    /// Owners held, with their ephemeral counts.
    pub fn owner_counts(&self) -> BTreeMap<MemberId, usize> {
        self.owners
            .iter()
            .map(|(m, s)| (*m, s.ephemeral_count()))
            .collect()
    }

    /// The summary of the state held for an owner.
    pub fn owner_summary(&self, owner: MemberId) -> Option<OwnerSummary> {
        self.owners.get(&owner).map(|s| OwnerSummary {
            incarnation: s.incarnation,
            version: s.version,
            checksum: s.checksum(),
        })
    }

    fn apply_op(&mut self, owner: MemberId, op: &OwnerOp, changed: &mut Vec<String>) {
        let st = self.owners.entry(owner).or_default();
        match op {
            OwnerOp::Open { session, info } => {
                st.sessions.insert(*session, info.clone());
            }
            OwnerOp::Close { session } => {
                st.sessions.remove(session);
                let gone: Vec<String> = st
                    .ephemerals
                    .iter()
                    .filter(|(_, e)| e.session == *session)
                    .map(|(p, _)| p.clone())
                    .collect();
                for p in gone {
                    st.ephemerals.remove(&p);
                    unindex(&mut self.eph_index, &p, owner);
                    changed.push(p);
                }
            }
            OwnerOp::Put { path, eph } => {
                st.ephemerals.insert(path.clone(), eph.clone());
                self.eph_index
                    .entry(path.clone())
                    .or_default()
                    .insert(owner);
                changed.push(path.clone());
            }
            OwnerOp::Remove { path } => {
                if st.ephemerals.remove(path).is_some() {
                    unindex(&mut self.eph_index, path, owner);
                    changed.push(path.clone());
                }
            }
        }
    }

    /// Apply changes the owner made itself (we are the owner): bumps the version per op.
    pub fn apply_own(&mut self, owner: MemberId, incarnation: u64, ops: &[OwnerOp]) -> Vec<String> {
        let mut changed = Vec::new();
        {
            let st = self.owners.entry(owner).or_default();
            st.incarnation = incarnation;
        }
        for op in ops {
            self.apply_op(owner, op, &mut changed);
            self.owners.get_mut(&owner).expect("just made").version += 1;
        }
        changed
    }

    /// Apply an owner's delta: `from` is the owner's version before these ops.
    pub fn apply_delta(
        &mut self,
        owner: MemberId,
        incarnation: u64,
        from: u64,
        ops: &[OwnerOp],
    ) -> DeltaResult {
        let to = from + ops.len() as u64;
        let mut changed = Vec::new();
        match self.owners.get(&owner) {
            Some(st) if st.incarnation > incarnation => return DeltaResult::Stale,
            Some(st) if st.incarnation == incarnation => {
                if to <= st.version {
                    return DeltaResult::Stale;
                }
                if from != st.version {
                    return DeltaResult::Gap;
                }
            }
            // Unknown owner or a new incarnation: only a stream from its very start will do.
            _ => {
                if from != 0 {
                    return DeltaResult::Gap;
                }
                changed.extend(self.drop_owner(owner));
                self.owners.insert(
                    owner,
                    OwnerState {
                        incarnation,
                        ..OwnerState::default()
                    },
                );
            }
        }
        for op in ops {
            self.apply_op(owner, op, &mut changed);
        }
        self.owners.get_mut(&owner).expect("present").version = to;
        DeltaResult::Applied(changed)
    }

    /// Replace an owner's state with its snapshot, unless ours is newer. Returns changed paths.
    pub fn install_owner(&mut self, owner: MemberId, state: OwnerState) -> Vec<String> {
        if let Some(st) = self.owners.get(&owner)
            && (st.incarnation, st.version) > (state.incarnation, state.version)
        {
            return Vec::new();
        }
        let mut changed = self.drop_owner(owner);
        for p in state.ephemerals.keys() {
            self.eph_index.entry(p.clone()).or_default().insert(owner);
            changed.push(p.clone());
        }
        self.owners.insert(owner, state);
        changed
    }

    /// Forget an owner (it is gone): its ephemeral nodes vanish. Returns changed paths.
    pub fn drop_owner(&mut self, owner: MemberId) -> Vec<String> {
        let Some(st) = self.owners.remove(&owner) else {
            return Vec::new();
        };
        let mut changed = Vec::new();
        for p in st.ephemerals.into_keys() {
            unindex(&mut self.eph_index, &p, owner);
            changed.push(p);
        }
        changed
    }

    // ---- the visible namespace ----

    /// The winning candidate at a path, ignoring ancestors (`None`: absent or deleted).
    pub fn winner(&self, path: &str) -> Option<Visible<'_>> {
        let mut best: Option<(Stamp, Option<Visible<'_>>)> = None;
        if let Some(e) = self.persistent.get(path) {
            best = Some((
                e.stamp,
                e.value.as_ref().map(|v| Visible {
                    stamp: e.stamp,
                    value: v,
                    ephemeral: None,
                }),
            ));
        }
        for owner in self.eph_index.get(path).into_iter().flatten() {
            let eph = &self.owners[owner].ephemerals[path];
            if best.as_ref().is_none_or(|(s, _)| eph.stamp > *s) {
                best = Some((
                    eph.stamp,
                    Some(Visible {
                        stamp: eph.stamp,
                        value: &eph.value,
                        ephemeral: Some(eph.session),
                    }),
                ));
            }
        }
        best.and_then(|(_, v)| v)
    }

    /// The node at `path` as clients see it: its winner, if every ancestor is visible and no
    /// ancestor is ephemeral (ephemeral nodes have no children).
    pub fn visible(&self, path: &str) -> Option<Visible<'_>> {
        if is_system(path) {
            return None;
        }
        let mut end = 0;
        while let Some(i) = path[end + 1..].find('/') {
            end += 1 + i;
            let anc = &path[..end];
            if is_system(anc) {
                continue;
            }
            match self.winner(anc) {
                Some(v) if v.ephemeral.is_none() => {}
                _ => return None,
            }
        }
        self.winner(path)
    }

    /// Does a visible (or system) node exist at `path`?
    pub fn exists(&self, path: &str) -> bool {
        is_system(path) || self.visible(path).is_some()
    }

    /// Paths strictly below `path` that the model knows of (persistent or ephemeral).
    pub fn descendants(&self, path: &str) -> Vec<String> {
        let prefix = if path == "/" {
            "/".to_owned()
        } else {
            format!("{path}/")
        };
        let mut out: BTreeSet<String> = BTreeSet::new();
        for (p, _) in self.persistent.range(prefix.clone()..) {
            if !p.starts_with(&prefix) {
                break;
            }
            out.insert(p.clone());
        }
        for (p, _) in self.eph_index.range(prefix.clone()..) {
            if !p.starts_with(&prefix) {
                break;
            }
            out.insert(p.clone());
        }
        out.into_iter().collect()
    }

    /// Every visible path with its content, in path order: what "equal trees" means in AP.
    pub fn visible_map(&self) -> BTreeMap<String, (Vec<u8>, bool)> {
        let mut paths: BTreeSet<&String> = self.persistent.keys().collect();
        paths.extend(self.eph_index.keys());
        paths
            .into_iter()
            .filter_map(|p| {
                self.visible(p)
                    .map(|v| (p.clone(), (v.value.data.clone(), v.ephemeral.is_some())))
            })
            .collect()
    }

    /// Total ephemeral nodes held across owners.
    pub fn ephemeral_total(&self) -> usize {
        self.owners.values().map(|s| s.ephemeral_count()).sum()
    }
}

fn unindex(index: &mut BTreeMap<String, BTreeSet<MemberId>>, path: &str, owner: MemberId) {
    if let Some(set) = index.get_mut(path) {
        set.remove(&owner);
        if set.is_empty() {
            index.remove(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use proptest::prelude::*;

    fn stamp(wall: u64, origin: u64) -> Stamp {
        Stamp {
            hlc: Hlc { wall, logical: 0 },
            origin,
        }
    }

    fn val(d: &str) -> Value {
        Value {
            data: d.as_bytes().to_vec(),
            acl: roster_core::acl::Acl::open_unsafe().into(),
        }
    }

    #[test]
    fn last_writer_wins_and_tombstones_hide() {
        let mut r = Replica::new();
        assert!(r.merge_persistent(
            "/a",
            PEntry {
                stamp: stamp(2, 1),
                value: Some(val("x"))
            }
        ));
        assert!(!r.merge_persistent(
            "/a",
            PEntry {
                stamp: stamp(1, 2),
                value: Some(val("old"))
            }
        ));
        assert_eq!(r.visible("/a").unwrap().value.data, b"x");
        r.merge_persistent(
            "/a/b",
            PEntry {
                stamp: stamp(3, 2),
                value: Some(val("child")),
            },
        );
        assert!(r.visible("/a/b").is_some());
        r.merge_persistent(
            "/a",
            PEntry {
                stamp: stamp(4, 1),
                value: None,
            },
        );
        assert!(r.visible("/a").is_none());
        assert!(
            r.visible("/a/b").is_none(),
            "an orphan is hidden with its parent"
        );
        assert_eq!(r.descendants("/a"), vec!["/a/b".to_string()]);
    }

    #[test]
    fn owner_deltas_detect_gaps_and_new_incarnations() {
        let mut r = Replica::new();
        let eph = |s| Eph {
            stamp: stamp(s, 7),
            session: 70,
            value: val("e"),
        };
        let open = OwnerOp::Open {
            session: 70,
            info: SessionInfo { timeout_ms: 1000 },
        };
        assert_eq!(
            r.apply_delta(7, 1, 0, std::slice::from_ref(&open)),
            DeltaResult::Applied(vec![])
        );
        let put = OwnerOp::Put {
            path: "/e".into(),
            eph: eph(5),
        };
        assert_eq!(
            r.apply_delta(7, 1, 2, std::slice::from_ref(&put)),
            DeltaResult::Gap
        );
        assert_eq!(
            r.apply_delta(7, 1, 1, std::slice::from_ref(&put)),
            DeltaResult::Applied(vec!["/e".into()])
        );
        assert_eq!(r.apply_delta(7, 1, 1, &[put]), DeltaResult::Stale);
        assert_eq!(r.visible("/e").unwrap().ephemeral, Some(70));
        // The owner restarted: a new incarnation mid-stream means a pull.
        assert_eq!(
            r.apply_delta(7, 2, 3, std::slice::from_ref(&open)),
            DeltaResult::Gap
        );
        // From its start, the new incarnation replaces the old state.
        assert_eq!(
            r.apply_delta(7, 2, 0, &[open]),
            DeltaResult::Applied(vec!["/e".into()])
        );
        assert!(r.visible("/e").is_none());
    }

    /// A write as it travels between members.
    #[derive(Debug, Clone)]
    enum Write {
        Persist(String, PEntry),
        Owner(MemberId, Vec<OwnerOp>),
    }

    fn arb_writes() -> impl Strategy<Value = Vec<Write>> {
        let paths = prop::sample::select(vec!["/a", "/a/b", "/a/c", "/d", "/d/e", "/a/b/f"]);
        let persist = (paths.clone(), 1u64..20, 1u64..4, any::<bool>(), 0u8..3).prop_map(
            |(p, w, o, live, d)| {
                Write::Persist(
                    p.to_string(),
                    PEntry {
                        stamp: stamp(w, o),
                        value: live.then(|| val(&format!("v{d}"))),
                    },
                )
            },
        );
        let owner_op = (paths, 1u64..20, 0u8..3, any::<bool>(), 1i64..3)
            .prop_map(|(p, w, d, put, s)| (p.to_string(), w, d, put, s));
        let owner = (1u64..4, prop::collection::vec(owner_op, 1..4)).prop_map(|(o, ops)| {
            let ops = ops
                .into_iter()
                .map(|(p, w, d, put, s)| {
                    let session = (o as i64) << 8 | s;
                    if put {
                        OwnerOp::Put {
                            path: p,
                            eph: Eph {
                                stamp: stamp(w, o),
                                session,
                                value: val(&format!("e{d}")),
                            },
                        }
                    } else if w % 3 == 0 {
                        OwnerOp::Close { session }
                    } else {
                        OwnerOp::Remove { path: p }
                    }
                })
                .collect();
            Write::Owner(o, ops)
        });
        prop::collection::vec(prop_oneof![persist, owner], 1..30)
    }

    /// Deliver writes in some order; owner deltas arrive in order per owner (as over one
    /// stream), possibly with gaps repaired by the owner's snapshot, persistent ones in any order
    /// and duplicated.
    fn deliver(writes: &[Write], order: &[usize], dup: &[bool]) -> Replica {
        // The owners' own states, built in write order (the owner's truth).
        let mut owners: BTreeMap<MemberId, Replica> = BTreeMap::new();
        let mut deltas: Vec<(MemberId, u64, Vec<OwnerOp>)> = Vec::new();
        for w in writes {
            if let Write::Owner(o, ops) = w {
                let r = owners.entry(*o).or_default();
                let from = r.owner(*o).map(|s| s.version).unwrap_or(0);
                r.apply_own(*o, 1, ops);
                deltas.push((*o, from, ops.clone()));
            }
        }
        let mut r = Replica::new();
        let mut next_delta = 0;
        let mut pull = false;
        // `order` is a permutation: every write is delivered at least once.
        for (k, &i) in order.iter().enumerate() {
            match &writes[i] {
                Write::Persist(p, e) => {
                    r.merge_persistent(p, e.clone());
                    if dup[k % dup.len()] {
                        r.merge_persistent(p, e.clone());
                    }
                }
                Write::Owner(..) => {
                    // Deltas ride one ordered stream; some are lost (repaired by snapshot below).
                    if let Some((o, from, ops)) = deltas.get(next_delta) {
                        if dup[k % dup.len()] {
                            if r.apply_delta(*o, 1, *from, ops) == DeltaResult::Gap {
                                pull = true;
                            }
                        } else {
                            pull = true;
                        }
                        next_delta += 1;
                    }
                }
            }
        }
        for (o, src) in &owners {
            let theirs = src.owner_summary(*o);
            if pull || r.owner_summary(*o) != theirs {
                r.install_owner(*o, src.owner(*o).unwrap().clone());
            }
        }
        r
    }

    fn writes_and_orders() -> impl Strategy<Value = (Vec<Write>, Vec<usize>, Vec<usize>)> {
        arb_writes().prop_flat_map(|mut w| {
            // Real stamps are unique (HLC + origin): make the generated ones so.
            for (i, x) in w.iter_mut().enumerate() {
                match x {
                    Write::Persist(_, e) => e.stamp.hlc.logical = (i * 10) as u32,
                    Write::Owner(_, ops) => {
                        for (j, op) in ops.iter_mut().enumerate() {
                            if let OwnerOp::Put { eph, .. } = op {
                                eph.stamp.hlc.logical = (i * 10 + j + 1) as u32;
                            }
                        }
                    }
                }
            }
            let n = w.len();
            let idx: Vec<usize> = (0..n).collect();
            (
                Just(w),
                Just(idx.clone()).prop_shuffle(),
                Just(idx).prop_shuffle(),
            )
        })
    }

    proptest! {
        #[test]
        fn any_delivery_order_gives_the_same_tree(
            (writes, order_a, order_b) in writes_and_orders(),
            dup in prop::collection::vec(any::<bool>(), 1..8),
        ) {
            let a = deliver(&writes, &order_a, &dup);
            let b = deliver(&writes, &order_b, &[true]);
            prop_assert_eq!(a.visible_map(), b.visible_map());
            prop_assert_eq!(a.buckets(), b.buckets());
            for o in 1..4 {
                prop_assert_eq!(a.owner_summary(o), b.owner_summary(o));
            }
        }
    }
}
