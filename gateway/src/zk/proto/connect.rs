//! The session handshake: the first frame each way, with no request/reply header.

use crate::zk::jute::{DecodeError, Reader, write_bool, write_buffer, write_int, write_long};
use bytes::BufMut;

/// `ConnectRequest`, the client's first frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// Always 0 in practice.
    pub protocol_version: i32,
    /// Highest zxid the client has seen (0 for a new client).
    pub last_zxid_seen: i64,
    /// Requested session timeout, ms.
    pub timeout: i32,
    /// 0 for a new session, else the session to resume.
    pub session_id: i64,
    /// Session password (16 bytes for a resume; zeros or empty for a new session; null reads as empty).
    pub passwd: Vec<u8>,
    /// `Some` iff the client sent the trailing readOnly byte (every 3.x client does; very old
    /// ones do not). The reply must mirror its presence (`ProtocolManager`).
    pub read_only: Option<bool>,
}

/// Decode a `ConnectRequest` frame body (without the length prefix).
///
/// Like ZooKeeper's `ProtocolManager`, the readOnly byte is read iff bytes remain after the
/// password; anything after it is ignored.
pub fn decode_connect_request(frame: &[u8]) -> Result<ConnectRequest, DecodeError> {
    let mut r = Reader::new(frame);
    let protocol_version = r.read_int()?;
    let last_zxid_seen = r.read_long()?;
    let timeout = r.read_int()?;
    let session_id = r.read_long()?;
    let passwd = r.read_buffer_or_empty()?.to_vec();
    let read_only = if r.is_empty() {
        None
    } else {
        Some(r.read_bool()?)
    };
    Ok(ConnectRequest {
        protocol_version,
        last_zxid_seen,
        timeout,
        session_id,
        passwd,
        read_only,
    })
}

impl ConnectRequest {
    /// Encode the body (no length prefix), as a client would.
    pub fn encode(&self, out: &mut impl BufMut) {
        write_int(out, self.protocol_version);
        write_long(out, self.last_zxid_seen);
        write_int(out, self.timeout);
        write_long(out, self.session_id);
        write_buffer(out, &self.passwd);
        if let Some(ro) = self.read_only {
            write_bool(out, ro);
        }
    }
}

/// `ConnectResponse`, the server's first frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectResponse {
    /// Always 0.
    pub protocol_version: i32,
    /// Negotiated timeout, ms; ≤ 0 tells the client its session expired.
    pub timeout: i32,
    /// The session id (0 when rejecting a resume).
    pub session_id: i64,
    /// Session password (16 bytes).
    pub passwd: Vec<u8>,
    /// Written only when `Some`: set it to `Some(server_is_read_only)` iff the request had the byte.
    pub read_only: Option<bool>,
}

/// Encode a `ConnectResponse` frame, length prefix included.
pub fn encode_connect_response(out: &mut bytes::BytesMut, resp: &ConnectResponse) {
    let start = out.len();
    out.put_i32(0); // length, patched below
    write_int(out, resp.protocol_version);
    write_int(out, resp.timeout);
    write_long(out, resp.session_id);
    write_buffer(out, &resp.passwd);
    if let Some(ro) = resp.read_only {
        write_bool(out, ro);
    }
    super::response::patch_len(out, start);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zk::proto::hex;
    use bytes::BytesMut;

    const CONNECT_BODY: &str = "
        00000000           # protocolVersion 0
        0000000000000005   # lastZxidSeen 5
        00007530           # timeOut 30000
        0000000000000000   # sessionId 0
        00000010 00000000000000000000000000000000  # passwd: 16 zero bytes
    ";

    #[test]
    fn connect_request_without_read_only() {
        let b = hex(CONNECT_BODY);
        assert_eq!(b.len(), 44);
        let c = decode_connect_request(&b).unwrap();
        assert_eq!(
            c,
            ConnectRequest {
                protocol_version: 0,
                last_zxid_seen: 5,
                timeout: 30000,
                session_id: 0,
                passwd: vec![0; 16],
                read_only: None,
            }
        );
        let mut out = BytesMut::new();
        c.encode(&mut out);
        assert_eq!(&out[..], &b[..]);
    }

    #[test]
    fn connect_request_with_read_only() {
        let mut b = hex(CONNECT_BODY);
        b.push(1);
        assert_eq!(b.len(), 45);
        let c = decode_connect_request(&b).unwrap();
        assert_eq!(c.read_only, Some(true));
        assert_eq!(c.timeout, 30000);
    }

    #[test]
    fn connect_request_truncated_or_null_passwd() {
        let b = hex(CONNECT_BODY);
        assert!(decode_connect_request(&b[..43]).is_err());
        // A null passwd (-1) reads as empty, as ZooKeeper treats it.
        let b = hex("00000000 0000000000000000 00001388 0000000000000000 ffffffff 00");
        let c = decode_connect_request(&b).unwrap();
        assert!(c.passwd.is_empty());
        assert_eq!(c.read_only, Some(false));
    }

    #[test]
    fn connect_response_mirrors_read_only_presence() {
        let mut resp = ConnectResponse {
            protocol_version: 0,
            timeout: 4000,
            session_id: 0x0100_0000_0000_0001,
            passwd: (0u8..16).collect(),
            read_only: None,
        };
        let body = "00000000 00000fa0 0100000000000001
                    00000010 000102030405060708090a0b0c0d0e0f";
        let mut out = BytesMut::new();
        encode_connect_response(&mut out, &resp);
        assert_eq!(&out[..], &hex(&format!("00000024 {body}"))[..]);

        resp.read_only = Some(false);
        let mut out = BytesMut::new();
        encode_connect_response(&mut out, &resp);
        assert_eq!(&out[..], &hex(&format!("00000025 {body} 00"))[..]);
    }
}
