//! Seeded simulation of a 3-member AP cluster over the I/O-free core: the same `Member`,
//! `materialize` and `Tree` as the real backend, with a simulated network (delay, loss,
//! partitions), a simulated failure detector, per-member clock skew, and crashes with restart from
//! the member's "disk" (only what a batch persisted before its acks). Clients write throughout;
//! after a healing phase every member must hold the same tree, and every acknowledged create of a
//! unique persistent path must be on every member.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roster_ap::expiry::ExpiryConfig;
use roster_ap::hlc::{Hlc, MemberId, Stamp};
use roster_ap::materialize::{materialize, tree_content};
use roster_ap::member::{Member, MemberConfig, Plan};
use roster_ap::model::{PEntry, Value};
use roster_ap::proto::Msg;
use roster_core::acl::Acl;
use roster_core::tree::Tree;
use roster_core::txn::{Envelope, Request, WriteOp};
use roster_core::{CreateMode, SessionId, Zxid};
use std::collections::{BTreeMap, BTreeSet};

const N: u64 = 3;
const STEP_MS: u64 = 10;

struct Node {
    id: MemberId,
    member: Member,
    tree: Tree,
    next_zxid: Zxid,
    disk: BTreeMap<String, PEntry>,
    disk_hlc: Hlc,
    incarnation: u64,
    up: bool,
    sessions: Vec<SessionId>,
    skew: i64,
}

fn cfg(id: MemberId) -> MemberConfig {
    MemberConfig {
        id,
        expiry: ExpiryConfig {
            grace_ms: 1000,
            max_share: 0.5,
        },
        tombstone_ttl_ms: 3_600_000,
        anti_entropy_ms: 300,
    }
}

impl Node {
    fn boot(
        id: MemberId,
        disk: BTreeMap<String, PEntry>,
        disk_hlc: Hlc,
        incarnation: u64,
        skew: i64,
    ) -> Node {
        let member = Member::new(
            cfg(id),
            incarnation,
            disk_hlc,
            disk.clone(),
            id * 7919 + incarnation,
        );
        let mut tree = Tree::new();
        let mut next_zxid = (incarnation as i64) << 32 | 1;
        let all: BTreeSet<String> = disk.keys().cloned().collect();
        materialize(member.model(), &mut tree, &all, &mut next_zxid);
        let mut n = Node {
            id,
            member,
            tree,
            next_zxid,
            disk,
            disk_hlc,
            incarnation,
            up: true,
            sessions: Vec::new(),
            skew,
        };
        for p in 1..=N {
            n.member.add_peer(p);
        }
        n
    }

    fn wall(&self, now: u64) -> u64 {
        (now as i64 + self.skew).max(0) as u64
    }

    /// End of a batch: persist, apply, then the acks become real.
    fn flush(&mut self, out: &mut Vec<(MemberId, MemberId, Msg)>) {
        let acts = self.member.flush();
        for (p, e) in acts.persist {
            match e {
                Some(e) => {
                    self.disk.insert(p, e);
                }
                None => {
                    self.disk.remove(&p);
                }
            }
        }
        self.disk_hlc = self.member.clock();
        let mut changed = acts.changed;
        // Sessions: the shell applies CreateSession/CloseSession txns; the sim only needs nodes.
        for s in &acts.closed {
            self.sessions.retain(|x| x != s);
        }
        changed.retain(|p| !p.is_empty());
        let before = self.tree.last_zxid();
        let txns = materialize(
            self.member.model(),
            &mut self.tree,
            &changed,
            &mut self.next_zxid,
        );
        assert!(
            txns.iter().all(|t| t.zxid > before),
            "zxids increase locally"
        );
        for (to, m) in acts.send {
            out.push((self.id, to, m));
        }
    }
}

