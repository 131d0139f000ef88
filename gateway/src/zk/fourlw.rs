//! Four-letter words on the client port (`echo ruok | nc host 2181`), behind the configured
//! allow-list, with ZooKeeper's output formats so existing scripts and exporters keep working.

use super::ZkServer;
use super::frame::FourLetterWord;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// The reported version line (tools parse the `x.y.z` prefix).
pub const ZK_VERSION: &str = concat!("3.8.4-roster-", env!("CARGO_PKG_VERSION"));

/// The text a four-letter word answers with.
pub fn answer(server: &ZkServer, cmd: FourLetterWord) -> String {
    let name = cmd.name();
    if !server.cfg.four_letter_allowed(name) {
        return format!("{name} is not executed because it is not in the whitelist.\n");
    }
    metrics::counter!("roster_zk_four_letter_words_total", "cmd" => name).increment(1);
    let status = server.backend.status();
    let tree = server.backend.tree();
    let reg = &server.registry;
    let mut s = String::new();
    match name {
        "ruok" => s.push_str("imok"),
        "isro" => s.push_str("rw"),
        "srvr" | "stat" => {
            let (min, avg, max) = reg.stats.latency_ms();
            let _ = writeln!(
                s,
                "Zookeeper version: {ZK_VERSION}, built on 01/01/2026 00:00 GMT"
            );
            if name == "stat" {
                s.push_str("Clients:\n");
                for c in reg.connections() {
                    let _ = writeln!(
                        s,
                        " /{}[1](queued={},recved={},sent={})",
                        c.peer,
                        c.outstanding.load(Ordering::Relaxed),
                        c.received.load(Ordering::Relaxed),
                        c.sent.load(Ordering::Relaxed)
                    );
                }
                s.push('\n');
            }
            let _ = writeln!(s, "Latency min/avg/max: {min:.0}/{avg:.4}/{max:.0}");
            let _ = writeln!(
                s,
                "Received: {}",
                reg.stats.packets_received.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                s,
                "Sent: {}",
                reg.stats.packets_sent.load(Ordering::Relaxed)
            );
            let _ = writeln!(s, "Connections: {}", reg.connections().len());
            let _ = writeln!(s, "Outstanding: {}", status.outstanding);
            let _ = writeln!(s, "Zxid: {:#x}", status.last_zxid);
            let _ = writeln!(s, "Mode: {}", status.role.as_str());
            let _ = writeln!(s, "Node count: {}", zk_node_count(&tree.read()));
        }
        "mntr" => {
            let t = tree.read();
            let (watches, _, _) = t.watches().lock().counts();
            let (min, avg, max) = reg.stats.latency_ms();
            let rows: Vec<(&str, String)> = vec![
                ("zk_version", ZK_VERSION.to_string()),
                ("zk_server_state", status.role.as_str().to_string()),
                ("zk_peer_state", peer_state(&status)),
                ("zk_avg_latency", format!("{avg:.4}")),
                ("zk_max_latency", format!("{max:.0}")),
                ("zk_min_latency", format!("{min:.0}")),
                (
                    "zk_packets_received",
                    reg.stats
                        .packets_received
                        .load(Ordering::Relaxed)
                        .to_string(),
                ),
                (
                    "zk_packets_sent",
                    reg.stats.packets_sent.load(Ordering::Relaxed).to_string(),
                ),
                (
                    "zk_num_alive_connections",
                    reg.connections().len().to_string(),
                ),
                ("zk_outstanding_requests", status.outstanding.to_string()),
                (
                    "zk_uptime",
                    server.started.elapsed().as_millis().to_string(),
                ),
                ("zk_znode_count", zk_node_count(&t).to_string()),
                ("zk_watch_count", watches.to_string()),
                ("zk_ephemerals_count", t.ephemeral_count().to_string()),
                ("zk_approximate_data_size", t.data_size().to_string()),
                ("zk_global_sessions", t.sessions().len().to_string()),
                ("zk_local_sessions", "0".to_string()),
                ("zk_last_zxid", format!("{:#x}", status.last_zxid)),
                ("zk_epoch", status.epoch.to_string()),
                ("roster_backend", status.backend.to_string()),
                ("roster_elections", status.elections.to_string()),
            ];
            let mut rows = rows;
            if let Some(f) = status.synced_followers {
                let o = status.synced_observers.unwrap_or(0);
                rows.push(("zk_learners", (f + o).to_string()));
                rows.push(("zk_synced_followers", f.to_string()));
                rows.push(("zk_synced_non_voting_followers", "0".to_string()));
                rows.push(("zk_synced_observers", o.to_string()));
            }
            for (k, v) in rows {
                let _ = writeln!(s, "{k}\t{v}");
            }
        }
        "conf" => {
            let c = &server.cfg;
            let _ = writeln!(
                s,
                "clientPort={}",
                c.zk_listen.rsplit(':').next().unwrap_or("")
            );
            let _ = writeln!(s, "clientPortAddress={}", c.zk_listen);
            let _ = writeln!(s, "dataDir={}", c.data_dir.display());
            let _ = writeln!(s, "dataLogDir={}", c.data_dir.display());
            let _ = writeln!(s, "tickTime={}", c.tick_ms);
            let _ = writeln!(s, "maxClientCnxns={}", c.max_client_connections);
            let _ = writeln!(s, "minSessionTimeout={}", c.min_session_timeout());
            let _ = writeln!(s, "maxSessionTimeout={}", c.max_session_timeout());
            let _ = writeln!(s, "serverId={}", c.server_id);
            let _ = writeln!(s, "jute.maxbuffer={}", c.max_buffer);
            let _ = writeln!(s, "backend={}", c.backend);
        }
        "cons" => {
            for c in reg.connections() {
                let _ = writeln!(
                    s,
                    " /{}[1](queued={},recved={},sent={},sid={:#x},lzxid={:#x},to={})",
                    c.peer,
                    c.outstanding.load(Ordering::Relaxed),
                    c.received.load(Ordering::Relaxed),
                    c.sent.load(Ordering::Relaxed),
                    c.session.load(Ordering::Relaxed),
                    c.last_zxid.load(Ordering::Relaxed),
                    c.timeout_ms.load(Ordering::Relaxed)
                );
            }
            s.push('\n');
        }
        "crst" | "srst" => {
            reg.stats.reset();
            s.push_str(if name == "crst" {
                "Connection stats reset.\n"
            } else {
                "Server stats reset.\n"
            });
        }
        "wchs" => {
            let (watches, paths, watchers) = tree.read().watches().lock().counts();
            let _ = writeln!(
                s,
                "{watchers} connections watching {paths} paths\nTotal watches:{watches}"
            );
        }
        "wchc" => {
            let t = tree.read();
            let wm = t.watches().lock();
            for (id, ws) in wm.by_watcher() {
                let sid = reg
                    .connections()
                    .into_iter()
                    .find(|c| c.id == id)
                    .map(|c| c.session.load(Ordering::Relaxed))
                    .unwrap_or(0);
                let _ = writeln!(s, "{sid:#x}");
                for (_, p) in ws {
                    let _ = writeln!(s, "\t{p}");
                }
            }
        }
        "dump" => {
            let t = tree.read();
            s.push_str("SessionTracker dump:\n");
            let _ = writeln!(s, "Global Sessions({}):", t.sessions().len());
            for (id, m) in t.sessions() {
                let _ = writeln!(s, "{id:#x}\t{}ms", m.timeout_ms);
            }
            s.push_str("ephemeral nodes dump:\n");
            let _ = writeln!(
                s,
                "Sessions with Ephemerals ({}):",
                t.sessions()
                    .keys()
                    .filter(|id| t.ephemerals_of(**id).next().is_some())
                    .count()
            );
            for id in t.sessions().keys() {
                let e: Vec<&String> = t.ephemerals_of(*id).collect();
                if !e.is_empty() {
                    let _ = writeln!(s, "{id:#x}:");
                    for p in e {
                        let _ = writeln!(s, "\t{p}");
                    }
                }
            }
        }
        "envi" => {
            s.push_str("Environment:\n");
            let _ = writeln!(s, "zookeeper.version={ZK_VERSION}");
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            let _ = writeln!(s, "host.name={}", host.trim());
            let _ = writeln!(s, "os.name={}", std::env::consts::OS);
            let _ = writeln!(s, "os.arch={}", std::env::consts::ARCH);
            let _ = writeln!(
                s,
                "user.dir={}",
                std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            );
            let _ = writeln!(s, "roster.backend={}", server.cfg.backend);
        }
        "dirs" => {
            let _ = writeln!(s, "datadir_size: {}", dir_size(&server.cfg.data_dir));
            let _ = writeln!(s, "logdir_size: 0");
        }
        _ => {
            let _ = writeln!(s, "Unsupported four-letter word: {name}");
        }
    }
    s
}

/// The node count as ZooKeeper reports it in `srvr`, `stat` and `mntr`: its tree keeps the root
/// under both "" and "/", so a fresh ZooKeeper 3.8 says 5 for its 4 nodes. Dashboards and
/// alerts written against ZooKeeper's numbers read the same here (`roster_znodes` on /metrics
/// counts the nodes themselves).
fn zk_node_count(t: &roster_core::tree::Tree) -> usize {
    t.node_count() + 1
}

/// ZooKeeper's `zk_peer_state`: `<state> - <ZAB phase>`.
fn peer_state(s: &roster_core::backend::ClusterStatus) -> String {
    use roster_core::backend::Role;
    let state = match s.role {
        Role::Standalone => return "standalone".into(),
        Role::Leader => "leading",
        Role::Follower => "following",
        Role::Observer => "observing",
        Role::Looking => "looking",
    };
    let phase = match (s.role, s.ready) {
        (Role::Looking, _) => "election",
        (_, true) => "broadcast",
        (_, false) => "synchronization",
    };
    format!("{state} - {phase}")
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
