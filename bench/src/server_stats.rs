//! The server's resource use, read from /proc while a workload runs: resident memory and CPU.
//! The server process is given by pid, by pid file, or found as the owner of a listening port.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Server resource figures over one run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServerStats {
    /// The first (or only) process sampled.
    pub pid: u32,
    /// Every process sampled (an ensemble's members); RSS and CPU are their sums.
    #[serde(default)]
    pub pids: Vec<u32>,
    pub samples: u64,
    pub rss_start_mb: f64,
    pub rss_peak_mb: f64,
    pub rss_end_mb: f64,
    /// Peak of the anonymous part of RSS (`RssAnon`: heap, stacks, allocator arenas — what the
    /// process itself holds, without the pages of its binary and libraries it maps from the
    /// page cache). 0 in reports from before it was sampled.
    #[serde(default)]
    pub anon_peak_mb: f64,
    /// Average CPU over the run, in percent of one core (200 = two cores busy).
    pub cpu_percent: f64,
}

/// Finds the pid of the process listening on 127.0.0.1/0.0.0.0 `port` (IPv4 or IPv6), by
/// matching the socket inode of /proc/net/tcp{,6} against every process's open fds.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "0A" {
                continue; // not LISTEN
            }
            let local_port = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.push(format!("socket:[{}]", cols[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| target.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// Resident set size (VmRSS) and its anonymous part (RssAnon) in MiB, from one read of
/// /proc/<pid>/status.
pub fn rss_and_anon_mb(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mb = |field| parse_kb(&status, field).map(|kb| kb / 1024.0);
    Some((mb("VmRSS:")?, mb("RssAnon:")?))
}

/// [`rss_and_anon_mb`] summed over `pids`; None when no pid answers.
fn memory_mb(pids: &[u32]) -> Option<(f64, f64)> {
    pids.iter()
        .filter_map(|&p| rss_and_anon_mb(p))
        .fold(None, |acc, (r, a)| {
            let (r0, a0) = acc.unwrap_or((0.0, 0.0));
            Some((r0 + r, a0 + a))
        })
}

fn parse_kb(status: &str, field: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// utime + stime in seconds, from /proc/<pid>/stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux architecture we run on; getconf would only repeat it.
    100.0
}

/// Sum of `f` over `pids`; None when no pid answers.
fn sum_of(pids: &[u32], f: fn(u32) -> Option<f64>) -> Option<f64> {
    pids.iter()
        .filter_map(|&p| f(p))
        .fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
}

/// Samples pids every `every` until stopped.
pub struct Sampler {
    pids: Vec<u32>,
    state: Arc<Mutex<SamplerState>>,
    handle: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct SamplerState {
    samples: u64,
    rss_start: f64,
    rss_peak: f64,
    rss_last: f64,
    anon_peak: f64,
}

impl Sampler {
    /// Starts sampling `pids` (their RSS summed).
    pub fn start(pids: Vec<u32>, every: Duration) -> Sampler {
        let state = Arc::new(Mutex::new(SamplerState::default()));
        let st = state.clone();
        let sampled = pids.clone();
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some((rss, anon)) = memory_mb(&sampled) else {
                    continue;
                };
                let mut s = st.lock();
                if s.samples == 0 {
                    s.rss_start = rss;
                }
                s.samples += 1;
                s.rss_peak = s.rss_peak.max(rss);
                s.rss_last = rss;
                s.anon_peak = s.anon_peak.max(anon);
            }
        });
        Sampler {
            pids,
            state,
            handle,
        }
    }

    /// Stops sampling; CPU is the difference of the process's CPU time over `window`.
    pub fn finish(self, cpu_at_start: Option<f64>, started: Instant) -> ServerStats {
        self.handle.abort();
        let cpu_end = sum_of(&self.pids, cpu_seconds);
        let now = memory_mb(&self.pids);
        let s = self.state.lock();
        let wall = started.elapsed().as_secs_f64().max(1e-9);
        let rss_last = now.map_or(s.rss_last, |(rss, _)| rss);
        ServerStats {
            pid: self.pids.first().copied().unwrap_or(0),
            pids: self.pids.clone(),
            samples: s.samples,
            rss_start_mb: s.rss_start,
            rss_peak_mb: s.rss_peak.max(rss_last),
            rss_end_mb: rss_last,
            anon_peak_mb: s.anon_peak.max(now.map_or(0.0, |(_, anon)| anon)),
            cpu_percent: match (cpu_at_start, cpu_end) {
                (Some(a), Some(b)) => 100.0 * (b - a) / wall,
                _ => 0.0,
            },
        }
    }
}

/// Samples a server around one measured window.
pub struct Watch {
    sampler: Sampler,
    cpu0: Option<f64>,
    t0: Instant,
}

impl Watch {
    /// Starts watching processes (one server, or an ensemble's members: their RSS and CPU
    /// summed), sampling every 200 ms. A member
    /// killed during the run drops out of the CPU figure (its CPU time is lost with it).
    pub fn start_many(pids: Vec<u32>) -> Watch {
        Watch {
            cpu0: sum_of(&pids, cpu_seconds),
            t0: Instant::now(),
            sampler: Sampler::start(pids, Duration::from_millis(200)),
        }
    }

    /// The figures since start.
    pub fn finish(self) -> ServerStats {
        self.sampler.finish(self.cpu0, self.t0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_own_listener_and_reads_own_stats() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(pid_listening_on(port), Some(std::process::id()));
        let (rss, anon) = rss_and_anon_mb(std::process::id()).unwrap();
        assert!(
            rss > 0.0 && anon > 0.0 && anon <= rss,
            "rss {rss} anon {anon}"
        );
        assert!(cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn reads_kb_fields_of_proc_status() {
        let status = "VmPeak:\t  20000 kB\nVmRSS:\t   8192 kB\nRssAnon:\t    2048 kB\n";
        assert_eq!(parse_kb(status, "VmRSS:"), Some(8192.0));
        assert_eq!(parse_kb(status, "RssAnon:"), Some(2048.0));
        assert_eq!(parse_kb(status, "RssFile:"), None);
    }
}
