//! The metrics shell: [`HostSink`] implements [`Sink`] over proxy-wasm's metric host calls, and
//! [`on_tick`] refreshes the cooling gauges once a second.
//!
//! `define_metric` is a host call that allocates a stat in Envoy: each encoded name is defined
//! once per VM and its id cached (Envoy returns the same stat for the same name in every VM, so
//! the values sum across workers). After warm-up an update costs one name encoding into a reused
//! buffer, one hash lookup and one `increment_metric` / `record_metric` call. A failing host call
//! is logged (warn once per VM, then debug) and the update dropped: metrics never fail a request.

use super::root::HostVm;
use super::shared::SharedData;
use crate::config::RouterConfig;
use crate::metrics::{encode_into, Kind, MetricKey, Sink};
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::collections::HashMap;

#[derive(Default)]
pub struct HostSink {
    ids: HashMap<String, u32>,
    name: String,
    warned: bool,
}

impl HostSink {
    fn id(&mut self, key: &MetricKey<'_>) -> Option<u32> {
        if encode_into(&mut self.name, key).is_err() {
            self.failed("encoding", key);
            return None;
        }
        if let Some(id) = self.ids.get(self.name.as_str()) {
            return Some(*id);
        }
        let kind = match key.metric.kind() {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        };
        match hostcalls::define_metric(kind, &self.name) {
            Ok(id) => {
                self.ids.insert(self.name.clone(), id);
                Some(id)
            }
            Err(_) => {
                self.failed("define_metric", key);
                None
            }
        }
    }

    fn failed(&mut self, what: &str, key: &MetricKey<'_>) {
        if self.warned {
            log::debug!("llm-router: metric {} not recorded ({what} failed)", key.metric.name());
        } else {
            self.warned = true;
            log::warn!("llm-router: metric {} not recorded ({what} failed); further failures are logged at debug", key.metric.name());
        }
    }

    fn increment(&mut self, key: &MetricKey<'_>, delta: i64) {
        if let Some(id) = self.id(key) {
            // Envoy refuses an increment by 0 (e.g. no output tokens for an embedding): the stat
            // exists once defined; there is nothing to add.
            if delta != 0 && hostcalls::increment_metric(id, delta).is_err() {
                self.failed("increment_metric", key);
            }
        }
    }

    fn record(&mut self, key: &MetricKey<'_>, value: u64) {
        if let Some(id) = self.id(key) {
            if hostcalls::record_metric(id, value).is_err() {
                self.failed("record_metric", key);
            }
        }
    }
}

impl Sink for HostSink {
    fn counter(&mut self, key: &MetricKey<'_>, by: u64) {
        self.increment(key, i64::try_from(by).unwrap_or(i64::MAX));
    }
    fn gauge_add(&mut self, key: &MetricKey<'_>, delta: i64) {
        self.increment(key, delta);
    }
    fn gauge_set(&mut self, key: &MetricKey<'_>, value: u64) {
        self.record(key, value);
    }
    fn histogram(&mut self, key: &MetricKey<'_>, value: u64) {
        self.record(key, value);
    }
    fn new_config(&mut self) {
        // The ids of names the new config no longer uses are dropped (the map holds only the
        // current config's names).
        self.ids.clear();
    }
}

/// The root context's tick (every second): set each deployment's cooling gauge from the shared
/// cooldown record. One shared-data read (the record's view is re-parsed only when it changed),
/// one clock read, and a gauge write only where this VM's last written value differs.
pub fn on_tick(vm: &HostVm, cfg: &RouterConfig) {
    vm.with_metrics(cfg, |m| {
        let Ok(mut cache) = vm.cooldowns.try_borrow_mut() else { return };
        let view = cache.refresh(&SharedData, cfg);
        let now = super::now_ms();
        let deployments =
            cfg.table.deployments.iter().enumerate().map(|(i, d)| (d.group.as_str(), d.id.as_str(), view.remaining_ms(i, now).is_some()));
        m.cooling.refresh(&mut m.sink, deployments);
    });
}
