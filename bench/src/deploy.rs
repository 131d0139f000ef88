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

/// A fault to inject during load (ensembles only; nothing injects one until an ensemble
/// deployment exists — see docs/benchmarks.md).
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub enum Fault {
    KillLeader,
    PartitionMember(usize),
    RestartMember(usize),
}

/// Servers under test.
#[allow(dead_code)] // members/inject are the ensemble and fault hooks
pub trait Deployment {
    /// `roster` or `zookeeper`.
    fn system(&self) -> &str;
    /// Connect string for clients (`host:port[,host:port…]`).
    fn connect_string(&self) -> String;
    /// Server processes to sample (first: the one standalone runs report).
    fn server_pids(&self) -> Vec<u32>;
    /// Number of members (1 standalone).
    fn members(&self) -> usize {
        1
    }
    /// Injects a fault. Standalone deployments have nothing to fail over to.
    fn inject(&mut self, fault: Fault) -> anyhow::Result<()> {
        bail!(
            "fault {fault:?} needs an ensemble; {} is standalone",
            self.system()
        )
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
    let mut s = TcpStream::connect(addr)?;
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
