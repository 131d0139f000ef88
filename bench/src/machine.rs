//! What the machine can do, measured at start so every result carries it: CPU model and cores,
//! fsync latency in a directory (ideally the server's data dir) and the loopback round trip.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Machine figures recorded with every report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    /// 1-minute load average when measured: other work on the machine skews every figure.
    pub load_avg_1m: f64,
    /// Directory where fsync was measured.
    pub fsync_dir: String,
    pub fsync_samples: u64,
    pub fsync_p50_ms: f64,
    pub fsync_p99_ms: f64,
    pub loopback_samples: u64,
    pub loopback_rtt_p50_us: f64,
    pub loopback_rtt_p99_us: f64,
}

/// Measures the machine: `fsync_samples` writes+fdatasyncs of 4 KiB in `dir`, and
/// `rtt_samples` one-byte ping-pongs over a TCP echo on 127.0.0.1.
pub fn measure(dir: &Path, fsync_samples: u64, rtt_samples: u64) -> anyhow::Result<Machine> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let load_avg_1m = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN);
    let (fsync_p50_ms, fsync_p99_ms) = fsync_latency(dir, fsync_samples)?;
    let (rtt_p50, rtt_p99) = loopback_rtt(rtt_samples)?;
    Ok(Machine {
        cpu_model,
        cores,
        kernel,
        load_avg_1m,
        fsync_dir: dir.display().to_string(),
        fsync_samples,
        fsync_p50_ms,
        fsync_p99_ms,
        loopback_samples: rtt_samples,
        loopback_rtt_p50_us: rtt_p50,
        loopback_rtt_p99_us: rtt_p99,
    })
}

fn micros_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

/// (p50, p99) in milliseconds of an appending 4 KiB write followed by fdatasync, as a txn log does.
fn fsync_latency(dir: &Path, samples: u64) -> anyhow::Result<(f64, f64)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!(".roster-bench-fsync-{}", std::process::id()));
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let block = vec![0x5au8; 4096];
    let mut h = micros_hist();
    let result = (|| -> anyhow::Result<()> {
        for _ in 0..samples {
            let t = Instant::now();
            file.write_all(&block)?;
            file.sync_data()?;
            h.saturating_record(t.elapsed().as_micros() as u64);
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    result.context("measuring fsync")?;
    Ok((
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
    ))
}

/// (p50, p99) in microseconds of a one-byte round trip through a TCP echo thread on loopback.
fn loopback_rtt(samples: u64) -> anyhow::Result<(f64, f64)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 1];
        while s.read(&mut b)? == 1 {
            s.write_all(&b)?;
        }
        Ok(())
    });
    let mut h = micros_hist();
    {
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        let mut b = [7u8; 1];
        for _ in 0..samples {
            let t = Instant::now();
            s.write_all(&b)?;
            s.read_exact(&mut b)?;
            h.saturating_record(t.elapsed().as_micros() as u64);
        }
    }
    let _ = echo.join();
    Ok((
        h.value_at_quantile(0.5) as f64,
        h.value_at_quantile(0.99) as f64,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn measures_something() {
        let dir = tempfile::tempdir().unwrap();
        let m = super::measure(dir.path(), 5, 50).unwrap();
        assert!(m.cores >= 1);
        assert!(m.fsync_p50_ms > 0.0);
        assert!(m.loopback_rtt_p50_us > 0.0);
    }
}
