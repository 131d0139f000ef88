//! Reply encoding against hand-built fixtures from `zookeeper.jute` / `MultiResponse.serialize`.

use super::*;
use crate::zk::proto::{EventType, KeeperState, hex};
use roster_core::acl::Id;

fn stat() -> Stat {
    Stat {
        czxid: 0x10,
        mzxid: 0x11,
        ctime: 1_700_000_000_000,
        mtime: 1_700_000_000_001,
        version: 2,
        cversion: 3,
        aversion: 0,
        ephemeral_owner: 0x0100_0000_0000_0001,
        data_length: 5,
        num_children: 0,
        pzxid: 0x10,
    }
}

const STAT_HEX: &str = "
    0000000000000010   # czxid
    0000000000000011   # mzxid
    0000018bcfe56800   # ctime 1700000000000
    0000018bcfe56801   # mtime
    00000002           # version
    00000003           # cversion
    00000000           # aversion
    0100000000000001   # ephemeralOwner
    00000005           # dataLength
    00000000           # numChildren
    0000000000000010   # pzxid
";

fn reply(xid: i32, zxid: i64, err: Code, body: Option<&Response>) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_reply(&mut out, xid, zxid, err, body);
    out.to_vec()
}

#[test]
fn exists_reply_with_stat() {
    let expect = hex(&format!(
        "00000054                     # length 84 = 16 + 68
         00000005 0000000000000011 00000000   # ReplyHeader{{xid 5, zxid 0x11, err 0}}
         {STAT_HEX}"
    ));
    assert_eq!(
        reply(5, 0x11, Code::Ok, Some(&Response::Stat(stat()))),
        expect
    );
}

#[test]
fn error_reply_has_no_body() {
    let expect = hex("00000010 00000005 0000000000000011 ffffff9b"); // NoNode -101
    assert_eq!(
        reply(5, 0x11, Code::NoNode, Some(&Response::Stat(stat()))),
        expect
    );
    assert_eq!(reply(5, 0x11, Code::NoNode, None), expect);
    // Ping reply.
    assert_eq!(
        reply(-2, 0x11, Code::Ok, None),
        hex("00000010 fffffffe 0000000000000011 00000000")
    );
}

#[test]
fn multi_failure_response() {
    // 3 ops, the 2nd failed with NodeExists: all results are errors, header err stays 0.
    let results = MultiResult::failed(3, 1, Code::NodeExists);
    let expect = hex("00000040                                  # length 64
         00000007 0000000000000020 00000000        # ReplyHeader{7, 0x20, 0}
         ffffffff 00 00000000  00000000            # {error, false, 0} ErrorResponse{0}
         ffffffff 00 ffffff92  ffffff92            # {error, false, -110} ErrorResponse{-110}
         ffffffff 00 fffffffe  fffffffe            # {error, false, -2} ErrorResponse{-2}
         ffffffff 01 ffffffff                      # {-1, true, -1}");
    assert_eq!(
        reply(7, 0x20, Code::Ok, Some(&Response::Multi(results))),
        expect
    );
}

#[test]
fn multi_success_response() {
    let results = vec![
        MultiResult::Create { path: "/a".into() },
        MultiResult::Create2 {
            path: "/b".into(),
            stat: stat(),
        },
        MultiResult::SetData { stat: stat() },
        MultiResult::Check,
        MultiResult::Delete,
    ];
    let body = format!(
        "00000001 00 00000000  00000002 2f61
         0000000f 00 00000000  00000002 2f62 {STAT_HEX}
         00000005 00 00000000  {STAT_HEX}
         0000000d 00 00000000
         00000002 00 00000000
         ffffffff 01 ffffffff"
    );
    let body = hex(&body);
    let mut expect = ((16 + body.len()) as i32).to_be_bytes().to_vec();
    expect.extend(hex("00000008 0000000000000021 00000000"));
    expect.extend(body);
    assert_eq!(
        reply(8, 0x21, Code::Ok, Some(&Response::Multi(results))),
        expect
    );
}

#[test]
fn multi_read_response() {
    let results = vec![
        MultiResult::GetChildren {
            children: vec!["x".into()],
        },
        MultiResult::GetData {
            data: b"v".to_vec(),
            stat: stat(),
        },
        MultiResult::Error { err: Code::NoNode },
    ];
    let body = hex(&format!(
        "00000008 00 00000000  00000001 00000001 78
         00000004 00 00000000  00000001 76 {STAT_HEX}
         ffffffff 00 ffffff9b  ffffff9b
         ffffffff 01 ffffffff"
    ));
    let out = reply(9, 1, Code::Ok, Some(&Response::Multi(results)));
    assert_eq!(&out[20..], &body[..]);
}

#[test]
fn watch_event() {
    let mut out = BytesMut::new();
    encode_watch_event(
        &mut out,
        0x30,
        EventType::NodeDataChanged.as_i32(),
        KeeperState::SyncConnected.as_i32(),
        "/a",
    );
    let expect = hex(
        "0000001e                                  # length 30
         ffffffff 0000000000000030 00000000        # ReplyHeader{-1, 0x30, 0}
         00000003 00000003 00000002 2f61           # WatcherEvent{NodeDataChanged, SyncConnected, \"/a\"}",
    );
    assert_eq!(&out[..], &expect[..]);
}

#[test]
fn other_bodies() {
    let body = |r: &Response| reply(1, 2, Code::Ok, Some(r))[20..].to_vec();
    assert_eq!(body(&Response::AddWatch), hex("00000000"));
    assert_eq!(body(&Response::Empty), Vec::<u8>::new());
    assert_eq!(
        body(&Response::Create { path: "/a".into() }),
        hex("00000002 2f61")
    );
    assert_eq!(body(&Response::AllChildrenNumber(7)), hex("00000007"));
    assert_eq!(
        body(&Response::WhoAmI(vec![("ip".into(), "127.0.0.1".into())])),
        hex("00000001 00000002 6970 00000009 3132372e302e302e31")
    );
    assert_eq!(
        body(&Response::Children(vec!["a".into(), "bc".into()])),
        hex("00000002 00000001 61 00000002 6263")
    );
    assert_eq!(
        body(&Response::GetData {
            data: vec![],
            stat: stat()
        }),
        hex(&format!("00000000 {STAT_HEX}"))
    );
    assert_eq!(
        body(&Response::GetAcl {
            acl: vec![Acl {
                perms: 1,
                id: Id::new("world", "anyone")
            }],
            stat: stat()
        }),
        hex(&format!(
            "00000001 00000001 00000005 776f726c64 00000006 616e796f6e65 {STAT_HEX}"
        ))
    );
    assert_eq!(body(&Response::Sasl { token: vec![9] }), hex("00000001 09"));
}

#[test]
fn replies_append_to_a_shared_buffer() {
    let mut out = BytesMut::new();
    encode_reply(&mut out, 1, 1, Code::Ok, None);
    encode_reply(
        &mut out,
        2,
        1,
        Code::Ok,
        Some(&Response::Sync { path: "/".into() }),
    );
    assert_eq!(&out[..4], &[0, 0, 0, 16]);
    assert_eq!(&out[20..24], &[0, 0, 0, 21]);
    assert_eq!(out.len(), 20 + 25);
}
