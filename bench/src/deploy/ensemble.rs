//! Ensembles started by a script with the interface of `deploy/local/cluster.sh` (Roster) or
//! `compat/zookeeper/ensemble.sh` (ZooKeeper), on free port ranges, optionally with each member
//! in its own network namespace; faults are kills, restarts and partitions of one member.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::netns::Namespaces;
use super::{Deployment, Fault, FaultKind, FaultTarget, Injected, four_letter, run_script};

/// How an ensemble is laid out on this machine.
#[derive(Clone, Debug)]
pub struct EnsembleSpec {
    /// Members.
    pub size: usize,
    /// Each member in its own network namespace (`bench/net.sh`), so it can be partitioned.
    /// Needs root.
    pub netns: bool,
    /// `bench/net.sh`.
    pub net_script: PathBuf,
    /// tickTime of both systems, ms (initLimit 10, syncLimit 5 ticks on both).
    pub tick_ms: u64,
}

/// An ensemble started by a script with the interface of `deploy/local/cluster.sh`
/// (`start N`, `kill I`, `restart I`, `stop`; pids in `$DIR/nodeI.pid`):
/// `deploy/local/cluster.sh` for Roster, `compat/zookeeper/ensemble.sh` for ZooKeeper.
pub struct ScriptEnsemble {
    system: &'static str,
    script: PathBuf,
    env: Vec<(String, String)>,
    dir: PathBuf,
    hosts: Vec<String>,
    client_ports: Vec<u16>,
    net: Option<Namespaces>,
    /// Started and not stopped yet.
    running: bool,
}

/// A base such that base+1..=base+n (×`stride`) are all free loopback ports.
fn free_base(n: usize, stride: u16, tries: &mut u64) -> anyhow::Result<u16> {
    for _ in 0..200 {
        *tries += 1;
        let seed = std::process::id() as u64 ^ (*tries).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let base = 20_000 + (crate::workloads::mix(seed) % 20_000) as u16;
        let all_free = (1..=n as u16).all(|i| {
            std::net::TcpListener::bind(("127.0.0.1", base + stride * i)).is_ok()
                && std::net::TcpListener::bind(("0.0.0.0", base + stride * i)).is_ok()
        });
        if all_free {
            return Ok(base);
        }
    }
    bail!("no free port range found")
}

