//! What members say to each other over the data transport, and its framing: a 4-byte big-endian
//! length, then the postcard-encoded message. Frames are bounded; big answers are chunked.

use crate::hlc::MemberId;
use crate::model::{Eph, OwnerOp, OwnerState, OwnerSummary, PEntry, SessionInfo};
use roster_core::SessionId;
use serde::{Deserialize, Serialize};

/// Largest frame accepted (bytes).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;
/// Most registers in one `Persist` message.
pub const CHUNK: usize = 1024;
/// Most bytes of paths and values in one `Persist` message, far under [`MAX_FRAME`]: counted
/// alone, 1 024 registers of 100 KB configs would make a 100 MB frame that the receiver
/// refuses — and the repair that sent it would be refused again every round, so those
/// registers would never converge.
pub const CHUNK_BYTES: usize = 4 << 20;
/// What a register costs in a message besides its path and data (stamp, ACL, tags), roughly.
const ENTRY_OVERHEAD: usize = 64;

/// `entries` in runs for `Persist` messages: at most [`CHUNK`] registers and [`CHUNK_BYTES`]
/// each (a single larger register travels alone; values are bounded far below [`MAX_FRAME`]).
pub fn persist_chunks(entries: &[(String, PEntry)]) -> impl Iterator<Item = &[(String, PEntry)]> {
    chunks_within(entries, CHUNK, CHUNK_BYTES)
}

fn chunks_within(
    entries: &[(String, PEntry)],
    max_n: usize,
    max_bytes: usize,
) -> impl Iterator<Item = &[(String, PEntry)]> {
    let mut rest = entries;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (mut n, mut bytes) = (0, 0);
        for (path, e) in rest {
            let size = entry_size(path, e.value.as_ref().map_or(0, |v| v.data.len()));
            if n > 0 && (n == max_n || bytes + size > max_bytes) {
                break;
            }
            n += 1;
            bytes += size;
        }
        let (run, tail) = rest.split_at(n);
        rest = tail;
        Some(run)
    })
}

/// What a register or an ephemeral node costs in a message, roughly.
fn entry_size(path: &str, data: usize) -> usize {
    path.len() + data + ENTRY_OVERHEAD
}

/// What a session costs in an owner's state message, roughly (id, timeout, tags).
const SESSION_SIZE: usize = 16;

/// The answer to `PullOwner`: the owner's state as one `OwnerSnapshot` when it fits in
/// [`CHUNK_BYTES`], as it always went, else as `OwnerPart`s of about that size — as one
/// message, the state of an owner holding ~100 000 instances would be over the frame limit and
/// could never be pulled.
pub fn owner_messages(st: OwnerState) -> Vec<Msg> {
    owner_messages_within(st, CHUNK_BYTES)
}

