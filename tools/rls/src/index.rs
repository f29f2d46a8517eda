//! The limit index: why a descriptor's lookup does not grow with the number of limits.
//!
//! Limitador finds the limits of a call by evaluating the CEL conditions of **every** limit of
//! the call's namespace (`counters_that_apply`). The project's limits file has one limit per
//! key and kind (thousands in one domain), so the stock layout costs thousands of CEL
//! evaluations per descriptor.
//!
//! A limit whose conditions are all equality tests `descriptors[0]['<k>'] == '<v>'` (what
//! `llm-router rls --format limitador` writes) is therefore registered with Limitador under an
//! internal namespace built from its sorted `(k, v)` pairs: `<domain>␟k1=v1␟k2=v2` (␟ is
//! U+001F). A descriptor computes the same string from its own entries, once per distinct key
//! set ("shape") among the indexed limits, and Limitador then evaluates only the limits of the
//! namespaces that exist (one, in the project's layout). Limitador still evaluates those limits'
//! conditions, so an ambiguous string can never make a limit apply that should not.
//!
//! Any other limit stays under `<domain>` and is evaluated Limitador's generic way, but only for
//! a descriptor that no indexed limit matched (a documented difference from limitador-server,
//! which would apply both).

use limitador::limit::{Limit, Namespace, Predicate};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// The separator of an internal namespace: a control character no operator writes by chance.
pub const SEP: char = '\u{1f}';

/// `descriptors[0]['<k>'] == '<v>'` (single or double quotes, spaces around `==` optional) →
/// `(k, v)`. Anything else (escapes, other CEL) → `None`.
pub fn parse_equality(condition: &str) -> Option<(String, String)> {
    let rest = condition.trim().strip_prefix("descriptors[0][")?;
    let (key, rest) = quoted(rest)?;
    let rest = rest
        .strip_prefix(']')?
        .trim_start()
        .strip_prefix("==")?
        .trim_start();
    let (value, rest) = quoted(rest)?;
    rest.trim().is_empty().then_some((key, value))
}

/// A CEL string literal without escapes at the start of `s` → (its text, what follows).
fn quoted(s: &str) -> Option<(String, &str)> {
    let quote = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let body = &s[1..];
    let end = body.find(quote)?;
    let text = &body[..end];
    (!text.contains('\\') && !text.contains('\n')).then(|| (text.to_owned(), &body[end + 1..]))
}

/// The internal namespace of a domain and a set of entries (a `BTreeMap`, so sorted by key).
pub fn indexed_namespace<'a>(
    domain: &str,
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut ns = String::from(domain);
    for (k, v) in pairs {
        ns.push(SEP);
        ns.push_str(k);
        ns.push('=');
        ns.push_str(v);
    }
    ns
}

/// Which namespaces exist, and the key sets that lead to them.
#[derive(Debug, Default)]
pub struct Index {
    /// Every internal namespace that holds at least one limit.
    indexed: HashSet<String>,
    /// Per domain, the distinct sorted key sets of its indexed limits.
    shapes: HashMap<String, Vec<Vec<String>>>,
    /// Domains with limits left to the generic evaluation.
    generic: HashSet<String>,
}

impl Index {
    /// Rewrites the limits of a limits file: indexable ones move to their internal namespace.
    /// Returns the index and the limits to hand to Limitador's `configure_with`.
    pub fn build(limits: Vec<Limit>) -> Result<(Index, Vec<Limit>), String> {
        let mut index = Index::default();
        let mut shapes: HashMap<String, BTreeSet<Vec<String>>> = HashMap::new();
        let mut out = Vec::with_capacity(limits.len());
        for limit in limits {
            let domain = limit.namespace().as_ref().to_owned();
            let conditions = limit.conditions();
            let pairs: Option<BTreeMap<String, String>> = if conditions.is_empty() {
                None
            } else {
                conditions.iter().map(|c| parse_equality(c)).collect()
            };
            // Two tests on one key (`k == a`, `k == b`) can never both hold: leave it generic.
            let pairs = pairs.filter(|p| p.len() == conditions.len());
            match pairs {
                Some(pairs) => {
                    let ns = indexed_namespace(
                        &domain,
                        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    );
                    shapes
                        .entry(domain)
                        .or_default()
                        .insert(pairs.keys().cloned().collect());
                    out.push(rehome(&limit, ns.clone())?);
                    index.indexed.insert(ns);
                }
                None => {
                    index.generic.insert(domain);
                    out.push(limit);
                }
            }
        }
        index.shapes = shapes
            .into_iter()
            .map(|(d, s)| (d, s.into_iter().collect()))
            .collect();
        Ok((index, out))
    }

