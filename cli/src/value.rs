//! An ordered JSON-shaped value and its two writers: JSON (what the filter reads) and block YAML
//! (what operators read, and what Envoy and kubectl load).
//!
//! Key order is kept as written: generated bootstraps and embedded configs read top to bottom
//! like the user's own file. (`serde_json::Map` would sort keys, and turning on its
//! `preserve_order` feature would change the filter library's map order in host builds.)

use std::fmt::Write as _;

/// A JSON value whose objects keep their key order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    /// Always finite (readers refuse `.inf`/`.nan`; writers print `null` defensively).
    Float(f64),
    Str(String),
    Seq(Vec<Value>),
    Map(Vec<(String, Value)>),
}

impl Value {
    /// A mapping from `(key, value)` pairs, in order.
    pub fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub fn seq(items: impl IntoIterator<Item = Value>) -> Value {
        Value::Seq(items.into_iter().collect())
    }

    /// The value of `key` when `self` is a mapping.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        match self {
            Value::Map(entries) => entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// Compact JSON (`{"a":1}`).
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        write_json(self, None, 0, &mut out);
        out
    }

    /// JSON indented by two spaces, ending without a newline.
    pub fn to_json_pretty(&self) -> String {
        let mut out = String::new();
        write_json(self, Some(2), 0, &mut out);
        out
    }

    /// Block-style YAML, ending with a newline. Strings that YAML 1.1 or 1.2 readers could take for
    /// anything else are quoted; multi-line strings become literal blocks.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        match self {
            Value::Map(entries) if !entries.is_empty() => write_yaml_map(entries, 0, &mut out),
            Value::Seq(items) if !items.is_empty() => write_yaml_seq(items, 0, &mut out),
            scalar => {
                write_yaml_scalar(scalar, 0, &mut out);
                out.push('\n');
            }
        }
        out
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Int(i128::from(n))
    }
}

impl From<u16> for Value {
    fn from(n: u16) -> Value {
        Value::Int(i128::from(n))
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(i128::from(n))
    }
}

impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => Value::Int(i128::from(i)),
                (None, Some(u), _) => Value::Int(i128::from(u)),
                (None, None, Some(f)) => Value::Float(f),
                (None, None, None) => Value::Null,
            },
            serde_json::Value::String(s) => Value::Str(s),
            serde_json::Value::Array(items) => Value::Seq(items.into_iter().map(Value::from).collect()),
            serde_json::Value::Object(map) => Value::Map(map.into_iter().map(|(k, v)| (k, Value::from(v))).collect()),
        }
    }
}

/// A float as both JSON and YAML 1.1/1.2 read it back: always a `.`, a signed exponent when
/// there is one (`1.0e-7`, `2.5e+21`): PyYAML takes `1e-7` for a string.
pub fn format_float(f: f64) -> String {
    if !f.is_finite() {
        return "null".to_string();
    }
    let s = format!("{f:?}");
    let (mantissa, exponent) = match s.split_once('e') {
        Some((m, e)) => (m.to_string(), Some(e.to_string())),
        None => (s, None),
    };
    let mantissa = if mantissa.contains('.') { mantissa } else { format!("{mantissa}.0") };
    match exponent {
        None => mantissa,
        Some(e) if e.starts_with('-') => format!("{mantissa}e{e}"),
        Some(e) => format!("{mantissa}e+{e}"),
    }
}

fn json_string(s: &str, out: &mut String) {
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        // Serializing a &str cannot fail; keep the output valid JSON all the same.
        Err(_) => out.push_str("\"\""),
    }
}

fn write_json(v: &Value, indent: Option<usize>, level: usize, out: &mut String) {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * level));
        }
    };
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => out.push_str(&format_float(*f)),
        Value::Str(s) => json_string(s, out),
        Value::Seq(items) if items.is_empty() => out.push_str("[]"),
        Value::Map(entries) if entries.is_empty() => out.push_str("{}"),
        Value::Seq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, level + 1);
                write_json(item, indent, level + 1, out);
            }
            newline(out, level);
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, (k, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, level + 1);
                json_string(k, out);
                out.push(':');
                if indent.is_some() {
                    out.push(' ');
                }
                write_json(item, indent, level + 1, out);
            }
            newline(out, level);
            out.push('}');
        }
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// Whether `s` can be written without quotes and read back as this same string by YAML 1.1
/// (PyYAML, go-yaml v2, yaml-cpp) and YAML 1.2 readers. Deliberately conservative.
fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return false };
    if !(first.is_ascii_alphabetic() || first == '_' || first == '/') {
        return false;
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric() || " _./@|+=:,()-".contains(c)) {
        return false;
    }
    if s.ends_with([' ', ':']) || s.contains(": ") || s.contains(" #") {
        return false;
    }
    const WORDS: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"];
    if WORDS.contains(&s.to_ascii_lowercase().as_str()) {
        return false;
    }
    matches!(crate::yaml::resolve_plain(s), Ok(crate::yaml::Scalar::Str))
}

