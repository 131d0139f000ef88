//! ACLs and authentication: the `world`, `auth`, `digest`, `ip` and `super` schemes.

use base64::Engine as _;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

pub mod perms {
    pub const READ: i32 = 1;
    pub const WRITE: i32 = 2;
    pub const CREATE: i32 = 4;
    pub const DELETE: i32 = 8;
    pub const ADMIN: i32 = 16;
    pub const ALL: i32 = 31;
}

/// An identity: `scheme:id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Id {
    pub scheme: String,
    pub id: String,
}

impl Id {
    pub fn new(scheme: &str, id: &str) -> Id {
        Id {
            scheme: scheme.to_owned(),
            id: id.to_owned(),
        }
    }
}

/// One ACL entry: permission bits granted to an identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Acl {
    pub perms: i32,
    pub id: Id,
}

impl Acl {
    /// `world:anyone` with all permissions (`ZooDefs.Ids.OPEN_ACL_UNSAFE`).
    pub fn open_unsafe() -> Vec<Acl> {
        vec![Acl {
            perms: perms::ALL,
            id: Id::new("world", "anyone"),
        }]
    }
    /// `world:anyone` read-only (`ZooDefs.Ids.READ_ACL_UNSAFE`).
    pub fn read_unsafe() -> Vec<Acl> {
        vec![Acl {
            perms: perms::READ,
            id: Id::new("world", "anyone"),
        }]
    }
}

/// An ACL list as the tree and its transactions hold it: shared, and interned ([`intern`]).
pub type AclList = Arc<[Acl]>;

/// Distinct lists kept by [`intern`]; past this many, new lists are allocated per node instead.
const INTERNED_MAX: usize = 4096;

static INTERNED: LazyLock<Mutex<HashSet<AclList>>> = LazyLock::new(Default::default);

/// The shared copy of `acl`. A deployment's nodes carry a handful of distinct lists (most of them
/// `world:anyone`), so each is kept once, as ZooKeeper's `ReferenceCountedACLCache` does, rather
/// than as two strings and a list per node: that is a few allocations less per create and ~100
/// bytes less per node. Lists are interned where they come into being — [`fixup`] for a
/// client's, [`interned`] for decoded ones, snapshot restore — so the tree only clones the
/// pointer. Interned lists are never dropped; the table stops growing at [`INTERNED_MAX`] (a
/// client that writes thousands of distinct ACLs gets its own copies).
pub fn intern(acl: &[Acl]) -> AclList {
    let mut t = INTERNED.lock();
    if let Some(a) = t.get(acl) {
        return a.clone();
    }
    let a: AclList = acl.into();
    if t.len() < INTERNED_MAX {
        t.insert(a.clone());
    }
    a
}

/// Serde `deserialize_with` for an [`AclList`] field: decodes the list (a sequence, as a `Vec`
/// is encoded) and returns its shared copy.
pub fn interned<'de, D: serde::Deserializer<'de>>(d: D) -> Result<AclList, D::Error> {
    let list = Vec::<Acl>::deserialize(d)?;
    Ok(intern(&list))
}

/// `digest` id for `user:password`: `user:BASE64(SHA1("user:password"))`.
pub fn digest_id(user_password: &str) -> String {
    let user = user_password.split(':').next().unwrap_or("");
    let hash = Sha1::digest(user_password.as_bytes());
    format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

/// The identities a connection holds: its `ip` id plus whatever `addauth` gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthInfo {
    pub ids: Vec<Id>,
}

impl AuthInfo {
    pub fn is_super(&self) -> bool {
        self.ids.iter().any(|i| i.scheme == "super")
    }
}

/// Does `acl` grant `perm` to a holder of `auth`?
pub fn check(acl: &[Acl], perm: i32, auth: &AuthInfo) -> bool {
    if auth.is_super() {
        return true;
    }
    // ZooKeeper: an empty ACL list grants everything.
    if acl.is_empty() {
        return true;
    }
    acl.iter().any(|a| {
        a.perms & perm != 0
            && match a.id.scheme.as_str() {
                "world" => a.id.id == "anyone",
                "ip" => auth
                    .ids
                    .iter()
                    .any(|i| i.scheme == "ip" && ip_matches(&a.id.id, &i.id)),
                scheme => auth
                    .ids
                    .iter()
                    .any(|i| i.scheme == scheme && i.id == a.id.id),
            }
    })
}

