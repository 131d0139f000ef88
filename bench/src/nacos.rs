//! A Nacos 1.x open-API client (HTTP v1, form and query parameters), as nacos-sdk-python and
//! the Java client's HTTP fallback speak it: register, deregister and list instances, publish,
//! get and delete config (docs/nacos.md).

use hyper::{Method, StatusCode};
use serde::Deserialize;

use crate::http::{Body, Http};
use crate::load::Failure;

#[derive(Clone)]
pub struct NacosClient {
    http: Http,
}

#[derive(Deserialize)]
struct ServiceInfo {
    #[serde(default)]
    hosts: Vec<Host>,
}

#[derive(Deserialize)]
struct Host {
    #[serde(default)]
    port: u16,
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

impl NacosClient {
    /// A client of the Nacos API on the HTTP port `addr` (`host:port`).
    pub fn new(addr: &str) -> NacosClient {
        NacosClient {
            http: Http::new(addr),
        }
    }

    /// One request; a non-200 answer is a failure named by its status (Nacos answers errors
    /// with a status and a text body).
    async fn ok(&self, method: Method, path: &str, body: Body<'_>) -> Result<String, Failure> {
        let (status, bytes) = self.http.call(method, path, body).await?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if status == StatusCode::OK {
            Ok(text)
        } else {
            let endpoint = path.split('?').next().unwrap_or(path);
            Err(Failure::new(
                format!("HTTP_{}", status.as_u16()),
                format!("{endpoint}: {}", text.trim()),
            ))
        }
    }

    /// Expects the body `want` (`ok`, `true`).
    async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
        want: &str,
    ) -> Result<(), Failure> {
        let text = self.ok(method, path, body).await?;
        if text.trim() == want {
            Ok(())
        } else {
            Err(Failure::new(
                "BadResponse",
                format!("{path}: expected {want:?}, got {:?}", text.trim()),
            ))
        }
    }

    pub async fn register(
        &self,
        group: &str,
        service: &str,
        ip: &str,
        port: u16,
        ephemeral: bool,
    ) -> Result<(), Failure> {
        let body = form(&[
            ("serviceName", service),
            ("groupName", group),
            ("ip", ip),
            ("port", &port.to_string()),
            ("ephemeral", if ephemeral { "true" } else { "false" }),
        ]);
        self.expect(
            Method::POST,
            "/nacos/v1/ns/instance",
            Body::Form(&body),
            "ok",
        )
        .await
    }

    pub async fn deregister(
        &self,
        group: &str,
        service: &str,
        ip: &str,
        port: u16,
        ephemeral: bool,
    ) -> Result<(), Failure> {
        let query = form(&[
            ("serviceName", service),
            ("groupName", group),
            ("ip", ip),
            ("port", &port.to_string()),
            ("ephemeral", if ephemeral { "true" } else { "false" }),
        ]);
        let path = format!("/nacos/v1/ns/instance?{query}");
        self.expect(Method::DELETE, &path, Body::Empty, "ok").await
    }

    /// The ports of a service's instances.
    pub async fn list(&self, group: &str, service: &str) -> Result<Vec<u16>, Failure> {
        let query = form(&[
            ("serviceName", service),
            ("groupName", group),
            ("healthyOnly", "false"),
        ]);
        let text = self
            .ok(
                Method::GET,
                &format!("/nacos/v1/ns/instance/list?{query}"),
                Body::Empty,
            )
            .await?;
        let info: ServiceInfo = serde_json::from_str(&text)
            .map_err(|e| Failure::new("BadResponse", format!("instance list: {e}")))?;
        Ok(info.hosts.into_iter().map(|h| h.port).collect())
    }

    pub async fn config_publish(
        &self,
        group: &str,
        data_id: &str,
        content: &str,
    ) -> Result<(), Failure> {
        let body = form(&[("dataId", data_id), ("group", group), ("content", content)]);
        self.expect(
            Method::POST,
            "/nacos/v1/cs/configs",
            Body::Form(&body),
            "true",
        )
        .await
    }

    /// The content's length.
    pub async fn config_get(&self, group: &str, data_id: &str) -> Result<usize, Failure> {
        let query = form(&[("dataId", data_id), ("group", group)]);
        let path = format!("/nacos/v1/cs/configs?{query}");
        Ok(self.ok(Method::GET, &path, Body::Empty).await?.len())
    }

    pub async fn config_delete(&self, group: &str, data_id: &str) -> Result<(), Failure> {
        let query = form(&[("dataId", data_id), ("group", group)]);
        let path = format!("/nacos/v1/cs/configs?{query}");
        self.expect(Method::DELETE, &path, Body::Empty, "true")
            .await
    }
}
