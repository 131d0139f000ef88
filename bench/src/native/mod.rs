//! Roster's native API as a client sees it, over either of its transports: REST + JSON on the
//! HTTP port ([`rest`]) or gRPC `roster.v1` on HTTP port + 1000 ([`grpc`], stubs generated from
//! `proto/roster/v1` by `build.rs`). The workloads call one set of operations and choose the
//! transport with `--protocol`.

mod grpc;
mod rest;

use crate::load::Failure;

/// Which transport of the native API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    pub fn parse(s: &str) -> anyhow::Result<Protocol> {
        match s {
            "http" => Ok(Protocol::Http),
            "grpc" => Ok(Protocol::Grpc),
            other => anyhow::bail!("--protocol takes http or grpc, not {other:?}"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }
}

/// Where the server's native API and Nacos API listen.
#[derive(Clone, Debug)]
pub struct ApiTarget {
    /// HTTP `host:port` (native REST, Nacos open API).
    pub http: String,
    /// gRPC `host:port` (native `roster.v1`).
    pub grpc: String,
}

/// One client of the native API: one HTTP connection pool or one HTTP/2 channel.
#[derive(Clone)]
pub enum Native {
    Http(rest::Rest),
    Grpc(grpc::Grpc),
}

/// A held lock.
#[derive(Clone, Debug)]
pub struct Held {
    pub key: String,
    pub fencing_token: u64,
}

/// One message of a registry subscription, reduced to instance ids.
#[derive(Debug)]
pub enum SubEvent {
    Snapshot(Vec<String>),
    Change {
        upserted: Vec<String>,
        removed: Vec<String>,
    },
}

/// A server stream read by a task of its own; dropping it cancels the stream.
pub struct Feed<T> {
    rx: tokio::sync::mpsc::Receiver<Result<T, Failure>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Send + 'static> Feed<T> {
    fn spawn<F>(f: impl FnOnce(tokio::sync::mpsc::Sender<Result<T, Failure>>) -> F) -> Feed<T>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        Feed {
            rx,
            task: tokio::spawn(f(tx)),
        }
    }

    /// The next message; `None` once the stream ended.
    pub async fn next(&mut self) -> Option<Result<T, Failure>> {
        self.rx.recv().await
    }
}

impl<T> Drop for Feed<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The id the server gives an instance in the default cluster.
pub fn instance_id(ip: &str, port: u16) -> String {
    format!("{ip}#{port}#DEFAULT")
}

impl Native {
    /// A client over `protocol`; gRPC connects at once (HTTP connects on first use).
    pub async fn connect(protocol: Protocol, target: &ApiTarget) -> anyhow::Result<Native> {
        Ok(match protocol {
            Protocol::Http => Native::Http(rest::Rest::new(&target.http)),
            Protocol::Grpc => Native::Grpc(grpc::Grpc::connect(&target.grpc).await?),
        })
    }

    /// Grants a lease of `ttl_seconds`; its id.
    pub async fn grant(&self, ttl_seconds: i64) -> Result<i64, Failure> {
        match self {
            Native::Http(c) => c.grant(ttl_seconds).await,
            Native::Grpc(c) => c.grant(ttl_seconds).await,
        }
    }

    pub async fn keepalive(&self, lease: i64) -> Result<(), Failure> {
        match self {
            Native::Http(c) => c.keepalive(lease).await,
            Native::Grpc(c) => c.keepalive(lease).await,
        }
    }

    pub async fn revoke(&self, lease: i64) -> Result<(), Failure> {
        match self {
            Native::Http(c) => c.revoke(lease).await,
            Native::Grpc(c) => c.revoke(lease).await,
        }
    }

    /// Registers (or replaces) an ephemeral instance bound to `lease`.
    pub async fn register(
        &self,
        group: &str,
        service: &str,
        ip: &str,
        port: u16,
        lease: i64,
    ) -> Result<(), Failure> {
        match self {
            Native::Http(c) => c.register(group, service, ip, port, lease).await,
            Native::Grpc(c) => c.register(group, service, ip, port, lease).await,
        }
    }

    pub async fn deregister(&self, group: &str, service: &str, id: &str) -> Result<(), Failure> {
        match self {
            Native::Http(c) => c.deregister(group, service, id).await,
            Native::Grpc(c) => c.deregister(group, service, id).await,
        }
    }

    /// Lists a service's instances; how many there are.
    pub async fn list(&self, group: &str, service: &str) -> Result<usize, Failure> {
        match self {
            Native::Http(c) => c.list(group, service).await,
            Native::Grpc(c) => c.list(group, service).await,
        }
    }

    /// Subscribes to a service: a snapshot, then its changes.
    pub async fn subscribe(&self, group: &str, service: &str) -> Result<Feed<SubEvent>, Failure> {
        match self {
            Native::Http(c) => c.subscribe(group, service).await,
            Native::Grpc(c) => c.subscribe(group, service).await,
        }
    }

    /// Writes a config item; the md5 the server computed.
    pub async fn config_put(
        &self,
        group: &str,
        data_id: &str,
        content: &str,
    ) -> Result<String, Failure> {
        match self {
            Native::Http(c) => c.config_put(group, data_id, content).await,
            Native::Grpc(c) => c.config_put(group, data_id, content).await,
        }
    }

    /// Reads a config item; its content's length.
    pub async fn config_get(&self, group: &str, data_id: &str) -> Result<usize, Failure> {
        match self {
            Native::Http(c) => c.config_get(group, data_id).await,
            Native::Grpc(c) => c.config_get(group, data_id).await,
        }
    }

    pub async fn config_delete(&self, group: &str, data_id: &str) -> Result<(), Failure> {
        match self {
            Native::Http(c) => c.config_delete(group, data_id).await,
            Native::Grpc(c) => c.config_delete(group, data_id).await,
        }
    }

    /// Listens to a config item holding `md5`: yields the md5 each time it changes (at once
    /// if it differs already). Over HTTP that is a loop of long polls, over gRPC one stream.
    pub async fn config_listen(
        &self,
        group: &str,
        data_id: &str,
        md5: &str,
    ) -> Result<Feed<String>, Failure> {
        match self {
            Native::Http(c) => Ok(c.config_listen(group, data_id, md5)),
            Native::Grpc(c) => c.config_listen(group, data_id, md5).await,
        }
    }

    /// Acquires a mutex for `lease`, waiting at most `timeout_ms`.
    pub async fn lock_acquire(
        &self,
        name: &str,
        lease: i64,
        timeout_ms: u64,
    ) -> Result<Held, Failure> {
        match self {
            Native::Http(c) => c.lock_acquire(name, lease, timeout_ms).await,
            Native::Grpc(c) => c.lock_acquire(name, lease, timeout_ms).await,
        }
    }

    pub async fn lock_release(&self, name: &str, key: &str) -> Result<(), Failure> {
        match self {
            Native::Http(c) => c.lock_release(name, key).await,
            Native::Grpc(c) => c.lock_release(name, key).await,
        }
    }
}
