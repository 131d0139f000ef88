//! Client → server requests: `RequestHeader` + one op record per opcode.

use super::{AddWatchMode, WatcherType, op, read_acl_vec, write_acl_vec};
use crate::zk::jute::{
    DecodeError, Reader, write_bool, write_buffer, write_int, write_long, write_opt_ustring,
    write_string_vec, write_ustring,
};
use bytes::{BufMut, BytesMut};
use roster_core::Code;
use roster_core::acl::Acl;
use roster_core::stat::CreateMode;

/// `RequestHeader { int xid; int type }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Client transaction id; echoed in the reply (special values in [`super::xid`]).
    pub xid: i32,
    /// Opcode ([`op`]).
    pub op: i32,
}

/// Which create opcode carried a create: it decides the reply record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CreateKind {
    /// `create` (1): replies `CreateResponse{path}`.
    Create,
    /// `create2` (15): replies `Create2Response{path, stat}`.
    Create2,
    /// `createContainer` (19): replies `Create2Response`.
    Container,
    /// `createTTL` (21): `CreateTTLRequest` (extra `long ttl`), replies `Create2Response`.
    Ttl,
}

impl CreateKind {
    /// The opcode for this kind.
    pub fn op(self) -> i32 {
        match self {
            CreateKind::Create => op::CREATE,
            CreateKind::Create2 => op::CREATE2,
            CreateKind::Container => op::CREATE_CONTAINER,
            CreateKind::Ttl => op::CREATE_TTL,
        }
    }

    /// The kind for a create opcode.
    pub fn from_op(op: i32) -> Option<CreateKind> {
        Some(match op {
            op::CREATE => CreateKind::Create,
            op::CREATE2 => CreateKind::Create2,
            op::CREATE_CONTAINER => CreateKind::Container,
            op::CREATE_TTL => CreateKind::Ttl,
            _ => return None,
        })
    }

    /// True when the reply carries a `Stat` (every kind but plain `create`).
    pub fn returns_stat(self) -> bool {
        self != CreateKind::Create
    }
}

/// `SetWatches` (op 101, xid -8): watches to re-register after a reconnect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetWatches {
    /// The client's lastZxidSeen; events newer than this fire immediately.
    pub relative_zxid: i64,
    /// getData watches.
    pub data: Vec<String>,
    /// exists watches (on nodes that did not exist).
    pub exist: Vec<String>,
    /// getChildren watches.
    pub child: Vec<String>,
}

/// `SetWatches2` (op 105): `SetWatches` plus persistent watches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetWatches2 {
    /// The client's lastZxidSeen.
    pub relative_zxid: i64,
    /// getData watches.
    pub data: Vec<String>,
    /// exists watches.
    pub exist: Vec<String>,
    /// getChildren watches.
    pub child: Vec<String>,
    /// addWatch(PERSISTENT) paths.
    pub persistent: Vec<String>,
    /// addWatch(PERSISTENT_RECURSIVE) paths.
    pub persistent_recursive: Vec<String>,
}

/// One operation of a `multi` (14) transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiOp {
    /// create / create2 / createContainer / createTTL. `kind` is what ZooKeeper's `Op.create`
    /// infers: TTL flags → `Ttl`, container flag → `Container`, else the header's opcode
    /// (a `createTTL` header with non-TTL flags becomes `Create`). `ttl` is -1 unless `Ttl`.
    Create {
        kind: CreateKind,
        path: String,
        data: Vec<u8>,
        acl: Vec<Acl>,
        flags: i32,
        ttl: i64,
    },
    /// delete.
    Delete { path: String, version: i32 },
    /// setData.
    SetData {
        path: String,
        data: Vec<u8>,
        version: i32,
    },
    /// check (version assertion).
    Check { path: String, version: i32 },
}

/// One operation of a `multiRead` (22). ZooKeeper drops the request's watch flag here
/// (`Op.GetData`/`Op.GetChildren` carry no watch), so multiRead never sets watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOp {
    /// getChildren.
    GetChildren { path: String },
    /// getData.
    GetData { path: String },
}

