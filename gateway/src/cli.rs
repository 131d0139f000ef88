//! `roster registry|lease|config|lock|election …`: a small client of the native HTTP API for
//! people and scripts. Prints the JSON answer (streams print one JSON object per line); exit code
//! 0 on success, 1 when the server answers with an error (printed to stderr), 2 when it cannot
//! be reached.

use crate::nacos::encode as enc;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};
use std::process::ExitCode;

/// Talk to a running server instead of starting one.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register, list, watch and remove service instances.
    Registry(With<RegistryCmd>),
    /// Grant, keep alive, inspect and revoke leases.
    Lease(With<LeaseCmd>),
    /// Put, get, delete, list, roll back and listen to config items.
    Config(With<ConfigCmd>),
    /// Acquire and release mutexes.
    Lock(With<LockCmd>),
    /// Campaign for, resign and observe leadership.
    Election(With<ElectionCmd>),
}

/// A command group with the server address and scope.
#[derive(Debug, Args)]
pub struct With<C: Subcommand> {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub cmd: C,
}

impl Command {
    /// Run it against the server.
    pub fn run(self) -> ExitCode {
        let target = match &self {
            Command::Registry(w) => w.target.clone(),
            Command::Lease(w) => w.target.clone(),
            Command::Config(w) => w.target.clone(),
            Command::Lock(w) => w.target.clone(),
            Command::Election(w) => w.target.clone(),
        };
        run(target, self)
    }
}

/// Where the server is and which namespace / group to use.
#[derive(Debug, Args, Clone)]
pub struct Target {
    /// Server HTTP address
    #[arg(
        long,
        env = "ROSTER_SERVER",
        default_value = "http://127.0.0.1:8848",
        global = true
    )]
    pub server: String,
    /// Namespace [default: public]
    #[arg(long, global = true)]
    pub namespace: Option<String>,
    /// Group [default: DEFAULT_GROUP]
    #[arg(long, global = true)]
    pub group: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RegistryCmd {
    /// Register an instance (ephemeral with --lease, else persistent).
    Register {
        service: String,
        #[arg(long)]
        ip: String,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        lease: Option<i64>,
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        weight: Option<f64>,
        /// Metadata `key=value`, repeatable.
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        metadata: Vec<String>,
    },
    /// Remove an instance by id (`ip#port#cluster`).
    Deregister { service: String, id: String },
    /// List a service's instances.
    List {
        service: String,
        #[arg(long)]
        healthy_only: bool,
    },
    /// List services.
    Services,
    /// Print the instance set, then every change (one JSON object per line).
    Subscribe { service: String },
}