/// `ip:addr[/bits]` matching as ZooKeeper's IPAuthenticationProvider does.
pub fn ip_matches(pattern: &str, client: &str) -> bool {
    let (addr, bits) = match pattern.split_once('/') {
        Some((a, b)) => match b.parse::<u32>() {
            Ok(b) => (a, Some(b)),
            Err(_) => return false,
        },
        None => (pattern, None),
    };
    let (Ok(p), Ok(c)) = (addr.parse::<IpAddr>(), client.parse::<IpAddr>()) else {
        return false;
    };
    let (p, c, max): (u128, u128, u32) = match (p, c) {
        (IpAddr::V4(p), IpAddr::V4(c)) => (u32::from(p) as u128, u32::from(c) as u128, 32),
        (IpAddr::V6(p), IpAddr::V6(c)) => (u128::from(p), u128::from(c), 128),
        _ => return false,
    };
    let bits = bits.unwrap_or(max).min(max);
    if bits == 0 {
        return true;
    }
    let shift = max - bits;
    (p >> shift) == (c >> shift)
}

/// Is `id` well formed for its scheme (`setACL`/`create` validation → `InvalidACL`)?
pub fn valid_id(id: &Id) -> bool {
    match id.scheme.as_str() {
        "world" => id.id == "anyone",
        "auth" => true,
        "digest" => id
            .id
            .split_once(':')
            .is_some_and(|(u, h)| !u.is_empty() && !h.is_empty()),
        "ip" => {
            let addr = id.id.split('/').next().unwrap_or("");
            addr.parse::<IpAddr>().is_ok()
        }
        "super" | "sasl" | "x509" => !id.id.is_empty(),
        _ => false,
    }
}

/// Resolve an ACL as given on create/setACL: `auth` entries become the caller's ids
/// (every id except `ip`, as ZooKeeper's `fixupACL`), other entries are validated.
/// Returns `None` when the ACL is invalid (`InvalidACL`).
pub fn fixup(acl: &[Acl], auth: &AuthInfo) -> Option<AclList> {
    if acl.is_empty() {
        return None;
    }
    // The usual case, a list of valid concrete ids without repeats, is interned as it is.
    if acl
        .iter()
        .enumerate()
        .all(|(i, a)| a.id.scheme != "auth" && valid_id(&a.id) && !acl[..i].contains(a))
    {
        return Some(intern(acl));
    }
    let mut out: Vec<Acl> = Vec::with_capacity(acl.len());
    for a in acl {
        if a.id.scheme == "auth" {
            let mut any = false;
            for id in auth
                .ids
                .iter()
                .filter(|i| i.scheme != "ip" && i.scheme != "super")
            {
                any = true;
                let e = Acl {
                    perms: a.perms,
                    id: id.clone(),
                };
                if !out.contains(&e) {
                    out.push(e);
                }
            }
            if !any {
                return None;
            }
        } else {
            if !valid_id(&a.id) {
                return None;
            }
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
    }
    Some(intern(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_zookeeper() {
        // DigestAuthenticationProvider.generateDigest("super:test") from ZooKeeper's docs.
        assert_eq!(
            digest_id("super:test"),
            "super:D/InIHSb7yEEbrWz8b9l71RjZJU="
        );
    }

    #[test]
    fn ip_prefixes() {
        assert!(ip_matches("10.0.0.0/8", "10.1.2.3"));
        assert!(!ip_matches("10.0.0.0/8", "11.1.2.3"));
        assert!(ip_matches("127.0.0.1", "127.0.0.1"));
        assert!(!ip_matches("127.0.0.1", "::1"));
    }

    #[test]
    fn auth_scheme_expands_to_caller_ids() {
        let auth = AuthInfo {
            ids: vec![Id::new("ip", "1.2.3.4"), Id::new("digest", "u:x")],
        };
        let acl = vec![Acl {
            perms: perms::ALL,
            id: Id::new("auth", ""),
        }];
        assert_eq!(
            fixup(&acl, &auth).unwrap()[..],
            [Acl {
                perms: 31,
                id: Id::new("digest", "u:x")
            }]
        );
        assert!(fixup(&acl, &AuthInfo::default()).is_none());
    }

    #[test]
    fn equal_lists_are_shared_and_repeats_dropped() {
        let auth = AuthInfo::default();
        let a = fixup(&Acl::open_unsafe(), &auth).unwrap();
        let b = fixup(&Acl::open_unsafe(), &auth).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one copy of world:anyone");
        let op = crate::txn::TxnOp::SetAcl {
            path: "/p".into(),
            acl: Acl::open_unsafe().into(),
            version: 0,
        };
        let decoded: crate::txn::TxnOp =
            postcard::from_bytes(&postcard::to_stdvec(&op).unwrap()).unwrap();
        let crate::txn::TxnOp::SetAcl { acl: decoded, .. } = decoded else {
            unreachable!()
        };
        assert!(
            Arc::ptr_eq(&decoded, &a),
            "a decoded list is the shared one"
        );
        let twice = [Acl::open_unsafe(), Acl::open_unsafe()].concat();
        let c = fixup(&twice, &auth).unwrap();
        assert!(
            Arc::ptr_eq(&c, &a),
            "a repeated entry is dropped, then shared"
        );
        assert!(
            fixup(
                &[Acl {
                    perms: 31,
                    id: Id::new("digest", "bad")
                }],
                &auth
            )
            .is_none()
        );
    }
}