    /// The namespaces to evaluate for one descriptor of `domain`: every indexed namespace its
    /// entries lead to (one per shape at most), else `domain` when it has generic limits.
    pub fn namespaces_for(
        &self,
        domain: &str,
        entries: &BTreeMap<String, String>,
    ) -> Vec<Namespace> {
        let mut found = Vec::new();
        for shape in self.shapes.get(domain).into_iter().flatten() {
            let pairs: Option<Vec<(&str, &str)>> = shape
                .iter()
                .map(|k| entries.get(k).map(|v| (k.as_str(), v.as_str())))
                .collect();
            if let Some(pairs) = pairs {
                let ns = indexed_namespace(domain, pairs);
                if self.indexed.contains(&ns) {
                    found.push(Namespace::from(ns));
                }
            }
        }
        if found.is_empty() && self.generic.contains(domain) {
            found.push(Namespace::from(domain));
        }
        found
    }

    /// How many distinct key sets `domain` has (the per-descriptor string builds).
    pub fn shape_count(&self, domain: &str) -> usize {
        self.shapes.get(domain).map_or(0, Vec::len)
    }
}

/// The same limit under another namespace (Limitador has no setter for it).
fn rehome(limit: &Limit, ns: String) -> Result<Limit, String> {
    let parse = |s: String| Predicate::parse(s).map_err(|e| e.to_string());
    let conditions: Vec<Predicate> = limit
        .conditions()
        .into_iter()
        .map(parse)
        .collect::<Result<_, _>>()?;
    let variables = limit
        .variables()
        .into_iter()
        .map(|s| {
            s.as_str()
                .try_into()
                .map_err(|e: limitador::limit::ParseError| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Limit::new(
        ns,
        limit.max_value(),
        limit.seconds(),
        conditions,
        variables,
    );
    if let Some(name) = limit.name() {
        out.set_name(name.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_cli_conditions_only() {
        assert_eq!(
            parse_equality("descriptors[0]['limit'] == 'rpm'"),
            Some(("limit".into(), "rpm".into()))
        );
        assert_eq!(
            parse_equality(r#" descriptors[0]["api_key"]=="ab:c" "#),
            Some(("api_key".into(), "ab:c".into()))
        );
        assert_eq!(parse_equality("descriptors[0]['limit'] != 'rpm'"), None);
        assert_eq!(parse_equality("descriptors[1]['limit'] == 'rpm'"), None);
        assert_eq!(parse_equality(r"descriptors[0]['l'] == 'a\'b'"), None);
        assert_eq!(parse_equality("descriptors[0]['l'] == 'a' && true"), None);
    }

    fn limit(conditions: &[&str]) -> Limit {
        let preds: Vec<Predicate> = conditions
            .iter()
            .map(|c| Predicate::parse(*c).unwrap())
            .collect();
        Limit::new(
            "d",
            5,
            60,
            preds,
            Vec::<limitador::limit::Expression>::new(),
        )
    }

    #[test]
    fn indexes_equalities_and_keeps_the_rest_generic() {
        let (index, limits) = Index::build(vec![
            limit(&[
                "descriptors[0]['limit'] == 'rpm'",
                "descriptors[0]['api_key'] == 'k'",
            ]),
            limit(&["descriptors[0]['limit'] == 'tpm'"]),
            limit(&["descriptors[0]['api_key'].startsWith('x')"]),
        ])
        .unwrap();
        let names: Vec<&str> = limits.iter().map(|l| l.namespace().as_ref()).collect();
        assert_eq!(
            names,
            ["d\u{1f}api_key=k\u{1f}limit=rpm", "d\u{1f}limit=tpm", "d"]
        );
        let entries = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let rpm = entries(&[("limit", "rpm"), ("api_key", "k")]);
        assert_eq!(
            index.namespaces_for("d", &rpm),
            [Namespace::from("d\u{1f}api_key=k\u{1f}limit=rpm")]
        );
        let tpm = entries(&[("limit", "tpm"), ("api_key", "k")]);
        assert_eq!(
            index.namespaces_for("d", &tpm),
            [Namespace::from("d\u{1f}limit=tpm")]
        );
        let other = entries(&[("limit", "budget"), ("api_key", "k")]);
        assert_eq!(index.namespaces_for("d", &other), [Namespace::from("d")]);
        assert!(index.namespaces_for("elsewhere", &other).is_empty());
    }
}
