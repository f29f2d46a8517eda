//! Shared data as a [`Store`], and the per-VM cached view of the cooldown record.

use crate::config::RouterConfig;
use crate::health::{keys, CooldownView, Cooldowns, SetError, Store, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

/// proxy-wasm shared data: one map per Envoy process and `vm_id`, shared by all workers.
pub struct SharedData;

impl Store for SharedData {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        hostcalls::get_shared_data(key).map_err(|_| StoreError)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SetError::CasMismatch),
            Err(_) => Err(SetError::Failed),
        }
    }
}

/// Creates `key` empty if absent, so later writers always hold a CAS token (creating a key
/// is the one shared-data write CAS cannot protect).
pub fn ensure_key(key: &str) {
    if let Ok((None, _)) = hostcalls::get_shared_data(key) {
        let _ = hostcalls::set_shared_data(key, Some(b""), None);
    }
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
    /// Re-reads the record (one host call) and rebuilds the view only when it changed.
    pub fn refresh(&mut self, cfg: &RouterConfig) -> &CooldownView {
        let identity = cfg.generation;
        match hostcalls::get_shared_data(keys::COOLDOWNS) {
            Ok((value, cas)) => {
                if cas != self.cas || identity != self.config || cas.is_none() {
                    let record = value.map(|v| Cooldowns::decode(&v)).unwrap_or_default();
                    self.view = CooldownView::new(&record, &cfg.table.ids, cfg.table.deployments.len());
                    self.cas = cas;
                    self.config = identity;
                }
            }
            Err(status) => {
                // Keep routing on the last known view rather than failing the request.
                log::warn!("llm-router: reading the cooldown record failed: {status:?}");
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