/// A decoded request body, one variant per opcode a real client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// create (1), create2 (15), createContainer (19), createTTL (21). Null data reads as
    /// empty, null ACL as empty (→ InvalidACL). `flags` is raw (the server answers BadArguments
    /// for unknown flags, as `PrepRequestProcessor` does); `ttl` is -1 unless `kind == Ttl`.
    Create {
        kind: CreateKind,
        path: String,
        data: Vec<u8>,
        acl: Vec<Acl>,
        flags: i32,
        ttl: i64,
    },
    /// delete (2).
    Delete { path: String, version: i32 },
    /// exists (3).
    Exists { path: String, watch: bool },
    /// getData (4).
    GetData { path: String, watch: bool },
    /// setData (5).
    SetData {
        path: String,
        data: Vec<u8>,
        version: i32,
    },
    /// getACL (6).
    GetAcl { path: String },
    /// setACL (7).
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        version: i32,
    },
    /// getChildren (8).
    GetChildren { path: String, watch: bool },
    /// sync (9).
    Sync { path: String },
    /// ping (11), no body.
    Ping,
    /// getChildren2 (12).
    GetChildren2 { path: String, watch: bool },
    /// check (13) at top level. Current ZooKeeper (3.8.5+, 3.9.3+; ZOOKEEPER-2623) rejects it in
    /// `Request.isValid`: reply Unimplemented, then close. Older releases answered
    /// `SetDataResponse{stat}`. No client library sends it outside a multi.
    Check { path: String, version: i32 },
    /// multi (14): write ops, applied atomically.
    Multi(Vec<MultiOp>),
    /// multiRead (22): read ops, each answered independently.
    MultiRead(Vec<ReadOp>),
    /// reconfig (16); decoded only so the server can answer ReconfigDisabled.
    Reconfig {
        joining_servers: Option<String>,
        leaving_servers: Option<String>,
        new_members: Option<String>,
        cur_config_id: i64,
    },
    /// checkWatches (17).
    CheckWatches {
        path: String,
        watcher_type: WatcherType,
    },
    /// removeWatches (18).
    RemoveWatches {
        path: String,
        watcher_type: WatcherType,
    },
    /// auth (100, xid -4). Null auth bytes read as empty.
    Auth {
        auth_type: i32,
        scheme: String,
        auth: Vec<u8>,
    },
    /// setWatches (101).
    SetWatches(SetWatches),
    /// sasl (102). Null token reads as empty.
    Sasl { token: Vec<u8> },
    /// getEphemerals (103). Null prefix reads as empty (ZooKeeper: null, "" and "/" mean all).
    GetEphemerals { prefix_path: String },
    /// getAllChildrenNumber (104).
    GetAllChildrenNumber { path: String },
    /// setWatches2 (105).
    SetWatches2(SetWatches2),
    /// addWatch (106).
    AddWatch { path: String, mode: AddWatchMode },
    /// whoAmI (107), no body.
    WhoAmI,
    /// closeSession (-11), no body.
    CloseSession,
}

impl Request {
    /// The opcode this request is sent with.
    pub fn op(&self) -> i32 {
        match self {
            Request::Create { kind, .. } => kind.op(),
            Request::Delete { .. } => op::DELETE,
            Request::Exists { .. } => op::EXISTS,
            Request::GetData { .. } => op::GET_DATA,
            Request::SetData { .. } => op::SET_DATA,
            Request::GetAcl { .. } => op::GET_ACL,
            Request::SetAcl { .. } => op::SET_ACL,
            Request::GetChildren { .. } => op::GET_CHILDREN,
            Request::Sync { .. } => op::SYNC,
            Request::Ping => op::PING,
            Request::GetChildren2 { .. } => op::GET_CHILDREN2,
            Request::Check { .. } => op::CHECK,
            Request::Multi(_) => op::MULTI,
            Request::MultiRead(_) => op::MULTI_READ,
            Request::Reconfig { .. } => op::RECONFIG,
            Request::CheckWatches { .. } => op::CHECK_WATCHES,
            Request::RemoveWatches { .. } => op::REMOVE_WATCHES,
            Request::Auth { .. } => op::AUTH,
            Request::SetWatches(_) => op::SET_WATCHES,
            Request::Sasl { .. } => op::SASL,
            Request::GetEphemerals { .. } => op::GET_EPHEMERALS,
            Request::GetAllChildrenNumber { .. } => op::GET_ALL_CHILDREN_NUMBER,
            Request::SetWatches2(_) => op::SET_WATCHES2,
            Request::AddWatch { .. } => op::ADD_WATCH,
            Request::WhoAmI => op::WHO_AM_I,
            Request::CloseSession => op::CLOSE_SESSION,
        }
    }
}

