//! Standalone servers started fresh for a run: Roster from its binary, Apache ZooKeeper from
//! `compat/zookeeper/start.sh`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{Deployment, four_letter, free_port, pinned};

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
    /// Starts `bin` with data in `dir` (created), on free loopback ports, on `cpus` if given.
    pub fn start(
        bin: &Path,
        backend: &str,
        dir: &Path,
        cpus: Option<&str>,
    ) -> anyhow::Result<RosterStandalone> {
        std::fs::create_dir_all(dir)?;
        let (zk_port, http_port) = (free_port()?, free_port()?);
        let addr = format!("127.0.0.1:{zk_port}");
        let log = std::fs::File::create(dir.join("roster.log"))?;
        let child = pinned(bin.as_os_str(), cpus)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--backend", backend])
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
    /// Starts ZooKeeper with a fresh `dir` on a free loopback port, on `cpus` if given (the
    /// JVM the script starts inherits them).
    pub fn start(
        start_script: &Path,
        dir: &Path,
        cpus: Option<&str>,
    ) -> anyhow::Result<ZooKeeperStandalone> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let out = pinned("bash".as_ref(), cpus)
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
