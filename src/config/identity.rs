//! A key entry's identity bindings, the router's own fields (LiteLLM has none of these):
//!
//! - `mesh_principals`: the mTLS peer identities (the client certificate's URI SAN, Istio's
//!   `spiffe://cluster.local/ns/<ns>/sa/<sa>`) whose requests get this key's policy;
//! - `jwt_subjects`: `{iss, sub}` pairs of JWTs that Envoy's `jwt_authn` verified.
//!
//! A key may have a `token`/`key` and bindings, or only bindings. Values are matched exactly:
//! a `*` is refused (no wildcards: a pattern would let a new workload inherit a policy nobody
//! gave it), as are empty values, whitespace, control characters and values over 2048 bytes.
//! That a value is bound to one key only is checked when the policy is built
//! (`access::Policy::build`), with this entry's field path.

use super::fields::{kind, Section};
use super::problems::Diagnostics;
use crate::access::{key_hash, KeyHash, MAX_IDENTITY_BYTES};
use serde_json::Value;

/// The identity bindings of one key entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyIdentity {
    /// `keys[i]` in the config (for the field paths of later checks).
    pub entry: usize,
    /// `mesh_principals`, with their positions in the list.
    pub principals: Vec<(usize, String)>,
    /// `jwt_subjects` as (position, iss, sub).
    pub jwt: Vec<(usize, String, String)>,
    /// The entry has no `token` / `key`: identified only by its bindings.
    pub tokenless: bool,
}

impl KeyIdentity {
    pub fn is_empty(&self) -> bool {
        self.principals.is_empty() && self.jwt.is_empty()
    }

    /// The stand-in digest of a key without a token: it names the key's rate-limit counters
    /// (stable while its first binding is), and is never looked up as a presented key.
    pub fn synthetic_hash(&self) -> Option<KeyHash> {
        let first = match (self.principals.first(), self.jwt.first()) {
            (Some((_, p)), _) => format!("llm-router identity\nmesh\n{p}"),
            (None, Some((_, iss, sub))) => format!("llm-router identity\njwt\n{iss}\n{sub}"),
            (None, None) => return None,
        };
        Some(key_hash(&first))
    }
}

/// Reads `mesh_principals` and `jwt_subjects` of the key entry `s` (`keys[entry]`).
pub fn parse(s: &Section<'_>, entry: usize, diags: &mut Diagnostics) -> KeyIdentity {
    let mut out = KeyIdentity { entry, ..KeyIdentity::default() };
    let principals_path = s.field_path("mesh_principals");
    let principals: &[Value] = match s.get("mesh_principals") {
        None => &[],
        Some(one @ Value::String(_)) => std::slice::from_ref(one),
        Some(Value::Array(items)) => items,
        Some(other) => {
            diags.error(&principals_path, format!("must be a list of strings, got {}", kind(other)));
            &[]
        }
    };
    for (j, item) in principals.iter().enumerate() {
        let path = format!("{principals_path}[{j}]");
        let Value::String(p) = item else {
            diags.error(path, format!("must be a string, got {}", kind(item)));
            continue;
        };
        if !valid(p, &path, "a principal such as spiffe://cluster.local/ns/research/sa/app", diags) {
            continue;
        }
        if out.principals.iter().any(|(_, q)| q == p) {
            diags.error(path, "is listed twice");
            continue;
        }
        out.principals.push((j, p.clone()));
    }
    let subjects_path = s.field_path("jwt_subjects");
    let items: &[Value] = match s.get("jwt_subjects") {
        None => &[],
        Some(Value::Array(items)) => items,
        Some(other) => {
            diags.error(&subjects_path, format!("must be a list of {{iss, sub}} mappings, got {}", kind(other)));
            &[]
        }
    };
    for (j, item) in items.iter().enumerate() {
        let path = format!("{subjects_path}[{j}]");
        let Value::Object(map) = item else {
            diags.error(&path, format!("must be a mapping with iss and sub, got {}", kind(item)));
            continue;
        };
        let subject = Section::new(Some(item), &path, diags);
        for other in map.keys().filter(|k| *k != "iss" && *k != "sub") {
            diags.error(subject.field_path(other), "is not matched: a JWT subject is its iss and sub (audiences and expiry are jwt_authn's checks)");
        }
        let read = |claim: &str, diags: &mut Diagnostics| -> Option<String> {
            let Some(v) = subject.str(claim, diags) else {
                if subject.get(claim).is_none() {
                    diags.error(subject.field_path(claim), "is required");
                }
                return None;
            };
            valid(v, &subject.field_path(claim), "the exact claim value", diags).then(|| v.to_string())
        };
        let (iss, sub) = (read("iss", diags), read("sub", diags));
        let (Some(iss), Some(sub)) = (iss, sub) else { continue };
        if out.jwt.iter().any(|(_, i, s)| *i == iss && *s == sub) {
            diags.error(path, "is listed twice");
            continue;
        }
        out.jwt.push((j, iss, sub));
    }
    out
}

