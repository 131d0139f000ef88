//! Server → client frames: `ReplyHeader` + response record, and watch notifications.

use super::{op, write_acl_vec, write_stat, xid};
use crate::zk::jute::{
    write_bool, write_buffer, write_int, write_long, write_string_vec, write_ustring,
};
use bytes::{BufMut, BytesMut};
use roster_core::Code;
use roster_core::acl::Acl;
use roster_core::stat::Stat;

/// One result inside a `MultiResponse`, written as `MultiHeader{type, false, err}` + record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiResult {
    /// Type 1, `CreateResponse{path}`: a `create` op.
    Create { path: String },
    /// Type 15, `Create2Response{path, stat}`: create2, createTTL and createContainer ops all
    /// reply with this (`FinalRequestProcessor` builds `CreateResult(path, stat)`, type create2).
    Create2 { path: String, stat: Stat },
    /// Type 2, no record.
    Delete,
    /// Type 5, `SetDataResponse{stat}`.
    SetData { stat: Stat },
    /// Type 13, no record.
    Check,
    /// Type 8, `GetChildrenResponse{children}` (multiRead).
    GetChildren { children: Vec<String> },
    /// Type 4, `GetDataResponse{data, stat}` (multiRead).
    GetData { data: Vec<u8>, stat: Stat },
    /// Type -1, header err = `err`, `ErrorResponse{err}`.
    Error { err: Code },
}

impl MultiResult {
    /// The `type` written in this result's `MultiHeader`.
    pub fn op(&self) -> i32 {
        match self {
            MultiResult::Create { .. } => op::CREATE,
            MultiResult::Create2 { .. } => op::CREATE2,
            MultiResult::Delete => op::DELETE,
            MultiResult::SetData { .. } => op::SET_DATA,
            MultiResult::Check => op::CHECK,
            MultiResult::GetChildren { .. } => op::GET_CHILDREN,
            MultiResult::GetData { .. } => op::GET_DATA,
            MultiResult::Error { .. } => op::ERROR,
        }
    }

    /// The results of a `multi` of `len` ops that failed at op `failed_at` with `code`:
    /// every result is an error — `Ok` before the failing op, `code` at it,
    /// `RuntimeInconsistency` after (`PrepRequestProcessor` + `DataTree.processTxn`).
    ///
    /// Send it with `err = Code::Ok` in the reply header: ZooKeeper's `FinalRequestProcessor`
    /// never sets the header error for a multi that failed an op (the clients find the
    /// failure in the results; all of them skip the body when the header error is non-zero).
    pub fn failed(len: usize, failed_at: usize, code: Code) -> Vec<MultiResult> {
        (0..len)
            .map(|i| MultiResult::Error {
                err: match i.cmp(&failed_at) {
                    std::cmp::Ordering::Less => Code::Ok,
                    std::cmp::Ordering::Equal => code,
                    std::cmp::Ordering::Greater => Code::RuntimeInconsistency,
                },
            })
            .collect()
    }
}

/// A reply body. Which variant each opcode expects is in [`super::op`]'s docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// No record: delete, ping, auth, setWatches(2), checkWatches, removeWatches, closeSession.
    Empty,
    /// `CreateResponse{path}`: create (1).
    Create { path: String },
    /// `Create2Response{path, stat}`: create2, createContainer, createTTL.
    Create2 { path: String, stat: Stat },
    /// A bare `Stat` record: ExistsResponse, SetDataResponse, SetACLResponse (and an old
    /// server's top-level check reply) all encode as just the 68-byte stat.
    Stat(Stat),
    /// `GetDataResponse{data, stat}`: getData, and reconfig's reply.
    GetData { data: Vec<u8>, stat: Stat },
    /// `GetACLResponse{acl, stat}`.
    GetAcl { acl: Vec<Acl>, stat: Stat },
    /// `GetChildrenResponse{children}`.
    Children(Vec<String>),
    /// `GetChildren2Response{children, stat}`.
    Children2 { children: Vec<String>, stat: Stat },
    /// `SyncResponse{path}`.
    Sync { path: String },
    /// `MultiResponse`: results, then the `MultiHeader{-1, true, -1}` terminator.
    Multi(Vec<MultiResult>),
    /// `GetAllChildrenNumberResponse{totalNumber}`.
    AllChildrenNumber(i32),
    /// `GetEphemeralsResponse{ephemerals}`.
    Ephemerals(Vec<String>),
    /// `WhoAmIResponse{vector<ClientInfo{authScheme, user}>}`, as (scheme, user) pairs.
    WhoAmI(Vec<(String, String)>),
    /// addWatch's reply: ZooKeeper sends `ErrorResponse{err: 0}`, a 4-byte zero body.
    AddWatch,
    /// `SetSASLResponse{token}`.
    Sasl { token: Vec<u8> },
}

