//! Systems under test. A [`Deployment`] is a set of server processes with a client connect
//! string; it can be started fresh (Roster from its binary, Apache ZooKeeper from the compat
//! start script) or attached to. Ensembles and fault injection plug in here: a 3-node
//! deployment lists its members, and [`Deployment::inject`] kills, partitions or restarts them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// What a fault does to its member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// `kill -9`; with a fault duration, started again after it.
    Kill,
    /// Cut from the other members (not from clients) for the fault duration.
    Partition,
    /// `kill -9` and started again at once (after the fault duration, if one is given).
    Restart,
}

/// Which member a fault hits, chosen when it is injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultTarget {
    Leader,
    /// The lowest-numbered member that is not leading.
    Follower,
}

/// A fault to inject during load (ensembles only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub kind: FaultKind,
    pub target: FaultTarget,
}

impl Fault {
    /// Every name `--fault` accepts.
    pub const NAMES: &[&str] = &[
        "kill-leader",
        "kill-follower",
        "partition-leader",
        "partition-follower",
        "restart-leader",
        "restart-follower",
    ];

    /// Parses `kill-leader`, `partition-follower`, ….
    pub fn parse(name: &str) -> anyhow::Result<Fault> {
        let (kind, target) = name
            .split_once('-')
            .ok_or_else(|| anyhow::anyhow!("unknown fault {name:?}"))?;
        let kind = match kind {
            "kill" => FaultKind::Kill,
            "partition" => FaultKind::Partition,
            "restart" => FaultKind::Restart,
            _ => bail!("unknown fault {name:?}; known: {}", Fault::NAMES.join(", ")),
        };
        let target = match target {
            "leader" => FaultTarget::Leader,
            "follower" => FaultTarget::Follower,
            _ => bail!("unknown fault {name:?}; known: {}", Fault::NAMES.join(", ")),
        };
        Ok(Fault { kind, target })
    }

    /// `kill-leader` etc.
    pub fn label(&self) -> String {
        let kind = match self.kind {
            FaultKind::Kill => "kill",
            FaultKind::Partition => "partition",
            FaultKind::Restart => "restart",
        };
        let target = match self.target {
            FaultTarget::Leader => "leader",
            FaultTarget::Follower => "follower",
        };
        format!("{kind}-{target}")
    }
}

/// Where and when a fault hit.
#[derive(Clone, Copy, Debug)]
pub struct Injected {
    /// The member (1-based).
    pub member: usize,
    /// Just before the kill or the partition was applied (after the target was looked up).
    pub at: Instant,
}

