//! Eureka's `InstanceInfo` ↔ the unified instance record (docs/registry-model.md).
//!
//! An application is a service of the Eureka scope (one namespace and group), named in upper case
//! (`orders` ↔ `ORDERS`). What the record has no field for (instanceId, hostName, VIPs, URLs,
//! data center, the reported and overridden status, lease settings) is kept in the record's
//! `extra`, so Eureka shows an instance back as it was registered; instances from other protocols
//! get Eureka's defaults, derived from the record.

use super::codec::{int, port, scalar, text};
use crate::api::registry::{DEFAULT_CLUSTER, Instance};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

pub const UP: &str = "UP";
pub const DOWN: &str = "DOWN";
pub const STARTING: &str = "STARTING";
pub const OUT_OF_SERVICE: &str = "OUT_OF_SERVICE";
pub const UNKNOWN: &str = "UNKNOWN";

const DEFAULT_DATA_CENTER: &str =
    r#"{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"}"#;

/// Eureka's instance statuses, upper case.
pub fn parse_status(s: &str) -> Option<&'static str> {
    [UP, DOWN, STARTING, OUT_OF_SERVICE, UNKNOWN]
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(s.trim()))
}

/// The application name of a service.
pub fn app_name(service: &str) -> String {
    service.to_uppercase()
}

/// An instance's Eureka id: the one it registered with, else `{ip}:{service}:{port}` (Spring
/// Cloud's default shape), with the cluster appended outside the default cluster.
pub fn eureka_id(i: &Instance) -> String {
    if let Some(id) = i.extra.get("instanceId") {
        return id.clone();
    }
    if i.cluster == DEFAULT_CLUSTER {
        format!("{}:{}:{}", i.ip, i.service, i.port)
    } else {
        format!("{}:{}:{}:{}", i.ip, i.service, i.port, i.cluster)
    }
}

/// The status Eureka shows: the record's `enabled` / `healthy` decide (any protocol may change
/// them), the reported status refines an unhealthy one (DOWN, STARTING, UNKNOWN).
pub fn status(i: &Instance) -> &'static str {
    if !i.enabled {
        return OUT_OF_SERVICE;
    }
    if i.healthy {
        return UP;
    }
    match i.extra.get("status").and_then(|s| parse_status(s)) {
        Some(s @ (DOWN | STARTING | UNKNOWN)) => s,
        _ => DOWN,
    }
}

/// `healthy` and `enabled` for an effective Eureka status.
pub fn flags(status: &str) -> (bool, bool) {
    match status {
        UP => (true, true),
        OUT_OF_SERVICE => (true, false),
        _ => (false, true),
    }
}

/// Eureka's effective-status rules (`registry/rule/*`), first match wins: a reported status other
/// than UP / OUT_OF_SERVICE is trusted; else an override set through `/status` wins; else the
/// reported one.
pub fn effective(reported: &'static str, overridden: Option<&str>) -> &'static str {
    if reported != UP && reported != OUT_OF_SERVICE {
        return reported;
    }
    match overridden.and_then(parse_status) {
        Some(o) if o != UNKNOWN => o,
        _ => reported,
    }
}

/// Times of an instance node (ms since the epoch).
#[derive(Debug, Clone, Copy, Default)]
pub struct Times {
    pub ctime: i64,
    pub mtime: i64,
}

/// Lease settings of an instance (seconds).
pub fn lease_settings(i: &Instance, default_renewal: u64, default_duration: u64) -> (u64, u64) {
    let get = |k: &str, d: u64| {
        i.extra
            .get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v > 0)
            .unwrap_or(d)
    };
    (
        get("renewalIntervalInSecs", default_renewal),
        get("durationInSecs", default_duration),
    )
}

