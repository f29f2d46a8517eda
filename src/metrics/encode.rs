//! Metric names with labels, encoded the way Envoy's tag extraction can take apart.
//!
//! proxy-wasm metrics have a name and no labels. Envoy turns parts of a stat name into tags with
//! `stats_config.stats_tags` regexes: the first capture is cut out of the name, the second is the
//! tag's value. We use Istio's convention exactly: one `<label>=.=<value>;.;` segment per label,
//! *before* the metric name, so
//! `model_group=.=gpt-4.1;.;deployment=.=a;.;llm_router_requests_total` becomes
//! `llm_router_requests_total{model_group="gpt-4.1",deployment="a"}` in `/stats/prometheus`
//! with one tag per label, `{tag_name: model_group, regex: "(model_group=\.=(.*?);\.;)"}`
//! ([`tag_regex`]) — the very regex Istio generates for `extraStatTags`, so a mesh needs no
//! custom bootstrap. Measured on Envoy 1.40: Envoy stores the stat as `wasmcustom.<name>` and the
//! Prometheus output drops that namespace; with the segments *after* the name, Istio's regex
//! would leave `_`/`__` at the end of the name. Values may contain dots, `/`, `:` and spaces.
//!
//! Characters that would break that parse are replaced by `_` in values: `;` and `=` (the
//! separators), `"` and `\` (Prometheus quoting) and control characters. An empty value becomes
//! `_` (an empty Prometheus label reads as no label). Deployment ids and group names are
//! operator-chosen, so replacing beats dropping the sample; two values that differ only in those
//! characters share a series.

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
    for (label, value) in labels.iter().zip(key.values) {
        out.push_str(label);
        out.push_str("=.=");
        push_value(out, value);
        out.push_str(";.;");
    }
    out.push_str(key.metric.name());
    Ok(())
}

#[cfg(test)]
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
    format!("({tag}=\\.=(.*?);\\.;)")
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
            "model_group=.=gpt-4.1;.;deployment=.=azure/eu:1;.;llm_router_requests_total"
        );
        assert_eq!(enc(Metric::Rejected, &["model_not_found"]), "error_code=.=model_not_found;.;llm_router_rejected_total");
        assert_eq!(
            enc(Metric::Failures, &["g", "d", "rate_limit"]),
            "model_group=.=g;.;deployment=.=d;.;class=.=rate_limit;.;llm_router_failures_total"
        );
    }

    #[test]
    fn separators_quotes_and_controls_are_replaced_and_empty_values_filled() {
        assert_eq!(enc(Metric::Rejected, &["a;.;b=.=c\"d\\e\nf"]), "error_code=.=a_._b_._c_d_e_f;.;llm_router_rejected_total");
        assert_eq!(enc(Metric::Rejected, &[""]), "error_code=.=_;.;llm_router_rejected_total");
    }

    #[test]
    fn wrong_label_count_is_an_error() {
        assert_eq!(encode(&MetricKey::new(Metric::Requests, &["only-group"])), Err(WrongLabels(Metric::Requests)));
    }

    #[test]
    fn tag_regex_matches_the_segment() {
        assert_eq!(tag_regex("model_group"), r"(model_group=\.=(.*?);\.;)");
    }
}
