//! The root context: loads the plugin configuration and creates one [`Http`] context per stream.

use super::http::Http;
use super::metrics::HostSink;
use super::shared::ensure_key;
use super::upstream::Upstream;
use crate::config::{self, RouterConfig};
use crate::health::keys;
use crate::routing::Rng;
use crate::shell::Vm;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use std::cell::Cell;
use std::rc::Rc;

thread_local! {
    /// The key signing attempt state: one per VM (this thread's wasm instance), shared by the
    /// router's root contexts (so a failover pass verifies across a config reload) and an
    /// upstream role in the same VM.
    static VM_KEY: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
    /// A router root context has been configured in this VM: an upstream role here holds the
    /// router's key and verifies the state it acts on.
    static ROUTER_IN_VM: Cell<bool> = const { Cell::new(false) };
    static GENERATION: Cell<u64> = const { Cell::new(0) };
}

/// This VM's state-signing key, created on first use.
pub fn vm_key() -> (u64, u64) {
    VM_KEY.with(|k| {
        if let Some(key) = k.get() {
            return key;
        }
        let mut rng = Rng::from_entropy().unwrap_or_else(|e| {
            log::warn!("llm-router: no entropy from the host ({e}); seeding the state key from the clock");
            Rng::from_seed(super::now_ms() ^ 0x9e37_79b9_7f4a_7c15)
        });
        let key = (rng.next_u64(), rng.next_u64());
        k.set(Some(key));
        key
    })
}

/// Whether this VM also runs the router (see [`ROUTER_IN_VM`]).
pub fn router_in_vm() -> bool {
    ROUTER_IN_VM.with(Cell::get)
}

fn next_generation() -> u64 {
    GENERATION.with(|g| {
        let n = g.get().wrapping_add(1);
        g.set(n);
        n
    })
}

/// State shared by every stream of this VM (one VM per Envoy worker thread; `shell::Vm`),
/// with proxy-wasm's metrics sink. Its key is [`vm_key`].
pub type HostVm = Vm<HostSink>;

/// The `root_id` that makes this root the upstream-filter role (see `upstream.rs`).
pub const UPSTREAM_ROOT_ID: &str = "llm_router_upstream";

pub struct Root {
    config: Option<Rc<RouterConfig>>,
    vm: Rc<HostVm>,
    upstream: bool,
    probes: Option<super::probe::Probes>,
    settlements: super::settle::Settlements,
}

impl Default for Root {
    fn default() -> Self {
        let rng = Rng::from_entropy().unwrap_or_else(|e| {
            log::warn!("llm-router: no entropy from the host ({e}); seeding from the clock");
            Rng::from_seed(super::now_ms())
        });
        Root {
            config: None,
            vm: Rc::new(Vm::new(rng, vm_key(), HostSink::default())),
            upstream: false,
            probes: None,
            settlements: super::settle::Settlements::default(),
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
        super::probe::on_response(&mut self.probes, token_id, num_headers, body_size);
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, _response_size: usize) {
        super::settle::on_response(&mut self.settlements, self.config.as_deref(), &self.vm, token_id, status_code);
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        // Follow Envoy's log level so disabled lines are never formatted.
        if let Ok(level) = hostcalls::get_log_level() {
            proxy_wasm::set_log_level(level);
        }
        true
    }

    fn on_configure(&mut self, size: usize) -> bool {
        let root_id = hostcalls::get_property(vec!["plugin_root_id"]).ok().flatten().and_then(|b| String::from_utf8(b).ok());
        if root_id.as_deref() == Some(UPSTREAM_ROOT_ID) {
            // The upstream role needs no configuration: everything travels in the state header.
            self.upstream = true;
            super::probe::note_upstream_role();
            return true;
        }
        let raw = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => Vec::new(),
            Err(status) => {
                log::error!("llm-router: cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        let raw = if raw.iter().all(u8::is_ascii_whitespace) { b"{}".to_vec() } else { raw };
        let loaded = config::load(&raw, &|name| std::env::var(name).ok());
        for w in &loaded.diagnostics.warnings {
            log::warn!("llm-router config: {w}");
        }
        for e in &loaded.diagnostics.errors {
            log::error!("llm-router config error: {e}");
        }
        let Some(mut cfg) = loaded.config else {
            log::error!(
                "llm-router: configuration refused ({} problem(s) above)",
                loaded.diagnostics.errors.len()
            );
            return false;
        };
        cfg.generation = next_generation();
        ROUTER_IN_VM.with(|r| r.set(true));
        forget_removed_state(&cfg);
        ensure_key(keys::COOLDOWNS);
        for d in &cfg.table.deployments {
            ensure_key(&keys::fails(&d.id));
            if crate::stats::Track::for_deployment(&cfg.router, d).any() {
                ensure_key(&crate::stats::keys::stats(&d.id));
            }
        }
        // Limit records, keyed by key hash / team id / user id: a reload keeps those of unchanged
        // keys and empties those of removed ones (`pipeline::reload`).
        for k in cfg.limits.record_keys() {
            ensure_key(&k);
        }
        log::info!(
            "llm-router: configured {} deployment(s) in {} model group(s)",
            cfg.table.deployments.len(),
            cfg.table.groups.len()
        );
        if cfg.envoy.metrics && hostcalls::set_tick_period(std::time::Duration::from_secs(1)).is_err() {
            log::warn!("llm-router: no tick: the cooling gauges will only change when this VM records a failure");
        }
        let suffix = self.vm.rng.try_borrow_mut().map(|mut r| r.next_u64()).unwrap_or_else(|_| super::now_ms());
        super::settle::configure(&cfg, &self.vm, suffix);
        let cfg = Rc::new(cfg);
        self.probes = super::probe::configure(&cfg, &self.vm, &raw);
        self.config = Some(cfg);
        true
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        super::settle::on_queue_ready(&mut self.settlements, self.config.as_deref(), &self.vm, queue_id);
    }

    fn on_tick(&mut self) {
        if let Some(cfg) = &self.config {
            super::metrics::on_tick(&self.vm, cfg);
        }
        super::probe::on_tick(&mut self.probes);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        if self.upstream {
            return Some(Box::new(Upstream::default()));
        }
        Some(Box::new(Http::new(self.config.clone(), self.vm.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// A reload keeps the state of unchanged deployment ids and key hashes; drop that of the ones
/// that went away.
fn forget_removed_state(cfg: &RouterConfig) {
    let plugin = hostcalls::get_property(vec!["plugin_name"]).ok().flatten().and_then(|b| String::from_utf8(b).ok()).unwrap_or_default();
    match crate::pipeline::reload::forget_removed(&super::shared::SharedData, &plugin, cfg, super::now_ms()) {
        Ok(gone) if gone.is_empty() => {}
        Ok(gone) => log::info!("llm-router: dropped the shared state of {} removed deployment(s): {}", gone.len(), gone.join(", ")),
        Err(_) => log::warn!("llm-router: could not drop the shared state of removed deployments"),
    }
    match crate::pipeline::reload::forget_removed_limits(&super::shared::SharedData, &plugin, cfg) {
        Ok(0) => {}
        // Never the records' names: they hold key hashes.
        Ok(n) => log::info!("llm-router: emptied {n} limit record(s) of removed keys, teams, users or limits"),
        Err(_) => log::warn!("llm-router: could not empty the limit records of removed keys"),
    }
}
