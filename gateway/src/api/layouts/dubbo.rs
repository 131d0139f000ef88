//! Dubbo's ZooKeeper registry: a provider is a znode
//! `/dubbo/{interface}/providers/{URL.encode(url.toFullString())}` (ephemeral unless
//! `dynamic=false`), everything about it in the URL's query. The registry service of a provider is
//! Nacos's Dubbo convention, `providers:{interface}:{version}:{group}`, so Dubbo consumers of
//! Nacos's registry find it too. Mirrors carry a `roster.mirror` parameter naming the registry
//! service they show; that marker keeps them from being imported.

use super::Source;
use crate::api::registry::Instance;
use std::collections::BTreeMap;

/// Dubbo's default registry root (the registry URL's `group`, `dubbo` unless set).
pub const ROOT: &str = "/dubbo";
/// The URL parameter that marks a mirror; its value is the registry service shown.
pub const MARKER: &str = "roster.mirror";
/// Service-name prefix of Nacos's Dubbo convention.
const PROVIDERS: &str = "providers:";

/// A provider URL, parsed the way Dubbo's `URLStrParser` does: values are not decoded further.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderUrl {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub params: BTreeMap<String, String>,
}

impl ProviderUrl {
    /// The interface it provides (`interface`, else the path).
    pub fn interface(&self) -> &str {
        self.params
            .get("interface")
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(&self.path)
    }

    /// Its registry service name, `providers:{interface}:{version}:{group}`.
    pub fn service(&self) -> String {
        let p = |k: &str| self.params.get(k).map(String::as_str).unwrap_or("");
        format!(
            "{PROVIDERS}{}:{}:{}",
            self.interface(),
            p("version"),
            p("group")
        )
    }
}

/// Decode a provider node's name (Java's `URLDecoder`: `%XX` and `+` for space).
pub fn decode_name(name: &str) -> Option<String> {
    let plus = name.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// Encode a URL as a node name (Java's `URLEncoder`, which Dubbo's `URL.encode` is).
pub fn encode_name(url: &str) -> String {
    form_urlencoded::byte_serialize(url.as_bytes()).collect()
}

/// Parse `scheme://host:port/path?k=v&k=v`.
pub fn parse_url(s: &str) -> Option<ProviderUrl> {
    let (scheme, rest) = s.split_once("://")?;
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, q),
        None => (rest, ""),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, p),
        None => (before_query, ""),
    };
    // user:password@ is allowed in Dubbo URLs; the address is what follows.
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once(']')?;
        (h, p.strip_prefix(':')?)
    } else {
        authority.rsplit_once(':')?
    };
    let port: u16 = port.parse().ok()?;
    if scheme.is_empty() || host.is_empty() {
        return None;
    }
    let params = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (!k.is_empty()).then(|| (k.to_owned(), v.to_owned()))
        })
        .collect();
    Some(ProviderUrl {
        scheme: scheme.to_owned(),
        host: host.to_owned(),
        port,
        path: path.to_owned(),
        params,
    })
}

/// Why a provider node is not imported.
#[derive(Debug, PartialEq)]
pub enum Skip {
    Mirror,
    Invalid(String),
}

/// Read a provider node name: its registry service and instance fields.
pub fn parse(name: &str) -> Result<(String, Source), Skip> {
    let decoded = decode_name(name).ok_or_else(|| Skip::Invalid("not URL-encoded UTF-8".into()))?;
    let url = parse_url(&decoded)
        .ok_or_else(|| Skip::Invalid(format!("not a provider URL: {decoded}")))?;
    if url.params.contains_key(MARKER) {
        return Err(Skip::Mirror);
    }
    let flag = |k: &str, default: bool| {
        url.params
            .get(k)
            .map(|v| v.eq_ignore_ascii_case("true"))
            .unwrap_or(default)
    };
    let enabled = flag("enabled", true) && !flag("disabled", false);
    let mut metadata = url.params.clone();
    metadata.insert("protocol".to_owned(), url.scheme.clone());
    let mut extra = BTreeMap::new();
    extra.insert("dubbo.url".to_owned(), decoded.clone());
    Ok((
        url.service(),
        Source {
            ip: url.host.clone(),
            port: url.port,
            enabled,
            metadata,
            extra,
        },
    ))
}

/// Interface, version and group a registry service shows as in Dubbo: a
/// `providers:{interface}:{version}:{group}` name splits; any other name is the interface.
pub fn interface_of(service: &str) -> (&str, &str, &str) {
    if let Some(rest) = service.strip_prefix(PROVIDERS) {
        let mut it = rest.splitn(3, ':');
        if let (Some(i), Some(v), Some(g)) = (it.next(), it.next(), it.next())
            && !i.is_empty()
        {
            return (i, v, g);
        }
    }
    (service, "", "")
}

