//! Nacos 2.x on the gRPC port: the `Request` (unary) and `BiRequestStream` services that
//! nacos-client 2.x dials at HTTP port + 1000. Each message is a `Payload` whose metadata names
//! the Java request/response class and whose body is its JSON. A transport connection is one
//! Nacos connection ([`connection`]): `ServerCheckRequest` gives it an id, the
//! `ConnectionSetupRequest` on its bi-stream registers it, and every later unary call on the same
//! TCP connection is that connection's. Naming ([`naming`]) and config ([`config`]) calls go to
//! the native registry and config services; ephemeral instances are bound to the connection's
//! session and vanish with the stream. Wire facts and decisions: docs/nacos.md.

pub mod config;
pub mod connection;
pub mod naming;

use crate::api::Api;
use crate::api::error::ApiError;
use crate::nacos::auth::NacosAuth;
use connection::{Conn, Connections};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status, Streaming};

/// Code generated from `proto/nacos/nacos_grpc_service.proto` (no package).
#[allow(clippy::all, missing_docs, non_camel_case_types)]
pub mod proto {
    tonic::include_proto!("_");
}

use proto::{Metadata, Payload};

/// Nacos error codes (`NacosException`) the server answers with.
pub mod code {
    /// The connection has not been registered by a `ConnectionSetupRequest` (client reconnects).
    pub const UN_REGISTER: i32 = 301;
    /// No handler for the request type.
    pub const NO_HANDLER: i32 = 302;
    pub const INVALID_PARAM: i32 = 400;
    pub const NO_RIGHT: i32 = 403;
    pub const NOT_FOUND: i32 = 404;
    pub const CONFLICT: i32 = 409;
    pub const SERVER_ERROR: i32 = 500;
    /// The payload could not be parsed (Nacos's own choice of code for that).
    pub const BAD_GATEWAY: i32 = 502;
    pub const OVER_THRESHOLD: i32 = 503;
    /// `ConfigQueryResponse.CONFIG_NOT_FOUND`.
    pub const CONFIG_NOT_FOUND: i32 = 300;
}

/// A successful answer: the response class name and its JSON fields (besides the base ones).
#[derive(Debug)]
pub struct Reply {
    pub kind: &'static str,
    pub body: Map<String, Value>,
}

