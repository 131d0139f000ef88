//! Systems under test. A [`Deployment`] is a set of server processes with a client connect
//! string; it can be started fresh or attached to, and faults are injected through it:
//!
//! - [`standalone`]: one Roster from its binary, one Apache ZooKeeper from the compat start
//!   script;
//! - [`ensemble`]: N-member ensembles started by `deploy/local/cluster.sh` or
//!   `compat/zookeeper/ensemble.sh`, whose members [`Deployment::inject`] kills, restarts or
//!   partitions;
//! - [`netns`]: the network namespaces (`bench/net.sh`) that make a partition possible.

mod ensemble;
mod netns;
mod standalone;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

pub use ensemble::{EnsembleSpec, ScriptEnsemble};
pub use standalone::{RosterStandalone, ZooKeeperStandalone};

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
/// A command for `program`, run under `taskset -c cpus` when `cpus` is given (it and every
/// process it starts stay on those CPUs).
pub fn pinned(program: &std::ffi::OsStr, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Pin every thread of process `pid` to `cpus` (`taskset -a -p -c`); threads it starts later
/// inherit it.
pub fn pin_process(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .output()
        .context("running taskset (util-linux)")?;
    anyhow::ensure!(
        out.status.success(),
        "taskset -a -p -c {cpus} {pid}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

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

/// What the server at the first address of `connect` says of itself in `mntr`: its
/// `zk_version` and, from Roster, its `roster_backend`. Empty when it does not answer (or
/// refuses the word).
pub fn describe_server(connect: &str) -> std::collections::BTreeMap<String, String> {
    let first = connect.split(',').next().unwrap_or_default();
    let addr = first.split('/').next().unwrap_or_default();
    let Ok(answer) = four_letter(addr, "mntr") else {
        return Default::default();
    };
    answer
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(k, _)| matches!(*k, "zk_version" | "roster_backend"))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Runs `bash script args…` with `env`; fails with its output when it fails.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(pid: u32) -> String {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string()
    }

    #[test]
    fn a_pinned_command_and_a_pinned_process_run_on_the_cpus_given() {
        let mut child = pinned("sleep".as_ref(), Some("0"))
            .arg("5")
            .spawn()
            .unwrap();
        // taskset execs the program: the child's pid is the program's.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(allowed(child.id()), "0");
        let mut other = Command::new("sleep").arg("5").spawn().unwrap();
        pin_process(other.id(), "0").unwrap();
        assert_eq!(allowed(other.id()), "0");
        assert!(pin_process(other.id(), "not-a-cpu-list").is_err());
        for c in [&mut child, &mut other] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