/// The `InstanceInfo` of a record, as Eureka's JSON codec writes it.
pub fn instance_info(
    i: &Instance,
    times: Times,
    action: &str,
    default_renewal: u64,
    default_duration: u64,
) -> Value {
    let x = &i.extra;
    let s = |k: &str| x.get(k).cloned();
    let (renewal, duration) = lease_settings(i, default_renewal, default_duration);
    let mut data_center: Value = s("dataCenterInfo")
        .and_then(|d| serde_json::from_str(&d).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| serde_json::from_str(DEFAULT_DATA_CENTER).expect("constant JSON"));
    // Java clients pick the DataCenterInfo class by `@class`; some clients register without it.
    if data_center.get("@class").is_none() {
        let class = if data_center.get("name").and_then(Value::as_str) == Some("Amazon") {
            "com.netflix.appinfo.AmazonInfo"
        } else {
            "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"
        };
        data_center["@class"] = json!(class);
    }
    let metadata = if i.metadata.is_empty() {
        json!({"@class": "java.util.Collections$EmptyMap"})
    } else {
        json!(i.metadata)
    };
    let home = s("homePageUrl").unwrap_or_else(|| format!("http://{}:{}/", i.ip, i.port));
    let mut m = Map::new();
    m.insert("instanceId".into(), json!(eureka_id(i)));
    m.insert(
        "hostName".into(),
        json!(s("hostName").unwrap_or_else(|| i.ip.clone())),
    );
    m.insert("app".into(), json!(app_name(&i.service)));
    m.insert("ipAddr".into(), json!(i.ip));
    m.insert("status".into(), json!(status(i)));
    m.insert(
        "overriddenStatus".into(),
        json!(s("overriddenStatus").unwrap_or_else(|| UNKNOWN.into())),
    );
    m.insert(
        "port".into(),
        json!({"$": i.port, "@enabled": s("portEnabled").unwrap_or_else(|| "true".into())}),
    );
    m.insert(
        "securePort".into(),
        json!({
            "$": s("securePort").and_then(|p| p.parse::<u16>().ok()).unwrap_or(443),
            "@enabled": s("securePortEnabled").unwrap_or_else(|| "false".into()),
        }),
    );
    m.insert(
        "countryId".into(),
        json!(
            s("countryId")
                .and_then(|c| c.parse::<i64>().ok())
                .unwrap_or(1)
        ),
    );
    m.insert("dataCenterInfo".into(), data_center);
    m.insert(
        "leaseInfo".into(),
        json!({
            "renewalIntervalInSecs": renewal,
            "durationInSecs": duration,
            "registrationTimestamp": times.ctime,
            "lastRenewalTimestamp": times.mtime,
            "evictionTimestamp": 0,
            "serviceUpTimestamp": s("serviceUpTimestamp").and_then(|t| t.parse::<i64>().ok()).unwrap_or(times.ctime),
        }),
    );
    m.insert("metadata".into(), metadata);
    m.insert("homePageUrl".into(), json!(home));
    for k in [
        "statusPageUrl",
        "healthCheckUrl",
        "secureHealthCheckUrl",
        "appGroupName",
        "asgName",
        "sid",
    ] {
        if let Some(v) = s(k) {
            m.insert(k.into(), json!(v));
        }
    }
    m.insert(
        "vipAddress".into(),
        json!(s("vipAddress").unwrap_or_else(|| i.service.clone())),
    );
    m.insert(
        "secureVipAddress".into(),
        json!(s("secureVipAddress").unwrap_or_else(|| i.service.clone())),
    );
    m.insert("isCoordinatingDiscoveryServer".into(), json!("false"));
    m.insert(
        "lastUpdatedTimestamp".into(),
        json!(times.mtime.to_string()),
    );
    m.insert(
        "lastDirtyTimestamp".into(),
        json!(s("lastDirtyTimestamp").unwrap_or_else(|| times.mtime.to_string())),
    );
    m.insert("actionType".into(), json!(action));
    Value::Object(m)
}

/// Does the instance serve this VIP (Eureka VIP fields are comma-separated lists)?
pub fn has_vip(i: &Instance, secure: bool, vip: &str) -> bool {
    let key = if secure {
        "secureVipAddress"
    } else {
        "vipAddress"
    };
    let list = i.extra.get(key).map(String::as_str).unwrap_or(&i.service);
    list.split(',').any(|v| v.trim().eq_ignore_ascii_case(vip))
}

