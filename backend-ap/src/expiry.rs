//! When a member is declared dead, its ephemeral nodes go after a grace period — unless too many
//! would go at once (Eureka's self-preservation): a partition looks like mass death from the
//! small side, and dropping half the registry there would do more harm than keeping stale
//! entries a while. Pure logic: the member feeds it liveness changes and ephemeral counts.

use crate::hlc::MemberId;
use std::collections::BTreeMap;

/// Settings.
#[derive(Debug, Clone, Copy)]
pub struct ExpiryConfig {
    /// How long a member must stay dead before its ephemerals are removed (ms).
    pub grace_ms: u64,
    /// Largest share (0..=1) of all ephemeral nodes that may be removed at once.
    pub max_share: f64,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Owners whose state to drop.
    pub drop: Vec<MemberId>,
    /// Self-preservation is on: owners past their grace are kept.
    pub preserving: bool,
    /// The owners being preserved (when `preserving`).
    pub preserved: Vec<MemberId>,
}

/// Dead members and since when.
#[derive(Debug, Clone, Default)]
pub struct Expiry {
    down: BTreeMap<MemberId, u64>,
}

impl Expiry {
    /// The failure detector declared `m` dead at `now_ms`.
    pub fn down(&mut self, m: MemberId, now_ms: u64) {
        self.down.entry(m).or_insert(now_ms);
    }

    /// `m` is alive again (or spoke to us).
    pub fn up(&mut self, m: MemberId) {
        self.down.remove(&m);
    }

    pub fn is_down(&self, m: MemberId) -> bool {
        self.down.contains_key(&m)
    }

    /// Members considered dead.
    pub fn dead(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.down.keys().copied()
    }

    /// Decide at `now_ms` given each owner's ephemeral count (owners whose state we hold).
    pub fn decide(
        &self,
        cfg: &ExpiryConfig,
        now_ms: u64,
        counts: &BTreeMap<MemberId, usize>,
    ) -> Decision {
        let due: Vec<MemberId> = self
            .down
            .iter()
            .filter(|(m, since)| {
                counts.contains_key(m) && now_ms.saturating_sub(**since) >= cfg.grace_ms
            })
            .map(|(m, _)| *m)
            .collect();
        if due.is_empty() {
            return Decision::default();
        }
        // Count every dead owner, not only those past their grace: members that die together
        // are detected a few probes apart, and must not be dropped one by one.
        let total: usize = counts.values().sum();
        let vanishing: usize = self.down.keys().filter_map(|m| counts.get(m)).sum();
        if total > 0 && vanishing as f64 > cfg.max_share * total as f64 {
            Decision {
                drop: Vec::new(),
                preserving: true,
                preserved: due,
            }
        } else {
            Decision {
                drop: due,
                preserving: false,
                preserved: Vec::new(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: ExpiryConfig = ExpiryConfig {
        grace_ms: 1000,
        max_share: 0.5,
    };

    #[test]
    fn drops_after_grace_unless_too_many_vanish() {
        let counts: BTreeMap<MemberId, usize> = [(1, 10), (2, 10), (3, 10)].into();
        let mut e = Expiry::default();
        e.down(2, 0);
        assert_eq!(
            e.decide(&CFG, 999, &counts),
            Decision::default(),
            "within grace"
        );
        assert_eq!(e.decide(&CFG, 1000, &counts).drop, vec![2]);
        e.down(3, 500);
        let d = e.decide(&CFG, 1200, &counts);
        assert!(d.preserving && d.drop.is_empty(), "2/3 would vanish: {d:?}");
        assert_eq!(
            d.preserved,
            vec![2],
            "3 is still within its grace, but counts"
        );
        let d = e.decide(&CFG, 1500, &counts);
        assert_eq!(d.preserved, vec![2, 3]);
        e.up(3);
        assert_eq!(
            e.decide(&CFG, 1600, &counts).drop,
            vec![2],
            "ends when members return"
        );
        // Or when the share falls (others registered more).
        e.down(3, 500);
        let more: BTreeMap<MemberId, usize> = [(1, 100), (2, 10), (3, 10)].into();
        assert_eq!(e.decide(&CFG, 1600, &more).drop, vec![2, 3]);
    }
}