/// A literal block (`|`, `|-`) keeps multi-line text readable; only used when it reads back exactly.
fn literal_ok(s: &str) -> Option<&'static str> {
    if !s.contains('\n') || s.starts_with([' ', '\n', '\t']) || s.ends_with("\n\n") {
        return None;
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') || s.contains('\u{feff}') {
        return None;
    }
    // Trailing blanks on a line would be kept, but a line of only blanks is ambiguous.
    if s.lines().any(|l| !l.is_empty() && l.trim().is_empty()) {
        return None;
    }
    Some(if s.ends_with('\n') { "|" } else { "|-" })
}

fn write_yaml_scalar(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => out.push_str(&format_float(*f)),
        Value::Str(s) if plain_ok(s) => out.push_str(s),
        Value::Str(s) => match literal_ok(s) {
            Some(header) => {
                out.push_str(header);
                for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
                    out.push('\n');
                    if !line.is_empty() {
                        pad(out, indent + 2);
                        out.push_str(line);
                    }
                }
            }
            None => json_string(s, out),
        },
        Value::Seq(_) => out.push_str("[]"),
        Value::Map(_) => out.push_str("{}"),
    }
}

fn write_yaml_key(k: &str, out: &mut String) {
    if plain_ok(k) {
        out.push_str(k);
    } else {
        json_string(k, out);
    }
}

fn is_block(v: &Value) -> bool {
    matches!(v, Value::Map(e) if !e.is_empty()) || matches!(v, Value::Seq(i) if !i.is_empty())
}

fn write_yaml_map(entries: &[(String, Value)], indent: usize, out: &mut String) {
    for (i, (k, v)) in entries.iter().enumerate() {
        // The first entry of a map that is a list item continues the `- ` line.
        if i > 0 || !out.ends_with("- ") {
            pad(out, indent);
        }
        write_yaml_key(k, out);
        out.push(':');
        write_yaml_value(v, indent, out);
    }
}

fn write_yaml_seq(items: &[Value], indent: usize, out: &mut String) {
    for item in items {
        pad(out, indent);
        out.push_str("- ");
        match item {
            Value::Map(entries) if !entries.is_empty() => write_yaml_map(entries, indent + 2, out),
            Value::Seq(inner) if !inner.is_empty() => {
                out.push('\n');
                write_yaml_seq(inner, indent + 2, out);
            }
            scalar => {
                write_yaml_scalar(scalar, indent, out);
                out.push('\n');
            }
        }
    }
}

/// After `key:`: a nested block on the next lines, or ` scalar` and a newline.
fn write_yaml_value(v: &Value, indent: usize, out: &mut String) {
    if is_block(v) {
        out.push('\n');
        match v {
            Value::Map(entries) => write_yaml_map(entries, indent + 2, out),
            Value::Seq(items) => write_yaml_seq(items, indent + 2, out),
            _ => {}
        }
    } else {
        out.push(' ');
        write_yaml_scalar(v, indent, out);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_read_back_under_yaml_1_1() {
        assert_eq!(format_float(1.5), "1.5");
        assert_eq!(format_float(100.0), "100.0");
        assert_eq!(format_float(1e-7), "1.0e-7");
        assert_eq!(format_float(2.5e21), "2.5e+21");
    }

    #[test]
    fn quoting_is_conservative() {
        for s in ["yes", "No", "1", "0x1f", "2024-02-01", "1:30", "", " a", "a: b", "-a", "*x", "~", "null", "y"] {
            assert!(!plain_ok(s), "{s}");
        }
        for s in ["gpt-4o", "outbound|443||api.openai.com", "type.googleapis.com/envoy.x", "x-llm-router-cluster"] {
            assert!(plain_ok(s), "{s}");
        }
    }

    #[test]
    fn yaml_layout() {
        let v = Value::map([
            ("a", Value::seq([Value::map([("b", Value::from(1u64)), ("c", Value::seq([]))]), Value::from("x")])),
            ("d", Value::from("line one\nline two\n")),
            ("e", Value::map(Vec::<(String, Value)>::new())),
        ]);
        assert_eq!(v.to_yaml(), "a:\n  - b: 1\n    c: []\n  - x\nd: |\n  line one\n  line two\ne: {}\n");
    }
}
