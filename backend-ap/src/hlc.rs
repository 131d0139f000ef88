//! Hybrid logical clock (Kulkarni et al.): timestamps that follow wall time but never go backwards
//! and always exceed every timestamp this member has seen, so "last writer" is well defined even
//! with skewed clocks. A [`Stamp`] adds the origin member, making every write's stamp unique.

use serde::{Deserialize, Serialize};

/// Member id (the `server_id`).
pub type MemberId = u64;

/// One HLC reading: wall milliseconds plus a logical counter for events in the same millisecond.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Hlc {
    pub wall: u64,
    pub logical: u32,
}

/// The total order of writes: HLC, then origin member (ties between members cannot be equal).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Stamp {
    pub hlc: Hlc,
    pub origin: MemberId,
}

/// A member's clock.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    last: Hlc,
}

impl Clock {
    /// A clock that will never issue a reading at or below `floor` (e.g. the last persisted one).
    pub fn starting_after(floor: Hlc) -> Clock {
        Clock { last: floor }
    }

    /// A new reading for a local event at physical time `wall_ms`.
    pub fn now(&mut self, wall_ms: u64) -> Hlc {
        self.last = if wall_ms > self.last.wall {
            Hlc {
                wall: wall_ms,
                logical: 0,
            }
        } else {
            Hlc {
                wall: self.last.wall,
                logical: self.last.logical + 1,
            }
        };
        self.last
    }

    /// Fold in a reading seen from another member, so our next stamps exceed it.
    pub fn observe(&mut self, seen: Hlc) {
        if seen > self.last {
            self.last = seen;
        }
    }

    /// The last reading issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_through_skew_and_remote_readings() {
        let mut c = Clock::default();
        let a = c.now(100);
        let b = c.now(90); // wall clock stepped back
        assert!(b > a);
        c.observe(Hlc {
            wall: 500,
            logical: 7,
        });
        let d = c.now(120);
        assert_eq!(
            d,
            Hlc {
                wall: 500,
                logical: 8
            }
        );
        assert!(c.now(600) > d);
    }
}