impl ScriptEnsemble {
    /// Starts a fresh `spec.size`-member ensemble of `system` ("roster": `script` is
    /// cluster.sh, `roster_bin` the binary and `backend` its `--backend`; "zookeeper": `script`
    /// is ensemble.sh) with its state in `dir`.
    pub fn start(
        system: &'static str,
        script: &Path,
        roster_bin: Option<&Path>,
        backend: &str,
        spec: &EnsembleSpec,
        dir: &Path,
    ) -> anyhow::Result<ScriptEnsemble> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let n = spec.size;
        let mut tries = 0;
        let zk_base = free_base(n, 1, &mut tries)?;
        let quorum_base = free_base(n, 1, &mut tries)?;
        let election_base = free_base(n, 1, &mut tries)?;
        let mut env: Vec<(String, String)> = vec![
            ("ZK_BASE".into(), zk_base.to_string()),
            ("QUORUM_BASE".into(), quorum_base.to_string()),
            ("ELECTION_BASE".into(), election_base.to_string()),
        ];
        let (tag, subnet) = match system {
            "roster" => {
                env.push(("ROSTER_LOCAL_DIR".into(), dir.display().to_string()));
                let http_base = free_base(n, 10, &mut tries)?;
                env.push(("HTTP_BASE".into(), http_base.to_string()));
                if let Some(bin) = roster_bin {
                    env.push(("ROSTER_BIN".into(), bin.display().to_string()));
                }
                ("r", "10.231.1")
            }
            _ => {
                env.push(("ZK_ENSEMBLE_DIR".into(), dir.display().to_string()));
                env.push(("ZK_TICK_MS".into(), spec.tick_ms.to_string()));
                ("z", "10.231.2")
            }
        };
        let net = if spec.netns {
            Some(Namespaces::up(&spec.net_script, tag, subnet, n)?)
        } else {
            None
        };
        let hosts: Vec<String> = (1..=n)
            .map(|i| net.as_ref().map_or("127.0.0.1".into(), |net| net.host(i)))
            .collect();
        if let Some(net) = &net {
            env.push(("HOSTS".into(), hosts.join(",")));
            env.push(("NETNS_PREFIX".into(), net.prefix()));
        }
        let mut me = ScriptEnsemble {
            system,
            script: script.to_path_buf(),
            env,
            dir: dir.clone(),
            hosts,
            client_ports: (1..=n as u16).map(|i| zk_base + i).collect(),
            net,
            running: true,
        };
        let n_arg = n.to_string();
        let tick = spec.tick_ms.to_string();
        let mut args = vec!["start", n_arg.as_str()];
        if system == "roster" {
            args.extend(["--backend", backend]);
            // As the ZooKeeper side (maxClientCnxns=0), and the same tick.
            args.extend(["--", "--max-client-connections", "0", "--tick-ms", &tick]);
        }
        if let Err(e) = run_script(&me.script, &args, &me.env) {
            let _ = me.stop();
            return Err(e);
        }
        // Up means: one member says it leads and every member answers — or, for Roster's AP
        // backend, which has no leader (every member takes writes), every member answers.
        let leaderless = system == "roster" && backend == "ap";
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let modes: Vec<Option<String>> = (1..=n).map(|i| me.mode(i)).collect();
            let leaders = modes
                .iter()
                .filter(|m| m.as_deref() == Some("leader"))
                .count();
            if (leaderless || leaders == 1) && modes.iter().all(|m| m.is_some()) {
                break;
            }
            if Instant::now() > until {
                let _ = me.stop();
                bail!(
                    "{system} ensemble in {} not up: modes {modes:?}",
                    dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(me)
    }

    fn addr(&self, member: usize) -> String {
        format!(
            "{}:{}",
            self.hosts[member - 1],
            self.client_ports[member - 1]
        )
    }

    /// `Mode:` of `srvr` (leader, follower, observer, looking…); None when it does not answer
    /// or is not serving.
    fn mode(&self, member: usize) -> Option<String> {
        let answer = four_letter(&self.addr(member), "srvr").ok()?;
        answer
            .lines()
            .find_map(|l| l.strip_prefix("Mode: "))
            .map(|m| m.trim().to_string())
    }

    fn pid(&self, member: usize) -> Option<u32> {
        std::fs::read_to_string(self.dir.join(format!("node{member}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn pick(&self, target: FaultTarget) -> anyhow::Result<usize> {
        let leader = self.leader();
        match target {
            FaultTarget::Leader => leader.context("no member says it leads (an AP ensemble has no leader: kill-follower, restart-follower and partition-follower hit one of its members)"),
            FaultTarget::Follower => (1..=self.members())
                .find(|&i| Some(i) != leader && self.pid(i).is_some())
                .context("no running follower"),
        }
    }

    fn kill(&self, member: usize) -> anyhow::Result<()> {
        run_script(&self.script, &["kill", &member.to_string()], &self.env)
    }

    fn restart(&self, member: usize) -> anyhow::Result<()> {
        run_script(&self.script, &["restart", &member.to_string()], &self.env)
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
}

impl Deployment for ScriptEnsemble {
    fn system(&self) -> &str {
        self.system
    }
    fn connect_string(&self) -> String {
        (1..=self.members())
            .map(|i| self.addr(i))
            .collect::<Vec<_>>()
            .join(",")
    }
    fn server_pids(&self) -> Vec<u32> {
        (1..=self.members()).filter_map(|i| self.pid(i)).collect()
    }
    fn members(&self) -> usize {
        self.hosts.len()
    }
    fn leader(&self) -> Option<usize> {
        (1..=self.members()).find(|&i| self.mode(i).as_deref() == Some("leader"))
    }
    fn inject(&mut self, fault: Fault) -> anyhow::Result<Injected> {
        let member = self.pick(fault.target)?;
        let at = Instant::now();
        match fault.kind {
            FaultKind::Kill | FaultKind::Restart => self.kill(member)?,
            FaultKind::Partition => {
                let net = self.net.as_ref().context(
                    "a partition needs each member in its own network namespace (--netns, as root)",
                )?;
                net.partition(member)?;
            }
        }
        Ok(Injected { member, at })
    }
    fn heal(&mut self, fault: Fault, member: usize) -> anyhow::Result<()> {
        match fault.kind {
            FaultKind::Kill | FaultKind::Restart => self.restart(member),
            FaultKind::Partition => self.net.as_ref().context("no namespaces")?.heal(member),
        }
    }
    fn stop(&mut self) -> anyhow::Result<()> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        let pids = self.server_pids();
        let stopped = run_script(&self.script, &["stop"], &self.env);
        let until = Instant::now() + Duration::from_secs(20);
        while pids.iter().any(|&p| alive(p)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        for &p in pids.iter().filter(|&&p| alive(p)) {
            let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
        }
        if let Some(net) = &self.net {
            net.down()?;
        }
        stopped
    }
}

impl Drop for ScriptEnsemble {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