/// `apps__hashcode`: `STATUS_count_` for each status present, in status-name order.
pub fn hashcode<'a>(statuses: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in statuses {
        *counts.entry(s).or_default() += 1;
    }
    counts.iter().map(|(s, n)| format!("{s}_{n}_")).collect()
}

/// A registration as a client sent it, read leniently.
#[derive(Debug, Clone)]
pub struct Registration {
    pub app: String,
    pub instance_id: String,
    pub ip: String,
    pub port: u16,
    pub reported: &'static str,
    pub overridden: Option<&'static str>,
    pub metadata: BTreeMap<String, String>,
    /// Lease settings the client asked for (seconds), if any.
    pub renewal_s: Option<u64>,
    pub duration_s: Option<u64>,
    pub extra: BTreeMap<String, String>,
}

/// Read a registration body (`{"instance": {…}}`, or the bare instance object) the way Eureka's
/// resource validates it: instanceId (or hostName), hostName, ipAddr, app and dataCenterInfo with
/// a name are required, and app must be the application of the path.
pub fn registration(body: &Value, path_app: &str) -> Result<Registration, String> {
    let inst = body.get("instance").unwrap_or(body);
    let Value::Object(o) = inst else {
        return Err("the body is not an instance object".into());
    };
    let host = text(o.get("hostName")).ok_or("Missing hostname")?;
    let instance_id = text(o.get("instanceId")).unwrap_or_else(|| host.clone());
    let ip = text(o.get("ipAddr")).ok_or("Missing ip address")?;
    let app = text(o.get("app")).ok_or("Missing appName")?;
    if !app.eq_ignore_ascii_case(path_app) {
        return Err(format!(
            "Mismatched appName, expecting {} but was {}",
            path_app.to_uppercase(),
            app.to_uppercase()
        ));
    }
    let dc = o.get("dataCenterInfo").ok_or("Missing dataCenterInfo")?;
    if text(dc.get("name")).is_none() {
        return Err("Missing dataCenterInfo Name".into());
    }
    let (plain, plain_on) = port(o.get("port")).unwrap_or((0, false));
    let secure = port(o.get("securePort"));
    // The record has one port: the plain one when enabled, else the secure one.
    let chosen = match secure {
        Some((p, true)) if !plain_on => p,
        _ => plain,
    };
    let port = u16::try_from(chosen).map_err(|_| format!("port {chosen} is out of range"))?;
    let reported = match text(o.get("status")) {
        Some(s) => parse_status(&s).ok_or_else(|| format!("unknown status {s}"))?,
        None => UP,
    };
    let overridden = text(o.get("overriddenStatus").or(o.get("overriddenstatus")))
        .and_then(|s| parse_status(&s))
        .filter(|s| *s != UNKNOWN);
    let mut metadata = BTreeMap::new();
    if let Some(Value::Object(m)) = o.get("metadata") {
        for (k, v) in m {
            if !k.starts_with('@') {
                metadata.insert(k.clone(), scalar(v));
            }
        }
    }
    let lease = o.get("leaseInfo");
    let secs = |k: &str| {
        lease
            .and_then(|l| int(l.get(k)))
            .filter(|v| *v > 0)
            .map(|v| v as u64)
    };
    let mut extra = BTreeMap::new();
    extra.insert("instanceId".into(), instance_id.clone());
    extra.insert("hostName".into(), host);
    extra.insert("status".into(), reported.into());
    extra.insert("portEnabled".into(), plain_on.to_string());
    if let Some((p, on)) = secure {
        extra.insert("securePort".into(), p.to_string());
        extra.insert("securePortEnabled".into(), on.to_string());
    }
    for k in [
        "homePageUrl",
        "statusPageUrl",
        "healthCheckUrl",
        "secureHealthCheckUrl",
        "vipAddress",
        "secureVipAddress",
        "appGroupName",
        "asgName",
        "sid",
        "countryId",
        "lastDirtyTimestamp",
    ] {
        if let Some(v) = text(o.get(k)) {
            extra.insert(k.into(), v);
        }
    }
    if let Some(t) = lease.and_then(|l| int(l.get("serviceUpTimestamp"))) {
        extra.insert("serviceUpTimestamp".into(), t.to_string());
    }
    extra.insert("dataCenterInfo".into(), dc.to_string());
    Ok(Registration {
        app,
        instance_id,
        ip,
        port,
        reported,
        overridden,
        metadata,
        renewal_s: secs("renewalIntervalInSecs"),
        duration_s: secs("durationInSecs"),
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(healthy: bool, enabled: bool, reported: Option<&str>) -> Instance {
        let mut extra = BTreeMap::new();
        if let Some(r) = reported {
            extra.insert("status".to_string(), r.to_string());
        }
        Instance {
            id: "10.0.0.1#80#DEFAULT".into(),
            namespace: "public".into(),
            group: "DEFAULT_GROUP".into(),
            service: "orders".into(),
            cluster: "DEFAULT".into(),
            ip: "10.0.0.1".into(),
            port: 80,
            weight: 1.0,
            healthy,
            enabled,
            metadata: BTreeMap::new(),
            ephemeral: true,
            protocol: "native".into(),
            health_check: None,
            extra,
            owner: 1,
            lease: None,
            revision: 0,
        }
    }

    #[test]
    fn status_follows_the_record() {
        assert_eq!(status(&inst(true, true, None)), UP);
        assert_eq!(status(&inst(false, true, None)), DOWN);
        assert_eq!(status(&inst(false, true, Some("STARTING"))), STARTING);
        assert_eq!(status(&inst(true, false, Some("UP"))), OUT_OF_SERVICE);
        assert_eq!(eureka_id(&inst(true, true, None)), "10.0.0.1:orders:80");
    }

    #[test]
    fn effective_status_rules() {
        assert_eq!(effective(DOWN, Some(OUT_OF_SERVICE)), DOWN);
        assert_eq!(effective(UP, Some(OUT_OF_SERVICE)), OUT_OF_SERVICE);
        assert_eq!(effective(UP, None), UP);
        assert_eq!(effective(UP, Some(UNKNOWN)), UP);
    }

    #[test]
    fn hashcode_is_sorted_by_status() {
        assert_eq!(hashcode(["UP", "DOWN", "UP"].into_iter()), "DOWN_1_UP_2_");
        assert_eq!(hashcode(std::iter::empty()), "");
    }

    #[test]
    fn registration_reads_what_clients_send() {
        let body = json!({"instance": {
            "instanceId": "h:web:8080", "hostName": "h", "app": "WEB", "ipAddr": "10.0.0.2",
            "status": "UP", "overriddenstatus": "UNKNOWN",
            "port": {"$": "8080", "@enabled": "true"}, "securePort": {"$": 8443, "@enabled": false},
            "dataCenterInfo": {"@class": "com.netflix.appinfo.MyDataCenterInfo", "name": "MyOwn"},
            "leaseInfo": {"renewalIntervalInSecs": "5", "durationInSecs": 15},
            "metadata": {"@class": "java.util.Collections$EmptyMap", "zone": "a"},
            "lastDirtyTimestamp": "1700000000000",
        }});
        let r = registration(&body, "web").unwrap();
        assert_eq!((r.port, r.reported, r.overridden), (8080, UP, None));
        assert_eq!((r.renewal_s, r.duration_s), (Some(5), Some(15)));
        assert_eq!(r.metadata.len(), 1);
        assert_eq!(r.extra["lastDirtyTimestamp"], "1700000000000");
        assert!(registration(&body, "other").is_err());
        let mut no_dc = body.clone();
        no_dc["instance"]
            .as_object_mut()
            .unwrap()
            .remove("dataCenterInfo");
        assert!(registration(&no_dc, "web").is_err());
    }
}