#[derive(Debug, Subcommand)]
pub enum LeaseCmd {
    /// Grant a lease with a TTL in seconds.
    Grant { ttl_seconds: i64 },
    /// Keep a lease alive; with --every, keep doing so until interrupted.
    Keepalive {
        id: i64,
        #[arg(long, value_name = "SECONDS")]
        every: Option<u64>,
    },
    /// Show a lease.
    Get { id: i64 },
    /// Revoke a lease (what is bound to it goes too).
    Revoke { id: i64 },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Write a config item from --content or --file.
    Put {
        data_id: String,
        #[arg(long, conflicts_with = "file")]
        content: Option<String>,
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        #[arg(long = "type")]
        kind: Option<String>,
        /// Only if the current md5 is this.
        #[arg(long)]
        cas_md5: Option<String>,
    },
    /// Read a config item.
    Get { data_id: String },
    /// Delete a config item.
    Delete { data_id: String },
    /// List config items.
    List,
    /// Show a config item's history.
    History { data_id: String },
    /// Restore a history entry.
    Rollback { data_id: String, id: u64 },
    /// Wait until the item's md5 differs from --md5 (or the timeout).
    Listen {
        data_id: String,
        #[arg(long, default_value = "")]
        md5: String,
        #[arg(long, default_value_t = 30000)]
        timeout_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum LockCmd {
    /// Acquire a mutex with a lease (waits up to --timeout-ms; 0 = try once).
    Acquire {
        name: String,
        #[arg(long)]
        lease: i64,
        #[arg(long, default_value_t = 0)]
        timeout_ms: u64,
    },
    /// Release a mutex by the key acquire returned.
    Release { name: String, key: String },
    /// Show the holder.
    Holders { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ElectionCmd {
    /// Campaign with a lease and a value; returns once leader (or at the timeout).
    Campaign {
        name: String,
        #[arg(long)]
        lease: i64,
        #[arg(long, default_value = "")]
        value: String,
        #[arg(long, default_value_t = 0)]
        timeout_ms: u64,
    },
    /// Resign by the key campaign returned.
    Resign { name: String, key: String },
    /// Show the leader.
    Leader { name: String },
    /// Print the leader, then every change (one JSON object per line).
    Observe { name: String },
}

struct Client {
    target: Target,
}

enum Failure {
    /// The server answered with an error body.
    Api(Value),
    /// It could not be reached or answered nonsense.
    Transport(String),
}

impl Client {
    fn scope(&self) -> String {
        let mut q = Vec::new();
        if let Some(n) = &self.target.namespace {
            q.push(format!("namespace={}", enc(n)));
        }
        if let Some(g) = &self.target.group {
            q.push(format!("group={}", enc(g)));
        }
        q.join("&")
    }

    fn url(&self, path: &str, extra: &str) -> String {
        let scope = self.scope();
        let q: Vec<&str> = [scope.as_str(), extra]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        let base = self.target.server.trim_end_matches('/');
        if q.is_empty() {
            format!("{base}{path}")
        } else {
            format!("{base}{path}?{}", q.join("&"))
        }
    }

    async fn send(
        &self,
        method: hyper::Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Failure> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| Failure::Transport(format!("bad server address {url}: {e}")))?;
        let host = uri.host().unwrap_or("127.0.0.1").to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| Failure::Transport(format!("cannot reach {host}:{port}: {e}")))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| Failure::Transport(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let bytes = body
            .map(|b| Bytes::from(serde_json::to_vec(&b).expect("json")))
            .unwrap_or_default();
        let req = hyper::Request::builder()
            .method(method)
            .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .header(hyper::header::HOST, format!("{host}:{port}"))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes))
            .map_err(|e| Failure::Transport(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Failure::Transport(e.to_string()))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Failure::Transport(e.to_string()))?
            .to_bytes();
        Err(Failure::Api(serde_json::from_slice(&body).unwrap_or_else(
            |_| json!({"code": status.as_u16(), "message": String::from_utf8_lossy(&body)}),
        )))
    }

    async fn call(
        &self,
        method: hyper::Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let resp = self.send(method, url, body).await?;
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Failure::Transport(e.to_string()))?
            .to_bytes();
        if bytes.is_empty() {
            return Ok(json!({"ok": true}));
        }
        serde_json::from_slice(&bytes).map_err(|e| Failure::Transport(format!("bad answer: {e}")))
    }

    /// Print each server-sent event's data as one line until the stream ends.
    async fn stream(&self, url: &str) -> Result<Value, Failure> {
        let mut body = self.send(hyper::Method::GET, url, None).await?.into_body();
        let mut buf = String::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failure::Transport(e.to_string()))?;
            if let Some(d) = frame.data_ref() {
                buf.push_str(&String::from_utf8_lossy(d));
                while let Some(i) = buf.find('\n') {
                    let line: String = buf.drain(..=i).collect();
                    if let Some(data) = line.trim_end().strip_prefix("data:") {
                        println!("{}", data.trim_start());
                    }
                }
            }
        }
        Ok(Value::Null)
    }
}

