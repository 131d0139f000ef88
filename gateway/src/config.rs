//! Configuration: defaults, then `roster.toml` (or `--config FILE`), then `ROSTER_*` environment
//! variables, then command-line flags — layered into one typed `Config`. Every key is listed in
//! `docs/configuration.md` and in `roster --help`.

use clap::Parser;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Roster's settings. Keys are flat; the environment variable of `zk_listen` is `ROSTER_ZK_LISTEN`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory for the RocksDB store (txn log, snapshots).
    pub data_dir: PathBuf,
    /// This server's id (the high byte of session ids).
    pub server_id: u64,
    /// Consistency backend: `zab` or `raft`.
    pub backend: String,
    /// Ensemble members, ZooKeeper style: `N=host:quorumPort:electionPort[:observer]` (also
    /// accepted with a `server.` prefix). Empty: standalone. With `raft` the quorum port is the
    /// raft port, the election port is unused and `:observer` makes a learner.
    pub servers: Vec<String>,
    /// Raft: leader heartbeat interval (ms).
    pub raft_heartbeat_ms: u64,
    /// Raft: a follower that hears no leader for a random time in [this, 2 × this] ms starts an
    /// election.
    pub raft_election_timeout_ms: u64,
    /// Raft: log entries kept behind a snapshot, so a member that lags by less catches up from
    /// the log instead of receiving a whole snapshot.
    pub raft_log_retained: u64,
    /// Ticks a new leader may take to synchronise a quorum (ZooKeeper `initLimit`).
    pub init_limit: u64,
    /// Ticks a member may go without hearing from its leader, or a leader from its quorum
    /// (ZooKeeper `syncLimit`).
    pub sync_limit: u64,
    /// ZooKeeper client port.
    pub zk_listen: String,
    /// HTTP port: /metrics, /healthz, /readyz.
    pub http_listen: String,
    /// ZooKeeper tickTime (ms): session-expiry granularity.
    pub tick_ms: u64,
    /// Smallest session timeout granted (ms); 0 = 2 × tick_ms.
    pub min_session_timeout_ms: u64,
    /// Largest session timeout granted (ms); 0 = 20 × tick_ms.
    pub max_session_timeout_ms: u64,
    /// `jute.maxbuffer`: largest request frame accepted (bytes).
    pub max_buffer: usize,
    /// Four-letter words answered; others get ZooKeeper's "not in the whitelist" reply. `*` = all.
    pub four_letter_words: Vec<String>,
    /// Most connections from one IP address (ZooKeeper `maxClientCnxns`); 0 = unlimited.
    pub max_client_connections: usize,
    /// Close a connection that has not completed the handshake within this time (ms).
    pub handshake_timeout_ms: u64,
    /// Most requests in flight per connection before reading pauses.
    pub max_outstanding_per_connection: usize,
    /// Accept TTL nodes (`zookeeper.extendedTypesEnabled`).
    pub extended_types: bool,
    /// Super user digest, `user:BASE64(SHA1(user:password))` (`zookeeper.DigestAuthenticationProvider.superDigest`).
    pub super_digest: Option<String>,
    /// Take a snapshot after this many transactions.
    pub snapshot_every: u64,
    /// Snapshots kept on disk.
    pub snapshots_retained: usize,
    /// Most transactions per fsync (group commit).
    pub max_batch: usize,
    /// Interval of the container / TTL node sweep (ms).
    pub container_check_ms: u64,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `roster=debug`.
    pub log_level: String,
    /// Log format: `text` or `json`.
    pub log_format: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            server_id: 1,
            backend: "zab".into(),
            servers: Vec::new(),
            raft_heartbeat_ms: 100,
            raft_election_timeout_ms: 1000,
            raft_log_retained: 10_000,
            init_limit: 10,
            sync_limit: 5,
            zk_listen: "0.0.0.0:2181".into(),
            http_listen: "0.0.0.0:8848".into(),
            tick_ms: 2000,
            min_session_timeout_ms: 0,
            max_session_timeout_ms: 0,
            max_buffer: 0xfffff,
            four_letter_words: ["srvr", "ruok", "mntr", "isro"].map(String::from).to_vec(),
            max_client_connections: 60,
            handshake_timeout_ms: 10_000,
            max_outstanding_per_connection: 1000,
            extended_types: true,
            super_digest: None,
            snapshot_every: 100_000,
            snapshots_retained: 3,
            max_batch: 1024,
            container_check_ms: 5_000,
            log_level: "info".into(),
            log_format: "text".into(),
        }
    }
}

