//! A znode's `Stat`, field for field as ZooKeeper fills it.

use serde::{Deserialize, Serialize};

/// Zxid: `epoch << 32 | counter`, strictly increasing across the cluster's life.
pub type Zxid = i64;
/// Session id (ZooKeeper: high byte = server id).
pub type SessionId = i64;

/// ZooKeeper's `Stat` record (68 bytes on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stat {
    pub czxid: Zxid,
    pub mzxid: Zxid,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub num_children: i32,
    pub pzxid: Zxid,
}

/// `ephemeralOwner` of container nodes.
pub const CONTAINER_EPHEMERAL_OWNER: i64 = i64::MIN; // 0x8000_0000_0000_0000
/// High byte of `ephemeralOwner` for TTL nodes; the low bits hold the TTL in ms.
pub const TTL_MASK: i64 = 0xFF00_0000_0000_0000u64 as i64;
/// Largest TTL ZooKeeper accepts (`EphemeralType.MAX_EXTENDED_SERVER_ID` leaves 40 bits).
pub const MAX_TTL_MS: i64 = 0x00FF_FFFF_FFFF;

/// What kind of node an `ephemeralOwner` value describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerKind {
    Persistent,
    Ephemeral(SessionId),
    Container,
    Ttl(i64),
}

impl OwnerKind {
    pub fn of(ephemeral_owner: i64) -> OwnerKind {
        if ephemeral_owner == 0 {
            OwnerKind::Persistent
        } else if ephemeral_owner == CONTAINER_EPHEMERAL_OWNER {
            OwnerKind::Container
        } else if ephemeral_owner & TTL_MASK == TTL_MASK {
            OwnerKind::Ttl(ephemeral_owner & MAX_TTL_MS)
        } else {
            OwnerKind::Ephemeral(ephemeral_owner)
        }
    }

    pub fn owner_value(self) -> i64 {
        match self {
            OwnerKind::Persistent => 0,
            OwnerKind::Ephemeral(s) => s,
            OwnerKind::Container => CONTAINER_EPHEMERAL_OWNER,
            OwnerKind::Ttl(ms) => TTL_MASK | (ms & MAX_TTL_MS),
        }
    }
}

/// `CreateMode` as the wire flags encode it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CreateMode {
    Persistent,
    Ephemeral,
    PersistentSequential,
    EphemeralSequential,
    Container,
    PersistentWithTtl,
    PersistentSequentialWithTtl,
}

impl CreateMode {
    pub fn from_flags(flags: i32) -> Option<CreateMode> {
        Some(match flags {
            0 => CreateMode::Persistent,
            1 => CreateMode::Ephemeral,
            2 => CreateMode::PersistentSequential,
            3 => CreateMode::EphemeralSequential,
            4 => CreateMode::Container,
            5 => CreateMode::PersistentWithTtl,
            6 => CreateMode::PersistentSequentialWithTtl,
            _ => return None,
        })
    }
    pub fn flags(self) -> i32 {
        match self {
            CreateMode::Persistent => 0,
            CreateMode::Ephemeral => 1,
            CreateMode::PersistentSequential => 2,
            CreateMode::EphemeralSequential => 3,
            CreateMode::Container => 4,
            CreateMode::PersistentWithTtl => 5,
            CreateMode::PersistentSequentialWithTtl => 6,
        }
    }
    pub fn is_sequential(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentSequential
                | CreateMode::EphemeralSequential
                | CreateMode::PersistentSequentialWithTtl
        )
    }
    pub fn is_ephemeral(self) -> bool {
        matches!(
            self,
            CreateMode::Ephemeral | CreateMode::EphemeralSequential
        )
    }
    pub fn is_ttl(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentWithTtl | CreateMode::PersistentSequentialWithTtl
        )
    }
}
