//! `os.environ/NAME` references: which variables a config needs, and where values come from
//! (an `--env-file`, then the process environment).

use crate::value::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

pub const PREFIX: &str = "os.environ/";

/// Variables from an env file (`KEY=VALUE` lines), falling back to the process environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    file: HashMap<String, String>,
    /// When false, the process environment is not consulted (tests).
    process: bool,
}

impl Env {
    /// The process environment only.
    pub fn process() -> Env {
        Env { file: HashMap::new(), process: true }
    }

    /// Only the given variables (no process environment).
    pub fn fixed(vars: impl IntoIterator<Item = (String, String)>) -> Env {
        Env { file: vars.into_iter().collect(), process: false }
    }

    /// Reads `path` (dotenv style: `KEY=VALUE`, optional `export `, `#` comments, optional
    /// single or double quotes around the value); its values win over the process environment.
    pub fn with_file(mut self, path: &Path) -> Result<Env, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("{}:{}: expected KEY=VALUE", path.display(), n + 1));
            };
            let key = key.trim();
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("{}:{}: `{key}` is not a variable name", path.display(), n + 1));
            }
            self.file.insert(key.to_string(), unquote(value.trim()));
        }
        Ok(self)
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.file.get(name).cloned().or_else(|| if self.process { std::env::var(name).ok() } else { None })
    }
}

fn unquote(v: &str) -> String {
    if let Some(inner) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        return inner.replace("\\n", "\n").replace("\\\"", "\"").replace("\\\\", "\\");
    }
    if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        return inner.to_string();
    }
    // An unquoted value ends at ` #` (a trailing comment).
    v.split(" #").next().unwrap_or("").trim_end().to_string()
}

/// The variable a string refers to, as the filter reads it (`os.environ/ NAME ` → `NAME`).
pub fn reference(s: &str) -> Option<&str> {
    s.strip_prefix(PREFIX).map(str::trim)
}

/// Variables whose value decides where traffic goes (`api_base`/`base_url`, `cluster` of a
/// deployment or of a `credential_list` entry): generating Envoy or Istio config needs their
/// real values.
pub fn upstream_references(v: &Value) -> Vec<String> {
    let mut out = BTreeSet::new();
    let deployments = v.get("model_list").and_then(Value::as_seq).unwrap_or(&[]);
    let params = deployments.iter().filter_map(|e| e.get("litellm_params").or_else(|| e.get("deltallm_params")));
    let credentials = v.get("credential_list").and_then(Value::as_seq).unwrap_or(&[]);
    let values = credentials.iter().filter_map(|c| c.get("credential_values"));
    for section in params.chain(values) {
        for key in ["api_base", "base_url", "cluster"] {
            if let Some(name) = section.get(key).and_then(Value::as_str).and_then(reference) {
                out.insert(name.to_string());
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_references_include_base_url_and_credentials() {
        let s = |x: &str| Value::Str(x.to_string());
        let v = Value::map([
            ("model_list", Value::seq([Value::map([("litellm_params", Value::map([("base_url", s("os.environ/B")), ("api_key", s("os.environ/K"))]))])])),
            ("credential_list", Value::seq([Value::map([("credential_values", Value::map([("api_base", s("os.environ/C")), ("api_key", s("os.environ/CK"))]))])])),
        ]);
        assert_eq!(upstream_references(&v), ["B", "C"]);
    }

    #[test]
    fn env_file_lines() {
        let dir = std::env::temp_dir().join(format!("llm-router-cli-env-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("test.env");
        let _ = std::fs::write(&path, "# c\nexport A=1\nB = \"two words\"\nC='x#y'\nD=plain # comment\n");
        let env = Env::fixed([]).with_file(&path).unwrap_or_default();
        assert_eq!(env.get("A").as_deref(), Some("1"));
        assert_eq!(env.get("B").as_deref(), Some("two words"));
        assert_eq!(env.get("C").as_deref(), Some("x#y"));
        assert_eq!(env.get("D").as_deref(), Some("plain"));
        let _ = std::fs::write(&path, "oops\n");
        assert!(Env::fixed([]).with_file(&path).is_err());
    }
}
