//! Limitador's limits file: a YAML list of `{namespace, name?, max_value, seconds, conditions,
//! variables}`, parsed with limitador's own `Limit` deserializer (what limitador-server does),
//! so a file that limitador-server accepts means the same here.
//!
//! Refused here, so that a bad file keeps the previous limits rather than failing at request
//! time: `seconds: 0` (Redis cannot expire a key after 0 s) and `id` (limitador keys the
//! counters of an id'd limit in a binary format that `decrement::counter_key` does not build).

use limitador::limit::Limit;
use std::path::Path;
use std::time::SystemTime;

/// Reads and validates the file.
pub fn load(path: &Path) -> Result<Vec<Limit>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a limits file's text. An empty file is no limits.
pub fn parse(text: &str) -> Result<Vec<Limit>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let limits: Option<Vec<Limit>> = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let limits = limits.unwrap_or_default();
    for (i, limit) in limits.iter().enumerate() {
        let which = || format!("limit {i} ({})", limit.name().unwrap_or("unnamed"));
        if limit.seconds() == 0 {
            return Err(format!("{}: seconds must be at least 1", which()));
        }
        if limit.id().is_some() {
            return Err(format!(
                "{}: `id` is not supported by llm-router-rls",
                which()
            ));
        }
        if limit.namespace().as_ref().is_empty() {
            return Err(format!("{}: empty namespace", which()));
        }
    }
    Ok(limits)
}

/// The file's modification time, the reload trigger (`None`: unreadable now).
pub fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_the_cli_shape() {
        let limits = parse(
            "- namespace: llm_router\n  name: rpm.api_key.h\n  max_value: 60\n  seconds: 60\n  conditions: [\"descriptors[0]['limit'] == 'rpm'\", \"descriptors[0]['api_key'] == 'h'\"]\n  variables: []\n",
        )
        .unwrap();
        assert_eq!(limits.len(), 1);
        assert_eq!(limits[0].max_value(), 60);
        assert_eq!(limits[0].name(), Some("rpm.api_key.h"));
        assert_eq!(limits[0].conditions().len(), 2);
    }

    #[test]
    fn refuses_bad_files() {
        assert!(parse(
            "- namespace: a\n  max_value: 1\n  seconds: 0\n  conditions: []\n  variables: []\n"
        )
        .is_err());
        assert!(parse("- namespace: a\n  max_value: 1\n  seconds: 1\n  conditions: ['(((']\n  variables: []\n").is_err());
        assert!(parse("- namespace: a\n  id: x\n  max_value: 1\n  seconds: 1\n  conditions: []\n  variables: []\n").is_err());
        assert!(parse("not: a list").is_err());
        assert!(parse("").unwrap().is_empty());
    }
}
