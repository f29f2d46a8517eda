//! Where metric updates go: the shell implements [`Sink`] over proxy-wasm's metric host calls;
//! tests use [`FakeSink`]. Updates are fire-and-forget: a metric that cannot be recorded never
//! changes what happens to a request.

use super::encode::MetricKey;
#[cfg(test)]
use super::encode::encode;
#[cfg(test)]
use std::collections::HashMap;

pub trait Sink {
    fn counter(&mut self, key: &MetricKey<'_>, by: u64);
    fn gauge_add(&mut self, key: &MetricKey<'_>, delta: i64);
    fn gauge_set(&mut self, key: &MetricKey<'_>, value: u64);
    fn histogram(&mut self, key: &MetricKey<'_>, value: u64);
    /// A new configuration is in use: drop whatever was cached for the previous one's names
    /// (the host sink's metric ids), so the cache holds only the current config's names.
    fn new_config(&mut self) {}
}

/// Records every update by encoded stat name (so tests check the encoding too).
#[cfg(test)]
#[derive(Debug, Default)]
pub struct FakeSink {
    pub values: HashMap<String, i64>,
    pub histograms: HashMap<String, Vec<u64>>,
    /// Every gauge_set / gauge_add call, in order (name, value after).
    pub gauge_writes: Vec<(String, i64)>,
}

#[cfg(test)]
impl FakeSink {
    fn name(key: &MetricKey<'_>) -> String {
        encode(key).unwrap_or_else(|e| format!("invalid {e:?}"))
    }

    pub fn value(&self, metric: super::catalogue::Metric, values: &[&str]) -> i64 {
        self.values.get(&Self::name(&MetricKey::new(metric, values))).copied().unwrap_or(0)
    }

    pub fn samples(&self, metric: super::catalogue::Metric, values: &[&str]) -> Vec<u64> {
        self.histograms.get(&Self::name(&MetricKey::new(metric, values))).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
impl Sink for FakeSink {
    fn counter(&mut self, key: &MetricKey<'_>, by: u64) {
        *self.values.entry(Self::name(key)).or_default() += by as i64;
    }
    fn gauge_add(&mut self, key: &MetricKey<'_>, delta: i64) {
        let v = self.values.entry(Self::name(key)).or_default();
        *v += delta;
        let v = *v;
        self.gauge_writes.push((Self::name(key), v));
    }
    fn gauge_set(&mut self, key: &MetricKey<'_>, value: u64) {
        self.values.insert(Self::name(key), value as i64);
        self.gauge_writes.push((Self::name(key), value as i64));
    }
    fn histogram(&mut self, key: &MetricKey<'_>, value: u64) {
        self.histograms.entry(Self::name(key)).or_default().push(value);
    }
}

