//! Eureka's two encodings over one tree of `serde_json::Value`s, in the convention Eureka's own
//! JSON already uses: an element's attributes are keys starting with `@` (`"@enabled"`,
//! `"@class"`), the text of an element that also has attributes is `"$"`, repeated child elements
//! are an array. JSON is that tree as is; XML is written from it and read into it, so one lenient
//! reader of instances serves both (`Accept`-negotiated responses, JSON or XML request bodies).

use quick_xml::events::{BytesStart, Event};
use serde_json::{Map, Value};

/// Render `{"root": {...}}` as an XML document.
pub fn to_xml(doc: &Value) -> String {
    let mut out = String::with_capacity(1024);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>");
    if let Value::Object(m) = doc {
        for (name, v) in m {
            element(&mut out, name, v);
        }
    }
    out
}

/// XML element names Eureka spells differently from its JSON keys.
fn xml_name(json_key: &str) -> &str {
    match json_key {
        "overriddenStatus" => "overriddenstatus",
        k => k,
    }
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !n.to_ascii_lowercase().starts_with("xml")
}

fn element(out: &mut String, name: &str, v: &Value) {
    let name = xml_name(name);
    // A key that is no XML name (metadata may hold anything) cannot be an element: skip it
    // rather than write a document no client can parse.
    if !valid_name(name) {
        return;
    }
    match v {
        Value::Array(items) => {
            for item in items {
                element(out, name, item);
            }
        }
        Value::Object(m) => {
            out.push('<');
            out.push_str(name);
            for (k, a) in m {
                if let Some(attr) = k.strip_prefix('@')
                    && valid_name(attr)
                {
                    out.push(' ');
                    out.push_str(attr);
                    out.push_str("=\"");
                    out.push_str(&quick_xml::escape::escape(scalar(a).as_str()));
                    out.push('"');
                }
            }
            let children: Vec<(&String, &Value)> = m
                .iter()
                .filter(|(k, _)| *k == "$" || valid_name(xml_name(k)))
                .collect();
            if children.is_empty() {
                out.push_str("/>");
                return;
            }
            out.push('>');
            for (k, c) in children {
                if k == "$" {
                    out.push_str(&quick_xml::escape::escape(scalar(c).as_str()));
                } else {
                    element(out, k, c);
                }
            }
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
        Value::Null => {
            out.push('<');
            out.push_str(name);
            out.push_str("/>");
        }
        other => {
            out.push('<');
            out.push_str(name);
            out.push('>');
            out.push_str(&quick_xml::escape::escape(scalar(other).as_str()));
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
    }
}

/// A scalar as text (strings without quotes).
pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Parse an XML document into `{"root": {...}}` (see the module doc for the shape).
pub fn from_xml(text: &str) -> Result<Value, String> {
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().trim_text(true);
    // The element being read, with its name and accumulated content.
    let mut stack: Vec<(String, Map<String, Value>, String)> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| format!("XML error at byte {}: {e}", reader.error_position()))?;
        match ev {
            Event::Start(s) => {
                if stack.len() >= 32 {
                    return Err("XML nested too deeply".into());
                }
                let (name, attrs) = start(&s)?;
                stack.push((name, attrs, String::new()));
            }
            Event::Empty(s) => {
                let (name, attrs) = start(&s)?;
                let v = finish(attrs, String::new());
                match stack.last_mut() {
                    Some(parent) => add_child(&mut parent.1, name, v),
                    None => root = Some((name, v)),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.2.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.2.push_str(&t);
                }
            }
            Event::GeneralRef(r) => {
                if let Some(top) = stack.last_mut() {
                    match r
                        .resolve_char_ref()
                        .map_err(|e| format!("XML character reference is not valid: {e}"))?
                    {
                        Some(c) => top.2.push(c),
                        None => top.2.push_str(
                            quick_xml::escape::resolve_predefined_entity(&r)
                                .ok_or_else(|| format!("unknown XML entity &{};", &*r))?,
                        ),
                    }
                }
            }
            Event::End(_) => {
                let (name, attrs, text) = stack.pop().ok_or("unbalanced XML")?;
                let v = finish(attrs, text);
                match stack.last_mut() {
                    Some(parent) => add_child(&mut parent.1, name, v),
                    None => root = Some((name, v)),
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err("the XML document ends inside an element".into());
    }
    let (name, v) = root.ok_or("empty XML document")?;
    let mut m = Map::new();
    m.insert(name, v);
    Ok(Value::Object(m))
}

fn start(s: &BytesStart) -> Result<(String, Map<String, Value>), String> {
    let name = s.name().as_ref().to_owned();
    let mut attrs = Map::new();
    for a in s.attributes() {
        let a = a.map_err(|e| format!("XML attribute is not valid: {e}"))?;
        let k = a.key.as_ref().to_owned();
        let v = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| format!("XML attribute is not valid: {e}"))?;
        attrs.insert(format!("@{k}"), Value::String(v.into_owned()));
    }
    Ok((name, attrs))
}

/// An element's value: text alone is a string; children (or attributes) make an object.
fn finish(mut m: Map<String, Value>, text: String) -> Value {
    if m.is_empty() {
        return Value::String(text);
    }
    if !text.is_empty() {
        m.insert("$".into(), Value::String(text));
    }
    Value::Object(m)
}

fn add_child(m: &mut Map<String, Value>, name: String, v: Value) {
    match m.get_mut(&name) {
        None => {
            m.insert(name, v);
        }
        Some(Value::Array(a)) => a.push(v),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, v]);
        }
    }
}