/// An exact identity value: non-empty, at most 2048 bytes, no `*`, whitespace or control characters.
fn valid(v: &str, path: &str, what: &str, diags: &mut Diagnostics) -> bool {
    let problem = if v.is_empty() {
        Some("is empty".to_string())
    } else if v.len() > MAX_IDENTITY_BYTES {
        Some(format!("is longer than {MAX_IDENTITY_BYTES} bytes"))
    } else if v.contains('*') {
        Some(format!("must be exact ({what}): wildcards are not supported"))
    } else if v.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some("must not contain spaces or control characters".to_string())
    } else {
        None
    };
    match problem {
        Some(p) => {
            diags.error(path, p);
            false
        }
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(entry: Value) -> (KeyIdentity, Vec<String>) {
        let mut d = Diagnostics::default();
        let s = Section::new(Some(&entry), "keys[3]", &mut d);
        let id = parse(&s, 3, &mut d);
        (id, d.errors.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn reads_principals_and_subjects() {
        let (id, errors) = run(json!({
            "mesh_principals": ["spiffe://cluster.local/ns/research/sa/app", "spiffe://cluster.local/ns/research/sa/batch"],
            "jwt_subjects": [{"iss": "https://idp.example.com", "sub": "research-app"}],
        }));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(id.entry, 3);
        assert_eq!(id.principals, [(0, "spiffe://cluster.local/ns/research/sa/app".into()), (1, "spiffe://cluster.local/ns/research/sa/batch".into())]);
        assert_eq!(id.jwt, [(0, "https://idp.example.com".into(), "research-app".into())]);
        assert!(!id.is_empty());
        let (one, errors) = run(json!({"mesh_principals": "spiffe://td/ns/a/sa/b"}));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(one.principals.len(), 1, "a single string is a one-element list");
        let (none, _) = run(json!({}));
        assert!(none.is_empty() && none.synthetic_hash().is_none());
    }

    #[test]
    fn synthetic_hashes_are_stable_and_differ_per_binding() {
        let (a, _) = run(json!({"mesh_principals": ["spiffe://td/ns/a/sa/x"]}));
        let (a2, _) = run(json!({"mesh_principals": ["spiffe://td/ns/a/sa/x", "spiffe://td/ns/a/sa/y"]}));
        let (j, _) = run(json!({"jwt_subjects": [{"iss": "i", "sub": "s"}]}));
        assert_eq!(a.synthetic_hash(), a2.synthetic_hash(), "named by the first binding");
        assert_ne!(a.synthetic_hash(), j.synthetic_hash());
        assert_ne!(a.synthetic_hash(), Some(key_hash("spiffe://td/ns/a/sa/x")), "not the hash of a presentable key");
    }

    #[test]
    fn bad_values_refuse_with_field_paths() {
        let long = format!("spiffe://td/{}", "a".repeat(MAX_IDENTITY_BYTES));
        let (_, errors) = run(json!({
            "mesh_principals": ["spiffe://td/ns/a/sa/*", "", "spiffe://td/ns/a/sa/x", "spiffe://td/ns/a/sa/x", 7, long, "spiffe://td/ns a"],
            "jwt_subjects": [{"iss": "i"}, {"iss": "i", "sub": "s", "aud": "x"}, {"iss": "i", "sub": "s"}, "i/s", {"iss": 1, "sub": "s*"}],
        }));
        let want = [
            "keys[3].mesh_principals[0]: must be exact",
            "keys[3].mesh_principals[1]: is empty",
            "keys[3].mesh_principals[3]: is listed twice",
            "keys[3].mesh_principals[4]: must be a string, got a number",
            "keys[3].mesh_principals[5]: is longer than 2048 bytes",
            "keys[3].mesh_principals[6]: must not contain spaces",
            "keys[3].jwt_subjects[0].sub: is required",
            "keys[3].jwt_subjects[1].aud: is not matched",
            "keys[3].jwt_subjects[2]: is listed twice",
            "keys[3].jwt_subjects[3]: must be a mapping with iss and sub, got a string",
            "keys[3].jwt_subjects[4].iss: must be a string, got a number",
            "keys[3].jwt_subjects[4].sub: must be exact",
        ];
        assert_eq!(errors.len(), want.len(), "{errors:#?}");
        for (e, w) in errors.iter().zip(want) {
            assert!(e.starts_with(w), "{e} / {w}");
        }
        let (_, errors) = run(json!({"jwt_subjects": {"iss": "i", "sub": "s"}, "mesh_principals": {"a": 1}}));
        assert!(errors.iter().any(|e| e.starts_with("keys[3].jwt_subjects: must be a list")), "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("keys[3].mesh_principals: must be a list")), "{errors:?}");
    }
}
