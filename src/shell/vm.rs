//! State shared by every stream of one VM (one VM per Envoy worker thread): the cached cooldown
//! view, the PRNG, the state-signing key, the metrics sink and the spent failover nonces.
//! Host-agnostic: `host/root.rs` builds one per root context with the proxy-wasm metrics sink,
//! tests build one with `metrics::FakeSink`.

use crate::config::RouterConfig;
use crate::failover::SpentStates;
use crate::health::{keys, CooldownView, Cooldowns, Store};
use crate::metrics::{CoolingGauges, Sink};
use crate::routing::Rng;
use std::cell::{Cell, RefCell};

pub struct Vm<S> {
    pub cooldowns: RefCell<CooldownCache>,
    pub rng: RefCell<Rng>,
    /// Signs attempt state. Internal redirects replay on the same worker, so on the same VM:
    /// the key never needs to leave it.
    pub key: (u64, u64),
    pub metrics: RefCell<VmMetrics<S>>,
    /// Nonces of failover states already acted on (each is accepted once).
    pub spent: RefCell<SpentStates>,
    /// The shared queue the root context sends global-limit settlements from (registered at
    /// configure time when a rate limit service is configured).
    pub settle_queue: Cell<Option<u32>>,
}

impl<S: Sink> Vm<S> {
    pub fn new(rng: Rng, key: (u64, u64), sink: S) -> Vm<S> {
        Vm {
            cooldowns: RefCell::default(),
            rng: RefCell::new(rng),
            key,
            metrics: RefCell::new(VmMetrics { sink, cooling: CoolingGauges::default(), config: 0 }),
            spent: RefCell::default(),
            settle_queue: Cell::new(None),
        }
    }

    /// Runs `f` on this VM's metrics when the config has them on (`envoy_settings.metrics`).
    pub fn with_metrics(&self, cfg: &RouterConfig, f: impl FnOnce(&mut VmMetrics<S>)) {
        if !cfg.envoy.metrics {
            return;
        }
        if let Ok(mut m) = self.metrics.try_borrow_mut() {
            if m.config != cfg.generation {
                // A new config: the gauges are indexed anew, and the sink forgets what it cached
                // for names the new config may no longer use.
                m.cooling.reset();
                m.sink.new_config();
                m.config = cfg.generation;
            }
            f(&mut m);
        }
    }
}

/// Per-VM metric state: the sink and what the cooling gauges were last set to.
pub struct VmMetrics<S> {
    pub sink: S,
    pub cooling: CoolingGauges,
    /// Generation of the config `cooling` and the sink's cache are for.
    config: u64,
}

/// The cooldown record as last read by this VM, mapped onto one config's deployment indices.
#[derive(Default)]
pub struct CooldownCache {
    cas: Option<u32>,
    /// Generation of the config the view was built for (0: none yet).
    config: u64,
    view: CooldownView,
}

impl CooldownCache {
    /// Re-reads the record (one shared-data read) and rebuilds the view only when it changed.
    pub fn refresh<St: Store + ?Sized>(&mut self, store: &St, cfg: &RouterConfig) -> &CooldownView {
        let identity = cfg.generation;
        match store.get(keys::COOLDOWNS) {
            Ok((value, cas)) => {
                if cas != self.cas || identity != self.config || cas.is_none() {
                    let record = value.map(|v| Cooldowns::decode(&v)).unwrap_or_default();
                    self.view = CooldownView::new(&record, &cfg.table.ids, cfg.table.deployments.len());
                    self.cas = cas;
                    self.config = identity;
                }
            }
            Err(_) => {
                // Keep routing on the last known view rather than failing the request.
                log::warn!("llm-router: reading the cooldown record failed");
                if identity != self.config {
                    self.view = CooldownView::default();
                    self.config = identity;
                    self.cas = None;
                }
            }
        }
        &self.view
    }
}