/// Can this text stand in a Dubbo URL as a parameter key or value unencoded?
fn plain(s: &str) -> bool {
    !s.chars()
        .any(|c| matches!(c, '&' | '=' | '?' | '#') || c.is_whitespace() || c.is_control())
}

/// The node name of the mirror of `inst`: its URL, encoded. Metadata becomes parameters (those
/// that cannot stand in a URL are left out), `protocol` the scheme (default `dubbo`).
pub fn mirror_name(inst: &Instance) -> String {
    let (iface, version, group) = interface_of(&inst.service);
    let mut params: BTreeMap<&str, &str> = inst
        .metadata
        .iter()
        .filter(|(k, v)| !k.is_empty() && k.as_str() != "protocol" && plain(k) && plain(v))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    params.insert("interface", iface);
    params.entry("side").or_insert("provider");
    if !version.is_empty() {
        params.insert("version", version);
    }
    if !group.is_empty() {
        params.insert("group", group);
    }
    params.insert(MARKER, &inst.service);
    let scheme = inst
        .metadata
        .get("protocol")
        .map(String::as_str)
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or("dubbo");
    let host = if inst.ip.contains(':') {
        format!("[{}]", inst.ip)
    } else {
        inst.ip.clone()
    };
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let url = format!(
        "{scheme}://{host}:{}/{iface}?{}",
        inst.port,
        query.join("&")
    );
    encode_name(&url)
}

/// The registry service a mirror node shows, if `name` is one of our mirrors.
pub fn mirror_service(name: &str) -> Option<String> {
    let url = parse_url(&decode_name(name)?)?;
    url.params.get(MARKER).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "dubbo%3A%2F%2F10.0.0.9%3A20880%2Forg.example.Greeter%3Fanyhost%3Dtrue%26application%3Dp%26interface%3Dorg.example.Greeter%26methods%3Dhello%2Cbye%26side%3Dprovider%26version%3D1.0.0%26group%3Dblue";

    #[test]
    fn reads_a_provider_node() {
        let (service, s) = parse(NAME).unwrap();
        assert_eq!(service, "providers:org.example.Greeter:1.0.0:blue");
        assert_eq!(
            (s.ip.as_str(), s.port, s.enabled),
            ("10.0.0.9", 20880, true)
        );
        assert_eq!(s.metadata["methods"], "hello,bye");
        assert_eq!(s.metadata["protocol"], "dubbo");
    }

    #[test]
    fn bad_names_are_skipped_not_fatal() {
        assert!(matches!(parse("%zz"), Err(Skip::Invalid(_))));
        assert!(matches!(parse("hello"), Err(Skip::Invalid(_))));
        assert!(matches!(
            parse("dubbo%3A%2F%2Fh%3A99999%2Fx"),
            Err(Skip::Invalid(_))
        ));
        let (_, s) = parse(&encode_name("tri://[::1]:50051/a.B?disabled=true")).unwrap();
        assert_eq!((s.ip.as_str(), s.port, s.enabled), ("::1", 50051, false));
    }

    #[test]
    fn service_names_split_into_interface_version_group() {
        assert_eq!(interface_of("providers:a.B:1.0:g"), ("a.B", "1.0", "g"));
        assert_eq!(interface_of("providers:a.B::"), ("a.B", "", ""));
        assert_eq!(interface_of("orders"), ("orders", "", ""));
    }

    #[test]
    fn mirrors_are_marked_and_round_trip() {
        let inst: Instance = serde_json::from_value(serde_json::json!({
            "id": "10.1.1.1#80#DEFAULT", "namespace": "public", "group": "DEFAULT_GROUP",
            "service": "providers:a.B:1.0:", "cluster": "DEFAULT", "ip": "10.1.1.1", "port": 80,
            "weight": 1.0, "healthy": true, "enabled": true, "ephemeral": true, "protocol": "nacos",
            "metadata": {"zone": "a", "bad": "x&y=z"}
        }))
        .unwrap();
        let name = mirror_name(&inst);
        assert_eq!(parse(&name), Err(Skip::Mirror));
        assert_eq!(mirror_service(&name).as_deref(), Some("providers:a.B:1.0:"));
        let url = parse_url(&decode_name(&name).unwrap()).unwrap();
        assert_eq!(url.interface(), "a.B");
        assert_eq!(url.params["version"], "1.0");
        assert_eq!(url.params["zone"], "a");
        assert!(!url.params.contains_key("bad"));
        assert!(!url.params.contains_key("group"));
        assert!(mirror_service(NAME).is_none());
    }
}
