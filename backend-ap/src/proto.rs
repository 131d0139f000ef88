//! What members say to each other over the data transport, and its framing: a 4-byte big-endian
//! length, then the postcard-encoded message. Frames are bounded; big answers are chunked.

use crate::hlc::MemberId;
use crate::model::{OwnerOp, OwnerState, OwnerSummary, PEntry};
use serde::{Deserialize, Serialize};

/// Largest frame accepted (bytes).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;
/// Most registers in one `Persist` message.
pub const CHUNK: usize = 1024;

/// One message between members. The sender is known from the connection's `Hello`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    /// First frame on a connection.
    Hello {
        from: MemberId,
        incarnation: u64,
    },
    /// Persistent registers (fresh writes, or `repair` answers to `WantBuckets`).
    Persist {
        entries: Vec<(String, PEntry)>,
        repair: bool,
    },
    /// The sender's own changes, versions `from+1 ..= from+ops.len()` of `incarnation`.
    Delta {
        incarnation: u64,
        from: u64,
        ops: Vec<OwnerOp>,
    },
    /// Anti-entropy: the sender's owner summary and persistent digest.
    Summary {
        owner: Option<OwnerSummary>,
        buckets: Vec<u64>,
    },
    /// Send me your whole owner state.
    PullOwner,
    OwnerSnapshot(OwnerState),
    /// Send me your registers in these digest buckets.
    WantBuckets(Vec<u16>),
}

/// Encode a frame.
pub fn encode(msg: &Msg) -> Vec<u8> {
    let body = postcard::to_stdvec(msg).expect("in-memory serialization cannot fail");
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("undecodable frame: {0}")]
    Decode(String),
}

/// Decode a frame body.
pub fn decode(body: &[u8]) -> Result<Msg, FrameError> {
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    postcard::from_bytes(body).map_err(|e| FrameError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let m = Msg::WantBuckets(vec![1, 2, 63]);
        let f = encode(&m);
        assert_eq!(
            u32::from_be_bytes(f[..4].try_into().unwrap()) as usize,
            f.len() - 4
        );
        assert_eq!(decode(&f[4..]).unwrap(), m);
        assert!(decode(&[0xff, 0xff, 0xff]).is_err());
    }
}
