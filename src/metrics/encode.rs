//! Metric names with labels, encoded the way Envoy's tag extraction can take apart.
//!
//! proxy-wasm metrics have a name and no labels. Envoy (like Istio) turns parts of a stat name
//! into tags with `stats_config.stats_tags` regexes: the first capture is cut out of the name,
//! the second is the tag's value. We append one `_<label>=.=<value>;.;` segment per label, so
//! `llm_router_requests_total_model_group=.=gpt-4.1;.;_deployment=.=a;.;` becomes
//! `llm_router_requests_total{model_group="gpt-4.1",deployment="a"}` in `/stats/prometheus`
//! with one tag per label: `{tag_name: model_group, regex: "(_model_group=\.=(.+?);\.;)"}`
//! ([`tag_regex`]). The leading `_` is part of the cut, so no trailing `_` is left on the name
//! (measured on Envoy 1.40). Values may contain dots, `/`, `:` and spaces.
//!
//! Characters that would break that parse are replaced by `_` in values: `;` and `=` (the
//! separators), `"` and `\` (Prometheus quoting) and control characters. An empty value becomes
//! `_` (the regex needs one character). Deployment ids and group names are operator-chosen, so
//! replacing beats dropping the sample; two values that differ only in those characters share a
//! series.

use super::catalogue::Metric;

/// One time series: a metric and its label values, in [`Metric::labels`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricKey<'a> {
    pub metric: Metric,
    pub values: &'a [&'a str],
}

impl<'a> MetricKey<'a> {
    pub fn new(metric: Metric, values: &'a [&'a str]) -> MetricKey<'a> {
        MetricKey { metric, values }
    }
}

/// The key does not give exactly one value per label of its metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongLabels(pub Metric);

/// Writes the Envoy stat name of `key` into `out` (cleared first; reused to avoid allocating).
pub fn encode_into(out: &mut String, key: &MetricKey<'_>) -> Result<(), WrongLabels> {
    let labels = key.metric.labels();
    if labels.len() != key.values.len() {
        return Err(WrongLabels(key.metric));
    }
    out.clear();
    out.push_str(key.metric.name());
    for (label, value) in labels.iter().zip(key.values) {
        out.push('_');
        out.push_str(label);
        out.push_str("=.=");
        push_value(out, value);
        out.push_str(";.;");
    }
    Ok(())
}

pub fn encode(key: &MetricKey<'_>) -> Result<String, WrongLabels> {
    let mut s = String::new();
    encode_into(&mut s, key)?;
    Ok(s)
}

fn push_value(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push('_');
        return;
    }
    for c in value.chars() {
        out.push(if matches!(c, ';' | '=' | '"' | '\\') || c.is_control() { '_' } else { c });
    }
}

/// The `stats_tags` regex that extracts label `tag` (for Envoy bootstraps; JSON/YAML escaping
/// is the caller's).
pub fn tag_regex(tag: &str) -> String {
    format!("(_{tag}=\\.=(.+?);\\.;)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(metric: Metric, values: &[&str]) -> String {
        encode(&MetricKey::new(metric, values)).unwrap_or_else(|e| format!("{e:?}"))
    }

    #[test]
    fn appends_one_segment_per_label() {
        assert_eq!(
            enc(Metric::Requests, &["gpt-4.1", "azure/eu:1"]),
            "llm_router_requests_total_model_group=.=gpt-4.1;.;_deployment=.=azure/eu:1;.;"
        );
        assert_eq!(enc(Metric::Rejected, &["model_not_found"]), "llm_router_rejected_total_code=.=model_not_found;.;");
        assert_eq!(
            enc(Metric::Failures, &["g", "d", "rate_limit"]),
            "llm_router_failures_total_model_group=.=g;.;_deployment=.=d;.;_class=.=rate_limit;.;"
        );
    }

    #[test]
    fn separators_quotes_and_controls_are_replaced_and_empty_values_filled() {
        assert_eq!(enc(Metric::Rejected, &["a;.;b=.=c\"d\\e\nf"]), "llm_router_rejected_total_code=.=a_._b_._c_d_e_f;.;");
        assert_eq!(enc(Metric::Rejected, &[""]), "llm_router_rejected_total_code=.=_;.;");
    }

    #[test]
    fn wrong_label_count_is_an_error() {
        assert_eq!(encode(&MetricKey::new(Metric::Requests, &["only-group"])), Err(WrongLabels(Metric::Requests)));
    }

    #[test]
    fn tag_regex_matches_the_segment() {
        assert_eq!(tag_regex("model_group"), r"(_model_group=\.=(.+?);\.;)");
    }
}