/// Overwrite the 4-byte length placeholder at `start` with the size of what follows it.
pub(super) fn patch_len(out: &mut BytesMut, start: usize) {
    let len = i32::try_from(out.len() - start - 4).expect("frame longer than i32::MAX");
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn write_multi_result(out: &mut BytesMut, r: &MultiResult) {
    let err = match r {
        MultiResult::Error { err } => err.as_i32(),
        _ => 0,
    };
    write_int(out, r.op());
    write_bool(out, false);
    write_int(out, err);
    match r {
        MultiResult::Create { path } => write_ustring(out, path),
        MultiResult::Create2 { path, stat } => {
            write_ustring(out, path);
            write_stat(out, stat);
        }
        MultiResult::Delete | MultiResult::Check => {}
        MultiResult::SetData { stat } => write_stat(out, stat),
        MultiResult::GetChildren { children } => write_string_vec(out, children),
        MultiResult::GetData { data, stat } => {
            write_buffer(out, data);
            write_stat(out, stat);
        }
        MultiResult::Error { err } => write_int(out, err.as_i32()),
    }
}

fn write_body(out: &mut BytesMut, body: &Response) {
    match body {
        Response::Empty => {}
        Response::Create { path } | Response::Sync { path } => write_ustring(out, path),
        Response::Create2 { path, stat } => {
            write_ustring(out, path);
            write_stat(out, stat);
        }
        Response::Stat(stat) => write_stat(out, stat),
        Response::GetData { data, stat } => {
            write_buffer(out, data);
            write_stat(out, stat);
        }
        Response::GetAcl { acl, stat } => {
            write_acl_vec(out, acl);
            write_stat(out, stat);
        }
        Response::Children(children) | Response::Ephemerals(children) => {
            write_string_vec(out, children)
        }
        Response::Children2 { children, stat } => {
            write_string_vec(out, children);
            write_stat(out, stat);
        }
        Response::Multi(results) => {
            for r in results {
                write_multi_result(out, r);
            }
            write_int(out, -1);
            write_bool(out, true);
            write_int(out, -1);
        }
        Response::AllChildrenNumber(n) => write_int(out, *n),
        Response::WhoAmI(infos) => {
            write_int(
                out,
                i32::try_from(infos.len()).expect("ClientInfo count fits i32"),
            );
            for (scheme, user) in infos {
                write_ustring(out, scheme);
                write_ustring(out, user);
            }
        }
        Response::AddWatch => write_int(out, 0),
        Response::Sasl { token } => write_buffer(out, token),
    }
}

/// Append a reply frame: length prefix, `ReplyHeader{xid, zxid, err}`, then `body` only when
/// `err == Code::Ok` (the Java and C clients read a body only when the header error is 0;
/// ZooKeeper itself sends none for errors raised before the response record is built).
///
/// A multi whose op failed is a success at this level: pass `Code::Ok` and
/// `Response::Multi(MultiResult::failed(..))`, as ZooKeeper does. `err != Ok` with a multi is
/// for whole-request failures (MarshallingError, SessionMoved...) and carries no body.
pub fn encode_reply(out: &mut BytesMut, xid: i32, zxid: i64, err: Code, body: Option<&Response>) {
    let start = out.len();
    out.put_i32(0);
    write_int(out, xid);
    write_long(out, zxid);
    write_int(out, err.as_i32());
    if err == Code::Ok
        && let Some(body) = body
    {
        write_body(out, body);
    }
    patch_len(out, start);
}

/// Append a watch notification frame: `ReplyHeader{-1, zxid, 0}` + `WatcherEvent{type, state,
/// path}`. ZooKeeper 3.8 sends zxid -1 here; 3.9+ sends the triggering txn's zxid.
pub fn encode_watch_event(out: &mut BytesMut, zxid: i64, event_type: i32, state: i32, path: &str) {
    let start = out.len();
    out.put_i32(0);
    write_int(out, xid::NOTIFICATION);
    write_long(out, zxid);
    write_int(out, 0);
    write_int(out, event_type);
    write_int(out, state);
    write_ustring(out, path);
    patch_len(out, start);
}

#[cfg(test)]
mod tests;