/// Why a request frame could not be decoded, and so how ZooKeeper reacts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestDecodeError {
    /// The 8-byte header itself is unreadable. ZooKeeper gets an IOException while
    /// deserializing and closes the connection without a reply.
    #[error("unreadable request header: {0}")]
    BadHeader(DecodeError),
    /// An opcode ZooKeeper does not accept from clients (including notification 0,
    /// createSession -10 and deleteContainer 20). `UnimplementedRequestProcessor` replies
    /// `ReplyHeader{xid, zxid -1, Unimplemented}` and then closes the session.
    #[error("unknown opcode {op} (xid {xid})")]
    UnknownOp { xid: i32, op: i32 },
    /// Header fine, body not (truncation, bad lengths, invalid UTF-8, bad enum values, a multi
    /// op not allowed in that multi). ZooKeeper answers MarshallingError (-5) with no body;
    /// for auth (100) and sasl (102), which `ZooKeeperServer.processPacket` deserializes
    /// directly, the IOException closes the connection instead.
    #[error("malformed body for opcode {op} (xid {xid}): {error}")]
    Malformed {
        xid: i32,
        op: i32,
        error: DecodeError,
    },
}

impl RequestDecodeError {
    /// The reply ZooKeeper sends for this error, as `(xid, code)`; `None` means close without replying.
    pub fn reply(&self) -> Option<(i32, Code)> {
        match *self {
            RequestDecodeError::BadHeader(_) => None,
            RequestDecodeError::UnknownOp { xid, .. } => Some((xid, Code::Unimplemented)),
            RequestDecodeError::Malformed { op, .. } if op == op::AUTH || op == op::SASL => None,
            RequestDecodeError::Malformed { xid, .. } => Some((xid, Code::MarshallingError)),
        }
    }

    /// True when ZooKeeper closes the connection (after the reply, if any).
    pub fn closes_connection(&self) -> bool {
        match self {
            RequestDecodeError::BadHeader(_) | RequestDecodeError::UnknownOp { .. } => true,
            RequestDecodeError::Malformed { op, .. } => *op == op::AUTH || *op == op::SASL,
        }
    }
}

fn string(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    Ok(r.read_string()?.to_owned())
}

fn opt_string(r: &mut Reader<'_>) -> Result<Option<String>, DecodeError> {
    Ok(r.read_ustring()?.map(str::to_owned))
}

fn data(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    Ok(r.read_buffer_or_empty()?.to_vec())
}

fn watcher_type(r: &mut Reader<'_>) -> Result<WatcherType, DecodeError> {
    let v = r.read_int()?;
    // `WatcherType.fromInt` throws → FinalRequestProcessor answers MarshallingError.
    WatcherType::from_i32(v).ok_or(DecodeError::BadValue {
        what: "watcher type",
        value: v.into(),
    })
}

/// `CreateRequest` (`ttl == None`) or `CreateTTLRequest`: (path, data, acl, flags, ttl).
type CreateFields = (String, Vec<u8>, Vec<Acl>, i32, i64);

fn create_fields(r: &mut Reader<'_>, with_ttl: bool) -> Result<CreateFields, DecodeError> {
    let path = string(r)?;
    let data = data(r)?;
    let acl = read_acl_vec(r)?;
    let flags = r.read_int()?;
    let ttl = if with_ttl { r.read_long()? } else { -1 };
    Ok((path, data, acl, flags, ttl))
}