struct Sim {
    rng: StdRng,
    nodes: Vec<Node>,
    /// (deliver at, seq) → (from, to, msg)
    net: BTreeMap<(u64, u64), (MemberId, MemberId, Msg)>,
    seq: u64,
    side: BTreeMap<MemberId, u8>,
    /// The simulated failure detector's view: (observer, target) → unreachable since.
    unreachable: BTreeMap<(MemberId, MemberId), u64>,
    declared_down: BTreeSet<(MemberId, MemberId)>,
    loss: f64,
    acked: BTreeSet<String>,
    counter: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut base: BTreeMap<String, PEntry> = BTreeMap::new();
        for p in ["/p", "/s", "/e"] {
            base.insert(
                p.into(),
                PEntry {
                    stamp: Stamp {
                        hlc: Hlc {
                            wall: 1,
                            logical: 0,
                        },
                        origin: 0,
                    },
                    value: Some(Value {
                        data: vec![],
                        acl: Acl::open_unsafe().into(),
                    }),
                },
            );
        }
        let nodes = (1..=N)
            .map(|id| {
                let skew = rng.gen_range(-50..=50);
                Node::boot(id, base.clone(), Hlc::default(), 1, skew)
            })
            .collect();
        Sim {
            rng,
            nodes,
            net: BTreeMap::new(),
            seq: 0,
            side: (1..=N).map(|i| (i, 0)).collect(),
            unreachable: BTreeMap::new(),
            declared_down: BTreeSet::new(),
            loss: 0.05,
            acked: BTreeSet::new(),
            counter: 0,
        }
    }

    fn reachable(&self, a: MemberId, b: MemberId) -> bool {
        self.nodes[(a - 1) as usize].up
            && self.nodes[(b - 1) as usize].up
            && self.side[&a] == self.side[&b]
    }

    fn enqueue(&mut self, now: u64, out: Vec<(MemberId, MemberId, Msg)>) {
        for (from, to, msg) in out {
            if to == from || to == 0 || to > N {
                continue;
            }
            if self.rng.gen_bool(self.loss) {
                continue;
            }
            let at = now + self.rng.gen_range(1..=20);
            self.seq += 1;
            self.net.insert((at, self.seq), (from, to, msg));
        }
    }

    fn client_op(&mut self, now: u64) {
        let i = self.rng.gen_range(0..N as usize);
        if !self.nodes[i].up {
            return;
        }
        self.counter += 1;
        let k = self.counter;
        let roll = self.rng.gen_range(0..100);
        let node = &mut self.nodes[i];
        let wall = node.wall(now);
        let (session, req) = match roll {
            0..=39 => (
                0,
                WriteOp::Create {
                    path: format!("/p/{}-{k}", node.id),
                    data: k.to_be_bytes().to_vec(),
                    acl: Acl::open_unsafe(),
                    mode: CreateMode::Persistent,
                    ttl: 0,
                },
            ),
            40..=64 => {
                let key = format!("/s/k{}", k % 5);
                if node.member.model().exists(&key) {
                    (
                        0,
                        WriteOp::SetData {
                            path: key,
                            data: k.to_be_bytes().to_vec(),
                            version: -1,
                        },
                    )
                } else {
                    (
                        0,
                        WriteOp::Create {
                            path: key,
                            data: vec![],
                            acl: Acl::open_unsafe(),
                            mode: CreateMode::Persistent,
                            ttl: 0,
                        },
                    )
                }
            }
            65..=74 => (
                0,
                WriteOp::Delete {
                    path: format!("/s/k{}", k % 5),
                    version: -1,
                },
            ),
            75..=94 => {
                if node.sessions.is_empty() || roll == 94 {
                    let env = Envelope::internal(Request::CreateSession { timeout_ms: 10_000 });
                    if let Plan::SessionCreated { session, .. } = node.member.local(&env, wall) {
                        node.sessions.push(session);
                    }
                    return;
                }
                let s = node.sessions[k as usize % node.sessions.len()];
                (
                    s,
                    WriteOp::Create {
                        path: format!("/e/{}-{k}", node.id),
                        data: vec![],
                        acl: Acl::open_unsafe(),
                        mode: CreateMode::Ephemeral,
                        ttl: 0,
                    },
                )
            }
            _ => {
                if let Some(&s) = node.sessions.first() {
                    let env = Envelope {
                        session: s,
                        ..Envelope::internal(Request::CloseSession)
                    };
                    node.member.local(&env, wall);
                }
                return;
            }
        };
        let env = Envelope {
            session,
            ..Envelope::internal(Request::Op(req))
        };
        let plan = node.member.local(&env, wall);
        // Acknowledged once this node's batch is flushed (persisted) — which happens this step.
        if let Plan::Created(p) = plan
            && p.starts_with("/p/")
        {
            self.acked.insert(p);
        }
    }

    fn step(&mut self, now: u64, faults: bool) {
        // Faults.
        if faults {
            let r = self.rng.gen_range(0..1000);
            if r < 3 {
                // Partition one member from the other two (or heal).
                let lone = self.rng.gen_range(1..=N);
                for m in 1..=N {
                    self.side.insert(m, (m == lone) as u8);
                }
            } else if r < 6 {
                for m in 1..=N {
                    self.side.insert(m, 0);
                }
            } else if r < 8 {
                let i = self.rng.gen_range(0..N as usize);
                if self.nodes[i].up {
                    // Crash: everything not persisted is gone; restart later from disk.
                    self.nodes[i].up = false;
                }
            }
        }
        for i in 0..N as usize {
            if !self.nodes[i].up && (!faults || self.rng.gen_range(0..100) < 2) {
                let old = &self.nodes[i];
                let (id, disk, hlc, inc, skew) = (
                    old.id,
                    old.disk.clone(),
                    old.disk_hlc,
                    old.incarnation + 1,
                    old.skew,
                );
                self.nodes[i] = Node::boot(id, disk, hlc, inc, skew);
            }
        }
        // The failure detector: unreachable for 300 ms ⇒ down; reachable again ⇒ up.
        for a in 1..=N {
            for b in 1..=N {
                if a == b || !self.nodes[(a - 1) as usize].up {
                    continue;
                }
                let reach = self.reachable(a, b);
                let node = &mut self.nodes[(a - 1) as usize];
                if reach {
                    self.unreachable.remove(&(a, b));
                    if self.declared_down.remove(&(a, b)) {
                        node.member.member_up(b);
                    }
                } else {
                    let since = *self.unreachable.entry((a, b)).or_insert(now);
                    if now - since >= 300 && self.declared_down.insert((a, b)) {
                        let w = node.wall(now);
                        node.member.member_down(b, w);
                    }
                }
            }
        }
        // Deliver due messages.
        let due: Vec<(u64, u64)> = self.net.range(..(now + 1, 0)).map(|(k, _)| *k).collect();
        for k in due {
            let (from, to, msg) = self.net.remove(&k).expect("listed");
            if !self.reachable(from, to) {
                continue;
            }
            let node = &mut self.nodes[(to - 1) as usize];
            let w = node.wall(now);
            node.member.peer(from, msg, w);
        }
        // Clients.
        if faults {
            for _ in 0..self.rng.gen_range(0..3) {
                self.client_op(now);
            }
        }
        // Ticks and batch ends.
        let mut out = Vec::new();
        for n in self.nodes.iter_mut().filter(|n| n.up) {
            if now.is_multiple_of(100) {
                let w = n.wall(now);
                n.member.tick(w);
            }
            n.flush(&mut out);
        }
        self.enqueue(now, out);
    }

    fn run(&mut self, fault_ms: u64, heal_ms: u64) -> Result<(), String> {
        let mut now = 0;
        while now < fault_ms {
            now += STEP_MS;
            self.step(now, true);
        }
        for m in 1..=N {
            self.side.insert(m, 0);
        }
        self.loss = 0.0;
        let end = now + heal_ms;
        while now < end {
            now += STEP_MS;
            self.step(now, false);
        }
        let first = tree_content(&self.nodes[0].tree);
        for n in &self.nodes {
            let c = tree_content(&n.tree);
            if c != n.member.model().visible_map() {
                return Err(format!("member {}: tree differs from its model", n.id));
            }
            if c != first {
                let a: BTreeSet<_> = first.keys().collect();
                let b: BTreeSet<_> = c.keys().collect();
                return Err(format!(
                    "member {} differs from member 1: only on 1 {:?}, only on {} {:?}",
                    n.id,
                    a.difference(&b).take(5).collect::<Vec<_>>(),
                    n.id,
                    b.difference(&a).take(5).collect::<Vec<_>>()
                ));
            }
            for p in &self.acked {
                if !c.contains_key(p) {
                    return Err(format!("member {} lost acknowledged {p}", n.id));
                }
            }
        }
        Ok(())
    }
}

