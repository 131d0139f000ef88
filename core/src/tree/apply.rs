//! Applying a committed `Txn` to the tree: the only way state changes. Deterministic; fires the
//! watches of this node's clients as it goes.

use super::{Node, SessionMeta, Tree};
use crate::stat::OwnerKind;
use crate::txn::{OpResult, Outcome, Txn, TxnOp};
use crate::watch::EventType;
use crate::{Code, Stat, Zxid, path};
use imbl::OrdSet;
use std::sync::Arc;

impl Tree {
    /// Apply one committed transaction; returns what it came to.
    pub fn apply(&mut self, txn: &Txn) -> Outcome {
        let out = match &txn.op {
            TxnOp::CreateSession { timeout_ms, passwd } => {
                self.sessions.insert(
                    txn.session,
                    SessionMeta {
                        timeout_ms: *timeout_ms,
                        passwd: passwd.clone(),
                    },
                );
                Outcome::SessionCreated {
                    session: txn.session,
                    timeout_ms: *timeout_ms,
                    passwd: passwd.clone(),
                }
            }
            TxnOp::CloseSession => {
                let paths: Vec<String> = self
                    .ephemerals
                    .remove(&txn.session)
                    .map(|s| s.into_iter().collect())
                    .unwrap_or_default();
                for p in paths {
                    let _ = self.delete_node(&p, txn.zxid);
                }
                self.sessions.remove(&txn.session);
                Outcome::SessionClosed
            }
            TxnOp::Multi(ops) => {
                let results = ops
                    .iter()
                    .map(|op| self.apply_op(op, txn.zxid, txn.time))
                    .collect();
                Outcome::Multi(results)
            }
            op => match self.apply_op(op, txn.zxid, txn.time) {
                OpResult::Error(c) => Outcome::Failed(c),
                r => Outcome::Op(r),
            },
        };
        if txn.zxid > self.last_zxid {
            self.last_zxid = txn.zxid;
        }
        out
    }

    fn apply_op(&mut self, op: &TxnOp, zxid: Zxid, time: i64) -> OpResult {
        let r = match op {
            TxnOp::Create {
                path,
                data,
                acl,
                owner,
                parent_cversion,
            } => self.create_node(path, data, acl, *owner, *parent_cversion, zxid, time),
            TxnOp::Delete { path } => self.delete_node(path, zxid).map(|()| OpResult::Deleted),
            TxnOp::SetData {
                path,
                data,
                version,
            } => {
                let Some((key, node)) = self.nodes.get_key_value_mut(path.as_str()) else {
                    return OpResult::Error(Code::NoNode);
                };
                let node = Arc::make_mut(node);
                self.data_size = self.data_size + data.len() as u64 - node.data.len() as u64;
                node.data.clone_from(data);
                node.stat.data_length = data.len() as i32;
                node.stat.version = *version;
                node.stat.mzxid = zxid;
                node.stat.mtime = time;
                let stat = node.client_stat();
                let key = key.clone();
                self.watches
                    .get_mut()
                    .trigger_shared(EventType::NodeDataChanged, &key, zxid);
                Ok(OpResult::DataSet { stat })
            }
            TxnOp::SetAcl { path, acl, version } => {
                let Some(node) = self.nodes.get_mut(path.as_str()).map(Arc::make_mut) else {
                    return OpResult::Error(Code::NoNode);
                };
                node.acl = acl.clone();
                node.stat.aversion = *version;
                Ok(OpResult::AclSet {
                    stat: node.client_stat(),
                })
            }
            TxnOp::Check { .. } => Ok(OpResult::Checked),
            TxnOp::CreateSession { .. } | TxnOp::CloseSession | TxnOp::Multi(_) => {
                Err(Code::BadArguments)
            }
        };
        r.unwrap_or_else(OpResult::Error)
    }

    #[allow(clippy::too_many_arguments)]
    fn create_node(
        &mut self,
        path: &str,
        data: &[u8],
        acl: &crate::acl::AclList,
        owner: i64,
        parent_cversion: i32,
        zxid: Zxid,
        time: i64,
    ) -> Result<OpResult, Code> {
        if self.nodes.contains_key(path) {
            return Err(Code::NodeExists);
        }
        let parent_path = path::parent(path);
        let parent = self
            .nodes
            .get_mut(parent_path)
            .map(Arc::make_mut)
            .ok_or(Code::NoNode)?;
        parent.children.insert(path::name(path).to_owned());
        parent.stat.num_children = parent.children.len() as i32;
        if parent_cversion > parent.stat.cversion {
            parent.stat.cversion = parent_cversion;
            parent.stat.pzxid = zxid;
        }
        let stat = Stat {
            czxid: zxid,
            mzxid: zxid,
            ctime: time,
            mtime: time,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: owner,
            data_length: data.len() as i32,
            num_children: 0,
            pzxid: zxid,
        };
        let key: Arc<str> = path.into();
        self.nodes.insert(
            key.clone(),
            Arc::new(Node {
                data: data.to_vec(),
                acl: acl.clone(),
                stat,
                children: OrdSet::new(),
            }),
        );
        self.data_size += Tree::node_size(path, data);
        match OwnerKind::of(owner) {
            OwnerKind::Ephemeral(s) => {
                self.ephemerals
                    .entry(s)
                    .or_default()
                    .insert(path.to_owned());
            }
            OwnerKind::Container | OwnerKind::Ttl(_) => {
                self.extended.insert(path.to_owned());
            }
            OwnerKind::Persistent => {}
        }
        let w = self.watches.get_mut();
        w.trigger_shared(EventType::NodeCreated, &key, zxid);
        w.trigger(EventType::NodeChildrenChanged, parent_path, zxid);
        Ok(OpResult::Created {
            path: path.to_owned(),
            stat: super::client_stat(&stat),
        })
    }

    pub(crate) fn delete_node(&mut self, path: &str, zxid: Zxid) -> Result<(), Code> {
        match self.nodes.get(path) {
            None => return Err(Code::NoNode),
            Some(n) if !n.children.is_empty() => return Err(Code::NotEmpty),
            Some(_) => {}
        }
        let (key, node) = self.nodes.remove_with_key(path).expect("checked above");
        self.data_size = self
            .data_size
            .saturating_sub(Tree::node_size(path, &node.data));
        let parent_path = path::parent(path);
        if let Some(parent) = self.nodes.get_mut(parent_path).map(Arc::make_mut) {
            parent.children.remove(path::name(path));
            parent.stat.num_children = parent.children.len() as i32;
            if zxid > parent.stat.pzxid {
                parent.stat.pzxid = zxid;
            }
        }
        match OwnerKind::of(node.stat.ephemeral_owner) {
            OwnerKind::Ephemeral(s) => {
                if let Some(set) = self.ephemerals.get_mut(&s) {
                    set.remove(path);
                    if set.is_empty() {
                        self.ephemerals.remove(&s);
                    }
                }
            }
            OwnerKind::Container | OwnerKind::Ttl(_) => {
                self.extended.remove(path);
            }
            OwnerKind::Persistent => {}
        }
        let w = self.watches.get_mut();
        w.trigger_shared(EventType::NodeDeleted, &key, zxid);
        w.trigger(EventType::NodeChildrenChanged, parent_path, zxid);
        Ok(())
    }
}
