//! A small HTTP/1.1 client over hyper's pooled client (keep-alive connections, no TLS): the
//! transport of the native API's REST side and of the Nacos open API. Also reads server-sent
//! event streams (the native API's subscriptions).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::load::Failure;

/// How long one request may take before it counts as a `Timeout` (a blocking lock acquire
/// waits at most its own `timeout_ms`, which callers keep below this).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One client's connection pool to one server.
#[derive(Clone)]
pub struct Http {
    client: Arc<Client<HttpConnector, Full<Bytes>>>,
    /// `http://host:port`.
    base: Arc<str>,
}

/// A body to send.
pub enum Body<'a> {
    Empty,
    Json(Vec<u8>),
    Form(&'a str),
}

impl Http {
    /// A pool for `addr` (`host:port`).
    pub fn new(addr: &str) -> Http {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Http {
            client: Arc::new(client),
            base: Arc::from(format!("http://{addr}")),
        }
    }

    /// Sends a request; the response's body is left to the caller (streams).
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Body<'_>,
    ) -> Result<Response<Incoming>, Failure> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.base))
            // Eureka answers XML unless asked for JSON; every other API answers JSON anyway.
            .header("accept", "application/json");
        let body = match body {
            Body::Empty => Full::new(Bytes::new()),
            Body::Json(b) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(b))
            }
            Body::Form(f) => {
                req = req.header("content-type", "application/x-www-form-urlencoded");
                Full::new(Bytes::copy_from_slice(f.as_bytes()))
            }
        };
        let req = req
            .body(body)
            .map_err(|e| Failure::new("ClientBug", format!("building {path_and_query}: {e}")))?;
        self.client.request(req).await.map_err(|e| {
            Failure::new(
                "ClientIo",
                format!(
                    "{path_and_query}: {}",
                    error_chain(&e as &dyn std::error::Error)
                ),
            )
        })
    }

    /// Sends a request and reads the whole answer, within [`REQUEST_TIMEOUT`].
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Body<'_>,
    ) -> Result<(StatusCode, Bytes), Failure> {
        let exchange = async {
            let resp = self.send(method, path_and_query, body).await?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| Failure::new("ClientIo", format!("{path_and_query}: body: {e}")))?
                .to_bytes();
            Ok((status, bytes))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                "Timeout",
                format!("{path_and_query}: no answer within {REQUEST_TIMEOUT:?}"),
            )),
        }
    }
}

/// An error and its sources, `: `-joined (hyper's own message says little without them).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Percent-encodes one path segment or query value (everything but unreserved characters).
pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        // byte_serialize writes spaces as `+`, which a path segment would keep literally.
        .replace('+', "%20")
}

/// One server-sent event.
#[derive(Debug, Default, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
    pub id: Option<String>,
}

/// Reads server-sent events from a response body.
pub struct SseReader {
    body: Incoming,
    buf: BytesMut,
}

impl SseReader {
    pub fn new(body: Incoming) -> SseReader {
        SseReader {
            body,
            buf: BytesMut::new(),
        }
    }

    /// The next event; `None` when the stream ends.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, Failure> {
        loop {
            if let Some(ev) = take_event(&mut self.buf) {
                if ev.data.is_empty() && ev.event.is_empty() {
                    continue; // a keep-alive comment
                }
                return Ok(Some(ev));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(Failure::new("ClientIo", format!("event stream: {e}"))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// Takes one complete event (up to a blank line) off the front of `buf`.
fn take_event(buf: &mut BytesMut) -> Option<SseEvent> {
    let text = std::str::from_utf8(buf).ok()?;
    let (end, sep) = [("\n\n", 2), ("\r\n\r\n", 4)]
        .iter()
        .filter_map(|(pat, len)| text.find(pat).map(|i| (i, *len)))
        .min()?;
    let mut ev = SseEvent::default();
    for line in text[..end].lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => ev.event = value.to_string(),
            "data" => {
                if !ev.data.is_empty() {
                    ev.data.push('\n');
                }
                ev.data.push_str(value);
            }
            "id" => ev.id = Some(value.to_string()),
            _ => {} // comments (`: keep-alive`) and retry
        }
    }
    buf.advance(end + sep);
    Some(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_on_blank_lines_and_comments_skipped() {
        let mut buf = BytesMut::from(
            &b"event: snapshot\nid: 7\ndata: {\"a\":1}\n\n: keep-alive\n\nevent: change\ndata: x"[..],
        );
        let ev = take_event(&mut buf).unwrap();
        assert_eq!(ev.event, "snapshot");
        assert_eq!(ev.id.as_deref(), Some("7"));
        assert_eq!(ev.data, "{\"a\":1}");
        let comment = take_event(&mut buf).unwrap();
        assert!(comment.event.is_empty() && comment.data.is_empty());
        assert!(
            take_event(&mut buf).is_none(),
            "an unfinished event waits for more"
        );
        buf.extend_from_slice(b"\ndata: y\n\n");
        let ev = take_event(&mut buf).unwrap();
        assert_eq!((ev.event.as_str(), ev.data.as_str()), ("change", "x\ny"));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(enc("10.0.0.1#80#DEFAULT"), "10.0.0.1%2380%23DEFAULT");
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
    }
}
