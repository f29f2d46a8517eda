//! `os.environ/NAME` references, resolved from the VM's environment.
//!
//! LiteLLM lets any string field say `os.environ/OPENAI_API_KEY`; inside Envoy the environment is
//! what `vm_config.environment_variables` exposes. Resolution happens once per configuration,
//! over the whole JSON tree (nested maps included), before any field is read, so every field
//! sees plain values. A missing variable is an error naming the variable and the field — never a
//! silent empty key. Resolved values may be secrets: they are never put into a diagnostic.

use super::problems::Diagnostics;
use serde_json::Value;

const PREFIX: &str = "os.environ/";

/// Replaces every `os.environ/NAME` string in `value` with `lookup(NAME)`, adding each NAME to
/// `names` once (a Vec: a config names a handful; a B-tree set would cost wasm size). `context` (e.g. "deployment `gpt-4o`") is appended to error messages.
pub fn resolve(
    value: &mut Value,
    path: &str,
    context: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diagnostics,
    names: &mut Vec<String>,
) {
    match value {
        Value::String(s) => {
            if let Some(name) = s.strip_prefix(PREFIX) {
                let name = name.trim();
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_string());
                }
                match lookup(name) {
                    Some(v) => *s = v,
                    None => diags.error(
                        path,
                        format!(
                            "environment variable {name} is not set{}{context} (expose it to the VM with vm_config.environment_variables)",
                            if context.is_empty() { "" } else { " for " }
                        ),
                    ),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                resolve(item, &format!("{path}[{i}]"), context, lookup, diags, names);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let child = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                resolve(v, &child, context, lookup, diags, names);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        (name == "KEY").then(|| "secret-value".to_string())
    }

    #[test]
    fn resolves_nested_strings_and_arrays() {
        let mut v = json!({"a": {"b": ["os.environ/KEY", "x"]}, "c": "os.environ/KEY"});
        let mut d = Diagnostics::default();
        let mut names = Vec::new();
        resolve(&mut v, "", "", &env, &mut d, &mut names);
        assert!(d.errors.is_empty());
        assert_eq!(names, ["KEY"]);
        assert_eq!(v, json!({"a": {"b": ["secret-value", "x"]}, "c": "secret-value"}));
    }

    #[test]
    fn missing_variable_names_variable_and_path_but_not_values() {
        let mut v = json!({"model_list": [{"litellm_params": {"api_key": "os.environ/NOPE"}}]});
        let mut d = Diagnostics::default();
        resolve(&mut v, "", "deployment `gpt-4o`", &env, &mut d, &mut Vec::new());
        assert_eq!(d.errors.len(), 1);
        let line = d.errors[0].to_string();
        assert!(
            line.starts_with("model_list[0].litellm_params.api_key: environment variable NOPE is not set for deployment `gpt-4o`"),
            "{line}"
        );
    }
}
