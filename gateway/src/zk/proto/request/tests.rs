//! Request decoding: hand-built fixtures from `zookeeper.jute`, error classification, and
//! property tests (never panics; random valid encodings decode back).

use super::*;
use crate::zk::jute::DecodeError;
use crate::zk::proto::hex;
use proptest::prelude::*;
use roster_core::acl::Id;

fn open_acl() -> Vec<Acl> {
    vec![Acl {
        perms: 31,
        id: Id::new("world", "anyone"),
    }]
}

fn body_of(frame: &BytesMut) -> &[u8] {
    let len = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
    assert_eq!(len as usize, frame.len() - 4, "length prefix");
    &frame[4..]
}

#[test]
fn create_with_acl_fixture() {
    let b = hex("00000001                      # xid 1
         00000001                      # type create
         00000002 2f61                 # path \"/a\"
         00000002 6869                 # data \"hi\"
         00000001                      # acl: 1 entry
           0000001f                    #   perms ALL
           00000005 776f726c64         #   scheme \"world\"
           00000006 616e796f6e65       #   id \"anyone\"
         00000001                      # flags EPHEMERAL");
    let (hdr, req) = decode_request(&b).unwrap();
    assert_eq!(hdr, RequestHeader { xid: 1, op: 1 });
    let expect = Request::Create {
        kind: CreateKind::Create,
        path: "/a".into(),
        data: b"hi".to_vec(),
        acl: open_acl(),
        flags: 1,
        ttl: -1,
    };
    assert_eq!(req, expect);
    let mut out = BytesMut::new();
    encode_request(&mut out, 1, &expect);
    assert_eq!(body_of(&out), &b[..]);
}

#[test]
fn create_ttl_and_null_data_fixture() {
    let b = hex("0000002a 00000015             # xid 42, createTTL
         00000002 2f74                 # \"/t\"
         ffffffff                      # data: null
         00000000                      # acl: empty
         00000005                      # flags PERSISTENT_WITH_TTL
         00000000000003e8              # ttl 1000");
    let (_, req) = decode_request(&b).unwrap();
    assert_eq!(
        req,
        Request::Create {
            kind: CreateKind::Ttl,
            path: "/t".into(),
            data: vec![],
            acl: vec![],
            flags: 5,
            ttl: 1000
        }
    );
}

const MULTI_FIXTURE: &str = "
    00000002 0000000e                        # xid 2, multi
    00000001 00 ffffffff                     # MultiHeader{create, false, -1}
      00000002 2f61 00000000                 #   \"/a\", data \"\"
      00000001 0000001f 00000005 776f726c64 00000006 616e796f6e65  # world:anyone ALL
      00000000                               #   flags PERSISTENT
    00000005 00 ffffffff                     # MultiHeader{setData}
      00000002 2f61 00000001 78 ffffffff     #   \"/a\", \"x\", version -1
    0000000d 00 ffffffff                     # MultiHeader{check}
      00000002 2f61 00000001                 #   \"/a\", version 1
    00000002 00 ffffffff                     # MultiHeader{delete}
      00000002 2f62 00000000                 #   \"/b\", version 0
    ffffffff 01 ffffffff                     # MultiHeader{-1, true, -1}
";

fn multi_fixture_ops() -> Vec<MultiOp> {
    vec![
        MultiOp::Create {
            kind: CreateKind::Create,
            path: "/a".into(),
            data: vec![],
            acl: open_acl(),
            flags: 0,
            ttl: -1,
        },
        MultiOp::SetData {
            path: "/a".into(),
            data: b"x".to_vec(),
            version: -1,
        },
        MultiOp::Check {
            path: "/a".into(),
            version: 1,
        },
        MultiOp::Delete {
            path: "/b".into(),
            version: 0,
        },
    ]
}

#[test]
fn multi_fixture() {
    let b = hex(MULTI_FIXTURE);
    let (hdr, req) = decode_request(&b).unwrap();
    assert_eq!(
        hdr,
        RequestHeader {
            xid: 2,
            op: op::MULTI
        }
    );
    assert_eq!(req, Request::Multi(multi_fixture_ops()));
    let mut out = BytesMut::new();
    encode_request(&mut out, 2, &Request::Multi(multi_fixture_ops()));
    assert_eq!(body_of(&out), &b[..]);
}

#[test]
fn multi_read_fixture_drops_watch_flag() {
    let b = hex("00000003 00000016
         00000008 00 ffffffff 00000001 2f 01     # getChildren \"/\" watch=true
         00000004 00 ffffffff 00000002 2f61 00   # getData \"/a\"
         ffffffff 01 ffffffff");
    let (_, req) = decode_request(&b).unwrap();
    assert_eq!(
        req,
        Request::MultiRead(vec![
            ReadOp::GetChildren { path: "/".into() },
            ReadOp::GetData { path: "/a".into() }
        ])
    );
}

fn multi_with(op_hex: &str) -> Vec<u8> {
    hex(&format!("00000004 0000000e {op_hex} ffffffff 01 ffffffff"))
}

#[test]
fn multi_create_kind_follows_flags_like_op_create() {
    let create = |typ: &str, flags: &str| {
        multi_with(&format!(
            "{typ} 00 ffffffff 00000002 2f61 00000000 00000000 {flags}"
        ))
    };
    let kind = |b: &[u8]| match decode_request(b) {
        Ok((_, Request::Multi(ops))) => match &ops[0] {
            MultiOp::Create { kind, .. } => Ok(*kind),
            other => panic!("{other:?}"),
        },
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    };
    assert_eq!(
        kind(&create("00000001", "00000001")),
        Ok(CreateKind::Create)
    );
    assert_eq!(
        kind(&create("0000000f", "00000003")),
        Ok(CreateKind::Create2)
    );
    assert_eq!(
        kind(&create("00000001", "00000004")),
        Ok(CreateKind::Container)
    );
    assert_eq!(
        kind(&create("00000013", "00000004")),
        Ok(CreateKind::Container)
    );
    // TTL mode without a TTL, or unknown flags: IOException in ZooKeeper → MarshallingError.
    assert!(matches!(
        kind(&create("0000000f", "00000005")),
        Err(RequestDecodeError::Malformed { .. })
    ));
    assert!(matches!(
        kind(&create("00000001", "00000009")),
        Err(RequestDecodeError::Malformed { .. })
    ));
    // createTTL with non-TTL flags becomes a plain create; with TTL flags keeps its ttl.
    let ttl = |flags: &str| {
        multi_with(&format!(
            "00000015 00 ffffffff 00000002 2f61 00000000 00000000 {flags} 0000000000000064"
        ))
    };
    assert_eq!(kind(&ttl("00000000")), Ok(CreateKind::Create));
    assert_eq!(kind(&ttl("00000006")), Ok(CreateKind::Ttl));
    match decode_request(&ttl("00000006")).unwrap().1 {
        Request::Multi(ops) => assert!(matches!(&ops[0], MultiOp::Create { ttl: 100, .. })),
        other => panic!("{other:?}"),
    }
}

#[test]
fn multi_rejects_ops_of_the_wrong_kind() {
    let marshalling = |b: &[u8]| {
        let e = decode_request(b).unwrap_err();
        assert!(matches!(e, RequestDecodeError::Malformed { .. }), "{e:?}");
        assert_eq!(e.reply(), Some((4, Code::MarshallingError)));
        assert!(!e.closes_connection());
    };
    // A read op in multi, an unknown op, an error "op".
    marshalling(&multi_with("00000004 00 ffffffff 00000002 2f61 00"));
    marshalling(&multi_with("00000063 00 ffffffff"));
    marshalling(&multi_with("ffffffff 00 ffffffff 00000000"));
    // A write op in multiRead.
    marshalling(&hex(
        "00000004 00000016 00000002 00 ffffffff 00000002 2f61 00000000 ffffffff 01 ffffffff",
    ));
    // No terminator.
    marshalling(&hex(
        "00000004 0000000e 00000002 00 ffffffff 00000002 2f61 00000000",
    ));
    // An empty multi is valid.
    assert_eq!(
        decode_request(&multi_with("")).unwrap().1,
        Request::Multi(vec![])
    );
}

#[test]
fn header_only_requests() {
    assert_eq!(
        decode_request(&hex("fffffffe 0000000b")).unwrap().1,
        Request::Ping
    );
    assert_eq!(
        decode_request(&hex("00000009 0000006b")).unwrap().1,
        Request::WhoAmI
    );
    assert_eq!(
        decode_request(&hex("0000000a fffffff5")).unwrap().1,
        Request::CloseSession
    );
}

#[test]
fn auth_set_watches_and_friends() {
    let (hdr, req) = decode_request(&hex(
        "fffffffc 00000064 00000000 00000006 646967657374 00000003 753a70",
    ))
    .unwrap();
    assert_eq!(hdr.xid, -4);
    assert_eq!(
        req,
        Request::Auth {
            auth_type: 0,
            scheme: "digest".into(),
            auth: b"u:p".to_vec()
        }
    );

    let (_, req) = decode_request(&hex("fffffff8 00000069 0000000000000007
         00000001 00000002 2f61     # data
         ffffffff                   # exist: null
         00000000                   # child: empty
         00000001 00000002 2f70     # persistent
         00000000"))
    .unwrap();
    assert_eq!(
        req,
        Request::SetWatches2(SetWatches2 {
            relative_zxid: 7,
            data: vec!["/a".into()],
            persistent: vec!["/p".into()],
            ..Default::default()
        })
    );

    let (_, req) = decode_request(&hex("00000001 0000006a 00000002 2f61 00000001")).unwrap();
    assert_eq!(
        req,
        Request::AddWatch {
            path: "/a".into(),
            mode: AddWatchMode::PersistentRecursive
        }
    );
    let (_, req) = decode_request(&hex("00000001 00000012 00000002 2f61 00000003")).unwrap();
    assert_eq!(
        req,
        Request::RemoveWatches {
            path: "/a".into(),
            watcher_type: WatcherType::Any
        }
    );
    let (_, req) = decode_request(&hex("00000001 00000067 ffffffff")).unwrap();
    assert_eq!(
        req,
        Request::GetEphemerals {
            prefix_path: String::new()
        }
    );
    let (_, req) = decode_request(&hex(
        "00000001 00000010 ffffffff 00000001 33 ffffffff ffffffffffffffff",
    ))
    .unwrap();
    assert_eq!(
        req,
        Request::Reconfig {
            joining_servers: None,
            leaving_servers: Some("3".into()),
            new_members: None,
            cur_config_id: -1
        }
    );
}

#[test]
fn error_classification() {
    // Header unreadable: close, no reply.
    let e = decode_request(&hex("000000")).unwrap_err();
    assert!(matches!(
        e,
        RequestDecodeError::BadHeader(DecodeError::Truncated { .. })
    ));
    assert_eq!(e.reply(), None);
    assert!(e.closes_connection());
    // Opcodes ZooKeeper does not take from clients: Unimplemented, then close.
    for opcode in [0, 10, 20, -10, 23, 99, 108, 1000] {
        let mut b = hex("00000005");
        b.extend_from_slice(&i32::to_be_bytes(opcode));
        let e = decode_request(&b).unwrap_err();
        assert_eq!(e, RequestDecodeError::UnknownOp { xid: 5, op: opcode });
        assert_eq!(e.reply(), Some((5, Code::Unimplemented)));
        assert!(e.closes_connection());
    }
    // Truncated body: MarshallingError to the xid.
    let e = decode_request(&hex("00000006 00000003 00000002 2f61")).unwrap_err();
    assert!(matches!(
        e,
        RequestDecodeError::Malformed { xid: 6, op: 3, .. }
    ));
    assert_eq!(e.reply(), Some((6, Code::MarshallingError)));
    // Null path, invalid UTF-8, bad enum values.
    for b in [
        "00000006 00000004 ffffffff 00",
        "00000006 00000004 00000002 c328 00",
        "00000006 00000011 00000002 2f61 00000000",
        "00000006 0000006a 00000002 2f61 00000002",
    ] {
        assert!(
            matches!(
                decode_request(&hex(b)),
                Err(RequestDecodeError::Malformed { .. })
            ),
            "{b}"
        );
    }
    // Malformed auth/sasl: ZooKeeper closes the connection without a reply.
    let e = decode_request(&hex("fffffffc 00000064 00000000")).unwrap_err();
    assert_eq!(e.reply(), None);
    assert!(e.closes_connection());
}

#[test]
fn trailing_bytes_are_ignored() {
    let (_, req) = decode_request(&hex("00000001 00000003 00000002 2f61 01 deadbeef")).unwrap();
    assert_eq!(
        req,
        Request::Exists {
            path: "/a".into(),
            watch: true
        }
    );
}

fn path() -> impl Strategy<Value = String> {
    "(/[a-z0-9]{0,6}){1,3}"
}

fn acl() -> impl Strategy<Value = Vec<Acl>> {
    prop::collection::vec(
        (0..32i32, "[a-z]{0,6}", "[a-z:0-9]{0,8}").prop_map(|(perms, s, i)| Acl {
            perms,
            id: Id { scheme: s, id: i },
        }),
        0..3,
    )
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..16)
}

fn names() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(path(), 0..3)
}

/// Create kinds with flags the decoder maps back to the same kind (top level or in multi).
fn create() -> impl Strategy<Value = (CreateKind, i32, i64)> {
    prop_oneof![
        (0..4i32).prop_map(|f| (CreateKind::Create, f, -1)),
        (0..4i32).prop_map(|f| (CreateKind::Create2, f, -1)),
        Just((CreateKind::Container, 4, -1)),
        (5..7i32, 1..1_000_000i64).prop_map(|(f, t)| (CreateKind::Ttl, f, t)),
    ]
}

fn multi_op() -> impl Strategy<Value = MultiOp> {
    prop_oneof![
        (create(), path(), data(), acl()).prop_map(|((kind, flags, ttl), path, data, acl)| {
            MultiOp::Create {
                kind,
                path,
                data,
                acl,
                flags,
                ttl,
            }
        }),
        (path(), any::<i32>()).prop_map(|(path, version)| MultiOp::Delete { path, version }),
        (path(), data(), any::<i32>()).prop_map(|(path, data, version)| MultiOp::SetData {
            path,
            data,
            version
        }),
        (path(), any::<i32>()).prop_map(|(path, version)| MultiOp::Check { path, version }),
    ]
}

fn watcher_type() -> impl Strategy<Value = WatcherType> {
    (1..6i32).prop_map(|v| WatcherType::from_i32(v).unwrap())
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (create(), path(), data(), acl()).prop_map(|((kind, flags, ttl), path, data, acl)| {
            Request::Create {
                kind,
                path,
                data,
                acl,
                flags,
                ttl,
            }
        }),
        (path(), any::<i32>()).prop_map(|(path, version)| Request::Delete { path, version }),
        (path(), any::<bool>()).prop_map(|(path, watch)| Request::Exists { path, watch }),
        (path(), any::<bool>()).prop_map(|(path, watch)| Request::GetData { path, watch }),
        (path(), data(), any::<i32>()).prop_map(|(path, data, version)| Request::SetData {
            path,
            data,
            version
        }),
        path().prop_map(|path| Request::GetAcl { path }),
        (path(), acl(), any::<i32>()).prop_map(|(path, acl, version)| Request::SetAcl {
            path,
            acl,
            version
        }),
        (path(), any::<bool>()).prop_map(|(path, watch)| Request::GetChildren { path, watch }),
        path().prop_map(|path| Request::Sync { path }),
        Just(Request::Ping),
        (path(), any::<bool>()).prop_map(|(path, watch)| Request::GetChildren2 { path, watch }),
        (path(), any::<i32>()).prop_map(|(path, version)| Request::Check { path, version }),
        prop::collection::vec(multi_op(), 0..5).prop_map(Request::Multi),
        prop::collection::vec(
            prop_oneof![
                path().prop_map(|path| ReadOp::GetChildren { path }),
                path().prop_map(|path| ReadOp::GetData { path }),
            ],
            0..5
        )
        .prop_map(Request::MultiRead),
        (
            prop::option::of("[a-z0-9=:;]{0,10}"),
            prop::option::of("[0-9,]{0,5}"),
            prop::option::of("[a-z0-9=:;]{0,10}"),
            any::<i64>()
        )
            .prop_map(
                |(joining_servers, leaving_servers, new_members, cur_config_id)| {
                    Request::Reconfig {
                        joining_servers,
                        leaving_servers,
                        new_members,
                        cur_config_id,
                    }
                }
            ),
        (path(), watcher_type())
            .prop_map(|(path, watcher_type)| Request::CheckWatches { path, watcher_type }),
        (path(), watcher_type())
            .prop_map(|(path, watcher_type)| Request::RemoveWatches { path, watcher_type }),
        (any::<i32>(), "[a-z]{0,6}", data()).prop_map(|(auth_type, scheme, auth)| Request::Auth {
            auth_type,
            scheme,
            auth
        }),
        (any::<i64>(), names(), names(), names()).prop_map(
            |(relative_zxid, data, exist, child)| {
                Request::SetWatches(SetWatches {
                    relative_zxid,
                    data,
                    exist,
                    child,
                })
            }
        ),
        data().prop_map(|token| Request::Sasl { token }),
        path().prop_map(|prefix_path| Request::GetEphemerals { prefix_path }),
        path().prop_map(|path| Request::GetAllChildrenNumber { path }),
        (any::<i64>(), names(), names(), names(), names(), names()).prop_map(
            |(relative_zxid, data, exist, child, persistent, persistent_recursive)| {
                Request::SetWatches2(SetWatches2 {
                    relative_zxid,
                    data,
                    exist,
                    child,
                    persistent,
                    persistent_recursive,
                })
            }
        ),
        (path(), 0..2i32).prop_map(|(path, m)| Request::AddWatch {
            path,
            mode: AddWatchMode::from_i32(m).unwrap()
        }),
        Just(Request::WhoAmI),
        Just(Request::CloseSession),
    ]
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_request(&bytes);
    }

    /// Valid header with a known opcode and a random body, to reach deeper into the decoders.
    #[test]
    fn decode_never_panics_on_known_ops(
        xid in any::<i32>(),
        opcode in prop::sample::select(vec![1i32, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16,
            17, 18, 19, 21, 22, 100, 101, 102, 103, 104, 105, 106, 107, -11]),
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut b = xid.to_be_bytes().to_vec();
        b.extend_from_slice(&opcode.to_be_bytes());
        b.extend_from_slice(&body);
        let _ = decode_request(&b);
    }

    #[test]
    fn valid_encodings_decode(xid in any::<i32>(), req in request()) {
        let mut out = BytesMut::new();
        encode_request(&mut out, xid, &req);
        let (hdr, back) = decode_request(body_of(&out)).unwrap();
        prop_assert_eq!(hdr, RequestHeader { xid, op: req.op() });
        prop_assert_eq!(back, req);
    }

    /// Every strict prefix of a valid body is rejected, never mis-decoded as something else
    /// (bodies here have no optional tail; header-only requests are skipped).
    #[test]
    fn truncations_are_malformed(req in request(), cut in any::<prop::sample::Index>()) {
        let mut out = BytesMut::new();
        encode_request(&mut out, 1, &req);
        let body = body_of(&out);
        prop_assume!(body.len() > 8);
        let at = 8 + cut.index(body.len() - 8);
        let is_malformed = matches!(decode_request(&body[..at]), Err(RequestDecodeError::Malformed { .. }));
        prop_assert!(is_malformed);
    }
}
