//! ZooKeeper's client protocol records (`zookeeper.jute`, `org.apache.zookeeper.proto`), as the
//! server reads and writes them: the session handshake, requests, replies and watch events.
//!
//! Verified against apache/zookeeper (3.8.4, 3.9.x and master): `zookeeper.jute`, `ZooDefs`,
//! `MultiOperationRecord`, `MultiResponse`, `Op`, `ProtocolManager`, `ZooKeeperServer`,
//! `Request.isValid`, `PrepRequestProcessor`, `FinalRequestProcessor`, `NIOServerCnxn`.

mod connect;
mod request;
mod response;

pub use connect::{
    ConnectRequest, ConnectResponse, decode_connect_request, encode_connect_response,
};
pub use request::{
    CreateKind, MultiOp, ReadOp, Request, RequestDecodeError, RequestHeader, SetWatches,
    SetWatches2, decode_request, encode_request,
};
pub use response::{MultiResult, Response, encode_reply, encode_watch_event};

use super::jute::{DecodeError, Reader, write_int, write_long, write_ustring, write_vec_len};
use bytes::BufMut;
use roster_core::acl::{Acl, Id};
use roster_core::stat::Stat;

/// `ZooDefs.OpCode`: the `type` field of a request header.
pub mod op {
    /// Server-internal; never valid from a client.
    pub const NOTIFICATION: i32 = 0;
    /// `create` → CreateResponse.
    pub const CREATE: i32 = 1;
    /// `delete` → no body.
    pub const DELETE: i32 = 2;
    /// `exists` → ExistsResponse.
    pub const EXISTS: i32 = 3;
    /// `getData` → GetDataResponse.
    pub const GET_DATA: i32 = 4;
    /// `setData` → SetDataResponse.
    pub const SET_DATA: i32 = 5;
    /// `getACL` → GetACLResponse.
    pub const GET_ACL: i32 = 6;
    /// `setACL` → SetACLResponse.
    pub const SET_ACL: i32 = 7;
    /// `getChildren` → GetChildrenResponse.
    pub const GET_CHILDREN: i32 = 8;
    /// `sync` → SyncResponse.
    pub const SYNC: i32 = 9;
    /// `ping` (xid -2) → header only.
    pub const PING: i32 = 11;
    /// `getChildren2` → GetChildren2Response.
    pub const GET_CHILDREN2: i32 = 12;
    /// `check` (version check): a multi op; top level is Unimplemented since 3.8.5/3.9.3.
    pub const CHECK: i32 = 13;
    /// `multi` (atomic writes) → MultiResponse.
    pub const MULTI: i32 = 14;
    /// `create2` → Create2Response.
    pub const CREATE2: i32 = 15;
    /// `reconfig` → GetDataResponse (we answer ReconfigDisabled).
    pub const RECONFIG: i32 = 16;
    /// `checkWatches` → no body.
    pub const CHECK_WATCHES: i32 = 17;
    /// `removeWatches` → no body.
    pub const REMOVE_WATCHES: i32 = 18;
    /// `createContainer` → Create2Response.
    pub const CREATE_CONTAINER: i32 = 19;
    /// `deleteContainer`: server-internal.
    pub const DELETE_CONTAINER: i32 = 20;
    /// `createTTL` → Create2Response.
    pub const CREATE_TTL: i32 = 21;
    /// `multiRead` (non-atomic reads) → MultiResponse.
    pub const MULTI_READ: i32 = 22;
    /// `auth` (xid -4) → header only.
    pub const AUTH: i32 = 100;
    /// `setWatches` (xid -8) → header only.
    pub const SET_WATCHES: i32 = 101;
    /// `sasl` → SetSASLResponse.
    pub const SASL: i32 = 102;
    /// `getEphemerals` → GetEphemeralsResponse.
    pub const GET_EPHEMERALS: i32 = 103;
    /// `getAllChildrenNumber` → GetAllChildrenNumberResponse.
    pub const GET_ALL_CHILDREN_NUMBER: i32 = 104;
    /// `setWatches2` (xid -8) → header only.
    pub const SET_WATCHES2: i32 = 105;
    /// `addWatch` → ErrorResponse{0}.
    pub const ADD_WATCH: i32 = 106;
    /// `whoAmI` → WhoAmIResponse.
    pub const WHO_AM_I: i32 = 107;
    /// `createSession`: server-internal.
    pub const CREATE_SESSION: i32 = -10;
    /// `closeSession` → header only, then the server closes the socket.
    pub const CLOSE_SESSION: i32 = -11;
    /// Type of an error result inside a MultiResponse.
    pub const ERROR: i32 = -1;
}

