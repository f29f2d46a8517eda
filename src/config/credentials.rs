//! LiteLLM's top-level `credential_list`: named sets of `credential_values` (`api_key`,
//! `api_base`, `api_version`, ...) that a deployment uses by naming one in
//! `litellm_params.litellm_credential_name`. The deployment's own values win. A deployment
//! naming a credential the list does not have is skipped (it would otherwise go out keyless).
//!
//! Shape as LiteLLM documents it (docs "Centralized Credential Management"):
//! `credential_list: [{credential_name, credential_values: {...}, credential_info: {...}}]`;
//! `credential_info` is descriptive and not read.

use super::deployment::Skipped;
use super::fields::kind;
use super::problems::Diagnostics;
use serde_json::{Map, Value};

/// A `model_list` entry naming a credential `credential_list` does not define.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub index: usize,
    pub path: String,
    pub name: String,
}

impl Missing {
    pub fn skipped(&self, entry: &Value) -> Skipped {
        let group = entry.get("model_name").and_then(Value::as_str).unwrap_or("").to_string();
        Skipped {
            group,
            path: self.path.clone(),
            reason: format!("credential `{}` is not defined in credential_list", self.name),
            hint: "add it to credential_list or fix the name".to_string(),
        }
    }
}

/// Copies each named credential's values into the deployments naming it (keys the deployment
/// does not set), in place. Returns the deployments naming an unknown credential.
pub fn apply(root: &mut Map<String, Value>, diags: &mut Diagnostics) -> Vec<Missing> {
    let creds = parse_list(root.get("credential_list"), diags);
    let mut missing = Vec::new();
    let Some(Value::Array(items)) = root.get_mut("model_list") else { return missing };
    for (i, item) in items.iter_mut().enumerate() {
        let section = if item.get("litellm_params").is_some() { "litellm_params" } else { "deltallm_params" };
        let Some(Value::Object(params)) = item.get_mut(section) else { continue };
        let path = format!("model_list[{i}].{section}.litellm_credential_name");
        let name = match params.get("litellm_credential_name") {
            None | Some(Value::Null) => continue,
            Some(Value::String(n)) => n.clone(),
            Some(other) => {
                diags.error(path, format!("must be a string, got {}", kind(other)));
                continue;
            }
        };
        match creds.iter().find(|(n, _)| *n == name) {
            Some((_, values)) => {
                for (k, v) in values {
                    if !params.contains_key(k) {
                        params.insert(k.clone(), v.clone());
                    }
                }
            }
            None => missing.push(Missing { index: i, path, name }),
        }
    }
    missing
}

fn parse_list(value: Option<&Value>, diags: &mut Diagnostics) -> Vec<(String, Map<String, Value>)> {
    let items = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => {
            diags.error("credential_list", format!("must be a list of credentials, got {}", kind(other)));
            return Vec::new();
        }
    };
    let mut out: Vec<(String, Map<String, Value>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let base = format!("credential_list[{i}]");
        if !item.is_object() {
            diags.error(&base, format!("must be a mapping, got {}", kind(item)));
            continue;
        }
        let name = match item.get("credential_name") {
            Some(Value::String(n)) if !n.is_empty() => n.clone(),
            _ => {
                diags.error(format!("{base}.credential_name"), "is required (a non-empty string)");
                continue;
            }
        };
        let values = match item.get("credential_values") {
            Some(Value::Object(v)) => v.clone(),
            None | Some(Value::Null) => Map::new(),
            Some(other) => {
                diags.error(format!("{base}.credential_values"), format!("must be a mapping, got {}", kind(other)));
                continue;
            }
        };
        if out.iter().any(|(n, _)| *n == name) {
            diags.error(format!("{base}.credential_name"), format!("`{name}` is already defined"));
            continue;
        }
        out.push((name, values));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_fill_what_the_deployment_does_not_set_and_unknown_names_are_reported() {
        let mut root = match json!({
            "credential_list": [{"credential_name": "prod", "credential_values": {"api_key": "os.environ/K", "api_base": "https://c.example/v1"},
                "credential_info": {"description": "x"}}],
            "model_list": [
                {"model_name": "a", "litellm_params": {"model": "openai/x", "litellm_credential_name": "prod", "api_base": "https://own.example"}},
                {"model_name": "b", "litellm_params": {"model": "openai/x", "litellm_credential_name": "nope"}},
                {"model_name": "c", "litellm_params": {"model": "openai/x"}}]}) {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let mut d = Diagnostics::default();
        let missing = apply(&mut root, &mut d);
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        assert_eq!(missing, [Missing { index: 1, path: "model_list[1].litellm_params.litellm_credential_name".into(), name: "nope".into() }]);
        let params = &root["model_list"][0]["litellm_params"];
        assert_eq!((params["api_key"].as_str(), params["api_base"].as_str()), (Some("os.environ/K"), Some("https://own.example")));
        assert!(root["model_list"][2]["litellm_params"].get("api_key").is_none());
    }

    #[test]
    fn malformed_lists_are_errors() {
        let mut d = Diagnostics::default();
        parse_list(Some(&json!({"a": 1})), &mut d);
        parse_list(Some(&json!([{"credential_values": {}}, {"credential_name": "x", "credential_values": 3},
            {"credential_name": "y"}, {"credential_name": "y"}, null])), &mut d);
        let paths: Vec<&str> = d.errors.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["credential_list", "credential_list[0].credential_name", "credential_list[1].credential_values", "credential_list[3].credential_name", "credential_list[4]"]
        );
    }
}