fn owner_messages_within(st: OwnerState, max_bytes: usize) -> Vec<Msg> {
    let bytes = st.sessions.len() * SESSION_SIZE
        + st.ephemerals
            .iter()
            .map(|(p, e)| entry_size(p, e.value.data.len()))
            .sum::<usize>();
    if bytes <= max_bytes {
        return vec![Msg::OwnerSnapshot(st)];
    }
    let OwnerState {
        incarnation,
        version,
        sessions,
        ephemerals,
    } = st;
    // Sessions, then ephemeral nodes, moved into parts of about `max_bytes` each.
    let mut parts: Vec<(Vec<_>, Vec<_>)> = vec![Default::default()];
    let mut filled = 0;
    // Whether an item of `size` starts a new part (it would overflow one that holds something).
    let mut starts_part = |size: usize| {
        let new = filled > 0 && filled + size > max_bytes;
        filled = if new { size } else { filled + size };
        new
    };
    for s in sessions {
        if starts_part(SESSION_SIZE) {
            parts.push(Default::default());
        }
        parts.last_mut().expect("a part").0.push(s);
    }
    for (path, e) in ephemerals {
        if starts_part(entry_size(&path, e.value.data.len())) {
            parts.push(Default::default());
        }
        parts.last_mut().expect("a part").1.push((path, e));
    }
    let count = parts.len() as u32;
    parts
        .into_iter()
        .enumerate()
        .map(|(i, (sessions, ephemerals))| Msg::OwnerPart {
            incarnation,
            version,
            index: i as u32,
            count,
            sessions,
            ephemerals,
        })
        .collect()
}

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
    /// Part `index` of `count` of an owner's state too large for one message (see
    /// [`owner_messages`]), every part of the same `(incarnation, version)`; the receiver
    /// installs the state once every part has arrived, in order. (Last in the enum: the
    /// variants before it keep their wire tags.)
    OwnerPart {
        incarnation: u64,
        version: u64,
        index: u32,
        count: u32,
        sessions: Vec<(SessionId, SessionInfo)>,
        ephemerals: Vec<(String, Eph)>,
    },
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
    use crate::hlc::{Hlc, Stamp};
    use crate::model::Value;

    fn register(i: usize, bytes: usize) -> (String, PEntry) {
        (
            format!("/config/c{i:04}"),
            PEntry {
                stamp: Stamp {
                    hlc: Hlc {
                        wall: 1,
                        logical: 0,
                    },
                    origin: 1,
                },
                value: Some(Value {
                    data: vec![b'x'; bytes],
                    acl: roster_core::acl::intern(&roster_core::acl::Acl::open_unsafe()),
                }),
            },
        )
    }

    #[test]
    fn persist_runs_stay_under_the_byte_budget_and_the_count() {
        // 1 024 configs of 100 KB: by count alone one 100 MB message, over the frame limit.
        let big: Vec<_> = (0..1024).map(|i| register(i, 100_000)).collect();
        let runs: Vec<_> = persist_chunks(&big).collect();
        assert!(runs.len() >= 25, "{} runs", runs.len());
        assert_eq!(runs.iter().map(|r| r.len()).sum::<usize>(), 1024);
        for run in &runs {
            let frame = encode(&Msg::Persist {
                entries: run.to_vec(),
                repair: true,
            });
            assert!(frame.len() <= CHUNK_BYTES, "a run of {} bytes", frame.len());
        }
        // Small registers still go 1 024 to a message.
        let small: Vec<_> = (0..3000).map(|i| register(i, 10)).collect();
        let sizes: Vec<_> = persist_chunks(&small).map(|r| r.len()).collect();
        assert_eq!(sizes, vec![1024, 1024, 952]);
        // One register over the budget travels alone rather than not at all.
        let huge = vec![register(0, 10), register(1, 50), register(2, 10)];
        let sizes: Vec<_> = chunks_within(&huge, 1024, 100).map(|r| r.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
        assert_eq!(persist_chunks(&[]).count(), 0);
    }

    #[test]
    fn owner_state_goes_whole_when_small_and_in_parts_under_the_budget_when_large() {
        let eph = |i: u64, bytes: usize| {
            (
                format!("/svc/i{i:05}"),
                Eph {
                    stamp: Stamp {
                        hlc: Hlc {
                            wall: 1,
                            logical: 0,
                        },
                        origin: 2,
                    },
                    session: i as i64,
                    value: Value {
                        data: vec![b'x'; bytes],
                        acl: roster_core::acl::intern(&roster_core::acl::Acl::open_unsafe()),
                    },
                },
            )
        };
        let state = |n: u64, bytes: usize| OwnerState {
            incarnation: 1,
            version: n,
            sessions: (0..n as i64)
                .map(|s| (s, SessionInfo { timeout_ms: 10 }))
                .collect(),
            ephemerals: (0..n).map(|i| eph(i, bytes)).collect(),
        };
        let small = state(10, 100);
        let msgs = owner_messages_within(small.clone(), 64 << 10);
        assert!(matches!(&msgs[..], [Msg::OwnerSnapshot(st)] if *st == small));

        let msgs = owner_messages_within(state(1000, 1000), 64 << 10);
        assert!(msgs.len() >= 16, "{} parts", msgs.len());
        let (mut sessions, mut ephemerals) = (0, 0);
        for (i, m) in msgs.iter().enumerate() {
            let Msg::OwnerPart {
                index,
                count,
                sessions: s,
                ephemerals: e,
                ..
            } = m
            else {
                panic!("{m:?}");
            };
            assert_eq!((*index as usize, *count as usize), (i, msgs.len()));
            assert!(
                encode(m).len() <= (64 << 10) + 1024,
                "part {i}: {} bytes",
                encode(m).len()
            );
            sessions += s.len();
            ephemerals += e.len();
        }
        assert_eq!((sessions, ephemerals), (1000, 1000));
    }

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