#[test]
fn converges_without_losing_acknowledged_writes() {
    let seeds: u64 = std::env::var("AP_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    for seed in 0..seeds {
        let mut sim = Sim::new(seed);
        if let Err(e) = sim.run(8_000, 6_000) {
            panic!("seed {seed}: {e}");
        }
        assert!(
            sim.acked.len() > 100,
            "seed {seed}: the workload ran ({} acked)",
            sim.acked.len()
        );
    }
}

#[test]
fn a_lone_side_keeps_its_ephemerals_and_the_majority_drops_them_after_grace() {
    let mut sim = Sim::new(99);
    // Everyone registers an ephemeral through its own session.
    for i in 0..N as usize {
        let n = &mut sim.nodes[i];
        let env = Envelope::internal(Request::CreateSession { timeout_ms: 60_000 });
        let Plan::SessionCreated { session, .. } = n.member.local(&env, 0) else {
            panic!()
        };
        let env = Envelope {
            session,
            ..Envelope::internal(Request::Op(WriteOp::Create {
                path: format!("/e/m{}", n.id),
                data: vec![],
                acl: Acl::open_unsafe(),
                mode: CreateMode::Ephemeral,
                ttl: 0,
            }))
        };
        assert!(matches!(n.member.local(&env, 0), Plan::Created(_)));
    }
    sim.loss = 0.0;
    let mut now = 0;
    for _ in 0..50 {
        now += STEP_MS;
        sim.step(now, false);
    }
    assert_eq!(
        tree_content(&sim.nodes[1].tree)
            .keys()
            .filter(|p| p.starts_with("/e/"))
            .count(),
        3
    );
    // Cut member 1 off for 3 s (grace is 1 s).
    sim.side.insert(1, 1);
    for _ in 0..300 {
        now += STEP_MS;
        sim.step(now, false);
    }
    let lone = tree_content(&sim.nodes[0].tree);
    let major = tree_content(&sim.nodes[1].tree);
    assert!(
        lone.contains_key("/e/m2") && lone.contains_key("/e/m3"),
        "self-preservation on the lone side"
    );
    assert!(sim.nodes[0].member.preserving());
    assert!(
        !major.contains_key("/e/m1"),
        "the majority removed the lost member's ephemerals"
    );
    assert!(!sim.nodes[1].member.preserving());
    sim.side.insert(1, 0);
    for _ in 0..200 {
        now += STEP_MS;
        sim.step(now, false);
    }
    for n in &sim.nodes {
        assert_eq!(
            tree_content(&n.tree)
                .keys()
                .filter(|p| p.starts_with("/e/"))
                .count(),
            3,
            "member {}",
            n.id
        );
        assert!(!n.member.preserving());
    }
}
