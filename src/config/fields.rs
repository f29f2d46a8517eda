//! Typed, path-aware reads from the JSON configuration tree.
//!
//! Real LiteLLM configs are messy: numbers arrive as strings (`os.environ/RPM`), booleans as
//! `"true"`, sections as `null`. These readers accept what LiteLLM accepts and report anything
//! else as a [`Diagnostics`] error carrying the exact field path.

use super::problems::Diagnostics;
use serde_json::{Map, Value};

/// A view of one JSON object at a known path. A missing or `null` object reads as empty.
pub struct Section<'a> {
    pub map: Option<&'a Map<String, Value>>,
    pub path: String,
}

impl<'a> Section<'a> {
    /// Reads `value` as an object section; anything other than an object or null is an error.
    pub fn new(value: Option<&'a Value>, path: impl Into<String>, diags: &mut Diagnostics) -> Self {
        let path = path.into();
        match value {
            None | Some(Value::Null) => Section { map: None, path },
            Some(Value::Object(m)) => Section { map: Some(m), path },
            Some(other) => {
                diags.error(&path, format!("must be a mapping, got {}", kind(other)));
                Section { map: None, path }
            }
        }
    }

    pub fn field_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{}", self.path, key)
        }
    }

    /// The raw value of `key`; `null` reads as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(key)).filter(|v| !v.is_null())
    }

    pub fn keys(&self) -> impl Iterator<Item = &'a String> {
        self.map.into_iter().flat_map(|m| m.keys())
    }

    pub fn child(&self, key: &str, diags: &mut Diagnostics) -> Section<'a> {
        Section::new(self.get(key), self.field_path(key), diags)
    }

    pub fn str(&self, key: &str, diags: &mut Diagnostics) -> Option<&'a str> {
        match self.get(key)? {
            Value::String(s) => Some(s.as_str()),
            other => {
                diags.error(self.field_path(key), format!("must be a string, got {}", kind(other)));
                None
            }
        }
    }

    /// A string, or a number written without quotes (`api_version: 2024-02-01` stays text in YAML,
    /// but `api_version: 2024` arrives as a number).
    pub fn text(&self, key: &str, diags: &mut Diagnostics) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            other => {
                diags.error(self.field_path(key), format!("must be a string, got {}", kind(other)));
                None
            }
        }
    }

    /// A non-negative number; numeric strings are accepted.
    pub fn non_negative(&self, key: &str, diags: &mut Diagnostics) -> Option<f64> {
        let v = self.get(key)?;
        let n = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n.is_finite() && n >= 0.0 => Some(n),
            Some(_) => {
                diags.error(self.field_path(key), "must be >= 0");
                None
            }
            None => {
                diags.error(self.field_path(key), format!("must be a number, got {}", kind(v)));
                None
            }
        }
    }

    /// A non-negative integer; numeric strings are accepted.
    pub fn count(&self, key: &str, diags: &mut Diagnostics) -> Option<u64> {
        let n = self.non_negative(key, diags)?;
        if n.fract() != 0.0 {
            diags.error(self.field_path(key), "must be a whole number");
            return None;
        }
        if n > u32::MAX as f64 {
            diags.error(self.field_path(key), format!("must be a whole number up to {}", u32::MAX));
            return None;
        }
        Some(n as u64)
    }

    pub fn bool(&self, key: &str, diags: &mut Diagnostics) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            other => {
                diags.error(self.field_path(key), format!("must be true or false, got {}", kind(other)));
                None
            }
        }
    }

    /// A list of strings; a single string reads as a one-element list.
    pub fn string_list(&self, key: &str, diags: &mut Diagnostics) -> Vec<String> {
        match self.get(key) {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => diags.error(
                            format!("{}[{i}]", self.field_path(key)),
                            format!("must be a string, got {}", kind(other)),
                        ),
                    }
                }
                out
            }
            Some(other) => {
                diags.error(self.field_path(key), format!("must be a list of strings, got {}", kind(other)));
                Vec::new()
            }
        }
    }
}

/// A short name for a JSON value's type, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_accept_numeric_strings_and_reject_negatives() {
        let v = json!({"a": "12", "b": -1, "c": "x", "d": 2.5});
        let mut d = Diagnostics::default();
        let s = Section::new(Some(&v), "root", &mut d);
        assert_eq!(s.count("a", &mut d), Some(12));
        assert_eq!(s.non_negative("b", &mut d), None);
        assert_eq!(s.non_negative("c", &mut d), None);
        assert_eq!(s.count("d", &mut d), None);
        let paths: Vec<_> = d.errors.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["root.b", "root.c", "root.d"]);
    }

    #[test]
    fn null_sections_and_fields_read_as_absent() {
        let v = json!({"s": null, "f": null});
        let mut d = Diagnostics::default();
        let root = Section::new(Some(&v), "", &mut d);
        let s = root.child("s", &mut d);
        assert!(s.map.is_none());
        assert_eq!(root.str("f", &mut d), None);
        assert!(d.errors.is_empty());
    }

    #[test]
    fn non_mapping_section_is_an_error() {
        let v = json!({"router_settings": [1]});
        let mut d = Diagnostics::default();
        let root = Section::new(Some(&v), "", &mut d);
        root.child("router_settings", &mut d);
        assert_eq!(d.errors[0].to_string(), "router_settings: must be a mapping, got a list");
    }
}
