//! Apache Curator service discovery (`curator-x-discovery`): one znode per instance at
//! `/services/{name}/{id}` holding Curator's JSON `ServiceInstance`. Curator's default
//! `JsonInstanceSerializer` ignores unknown properties, so a mirror carries a `roster` object
//! naming the registry instance it shows; that marker is what keeps mirrors from being imported.

use super::Source;
use crate::api::registry::Instance;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Curator's base path (`ServiceDiscoveryBuilder.basePath`, `/services` by convention).
pub const BASE: &str = "/services";

/// The JSON Curator writes (`OldServiceInstance` in its compatible mode, plus `enabled` in the
/// newer one).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    name: String,
    id: String,
    address: Option<String>,
    port: Option<i64>,
    ssl_port: Option<i64>,
    #[serde(default)]
    payload: Value,
    #[serde(default, rename = "registrationTimeUTC")]
    registration_time_utc: i64,
    #[serde(default)]
    service_type: Option<String>,
    #[serde(default)]
    uri_spec: Value,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    roster: Option<Value>,
}

/// Why a `/services` node is not imported.
#[derive(Debug, PartialEq)]
pub enum Skip {
    /// One of our own mirrors.
    Mirror,
    /// Not Curator's JSON, or without an address or port.
    Invalid(String),
}

/// Read a Curator instance node as the fields of a registry instance (namespace, group and service
/// are set by the caller).
pub fn parse(data: &[u8]) -> Result<Source, Skip> {
    let w: Wire = serde_json::from_slice(data).map_err(|e| Skip::Invalid(e.to_string()))?;
    if w.roster.is_some() {
        return Err(Skip::Mirror);
    }
    let ip = w
        .address
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Skip::Invalid("no address".into()))?;
    let port = w
        .port
        .or(w.ssl_port)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| Skip::Invalid("no port or sslPort in 0..65535".into()))?;
    let mut extra = BTreeMap::new();
    extra.insert("curator.id".to_owned(), w.id);
    extra.insert("curator.name".to_owned(), w.name);
    if let Some(s) = w.ssl_port {
        extra.insert("curator.sslPort".to_owned(), s.to_string());
    }
    if let Some(t) = w.service_type {
        extra.insert("curator.serviceType".to_owned(), t);
    }
    extra.insert(
        "curator.registrationTimeUTC".to_owned(),
        w.registration_time_utc.to_string(),
    );
    if !w.uri_spec.is_null() {
        extra.insert("curator.uriSpec".to_owned(), w.uri_spec.to_string());
    }
    if !w.payload.is_null() {
        extra.insert("curator.payload".to_owned(), w.payload.to_string());
    }
    Ok(Source {
        ip,
        port,
        enabled: w.enabled.unwrap_or(true),
        metadata: payload_metadata(&w.payload),
        extra,
    })
}

/// Metadata from a payload: Spring Cloud Zookeeper's `ZookeeperInstance` keeps it in
/// `metadata`; a flat object (a `Map` payload) is taken key by key; anything else has none.
fn payload_metadata(payload: &Value) -> BTreeMap<String, String> {
    let obj = match payload.get("metadata") {
        Some(Value::Object(m)) => m,
        _ => match payload {
            Value::Object(m) => m,
            _ => return BTreeMap::new(),
        },
    };
    obj.iter()
        .filter(|(k, _)| !k.starts_with('@'))
        .filter_map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => v.to_string(),
                _ => return None,
            };
            Some((k.clone(), v))
        })
        .collect()
}

/// The marker a mirror carries: the registry instance it shows.
#[derive(Debug, Serialize)]
struct Marker<'a> {
    namespace: &'a str,
    group: &'a str,
    service: &'a str,
    id: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MirrorWire<'a> {
    name: &'a str,
    id: &'a str,
    address: &'a str,
    port: u16,
    ssl_port: Option<u16>,
    payload: Option<()>,
    #[serde(rename = "registrationTimeUTC")]
    registration_time_utc: i64,
    service_type: &'static str,
    uri_spec: Option<()>,
    roster: Marker<'a>,
}

/// The znode name of the mirror of `inst` (its registry id: `{ip}#{port}#{cluster}`).
pub fn mirror_name(inst: &Instance) -> &str {
    &inst.id
}

/// The data of the mirror of `inst`, registered at `ctime` (ms); deterministic, so an unchanged
/// instance gives identical bytes and the projector writes nothing.
pub fn mirror_data(inst: &Instance, ctime: i64) -> Vec<u8> {
    let w = MirrorWire {
        name: &inst.service,
        id: &inst.id,
        address: &inst.ip,
        port: inst.port,
        ssl_port: None,
        payload: None,
        registration_time_utc: ctime,
        service_type: if inst.ephemeral { "DYNAMIC" } else { "STATIC" },
        uri_spec: None,
        roster: Marker {
            namespace: &inst.namespace,
            group: &inst.group,
            service: &inst.service,
            id: &inst.id,
        },
    };
    serde_json::to_vec(&w).expect("curator mirror serialises")
}

/// Is this node's data one of our mirrors?
pub fn is_mirror(data: &[u8]) -> bool {
    matches!(parse(data), Err(Skip::Mirror))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_curator_json_with_a_spring_payload() {
        let data = br#"{"name":"orders","id":"6f1c","address":"10.0.0.5","port":8080,"sslPort":null,
            "payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"orders","name":"orders","metadata":{"zone":"a","instance_status":"UP"}},
            "registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":{"parts":[{"value":"scheme","variable":true}]}}"#;
        let s = parse(data).unwrap();
        assert_eq!((s.ip.as_str(), s.port, s.enabled), ("10.0.0.5", 8080, true));
        assert_eq!(s.metadata.get("zone").map(String::as_str), Some("a"));
        assert_eq!(s.extra["curator.id"], "6f1c");
        assert_eq!(s.extra["curator.serviceType"], "DYNAMIC");
    }

    #[test]
    fn ssl_port_only_and_invalid_nodes() {
        let s =
            parse(br#"{"name":"a","id":"1","address":"h","port":null,"sslPort":8443}"#).unwrap();
        assert_eq!(s.port, 8443);
        assert!(matches!(parse(b"not json"), Err(Skip::Invalid(_))));
        assert!(matches!(
            parse(br#"{"name":"a","id":"1","address":"h"}"#),
            Err(Skip::Invalid(_))
        ));
        assert!(matches!(
            parse(br#"{"name":"a","id":"1","address":"h","port":70000}"#),
            Err(Skip::Invalid(_))
        ));
    }

    #[test]
    fn a_mirror_is_recognised_and_never_imported() {
        let inst: Instance = serde_json::from_value(serde_json::json!({
            "id": "10.1.1.1#80#DEFAULT", "namespace": "public", "group": "DEFAULT_GROUP",
            "service": "orders", "cluster": "DEFAULT", "ip": "10.1.1.1", "port": 80,
            "weight": 1.0, "healthy": true, "enabled": true, "ephemeral": true, "protocol": "nacos"
        }))
        .unwrap();
        let d = mirror_data(&inst, 5);
        assert!(is_mirror(&d));
        assert_eq!(parse(&d), Err(Skip::Mirror));
        assert_eq!(d, mirror_data(&inst, 5));
        let v: Value = serde_json::from_slice(&d).unwrap();
        assert_eq!(v["serviceType"], "DYNAMIC");
        assert_eq!(v["address"], "10.1.1.1");
    }
}