impl Reply {
    pub fn new(kind: &'static str, body: Value) -> Reply {
        let body = match body {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Reply { kind, body }
    }
}

/// A failed request: answered as `ErrorResponse`, or as the handler's own response type when
/// the client reads the error code from that type (config not found, no right).
#[derive(Debug)]
pub struct RpcError {
    pub code: i32,
    pub message: String,
    pub typed: Option<&'static str>,
}

impl RpcError {
    pub fn new(code: i32, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            typed: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> RpcError {
        RpcError::new(code::INVALID_PARAM, message)
    }

    /// Answer as `kind` (resultCode 500 with this error code) instead of `ErrorResponse`.
    pub fn typed(mut self, kind: &'static str) -> RpcError {
        self.typed = Some(kind);
        self
    }
}

impl From<ApiError> for RpcError {
    fn from(e: ApiError) -> RpcError {
        let code = match e.status.as_u16() {
            400 => code::INVALID_PARAM,
            403 => code::NO_RIGHT,
            404 => code::NOT_FOUND,
            409 | 412 => code::CONFLICT,
            429 => code::OVER_THRESHOLD,
            _ => code::SERVER_ERROR,
        };
        RpcError::new(code, e.message)
    }
}

pub type RpcResult = Result<Reply, RpcError>;

/// Parse a request body into its JSON type (unknown fields ignored, as Jackson is set up).
pub fn parse<T: DeserializeOwned>(p: &Payload) -> Result<T, RpcError> {
    let body = p.body.as_ref().map(|b| b.value.as_slice()).unwrap_or(b"{}");
    serde_json::from_slice(body).map_err(|e| {
        RpcError::new(
            code::BAD_GATEWAY,
            format!("cannot parse {}: {e}", type_of(p)),
        )
    })
}

pub fn type_of(p: &Payload) -> &str {
    p.metadata.as_ref().map(|m| m.r#type.as_str()).unwrap_or("")
}

fn request_id(p: &Payload) -> String {
    #[derive(serde::Deserialize)]
    struct Id {
        #[serde(rename = "requestId", default)]
        request_id: Option<String>,
    }
    p.body
        .as_ref()
        .and_then(|b| serde_json::from_slice::<Id>(&b.value).ok())
        .and_then(|i| i.request_id)
        .unwrap_or_default()
}

/// A payload of `kind` with this JSON body.
pub fn payload(kind: &str, body: &Value) -> Payload {
    Payload {
        metadata: Some(Metadata {
            r#type: kind.to_owned(),
            client_ip: String::new(),
            headers: Default::default(),
        }),
        body: Some(prost_types::Any {
            type_url: String::new(),
            value: serde_json::to_vec(body).expect("JSON values serialise"),
        }),
    }
}

fn answer(result: RpcResult, request_id: String) -> Payload {
    match result {
        Ok(Reply { kind, mut body }) => {
            body.insert("resultCode".into(), json!(200));
            body.insert("errorCode".into(), json!(0));
            body.insert("success".into(), json!(true));
            body.insert("requestId".into(), json!(request_id));
            payload(kind, &Value::Object(body))
        }
        Err(e) => {
            let kind = e.typed.unwrap_or("ErrorResponse");
            let body = json!({
                "resultCode": 500,
                "errorCode": e.code,
                "message": e.message,
                "success": false,
                "requestId": request_id,
            });
            payload(kind, &body)
        }
    }
}

/// What the Nacos services share.
pub struct Nacos {
    pub api: Arc<Api>,
    pub conns: Arc<Connections>,
    pub auth: Arc<NacosAuth>,
    /// Timeout of each connection's session (ms).
    pub session_timeout_ms: i32,
}

/// The `Request` service (unary).
#[derive(Clone)]
pub struct RequestSvc(pub Arc<Nacos>);

/// The `BiRequestStream` service.
#[derive(Clone)]
pub struct BiStreamSvc(pub Arc<Nacos>);

impl Nacos {
    /// The services' state; starts the sweep of connections never set up (needs a runtime).
    pub fn new(api: Arc<Api>, auth: Arc<NacosAuth>, session_timeout_ms: u64) -> Arc<Nacos> {
        let nacos = Arc::new(Nacos {
            api,
            conns: Arc::new(Connections::default()),
            auth,
            session_timeout_ms: i32::try_from(session_timeout_ms)
                .unwrap_or(connection::SESSION_TIMEOUT_MS),
        });
        let conns = Arc::downgrade(&nacos.conns);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(30));
            loop {
                every.tick().await;
                let Some(c) = conns.upgrade() else { return };
                let n = c.sweep(std::time::Duration::from_secs(60));
                if n > 0 {
                    tracing::debug!(forgotten = n, "Nacos transports that never set up a stream");
                }
            }
        });
        nacos
    }