/// Servers under test.
pub trait Deployment: Send {
    /// `roster` or `zookeeper`.
    fn system(&self) -> &str;
    /// Connect string for clients (`host:port[,host:port…]`).
    fn connect_string(&self) -> String;
    /// Server processes to sample (all members of an ensemble).
    fn server_pids(&self) -> Vec<u32>;
    /// Number of members (1 standalone).
    fn members(&self) -> usize {
        1
    }
    /// The member (1-based) that says it leads (4lw `srvr`), if any.
    fn leader(&self) -> Option<usize> {
        None
    }
    /// Injects a fault. Standalone deployments have nothing to fail over to.
    fn inject(&mut self, fault: Fault) -> anyhow::Result<Injected> {
        bail!(
            "fault {} needs an ensemble; {} is standalone",
            fault.label(),
            self.system()
        )
    }
    /// Undoes `fault` on `member`: restarts a killed member, heals a partition.
    fn heal(&mut self, fault: Fault, member: usize) -> anyhow::Result<()> {
        let _ = (fault, member);
        Ok(())
    }
    /// Stops whatever this deployment started (attached servers are left alone).
    fn stop(&mut self) -> anyhow::Result<()>;
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Sends a four-letter word and returns the answer.
pub fn four_letter(addr: &str, word: &str) -> anyhow::Result<String> {
    use std::net::ToSocketAddrs;
    let sa = addr
        .to_socket_addrs()?
        .next()
        .with_context(|| format!("no address for {addr}"))?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(word.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn wait_imok(
    addr: &str,
    deadline: Duration,
    mut alive: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        if !alive() {
            bail!("server at {addr} exited during startup");
        }
        if four_letter(addr, "ruok")
            .map(|a| a == "imok")
            .unwrap_or(false)
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("server at {addr} did not answer ruok within {deadline:?}")
}

/// A standalone `roster` started from its binary with a fresh data dir.
pub struct RosterStandalone {
    child: Option<Child>,
    addr: String,
    dir: PathBuf,
}

impl RosterStandalone {
    /// Starts `bin` with data in `dir` (created), on free loopback ports.
    pub fn start(bin: &Path, dir: &Path) -> anyhow::Result<RosterStandalone> {
        std::fs::create_dir_all(dir)?;
        let (zk_port, http_port) = (free_port()?, free_port()?);
        let addr = format!("127.0.0.1:{zk_port}");
        let log = std::fs::File::create(dir.join("roster.log"))?;
        let child = Command::new(bin)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args([
                "--zk-listen",
                &addr,
                "--http-listen",
                &format!("127.0.0.1:{http_port}"),
            ])
            .args(["--four-letter-words", "*"])
            // As the ZooKeeper side (start.sh sets maxClientCnxns=0): every session of a
            // storm comes from 127.0.0.1.
            .args(["--max-client-connections", "0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut me = RosterStandalone {
            child: Some(child),
            addr,
            dir: dir.to_path_buf(),
        };
        let child = me.child.as_mut().expect("just set");
        if let Err(e) = wait_imok(&me.addr, Duration::from_secs(30), || {
            matches!(child.try_wait(), Ok(None))
        }) {
            let _ = me.stop();
            return Err(e).with_context(|| format!("see {}", me.dir.join("roster.log").display()));
        }
        Ok(me)
    }
}

impl Deployment for RosterStandalone {
    fn system(&self) -> &str {
        "roster"
    }
    fn connect_string(&self) -> String {
        self.addr.clone()
    }
    fn server_pids(&self) -> Vec<u32> {
        self.child
            .as_ref()
            .map(|c| vec![c.id()])
            .unwrap_or_default()
    }
    fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill()?;
        child.wait()?;
        Ok(())
    }
}

impl Drop for RosterStandalone {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A standalone Apache ZooKeeper started through `compat/zookeeper/start.sh <port> <dir>` and
/// stopped through the `stop.sh` beside it.
pub struct ZooKeeperStandalone {
    start_script: PathBuf,
    dir: PathBuf,
    addr: String,
    pid: Option<u32>,
}

impl ZooKeeperStandalone {
    /// Starts ZooKeeper with a fresh `dir` on a free loopback port.
    pub fn start(start_script: &Path, dir: &Path) -> anyhow::Result<ZooKeeperStandalone> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let out = Command::new("bash")
            .arg(start_script)
            .arg(port.to_string())
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", start_script.display()))?;
        if !out.status.success() {
            bail!(
                "{} failed: {}{}",
                start_script.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let pid = std::fs::read_to_string(dir.join("zookeeper.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Ok(ZooKeeperStandalone {
            start_script: start_script.to_path_buf(),
            dir: dir.to_path_buf(),
            addr: format!("127.0.0.1:{port}"),
            pid,
        })
    }
}

impl Deployment for ZooKeeperStandalone {
    fn system(&self) -> &str {
        "zookeeper"
    }
    fn connect_string(&self) -> String {
        self.addr.clone()
    }
    fn server_pids(&self) -> Vec<u32> {
        self.pid.into_iter().collect()
    }
    fn stop(&mut self) -> anyhow::Result<()> {
        if self.pid.take().is_none() {
            return Ok(());
        }
        let stop = self.start_script.with_file_name("stop.sh");
        let status = Command::new("bash")
            .arg(&stop)
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("{} {} failed", stop.display(), self.dir.display());
        }
        Ok(())
    }
}

impl Drop for ZooKeeperStandalone {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A server someone else runs: nothing is started or stopped.
pub struct Attached {
    pub system: String,
    pub addr: String,
    pub pid: Option<u32>,
}

impl Deployment for Attached {
    fn system(&self) -> &str {
        &self.system
    }
    fn connect_string(&self) -> String {
        self.addr.clone()
    }
    fn server_pids(&self) -> Vec<u32> {
        self.pid.into_iter().collect()
    }
    fn stop(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

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

/// The namespaces of an ensemble (see `bench/net.sh`).
struct Net {
    script: PathBuf,
    tag: &'static str,
    subnet: &'static str,
    size: usize,
}

impl Net {
    fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        run_script(&self.script, args, &[])
    }
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
    net: Option<Net>,
    /// Started and not stopped yet.
    running: bool,
}

fn run_script(script: &Path, args: &[&str], env: &[(String, String)]) -> anyhow::Result<()> {
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed: {}{}",
            script.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
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
    /// cluster.sh and `roster_bin` the binary; "zookeeper": `script` is ensemble.sh) with its
    /// state in `dir`.
    pub fn start(
        system: &'static str,
        script: &Path,
        roster_bin: Option<&Path>,
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
        let hosts: Vec<String> = (1..=n)
            .map(|i| {
                if spec.netns {
                    format!("{subnet}.{i}")
                } else {
                    "127.0.0.1".into()
                }
            })
            .collect();
        let net = if spec.netns {
            let net = Net {
                script: spec.net_script.clone(),
                tag,
                subnet,
                size: n,
            };
            // A namespace left over from an interrupted run would make `up` fail.
            let _ = net.run(&["down", tag, &n.to_string()]);
            net.run(&["up", tag, &n.to_string(), subnet])?;
            env.push(("HOSTS".into(), hosts.join(",")));
            env.push(("NETNS_PREFIX".into(), format!("rb-{tag}-")));
            Some(net)
        } else {
            None
        };
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
            // As the ZooKeeper side (maxClientCnxns=0), and the same tick.
            args.extend(["--", "--max-client-connections", "0", "--tick-ms", &tick]);
        }
        if let Err(e) = run_script(&me.script, &args, &me.env) {
            let _ = me.stop();
            return Err(e);
        }
        // Up means: one member says it leads and every member answers.
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let modes: Vec<Option<String>> = (1..=n).map(|i| me.mode(i)).collect();
            let leaders = modes
                .iter()
                .filter(|m| m.as_deref() == Some("leader"))
                .count();
            if leaders == 1 && modes.iter().all(|m| m.is_some()) {
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
            FaultTarget::Leader => leader.context("no member says it leads"),
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
                net.run(&["partition", net.tag, &member.to_string(), net.subnet])?;
            }
        }
        Ok(Injected { member, at })
    }
    fn heal(&mut self, fault: Fault, member: usize) -> anyhow::Result<()> {
        match fault.kind {
            FaultKind::Kill | FaultKind::Restart => self.restart(member),
            FaultKind::Partition => {
                let net = self.net.as_ref().context("no namespaces")?;
                net.run(&["heal", net.tag, &member.to_string()])
            }
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
            net.run(&["down", net.tag, &net.size.to_string()])?;
        }
        stopped
    }
}

impl Drop for ScriptEnsemble {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
