//! Bring this member's ZooKeeper tree in line with the model for the paths that may have changed,
//! as ordinary transactions: each gets this member's next zxid, so zxids stay strictly increasing
//! locally and watches fire as for any change. Deletes go children first, creates parents first.

use crate::model::Replica;
use roster_core::tree::Tree;
use roster_core::txn::{Txn, TxnOp};
use roster_core::{Zxid, path};
use std::collections::BTreeSet;
use std::sync::Arc;

/// What a path should hold.
struct Target {
    data: Vec<u8>,
    acl: roster_core::acl::AclList,
    owner: i64,
    time: i64,
}

/// Apply to `tree` whatever the model says about `changed` (and everything below those paths).
/// `next_zxid` numbers the transactions. Returns them, in order, for the applied stream.
pub fn materialize(
    model: &Replica,
    tree: &mut Tree,
    changed: &BTreeSet<String>,
    next_zxid: &mut Zxid,
) -> Vec<Arc<Txn>> {
    let mut paths: BTreeSet<String> = BTreeSet::new();
    for p in changed {
        if crate::model::is_system(p) {
            continue;
        }
        paths.insert(p.clone());
        paths.extend(model.descendants(p));
        // What the tree holds below it, too (it may have vanished from the model entirely).
        let mut stack = vec![p.clone()];
        while let Some(q) = stack.pop() {
            if let Some(n) = tree.get(&q) {
                for c in &n.children {
                    let cp = path::join(&q, c);
                    stack.push(cp.clone());
                    paths.insert(cp);
                }
            }
        }
    }
    let target = |p: &str| {
        model.visible(p).map(|v| Target {
            data: v.value.data.clone(),
            acl: v.value.acl.clone(),
            owner: v.ephemeral.unwrap_or(0),
            time: v.stamp.hlc.wall as i64,
        })
    };
    let mut out = Vec::new();
    let mut emit = |tree: &mut Tree, session: i64, time: i64, op: TxnOp| {
        let txn = Txn {
            zxid: *next_zxid,
            time,
            session,
            op,
        };
        *next_zxid += 1;
        tree.apply(&txn);
        out.push(Arc::new(txn));
    };
    let targets: Vec<(String, Option<Target>)> = paths
        .into_iter()
        .map(|p| {
            let t = target(&p);
            (p, t)
        })
        .collect();
    // Deletes (and owner changes of childless nodes), deepest first.
    for (p, t) in targets.iter().rev() {
        let Some(n) = tree.get(p) else { continue };
        let owner_changed = t
            .as_ref()
            .is_some_and(|t| t.owner != n.stat.ephemeral_owner && n.children.is_empty());
        if t.is_none() || owner_changed {
            if !n.children.is_empty() {
                // Its children are in `targets` too and were removed above unless they are
                // visible, which the ancestor rule excludes; keep the tree consistent anyway.
                tracing::warn!(path = %p, "not deleting a node that still has children");
                continue;
            }
            let time = t.as_ref().map(|t| t.time).unwrap_or(n.stat.mtime);
            emit(tree, 0, time, TxnOp::Delete { path: p.clone() });
        }
    }
    // Creates and updates, parents first.
    for (p, t) in &targets {
        let Some(t) = t else { continue };
        match tree.get(p) {
            None => {
                let Some(parent) = tree.get(path::parent(p)) else {
                    continue; // the ancestor rule makes this unreachable
                };
                let op = TxnOp::Create {
                    path: p.clone(),
                    data: t.data.clone(),
                    acl: t.acl.clone(),
                    owner: t.owner,
                    parent_cversion: parent.stat.cversion + 1,
                };
                emit(tree, t.owner, t.time, op);
            }
            Some(n) => {
                if n.data != t.data {
                    let op = TxnOp::SetData {
                        path: p.clone(),
                        data: t.data.clone(),
                        version: n.stat.version.wrapping_add(1),
                    };
                    emit(tree, 0, t.time, op);
                }
                let n = tree.get(p).expect("still there");
                if *n.acl != *t.acl {
                    let op = TxnOp::SetAcl {
                        path: p.clone(),
                        acl: t.acl.clone(),
                        version: n.stat.aversion.wrapping_add(1),
                    };
                    emit(tree, 0, t.time, op);
                }
            }
        }
    }
    out
}

/// The tree's user-visible content (path → data, ephemeral?), system nodes left out: equal on
/// converged members, whatever their zxids.
pub fn tree_content(tree: &Tree) -> std::collections::BTreeMap<String, (Vec<u8>, bool)> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec!["/".to_string()];
    while let Some(p) = stack.pop() {
        let Some(n) = tree.get(&p) else { continue };
        for c in &n.children {
            stack.push(path::join(&p, c));
        }
        if !crate::model::is_system(&p) {
            out.insert(p, (n.data.clone(), n.stat.ephemeral_owner != 0));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::{Hlc, Stamp};
    use crate::model::{Eph, OwnerOp, PEntry, Value};
    use roster_core::acl::Acl;

    fn put(r: &mut Replica, p: &str, wall: u64, v: Option<&str>) -> String {
        r.merge_persistent(
            p,
            PEntry {
                stamp: Stamp {
                    hlc: Hlc { wall, logical: 0 },
                    origin: 1,
                },
                value: v.map(|d| Value {
                    data: d.into(),
                    acl: Acl::open_unsafe().into(),
                }),
            },
        );
        p.to_string()
    }

    #[test]
    fn tree_follows_the_model() {
        let mut r = Replica::new();
        let mut t = Tree::new();
        let mut z: Zxid = 1 << 32;
        let mut ch: BTreeSet<String> = BTreeSet::new();
        // Child before parent in arrival order: hidden until the parent exists.
        ch.insert(put(&mut r, "/a/b", 2, Some("b")));
        materialize(&r, &mut t, &ch, &mut z);
        assert!(t.get("/a/b").is_none());
        ch.insert(put(&mut r, "/a", 1, Some("a")));
        let txns = materialize(&r, &mut t, &ch, &mut z);
        assert_eq!(txns.len(), 2);
        assert_eq!(t.get("/a/b").unwrap().data, b"b");
        assert!(txns.windows(2).all(|w| w[0].zxid < w[1].zxid));
        // An ephemeral on top of nothing, then the parent deleted: all gone, children first.
        r.apply_own(
            2,
            1,
            &[OwnerOp::Put {
                path: "/a/e".into(),
                eph: Eph {
                    stamp: Stamp {
                        hlc: Hlc {
                            wall: 3,
                            logical: 0,
                        },
                        origin: 2,
                    },
                    session: 99,
                    value: Value {
                        data: b"e".to_vec(),
                        acl: Acl::open_unsafe().into(),
                    },
                },
            }],
        );
        let ch: BTreeSet<String> = ["/a/e".to_string()].into();
        materialize(&r, &mut t, &ch, &mut z);
        assert_eq!(t.get("/a/e").unwrap().stat.ephemeral_owner, 99);
        assert_eq!(t.ephemerals_of(99).count(), 1);
        let ch: BTreeSet<String> = [put(&mut r, "/a", 4, None)].into();
        materialize(&r, &mut t, &ch, &mut z);
        assert!(t.get("/a").is_none() && t.get("/a/e").is_none());
        assert_eq!(tree_content(&t), r.visible_map());
    }
}