impl Config {
    /// Effective minimum session timeout.
    pub fn min_session_timeout(&self) -> u64 {
        if self.min_session_timeout_ms == 0 {
            2 * self.tick_ms
        } else {
            self.min_session_timeout_ms
        }
    }
    /// Effective maximum session timeout.
    pub fn max_session_timeout(&self) -> u64 {
        if self.max_session_timeout_ms == 0 {
            20 * self.tick_ms
        } else {
            self.max_session_timeout_ms
        }
    }
    /// Is a four-letter word allowed?
    pub fn four_letter_allowed(&self, cmd: &str) -> bool {
        self.four_letter_words.iter().any(|w| w == "*" || w == cmd)
    }
}

/// Roster: a ZooKeeper-compatible coordination server. With no arguments it runs a standalone
/// node with data in ./data, ZooKeeper on :2181 and HTTP (/metrics, /healthz, /readyz) on :8848.
///
/// Settings are layered: defaults, then the config file (roster.toml in the working directory, or
/// --config), then ROSTER_<KEY> environment variables (e.g. ROSTER_ZK_LISTEN), then these flags.
#[derive(Debug, Parser, Default)]
#[command(name = "roster", version, about, long_about)]
pub struct Cli {
    /// Config file (TOML). Default: ./roster.toml if present.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Data directory [default: ./data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Server id [default: 1]
    #[arg(long)]
    pub server_id: Option<u64>,
    /// Consistency backend, zab or raft [default: zab]
    #[arg(long)]
    pub backend: Option<String>,
    /// Ensemble members `N=host:quorumPort:electionPort[:observer]`, comma separated; with raft the quorum port is the raft port and `:observer` a learner [default: none, standalone]
    #[arg(long, value_delimiter = ',')]
    pub servers: Option<Vec<String>>,
    /// Raft heartbeat interval in ms [default: 100]
    #[arg(long)]
    pub raft_heartbeat_ms: Option<u64>,
    /// Raft election timeout in ms (randomised up to twice this) [default: 1000]
    #[arg(long)]
    pub raft_election_timeout_ms: Option<u64>,
    /// Raft log entries kept behind a snapshot [default: 10000]
    #[arg(long)]
    pub raft_log_retained: Option<u64>,
    /// initLimit in ticks [default: 10]
    #[arg(long)]
    pub init_limit: Option<u64>,
    /// syncLimit in ticks [default: 5]
    #[arg(long)]
    pub sync_limit: Option<u64>,
    /// ZooKeeper client address [default: 0.0.0.0:2181]
    #[arg(long)]
    pub zk_listen: Option<String>,
    /// HTTP address for /metrics, /healthz, /readyz [default: 0.0.0.0:8848]
    #[arg(long)]
    pub http_listen: Option<String>,
    /// tickTime in ms [default: 2000]
    #[arg(long)]
    pub tick_ms: Option<u64>,
    /// Minimum session timeout in ms [default: 2 × tick]
    #[arg(long)]
    pub min_session_timeout_ms: Option<u64>,
    /// Maximum session timeout in ms [default: 20 × tick]
    #[arg(long)]
    pub max_session_timeout_ms: Option<u64>,
    /// jute.maxbuffer: largest request frame in bytes [default: 1048575]
    #[arg(long)]
    pub max_buffer: Option<usize>,
    /// Allowed four-letter words, comma separated, `*` for all [default: srvr,ruok,mntr,isro]
    #[arg(long, value_delimiter = ',')]
    pub four_letter_words: Option<Vec<String>>,
    /// Most connections per client IP, 0 = unlimited [default: 60]
    #[arg(long)]
    pub max_client_connections: Option<usize>,
    /// Handshake timeout in ms [default: 10000]
    #[arg(long)]
    pub handshake_timeout_ms: Option<u64>,
    /// Requests in flight per connection before reading pauses [default: 1000]
    #[arg(long)]
    pub max_outstanding_per_connection: Option<usize>,
    /// Accept TTL nodes [default: true]
    #[arg(long)]
    pub extended_types: Option<bool>,
    /// Super user digest `user:BASE64(SHA1(user:password))` [default: none]
    #[arg(long)]
    pub super_digest: Option<String>,
    /// Transactions between snapshots [default: 100000]
    #[arg(long)]
    pub snapshot_every: Option<u64>,
    /// Snapshots kept [default: 3]
    #[arg(long)]
    pub snapshots_retained: Option<usize>,
    /// Most transactions per fsync [default: 1024]
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Container/TTL sweep interval in ms [default: 5000]
    #[arg(long)]
    pub container_check_ms: Option<u64>,
    /// Log filter [default: info]
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log format, text or json [default: text]
    #[arg(long)]
    pub log_format: Option<String>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Cli {
    /// Layer defaults → file → environment → flags.
    pub fn load(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let defaults = config::Config::try_from(&Config::default())?;
        let mut b = config::Config::builder().add_source(defaults);
        match &self.config {
            Some(f) => b = b.add_source(config::File::from(f.as_path()).required(true)),
            None => {
                b = b.add_source(
                    config::File::from(std::path::Path::new("roster.toml")).required(false),
                )
            }
        }
        // Only ROSTER_<KEY> for a known key: other ROSTER_* variables (a test harness's
        // ROSTER_BIN, say) are not configuration.
        let mut known: Vec<String> = match toml::Value::try_from(Config::default()) {
            Ok(toml::Value::Table(t)) => t
                .keys()
                .map(|k| format!("ROSTER_{}", k.to_uppercase()))
                .collect(),
            _ => Vec::new(),
        };
        known.push("ROSTER_SUPER_DIGEST".into()); // optional, so absent from the defaults
        let env: std::collections::HashMap<String, String> =
            env.into_iter().filter(|(k, _)| known.contains(k)).collect();
        b = b.add_source(
            config::Environment::with_prefix("ROSTER")
                .prefix_separator("_")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("four_letter_words")
                .with_list_parse_key("servers")
                .source(Some(env)),
        );
        let mut cfg: Config = b.build()?.try_deserialize()?;
        macro_rules! flag {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { cfg.$f = v.clone().into(); } )* };
        }
        flag!(
            data_dir,
            server_id,
            backend,
            servers,
            raft_heartbeat_ms,
            raft_election_timeout_ms,
            raft_log_retained,
            init_limit,
            sync_limit,
            zk_listen,
            http_listen,
            tick_ms,
            min_session_timeout_ms,
            max_session_timeout_ms,
            max_buffer,
            four_letter_words,
            max_client_connections,
            handshake_timeout_ms,
            max_outstanding_per_connection,
            extended_types,
            snapshot_every,
            snapshots_retained,
            max_batch,
            container_check_ms,
            log_level,
            log_format
        );
        if let Some(d) = &self.super_digest {
            cfg.super_digest = Some(d.clone());
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// One ensemble member from `servers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub host: String,
    pub quorum_port: u16,
    pub election_port: u16,
    pub observer: bool,
}

impl Config {
    /// Parse `servers`; empty means standalone.
    pub fn members(&self) -> Result<Vec<Member>, ConfigError> {
        let mut out: Vec<Member> = Vec::new();
        for s in &self.servers {
            let bad = || {
                ConfigError::Invalid(format!(
                    "servers entry {s:?}: expected N=host:quorumPort:electionPort[:observer]"
                ))
            };
            let (id, rest) = s.trim().split_once('=').ok_or_else(bad)?;
            let id: u64 = id
                .trim()
                .trim_start_matches("server.")
                .parse()
                .map_err(|_| bad())?;
            let parts: Vec<&str> = rest.trim().split(':').collect();
            let (host, q, e, role) = match parts.as_slice() {
                [h, q, e] => (*h, *q, *e, None),
                [h, q, e, r] => (*h, *q, *e, Some(*r)),
                _ => return Err(bad()),
            };
            let observer = match role {
                None | Some("participant") => false,
                Some("observer") => true,
                Some(_) => return Err(bad()),
            };
            if out.iter().any(|m| m.id == id) {
                return Err(ConfigError::Invalid(format!("server.{id} is listed twice")));
            }
            out.push(Member {
                id,
                host: host.to_owned(),
                quorum_port: q.parse().map_err(|_| bad())?,
                election_port: e.parse().map_err(|_| bad())?,
                observer,
            });
        }
        if !out.is_empty() && out.iter().all(|m| m.observer) {
            return Err(ConfigError::Invalid(
                "an ensemble needs at least one participant".into(),
            ));
        }
        Ok(out)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !matches!(self.backend.as_str(), "zab" | "raft") {
            return bad(format!(
                "backend {:?} is not available (available: zab, raft)",
                self.backend
            ));
        }
        if self.raft_heartbeat_ms == 0 || self.raft_election_timeout_ms <= self.raft_heartbeat_ms {
            return bad(
                "raft_election_timeout_ms must be larger than raft_heartbeat_ms (> 0)".into(),
            );
        }
        if self.tick_ms == 0 {
            return bad("tick_ms must be > 0".into());
        }
        if self.min_session_timeout() > self.max_session_timeout() {
            return bad("min_session_timeout_ms exceeds max_session_timeout_ms".into());
        }
        if self.max_buffer < 1024 {
            return bad("max_buffer must be at least 1024".into());
        }
        let members = self.members()?;
        if !members.is_empty() && !members.iter().any(|m| m.id == self.server_id) {
            return bad(format!(
                "server_id {} is not among the servers",
                self.server_id
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return bad(format!(
                "log_format {:?}: use text or json",
                self.log_format
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("roster.toml");
        std::fs::write(
            &file,
            "zk_listen = \"127.0.0.1:1\"\ntick_ms = 500\nhttp_listen = \"127.0.0.1:9\"\n",
        )
        .unwrap();
        let cli = Cli {
            config: Some(file),
            http_listen: Some("127.0.0.1:3".into()),
            ..Cli::default()
        };
        let env = vec![
            ("ROSTER_ZK_LISTEN".to_string(), "127.0.0.1:2".to_string()),
            ("ROSTER_HTTP_LISTEN".to_string(), "127.0.0.1:8".to_string()),
            (
                "ROSTER_FOUR_LETTER_WORDS".to_string(),
                "ruok,stat".to_string(),
            ),
            ("OTHER".to_string(), "x".to_string()),
            ("ROSTER_BIN".to_string(), "/not/a/setting".to_string()),
        ];
        let cfg = cli.load(env).unwrap();
        assert_eq!(cfg.tick_ms, 500, "file over default");
        assert_eq!(cfg.zk_listen, "127.0.0.1:2", "env over file");
        assert_eq!(cfg.http_listen, "127.0.0.1:3", "flag over env");
        assert_eq!(cfg.four_letter_words, vec!["ruok", "stat"]);
        assert_eq!(cfg.max_session_timeout(), 10_000);
        assert_eq!(cfg.data_dir, PathBuf::from("./data"), "default kept");
    }

    #[test]
    fn every_setting_has_a_documented_flag() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        let toml::Value::Table(keys) = toml::Value::try_from(Config::default()).unwrap() else {
            panic!()
        };
        let docs = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/configuration.md"
        ))
        .unwrap();
        for key in keys.keys().map(String::as_str).chain(["super_digest"]) {
            let flag = key.replace('_', "-");
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(flag.as_str()));
            assert!(
                arg.is_some_and(|a| a.get_help().is_some()),
                "--{flag} missing or undocumented"
            );
            assert!(
                docs.contains(&format!("`{key}`")),
                "{key} missing from docs/configuration.md"
            );
        }
    }

    #[test]
    fn parses_zookeeper_style_members() {
        let cli = Cli {
            servers: Some(vec![
                "server.1=127.0.0.1:2888:3888".into(),
                "2=h2:2889:3889:observer".into(),
            ]),
            ..Cli::default()
        };
        let cfg = cli.load(vec![]).unwrap();
        let m = cfg.members().unwrap();
        assert_eq!(
            m[0],
            Member {
                id: 1,
                host: "127.0.0.1".into(),
                quorum_port: 2888,
                election_port: 3888,
                observer: false
            }
        );
        assert!(m[1].observer);
        let bad = Cli {
            servers: Some(vec!["1=h:1".into()]),
            ..Cli::default()
        };
        assert!(bad.load(vec![]).is_err());
        let not_member = Cli {
            server_id: Some(9),
            servers: Some(vec!["1=h:1:2".into()]),
            ..Cli::default()
        };
        assert!(not_member.load(vec![]).is_err());
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.toml");
        std::fs::write(&file, "no_such_key = 1\n").unwrap();
        assert!(
            Cli {
                config: Some(file),
                ..Cli::default()
            }
            .load(vec![])
            .is_err()
        );
        assert!(
            Cli {
                backend: Some("etcd".into()),
                ..Cli::default()
            }
            .load(vec![])
            .is_err()
        );
        assert!(
            Cli {
                backend: Some("raft".into()),
                raft_election_timeout_ms: Some(50),
                ..Cli::default()
            }
            .load(vec![])
            .is_err(),
            "an election timeout under the heartbeat is refused"
        );
        let raft = Cli {
            backend: Some("raft".into()),
            ..Cli::default()
        }
        .load(vec![("ROSTER_RAFT_HEARTBEAT_MS".into(), "50".into())])
        .unwrap();
        assert_eq!(
            (raft.backend.as_str(), raft.raft_heartbeat_ms),
            ("raft", 50)
        );
    }
}
