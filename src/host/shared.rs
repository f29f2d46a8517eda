//! Shared data as a [`Store`] (the per-VM cooldown view over it is `shell::CooldownCache`).

use crate::health::{SetError, Store, StoreError};
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
    // Absent means no CAS token (NotFound); an existing key read back empty has one and is
    // left alone, so a concurrent first write is never overwritten.
    if let Ok((None, None)) = hostcalls::get_shared_data(key) {
        let _ = hostcalls::set_shared_data(key, Some(b""), None);
    }
}