    /// Answer one unary request from the connection at `addr`.
    pub async fn handle(&self, addr: Option<std::net::SocketAddr>, p: &Payload) -> Payload {
        let started = Instant::now();
        let kind = type_of(p).to_owned();
        let rid = request_id(p);
        let result = self.dispatch(addr, &kind, p).await;
        let label = metric_label(&kind);
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) if e.code == code::UN_REGISTER => "unregistered",
            Err(e) if e.code == code::NO_HANDLER => "no_handler",
            Err(e) if e.code == code::NO_RIGHT => "no_right",
            Err(e) if e.typed == Some("ConfigQueryResponse") => "not_found",
            // Answers the client reads as a normal outcome (a refused CAS).
            Err(e) if e.typed.is_some() => "refused",
            Err(_) => "error",
        };
        if let Err(e) = &result
            && outcome == "error"
        {
            tracing::warn!(request = %kind, peer = ?addr, code = e.code, message = %e.message,
                "Nacos gRPC request failed");
        }
        metrics::counter!("roster_nacos_grpc_requests_total", "request" => label, "result" => outcome)
            .increment(1);
        metrics::histogram!("roster_nacos_grpc_request_duration_seconds", "request" => label)
            .record(started.elapsed().as_secs_f64());
        answer(result, rid)
    }

    async fn dispatch(
        &self,
        addr: Option<std::net::SocketAddr>,
        kind: &str,
        p: &Payload,
    ) -> RpcResult {
        let addr = addr.ok_or_else(|| {
            RpcError::new(code::SERVER_ERROR, "the transport has no peer address")
        })?;
        if kind == "ServerCheckRequest" {
            let conn = self.conns.check(addr);
            return Ok(Reply::new(
                "ServerCheckResponse",
                json!({"connectionId": conn.id, "supportAbilityNegotiation": true}),
            ));
        }
        let conn = self
            .conns
            .registered(addr)
            .ok_or_else(|| RpcError::new(code::UN_REGISTER, "Connection is unregistered."))?;
        let headers = p.metadata.as_ref().map(|m| &m.headers);
        match kind {
            "HealthCheckRequest" => Ok(Reply::new("HealthCheckResponse", json!({}))),
            "InstanceRequest"
            | "BatchInstanceRequest"
            | "PersistentInstanceRequest"
            | "SubscribeServiceRequest"
            | "ServiceQueryRequest"
            | "ServiceListRequest" => {
                self.auth.check_grpc(headers, response_of(kind))?;
                naming::handle(self, &conn, kind, p).await
            }
            "ConfigQueryRequest"
            | "ConfigPublishRequest"
            | "ConfigRemoveRequest"
            | "ConfigBatchListenRequest" => {
                self.auth.check_grpc(headers, response_of(kind))?;
                config::handle(self, &conn, kind, p).await
            }
            _ => Err(RpcError::new(
                code::NO_HANDLER,
                format!("RequestHandler Not Found: {kind:?} is not a request Roster serves"),
            )),
        }
    }

    /// Serve one bi-stream: register the connection on its `ConnectionSetupRequest`, take the
    /// client's answers to pushes, and end the connection (its session, subscriptions and
    /// listeners) when the stream ends.
    pub fn open_stream(
        self: &Arc<Self>,
        addr: Option<std::net::SocketAddr>,
        mut inbound: Streaming<Payload>,
    ) -> Result<ReceiverStream<Result<Payload, Status>>, Status> {
        let addr = addr.ok_or_else(|| Status::internal("the transport has no peer address"))?;
        let (tx, rx) = mpsc::channel(connection::PUSH_QUEUE);
        let me = self.clone();
        tokio::spawn(async move {
            let _gauge = super::StreamGauge::new("nacos");
            let mut conn: Option<(Arc<Conn>, u64)> = None;
            loop {
                let msg = tokio::select! {
                    m = inbound.next() => m,
                    // The client is gone when tonic drops our half.
                    _ = tx.closed() => break,
                };
                let p = match msg {
                    Some(Ok(p)) => p,
                    Some(Err(e)) => {
                        tracing::debug!(peer = %addr, error = %e, "Nacos bi-stream error");
                        break;
                    }
                    None => break,
                };
                match type_of(&p) {
                    "ConnectionSetupRequest" => {
                        match connection::setup(&me, addr, &p, tx.clone()).await {
                            Ok(c) => conn = Some(c),
                            Err(e) => {
                                tracing::warn!(peer = %addr, error = %e.message, "refusing a Nacos connection setup");
                                break;
                            }
                        }
                    }
                    t if t.ends_with("Response") => {
                        if let Some((c, _)) = &conn {
                            c.acked(&p);
                        }
                    }
                    other => {
                        tracing::warn!(peer = %addr, request = %other,
                            "unexpected request on a Nacos bi-stream; ignored");
                    }
                }
            }
            if let Some((c, stream)) = conn {
                me.conns.close(&me.api, &c, stream).await;
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

/// The response type a request is answered with (for typed failures).
fn response_of(kind: &str) -> &'static str {
    match kind {
        "InstanceRequest" | "PersistentInstanceRequest" => "InstanceResponse",
        "BatchInstanceRequest" => "BatchInstanceResponse",
        "SubscribeServiceRequest" => "SubscribeServiceResponse",
        "ServiceQueryRequest" => "QueryServiceResponse",
        "ServiceListRequest" => "ServiceListResponse",
        "ConfigQueryRequest" => "ConfigQueryResponse",
        "ConfigPublishRequest" => "ConfigPublishResponse",
        "ConfigRemoveRequest" => "ConfigRemoveResponse",
        "ConfigBatchListenRequest" => "ConfigChangeBatchListenResponse",
        _ => "ErrorResponse",
    }
}

/// A closed set of request labels for metrics (anything else is `other`).
fn metric_label(kind: &str) -> &'static str {
    match kind {
        "ServerCheckRequest" => "ServerCheckRequest",
        "HealthCheckRequest" => "HealthCheckRequest",
        "InstanceRequest" => "InstanceRequest",
        "BatchInstanceRequest" => "BatchInstanceRequest",
        "PersistentInstanceRequest" => "PersistentInstanceRequest",
        "SubscribeServiceRequest" => "SubscribeServiceRequest",
        "ServiceQueryRequest" => "ServiceQueryRequest",
        "ServiceListRequest" => "ServiceListRequest",
        "ConfigQueryRequest" => "ConfigQueryRequest",
        "ConfigPublishRequest" => "ConfigPublishRequest",
        "ConfigRemoveRequest" => "ConfigRemoveRequest",
        "ConfigBatchListenRequest" => "ConfigBatchListenRequest",
        _ => "other",
    }
}

#[tonic::async_trait]
impl proto::request_server::Request for RequestSvc {
    async fn request(&self, request: tonic::Request<Payload>) -> Result<Response<Payload>, Status> {
        let addr = request.remote_addr();
        let p = request.into_inner();
        Ok(Response::new(self.0.handle(addr, &p).await))
    }
}

#[tonic::async_trait]
impl proto::bi_request_stream_server::BiRequestStream for BiStreamSvc {
    #[allow(non_camel_case_types)]
    type requestBiStreamStream = ReceiverStream<Result<Payload, Status>>;

    async fn request_bi_stream(
        &self,
        request: tonic::Request<Streaming<Payload>>,
    ) -> Result<Response<Self::requestBiStreamStream>, Status> {
        let addr = request.remote_addr();
        self.0
            .open_stream(addr, request.into_inner())
            .map(Response::new)
    }
}

/// Add the Nacos services to the gRPC port's routes.
pub fn routes(routes: &mut tonic::service::RoutesBuilder, nacos: Arc<Nacos>, max_message: usize) {
    routes
        .add_service(
            proto::request_server::RequestServer::new(RequestSvc(nacos.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(
            proto::bi_request_stream_server::BiRequestStreamServer::new(BiStreamSvc(nacos))
                .max_decoding_message_size(max_message),
        );
}

/// The Nacos services over a standalone in-memory node, auth off, for the handlers' tests.
#[cfg(test)]
pub(crate) fn test_nacos() -> Arc<Nacos> {
    let backend: Arc<dyn roster_core::backend::Backend> = roster_zab::Standalone::open(
        Arc::new(roster_core::storage::MemEngine::default()),
        roster_zab::ZabConfig::default(),
    )
    .expect("standalone node");
    Nacos::new(
        Api::new(backend, 1, 10),
        Arc::new(NacosAuth::disabled()),
        20_000,
    )
}