/// Run one client command.
fn run(target: Target, cmd: Command) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("roster: {e}");
            return ExitCode::from(2);
        }
    };
    let c = Client { target };
    match rt.block_on(dispatch(&c, cmd)) {
        Ok(Value::Null) => ExitCode::SUCCESS,
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            ExitCode::SUCCESS
        }
        Err(Failure::Api(v)) => {
            eprintln!("{}", serde_json::to_string_pretty(&v).expect("json"));
            ExitCode::from(1)
        }
        Err(Failure::Transport(m)) => {
            eprintln!("roster: {m}");
            ExitCode::from(2)
        }
    }
}

async fn dispatch(c: &Client, cmd: Command) -> Result<Value, Failure> {
    use hyper::Method as M;
    match cmd {
        Command::Registry(r) => match r.cmd {
            RegistryCmd::Register {
                service,
                ip,
                port,
                lease,
                cluster,
                weight,
                metadata,
            } => {
                let mut meta = serde_json::Map::new();
                for kv in metadata {
                    let (k, v) = kv.split_once('=').ok_or_else(|| {
                        Failure::Transport(format!("--meta {kv}: expected KEY=VALUE"))
                    })?;
                    meta.insert(k.to_owned(), Value::String(v.to_owned()));
                }
                let mut body = json!({"ip": ip, "port": port, "metadata": meta,
                    "ephemeral": lease.is_some()});
                for (k, v) in [
                    ("lease", json!(lease)),
                    ("cluster", json!(cluster)),
                    ("weight", json!(weight)),
                    ("namespace", json!(c.target.namespace)),
                    ("group", json!(c.target.group)),
                ] {
                    if !v.is_null() {
                        body[k] = v;
                    }
                }
                let url = format!(
                    "{}/v1/registry/services/{}/instances",
                    c.target.server.trim_end_matches('/'),
                    enc(&service)
                );
                c.call(M::POST, &url, Some(body)).await
            }
            RegistryCmd::Deregister { service, id } => {
                c.call(
                    M::DELETE,
                    &c.url(
                        &format!(
                            "/v1/registry/services/{}/instances/{}",
                            enc(&service),
                            enc(&id)
                        ),
                        "",
                    ),
                    None,
                )
                .await
            }
            RegistryCmd::List {
                service,
                healthy_only,
            } => {
                let q = if healthy_only {
                    "healthy_only=true"
                } else {
                    ""
                };
                c.call(
                    M::GET,
                    &c.url(
                        &format!("/v1/registry/services/{}/instances", enc(&service)),
                        q,
                    ),
                    None,
                )
                .await
            }
            RegistryCmd::Services => {
                c.call(M::GET, &c.url("/v1/registry/services", ""), None)
                    .await
            }
            RegistryCmd::Subscribe { service } => {
                c.stream(&c.url(
                    &format!("/v1/registry/services/{}/subscribe", enc(&service)),
                    "",
                ))
                .await
            }
        },
        Command::Lease(l) => {
            let base = c.target.server.trim_end_matches('/').to_owned();
            match l.cmd {
                LeaseCmd::Grant { ttl_seconds } => {
                    c.call(
                        M::POST,
                        &format!("{base}/v1/leases"),
                        Some(json!({"ttl_seconds": ttl_seconds})),
                    )
                    .await
                }
                LeaseCmd::Keepalive { id, every } => loop {
                    let v = c
                        .call(M::POST, &format!("{base}/v1/leases/{id}/keepalive"), None)
                        .await?;
                    match every {
                        None => return Ok(v),
                        Some(s) => {
                            println!("{v}");
                            tokio::time::sleep(std::time::Duration::from_secs(s.max(1))).await;
                        }
                    }
                },
                LeaseCmd::Get { id } => {
                    c.call(M::GET, &format!("{base}/v1/leases/{id}"), None)
                        .await
                }
                LeaseCmd::Revoke { id } => {
                    c.call(M::DELETE, &format!("{base}/v1/leases/{id}"), None)
                        .await
                }
            }
        }
        Command::Config(cfg) => match cfg.cmd {
            ConfigCmd::Put {
                data_id,
                content,
                file,
                kind,
                cas_md5,
            } => {
                let content = match (content, file) {
                    (Some(c), _) => c,
                    (None, Some(f)) => std::fs::read_to_string(&f)
                        .map_err(|e| Failure::Transport(format!("{}: {e}", f.display())))?,
                    (None, None) => {
                        return Err(Failure::Transport("give --content or --file".into()));
                    }
                };
                let mut body = json!({"content": content});
                if let Some(k) = kind {
                    body["type"] = json!(k);
                }
                if let Some(m) = cas_md5 {
                    body["cas_md5"] = json!(m);
                }
                c.call(
                    M::PUT,
                    &c.url(&format!("/v1/config/{}", enc(&data_id)), ""),
                    Some(body),
                )
                .await
            }
            ConfigCmd::Get { data_id } => {
                c.call(
                    M::GET,
                    &c.url(&format!("/v1/config/{}", enc(&data_id)), ""),
                    None,
                )
                .await
            }
            ConfigCmd::Delete { data_id } => {
                c.call(
                    M::DELETE,
                    &c.url(&format!("/v1/config/{}", enc(&data_id)), ""),
                    None,
                )
                .await
            }
            ConfigCmd::List => c.call(M::GET, &c.url("/v1/config", ""), None).await,
            ConfigCmd::History { data_id } => {
                c.call(
                    M::GET,
                    &c.url(&format!("/v1/config/{}/history", enc(&data_id)), ""),
                    None,
                )
                .await
            }
            ConfigCmd::Rollback { data_id, id } => {
                c.call(
                    M::POST,
                    &c.url(&format!("/v1/config/{}/rollback", enc(&data_id)), ""),
                    Some(json!({"id": id})),
                )
                .await
            }
            ConfigCmd::Listen {
                data_id,
                md5,
                timeout_ms,
            } => {
                let q = format!("md5={}&timeout_ms={timeout_ms}", enc(&md5));
                c.call(
                    M::GET,
                    &c.url(&format!("/v1/config/{}/listen", enc(&data_id)), &q),
                    None,
                )
                .await
            }
        },
        Command::Lock(l) => {
            let base = c.target.server.trim_end_matches('/').to_owned();
            match l.cmd {
                LockCmd::Acquire {
                    name,
                    lease,
                    timeout_ms,
                } => {
                    c.call(
                        M::POST,
                        &format!("{base}/v1/locks/{}/acquire", enc(&name)),
                        Some(json!({"lease": lease, "timeout_ms": timeout_ms})),
                    )
                    .await
                }
                LockCmd::Release { name, key } => {
                    c.call(
                        M::POST,
                        &format!("{base}/v1/locks/{}/release", enc(&name)),
                        Some(json!({"key": key})),
                    )
                    .await
                }
                LockCmd::Holders { name } => {
                    c.call(M::GET, &format!("{base}/v1/locks/{}", enc(&name)), None)
                        .await
                }
            }
        }
        Command::Election(e) => {
            let base = c.target.server.trim_end_matches('/').to_owned();
            match e.cmd {
                ElectionCmd::Campaign {
                    name,
                    lease,
                    value,
                    timeout_ms,
                } => {
                    c.call(
                        M::POST,
                        &format!("{base}/v1/elections/{}/campaign", enc(&name)),
                        Some(json!({"lease": lease, "value": value, "timeout_ms": timeout_ms})),
                    )
                    .await
                }
                ElectionCmd::Resign { name, key } => {
                    c.call(
                        M::POST,
                        &format!("{base}/v1/elections/{}/resign", enc(&name)),
                        Some(json!({"key": key})),
                    )
                    .await
                }
                ElectionCmd::Leader { name } => {
                    c.call(
                        M::GET,
                        &format!("{base}/v1/elections/{}/leader", enc(&name)),
                        None,
                    )
                    .await
                }
                ElectionCmd::Observe { name } => {
                    c.stream(&format!("{base}/v1/elections/{}/observe", enc(&name)))
                        .await
                }
            }
        }
    }
}