/// Special xids (`ClientCnxn`).
pub mod xid {
    /// Watch notification (server → client).
    pub const NOTIFICATION: i32 = -1;
    /// Ping request and reply.
    pub const PING: i32 = -2;
    /// Auth packet and reply.
    pub const AUTH: i32 = -4;
    /// SetWatches / SetWatches2 sent on reconnect.
    pub const SET_WATCHES: i32 = -8;
}

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $n:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(i32)]
        pub enum $name { $($(#[$vm])* $v = $n),* }
        impl $name {
            /// The wire value.
            pub fn as_i32(self) -> i32 { self as i32 }
            /// Parse a wire value; `None` if ZooKeeper does not define it.
            pub fn from_i32(v: i32) -> Option<Self> {
                match v { $($n => Some(Self::$v),)* _ => None }
            }
        }
    };
}

wire_enum!(
    /// `Watcher.Event.EventType`.
    EventType {
        /// Session state change (no path).
        None = -1,
        /// Node created.
        NodeCreated = 1,
        /// Node deleted.
        NodeDeleted = 2,
        /// Node data changed.
        NodeDataChanged = 3,
        /// Node's children changed.
        NodeChildrenChanged = 4,
        /// Data watch removed.
        DataWatchRemoved = 5,
        /// Child watch removed.
        ChildWatchRemoved = 6,
        /// Persistent watch removed.
        PersistentWatchRemoved = 7,
    }
);

wire_enum!(
    /// `Watcher.Event.KeeperState` (the `state` field of a watch event).
    KeeperState {
        /// Unknown (deprecated).
        Unknown = -1,
        /// Disconnected.
        Disconnected = 0,
        /// NoSyncConnected (deprecated).
        NoSyncConnected = 1,
        /// SyncConnected: the state every server-sent event carries.
        SyncConnected = 3,
        /// AuthFailed.
        AuthFailed = 4,
        /// ConnectedReadOnly.
        ConnectedReadOnly = 5,
        /// SaslAuthenticated.
        SaslAuthenticated = 6,
        /// Expired.
        Expired = -112,
        /// Closed (client-side only).
        Closed = 7,
    }
);

wire_enum!(
    /// `Watcher.WatcherType` (checkWatches / removeWatches).
    WatcherType {
        /// Child watches.
        Children = 1,
        /// Data (and exist) watches.
        Data = 2,
        /// Any kind.
        Any = 3,
        /// Persistent watches.
        Persistent = 4,
        /// Persistent recursive watches.
        PersistentRecursive = 5,
    }
);

wire_enum!(
    /// `AddWatchMode` (`ZooDefs.AddWatchModes`).
    AddWatchMode {
        /// Persistent watch on one node.
        Persistent = 0,
        /// Persistent watch on a subtree (never fires NodeChildrenChanged).
        PersistentRecursive = 1,
    }
);

/// Encoded size of a `Stat`.
pub const STAT_LEN: usize = 68;

/// Write a `Stat` (68 bytes).
pub fn write_stat(out: &mut impl BufMut, s: &Stat) {
    write_long(out, s.czxid);
    write_long(out, s.mzxid);
    write_long(out, s.ctime);
    write_long(out, s.mtime);
    write_int(out, s.version);
    write_int(out, s.cversion);
    write_int(out, s.aversion);
    write_long(out, s.ephemeral_owner);
    write_int(out, s.data_length);
    write_int(out, s.num_children);
    write_long(out, s.pzxid);
}

/// Read a `Stat`.
pub fn read_stat(r: &mut Reader<'_>) -> Result<Stat, DecodeError> {
    Ok(Stat {
        czxid: r.read_long()?,
        mzxid: r.read_long()?,
        ctime: r.read_long()?,
        mtime: r.read_long()?,
        version: r.read_int()?,
        cversion: r.read_int()?,
        aversion: r.read_int()?,
        ephemeral_owner: r.read_long()?,
        data_length: r.read_int()?,
        num_children: r.read_int()?,
        pzxid: r.read_long()?,
    })
}

/// Write a `vector<ACL>`.
pub fn write_acl_vec(out: &mut impl BufMut, acl: &[Acl]) {
    write_vec_len(out, acl.len());
    for a in acl {
        write_int(out, a.perms);
        write_ustring(out, &a.id.scheme);
        write_ustring(out, &a.id.id);
    }
}

/// Read a `vector<ACL>`; a null vector reads as empty (ZooKeeper then answers InvalidACL).
pub fn read_acl_vec(r: &mut Reader<'_>) -> Result<Vec<Acl>, DecodeError> {
    // perms + two string lengths.
    let n = r.read_vec_len(12)?.unwrap_or(0);
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let perms = r.read_int()?;
        let scheme = r.read_string()?.to_owned();
        let id = r.read_string()?.to_owned();
        v.push(Acl {
            perms,
            id: Id { scheme, id },
        });
    }
    Ok(v)
}

/// Hex fixtures for tests: whitespace-separated hex bytes, `#` starts a comment to end of line.
#[cfg(test)]
pub(crate) fn hex(s: &str) -> Vec<u8> {
    s.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(str::split_whitespace)
        .flat_map(|tok| {
            assert!(tok.len() % 2 == 0, "odd hex token {tok:?}");
            (0..tok.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&tok[i..i + 2], 16).expect("hex fixture"))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn stat_is_68_bytes_in_jute_field_order() {
        let s = Stat {
            czxid: 1,
            mzxid: 2,
            ctime: 3,
            mtime: 4,
            version: 5,
            cversion: 6,
            aversion: 7,
            ephemeral_owner: 8,
            data_length: 9,
            num_children: 10,
            pzxid: 11,
        };
        let mut b = BytesMut::new();
        write_stat(&mut b, &s);
        let expect = hex(
            "0000000000000001 0000000000000002 0000000000000003 0000000000000004
             00000005 00000006 00000007 0000000000000008 00000009 0000000a 000000000000000b",
        );
        assert_eq!(b.len(), STAT_LEN);
        assert_eq!(&b[..], &expect[..]);
        assert_eq!(read_stat(&mut Reader::new(&expect)), Ok(s));
    }

    #[test]
    fn enums_match_zookeeper_values() {
        assert_eq!(EventType::from_i32(-1), Some(EventType::None));
        assert_eq!(EventType::PersistentWatchRemoved.as_i32(), 7);
        assert_eq!(
            WatcherType::from_i32(5),
            Some(WatcherType::PersistentRecursive)
        );
        assert_eq!(WatcherType::from_i32(0), None);
        assert_eq!(
            AddWatchMode::from_i32(1),
            Some(AddWatchMode::PersistentRecursive)
        );
        assert_eq!(KeeperState::Expired.as_i32(), -112);
    }
}