// ---- lenient readers: Eureka clients send numbers as strings, booleans as strings, ports as
// objects or plain numbers ----

/// A string field (numbers and booleans are written out); `None` when absent, null or empty.
pub fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::Object(m) => m.get("$").and_then(|t| text(Some(t))),
        other => Some(scalar(other)),
    }
}

/// An integer field given as a number or a numeric string.
pub fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        Value::Object(m) => int(m.get("$")),
        _ => None,
    }
}

/// A boolean given as `true`, `"true"` (any case) or absent.
pub fn boolean(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => Some(s.trim().eq_ignore_ascii_case("true")),
        _ => None,
    }
}

/// A port: `8080`, `"8080"`, `{"$": 8080, "@enabled": "true"}` (XML: `<port enabled="true">`).
/// Returns (port, enabled); a bare number is enabled.
pub fn port(v: Option<&Value>) -> Option<(i64, bool)> {
    match v? {
        Value::Object(m) => Some((int(m.get("$"))?, boolean(m.get("@enabled")).unwrap_or(true))),
        other => Some((int(Some(other))?, true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn xml_round_trips_the_eureka_conventions() {
        let doc = json!({"instance": {
            "app": "A&B",
            "port": {"$": 8080, "@enabled": "true"},
            "metadata": {"@class": "java.util.Collections$EmptyMap"},
            "overriddenStatus": "UNKNOWN",
            "tags": ["x", "y"],
        }});
        let xml = to_xml(&doc);
        assert!(xml.contains("<port enabled=\"true\">8080</port>"), "{xml}");
        assert!(xml.contains("<metadata class=\"java.util.Collections$EmptyMap\"/>"));
        assert!(xml.contains("<overriddenstatus>UNKNOWN</overriddenstatus>"));
        assert!(xml.contains("<app>A&amp;B</app>"));
        let back = from_xml(&xml).unwrap();
        let i = &back["instance"];
        assert_eq!(port(i.get("port")), Some((8080, true)));
        assert_eq!(text(i.get("app")).as_deref(), Some("A&B"));
        assert_eq!(i["tags"], json!(["x", "y"]));
        assert_eq!(i["metadata"]["@class"], "java.util.Collections$EmptyMap");
    }

    #[test]
    fn lenient_scalars() {
        assert_eq!(int(Some(&json!("42"))), Some(42));
        assert_eq!(int(Some(&json!(42))), Some(42));
        assert_eq!(boolean(Some(&json!("TRUE"))), Some(true));
        assert_eq!(
            port(Some(&json!({"$": "80", "@enabled": false}))),
            Some((80, false))
        );
        assert_eq!(port(Some(&json!("81"))), Some((81, true)));
        assert_eq!(text(Some(&json!(""))), None);
    }

    #[test]
    fn bad_xml_is_an_error_not_a_panic() {
        for bad in ["", "<a>", "<a></b>", "<<", "<a x=1/>", "<a>&bogus;</a>"] {
            assert!(from_xml(bad).is_err(), "{bad}");
        }
        assert!(to_xml(&json!({"k": {"not a name": 1}})).contains("<k/>"));
    }
}
