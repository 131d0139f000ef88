//! Membership and failure detection: foca (SWIM, no I/O of its own) over a UDP socket on the
//! member's AP address. It carries nothing but liveness; the summaries that drive anti-entropy
//! travel on the data transport (see docs/ap.md). Up/down changes go to the member as
//! [`Liveness`] events keyed by server id; a restarted member (a new identity with the same id
//! and address) replaces the old one rather than being reported dead.

use crate::hlc::MemberId;
use foca::{Config, Foca, OwnedNotification, PostcardCodec, State, Timer};
use rand_foca::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// A member's identity in the gossip: its server id, its AP address, and a start-time bump so a
/// restarted member wins over its former self.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ident {
    pub id: MemberId,
    pub addr: SocketAddr,
    pub bump: u64,
}

impl foca::Identity for Ident {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Ident {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

/// A liveness change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Up(MemberId, SocketAddr),
    Down(MemberId),
}

/// Failure-detector timing.
#[derive(Debug, Clone, Copy)]
pub struct MembershipConfig {
    /// Probe interval (ms).
    pub probe_ms: u64,
    /// How long a suspected member has to refute before it is declared dead (ms).
    pub suspect_ms: u64,
}

/// Run the failure detector until `events` closes.
pub async fn run(
    me: Ident,
    socket: UdpSocket,
    seeds: Vec<(MemberId, SocketAddr)>,
    timing: MembershipConfig,
    events: mpsc::Sender<Liveness>,
) {
    let mut cfg = Config::new_lan(NonZeroU32::new(seeds.len().max(3) as u32).expect("nonzero"));
    cfg.probe_period = Duration::from_millis(timing.probe_ms.max(50));
    cfg.probe_rtt = Duration::from_millis((timing.probe_ms / 2).max(25));
    cfg.suspect_to_down_after = Duration::from_millis(timing.suspect_ms.max(100));
    cfg.periodic_gossip = Some(foca::PeriodicParams {
        frequency: Duration::from_millis((timing.probe_ms / 2).max(50)),
        num_members: std::num::NonZeroUsize::new(3).expect("nonzero"),
    });
    cfg.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(timing.probe_ms * 2),
        num_members: std::num::NonZeroUsize::new(2).expect("nonzero"),
    });
    let rng = rand_foca::rngs::StdRng::seed_from_u64(me.bump ^ me.id);
    let mut foca = Foca::new(me.clone(), cfg, rng, PostcardCodec);
    let mut rt = foca::AccumulatingRuntime::new();
    let (timer_tx, mut timer_rx) = mpsc::unbounded_channel::<Timer<Ident>>();
    let mut current: HashMap<MemberId, Ident> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let mut announce = tokio::time::interval(Duration::from_millis(timing.probe_ms * 2));
    let mut gauges = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, _)) = r {
                    metrics::counter!("roster_ap_gossip_bytes_total", "dir" => "received").increment(n as u64);
                    if let Err(e) = foca.handle_data(&buf[..n], &mut rt) {
                        tracing::trace!(error = %e, "gossip packet refused");
                    }
                }
            }
            Some(t) = timer_rx.recv() => {
                if matches!(t, Timer::ProbeRandomMember(_) | Timer::PeriodicGossip(_)) {
                    metrics::counter!("roster_ap_gossip_rounds_total").increment(1);
                }
                let _ = foca.handle_timer(t, &mut rt);
            }
            _ = announce.tick() => {
                // Seeds not (or no longer) among the live members: knock again. This is what
                // rejoins the sides of a healed partition even after they forgot each other.
                for (id, addr) in &seeds {
                    if *id == me.id { continue; }
                    let known = foca.iter_members().any(|m| m.id().addr == *addr);
                    if !known {
                        let _ = foca.announce(Ident { id: *id, addr: *addr, bump: 0 }, &mut rt);
                    }
                }
            }
            _ = gauges.tick() => {
                let (mut alive, mut suspect, mut dead) = (1u32, 0u32, 0u32);
                for m in foca.iter_membership_state() {
                    match m.state() {
                        State::Alive => alive += 1,
                        State::Suspect => suspect += 1,
                        State::Down => dead += 1,
                    }
                }
                metrics::gauge!("roster_ap_members", "state" => "alive").set(alive as f64);
                metrics::gauge!("roster_ap_members", "state" => "suspect").set(suspect as f64);
                metrics::gauge!("roster_ap_members", "state" => "dead").set(dead as f64);
            }
        }
        while let Some((to, data)) = rt.to_send() {
            metrics::counter!("roster_ap_gossip_bytes_total", "dir" => "sent")
                .increment(data.len() as u64);
            let _ = socket.send_to(&data, to.addr).await;
        }
        while let Some((after, timer)) = rt.to_schedule() {
            let tx = timer_tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = tx.send(timer);
            });
        }
        while let Some(n) = rt.to_notify() {
            let ev = match n {
                OwnedNotification::MemberUp(m) | OwnedNotification::Rename(_, m) => {
                    if m.id == me.id {
                        continue;
                    }
                    current.insert(m.id, m.clone());
                    tracing::info!(member = m.id, addr = %m.addr, "member up");
                    Liveness::Up(m.id, m.addr)
                }
                OwnedNotification::MemberDown(m) => {
                    // A former identity of a member that came back is not a death.
                    if current.get(&m.id).is_some_and(|c| c.bump > m.bump) {
                        continue;
                    }
                    current.remove(&m.id);
                    tracing::warn!(member = m.id, addr = %m.addr, "member declared dead");
                    Liveness::Down(m.id)
                }
                OwnedNotification::Rejoin(m) => {
                    tracing::warn!(
                        bump = m.bump,
                        "the cluster declared this member dead; rejoined"
                    );
                    continue;
                }
                OwnedNotification::Defunct => {
                    tracing::warn!("the cluster declared this member dead");
                    continue;
                }
                _ => continue,
            };
            if events.send(ev).await.is_err() {
                return;
            }
        }
    }
}