/// Decode one op of a `multi`, mirroring `MultiOperationRecord.deserialize` + `Op.create`.
fn multi_op(r: &mut Reader<'_>, typ: i32) -> Result<MultiOp, DecodeError> {
    Ok(match typ {
        op::CREATE | op::CREATE2 | op::CREATE_CONTAINER => {
            let (path, data, acl, flags, ttl) = create_fields(r, false)?;
            // `CreateMode.fromFlag(flags, null) == null` → IOException("invalid flag").
            let mode = CreateMode::from_flags(flags).ok_or(DecodeError::BadValue {
                what: "create flags in multi",
                value: flags.into(),
            })?;
            // A TTL mode here has no TTL: `CreateOptions` rejects ttl -1 with an
            // IllegalArgumentException, which the record turns into an IOException.
            if mode.is_ttl() {
                return Err(DecodeError::BadValue {
                    what: "TTL create without TTL in multi",
                    value: flags.into(),
                });
            }
            let kind = if mode == CreateMode::Container {
                CreateKind::Container
            } else {
                CreateKind::from_op(typ).expect("create opcode matched above")
            };
            MultiOp::Create {
                kind,
                path,
                data,
                acl,
                flags,
                ttl,
            }
        }
        op::CREATE_TTL => {
            let (path, data, acl, flags, ttl) = create_fields(r, true)?;
            // `Op.create(.., flags, ttl)`: unknown flags default to PERSISTENT for the opcode
            // (flags stay raw, so the server's validation answers BadArguments).
            match CreateMode::from_flags(flags).unwrap_or(CreateMode::Persistent) {
                m if m.is_ttl() => MultiOp::Create {
                    kind: CreateKind::Ttl,
                    path,
                    data,
                    acl,
                    flags,
                    ttl,
                },
                CreateMode::Container => MultiOp::Create {
                    kind: CreateKind::Container,
                    path,
                    data,
                    acl,
                    flags,
                    ttl: -1,
                },
                _ => MultiOp::Create {
                    kind: CreateKind::Create,
                    path,
                    data,
                    acl,
                    flags,
                    ttl: -1,
                },
            }
        }
        op::DELETE => MultiOp::Delete {
            path: string(r)?,
            version: r.read_int()?,
        },
        op::SET_DATA => MultiOp::SetData {
            path: string(r)?,
            data: data(r)?,
            version: r.read_int()?,
        },
        op::CHECK => MultiOp::Check {
            path: string(r)?,
            version: r.read_int()?,
        },
        other => {
            return Err(DecodeError::BadValue {
                what: "op type in multi",
                value: other.into(),
            });
        }
    })
}

fn read_op(r: &mut Reader<'_>, typ: i32) -> Result<ReadOp, DecodeError> {
    Ok(match typ {
        op::GET_CHILDREN => {
            let path = string(r)?;
            let _watch = r.read_bool()?;
            ReadOp::GetChildren { path }
        }
        op::GET_DATA => {
            let path = string(r)?;
            let _watch = r.read_bool()?;
            ReadOp::GetData { path }
        }
        other => {
            return Err(DecodeError::BadValue {
                what: "op type in multiRead",
                value: other.into(),
            });
        }
    })
}

/// Reads `MultiHeader{type, done, err}` + op records until a header with `done == true`.
///
/// ZooKeeper (`MultiOperationRecord.deserialize`) throws an IOException for an op type it does
/// not know, for mixing read and write ops, and for bad create flags; for multi that surfaces in
/// `PrepRequestProcessor` and for multiRead in `FinalRequestProcessor`, both of which answer
/// MarshallingError (-5) with no body. A write op in multiRead or a read op in multi ends the
/// same way, so every such case is `Malformed` here.
fn multi_ops<T>(
    r: &mut Reader<'_>,
    mut one: impl FnMut(&mut Reader<'_>, i32) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let mut ops = Vec::new();
    loop {
        let typ = r.read_int()?;
        let done = r.read_bool()?;
        let _err = r.read_int()?;
        if done {
            return Ok(ops);
        }
        ops.push(one(r, typ)?);
    }
}

fn body(r: &mut Reader<'_>, opcode: i32) -> Result<Option<Request>, DecodeError> {
    Ok(Some(match opcode {
        op::CREATE | op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => {
            let kind = CreateKind::from_op(opcode).expect("create opcode matched above");
            let (path, data, acl, flags, ttl) = create_fields(r, kind == CreateKind::Ttl)?;
            Request::Create {
                kind,
                path,
                data,
                acl,
                flags,
                ttl,
            }
        }
        op::DELETE => Request::Delete {
            path: string(r)?,
            version: r.read_int()?,
        },
        op::EXISTS => Request::Exists {
            path: string(r)?,
            watch: r.read_bool()?,
        },
        op::GET_DATA => Request::GetData {
            path: string(r)?,
            watch: r.read_bool()?,
        },
        op::SET_DATA => Request::SetData {
            path: string(r)?,
            data: data(r)?,
            version: r.read_int()?,
        },
        op::GET_ACL => Request::GetAcl { path: string(r)? },
        op::SET_ACL => Request::SetAcl {
            path: string(r)?,
            acl: read_acl_vec(r)?,
            version: r.read_int()?,
        },
        op::GET_CHILDREN => Request::GetChildren {
            path: string(r)?,
            watch: r.read_bool()?,
        },
        op::SYNC => Request::Sync { path: string(r)? },
        op::PING => Request::Ping,
        op::GET_CHILDREN2 => Request::GetChildren2 {
            path: string(r)?,
            watch: r.read_bool()?,
        },
        op::CHECK => Request::Check {
            path: string(r)?,
            version: r.read_int()?,
        },
        op::MULTI => Request::Multi(multi_ops(r, multi_op)?),
        op::MULTI_READ => Request::MultiRead(multi_ops(r, read_op)?),
        op::RECONFIG => Request::Reconfig {
            joining_servers: opt_string(r)?,
            leaving_servers: opt_string(r)?,
            new_members: opt_string(r)?,
            cur_config_id: r.read_long()?,
        },
        op::CHECK_WATCHES => Request::CheckWatches {
            path: string(r)?,
            watcher_type: watcher_type(r)?,
        },
        op::REMOVE_WATCHES => Request::RemoveWatches {
            path: string(r)?,
            watcher_type: watcher_type(r)?,
        },
        op::AUTH => Request::Auth {
            auth_type: r.read_int()?,
            scheme: string(r)?,
            auth: data(r)?,
        },
        op::SET_WATCHES => Request::SetWatches(SetWatches {
            relative_zxid: r.read_long()?,
            data: r.read_string_vec()?,
            exist: r.read_string_vec()?,
            child: r.read_string_vec()?,
        }),
        op::SASL => Request::Sasl { token: data(r)? },
        op::GET_EPHEMERALS => Request::GetEphemerals {
            prefix_path: opt_string(r)?.unwrap_or_default(),
        },
        op::GET_ALL_CHILDREN_NUMBER => Request::GetAllChildrenNumber { path: string(r)? },
        op::SET_WATCHES2 => Request::SetWatches2(SetWatches2 {
            relative_zxid: r.read_long()?,
            data: r.read_string_vec()?,
            exist: r.read_string_vec()?,
            child: r.read_string_vec()?,
            persistent: r.read_string_vec()?,
            persistent_recursive: r.read_string_vec()?,
        }),
        op::ADD_WATCH => {
            let path = string(r)?;
            let m = r.read_int()?;
            // `WatcherMode.fromZooDef` throws → MarshallingError.
            let mode = AddWatchMode::from_i32(m).ok_or(DecodeError::BadValue {
                what: "addWatch mode",
                value: m.into(),
            })?;
            Request::AddWatch { path, mode }
        }
        op::WHO_AM_I => Request::WhoAmI,
        op::CLOSE_SESSION => Request::CloseSession,
        _ => return Ok(None),
    }))
}

/// Decode a request frame body (length prefix already stripped). Trailing bytes after the
/// record are ignored, as ZooKeeper's record deserialization ignores them.
pub fn decode_request(frame: &[u8]) -> Result<(RequestHeader, Request), RequestDecodeError> {
    let mut r = Reader::new(frame);
    let xid = r.read_int().map_err(RequestDecodeError::BadHeader)?;
    let opcode = r.read_int().map_err(RequestDecodeError::BadHeader)?;
    let hdr = RequestHeader { xid, op: opcode };
    match body(&mut r, opcode) {
        Ok(Some(req)) => Ok((hdr, req)),
        Ok(None) => Err(RequestDecodeError::UnknownOp { xid, op: opcode }),
        Err(error) => Err(RequestDecodeError::Malformed {
            xid,
            op: opcode,
            error,
        }),
    }
}

fn write_create(
    out: &mut BytesMut,
    path: &str,
    data: &[u8],
    acl: &[Acl],
    flags: i32,
    ttl: Option<i64>,
) {
    write_ustring(out, path);
    write_buffer(out, data);
    write_acl_vec(out, acl);
    write_int(out, flags);
    if let Some(ttl) = ttl {
        write_long(out, ttl);
    }
}

fn write_multi_header(out: &mut BytesMut, typ: i32, done: bool, err: i32) {
    write_int(out, typ);
    write_bool(out, done);
    write_int(out, err);
}

/// Encode a request frame (length prefix + header + body) as a client would; for tests and
/// client-side tooling. Multi ops are written with `MultiHeader{type, false, -1}`.
pub fn encode_request(out: &mut BytesMut, xid: i32, req: &Request) {
    let start = out.len();
    out.put_i32(0);
    write_int(out, xid);
    write_int(out, req.op());
    match req {
        Request::Create {
            kind,
            path,
            data,
            acl,
            flags,
            ttl,
        } => {
            let ttl = (*kind == CreateKind::Ttl).then_some(*ttl);
            write_create(out, path, data, acl, *flags, ttl);
        }
        Request::Delete { path, version } | Request::Check { path, version } => {
            write_ustring(out, path);
            write_int(out, *version);
        }
        Request::Exists { path, watch }
        | Request::GetData { path, watch }
        | Request::GetChildren { path, watch }
        | Request::GetChildren2 { path, watch } => {
            write_ustring(out, path);
            write_bool(out, *watch);
        }
        Request::SetData {
            path,
            data,
            version,
        } => {
            write_ustring(out, path);
            write_buffer(out, data);
            write_int(out, *version);
        }
        Request::GetAcl { path }
        | Request::Sync { path }
        | Request::GetAllChildrenNumber { path } => {
            write_ustring(out, path);
        }
        Request::SetAcl { path, acl, version } => {
            write_ustring(out, path);
            write_acl_vec(out, acl);
            write_int(out, *version);
        }
        Request::Ping | Request::WhoAmI | Request::CloseSession => {}
        Request::Multi(ops) => {
            for o in ops {
                match o {
                    MultiOp::Create {
                        kind,
                        path,
                        data,
                        acl,
                        flags,
                        ttl,
                    } => {
                        write_multi_header(out, kind.op(), false, -1);
                        let ttl = (*kind == CreateKind::Ttl).then_some(*ttl);
                        write_create(out, path, data, acl, *flags, ttl);
                    }
                    MultiOp::Delete { path, version } => {
                        write_multi_header(out, op::DELETE, false, -1);
                        write_ustring(out, path);
                        write_int(out, *version);
                    }
                    MultiOp::SetData {
                        path,
                        data,
                        version,
                    } => {
                        write_multi_header(out, op::SET_DATA, false, -1);
                        write_ustring(out, path);
                        write_buffer(out, data);
                        write_int(out, *version);
                    }
                    MultiOp::Check { path, version } => {
                        write_multi_header(out, op::CHECK, false, -1);
                        write_ustring(out, path);
                        write_int(out, *version);
                    }
                }
            }
            write_multi_header(out, -1, true, -1);
        }
        Request::MultiRead(ops) => {
            for o in ops {
                let (typ, path) = match o {
                    ReadOp::GetChildren { path } => (op::GET_CHILDREN, path),
                    ReadOp::GetData { path } => (op::GET_DATA, path),
                };
                write_multi_header(out, typ, false, -1);
                write_ustring(out, path);
                write_bool(out, false);
            }
            write_multi_header(out, -1, true, -1);
        }
        Request::Reconfig {
            joining_servers,
            leaving_servers,
            new_members,
            cur_config_id,
        } => {
            write_opt_ustring(out, joining_servers.as_deref());
            write_opt_ustring(out, leaving_servers.as_deref());
            write_opt_ustring(out, new_members.as_deref());
            write_long(out, *cur_config_id);
        }
        Request::CheckWatches { path, watcher_type }
        | Request::RemoveWatches { path, watcher_type } => {
            write_ustring(out, path);
            write_int(out, watcher_type.as_i32());
        }
        Request::Auth {
            auth_type,
            scheme,
            auth,
        } => {
            write_int(out, *auth_type);
            write_ustring(out, scheme);
            write_buffer(out, auth);
        }
        Request::SetWatches(w) => {
            write_long(out, w.relative_zxid);
            write_string_vec(out, &w.data);
            write_string_vec(out, &w.exist);
            write_string_vec(out, &w.child);
        }
        Request::Sasl { token } => write_buffer(out, token),
        Request::GetEphemerals { prefix_path } => write_ustring(out, prefix_path),
        Request::SetWatches2(w) => {
            write_long(out, w.relative_zxid);
            write_string_vec(out, &w.data);
            write_string_vec(out, &w.exist);
            write_string_vec(out, &w.child);
            write_string_vec(out, &w.persistent);
            write_string_vec(out, &w.persistent_recursive);
        }
        Request::AddWatch { path, mode } => {
            write_ustring(out, path);
            write_int(out, mode.as_i32());
        }
    }
    super::response::patch_len(out, start);
}

#[cfg(test)]
mod tests;
