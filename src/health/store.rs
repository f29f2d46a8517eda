//! The shared key-value store the health state lives in (proxy-wasm shared data in Envoy, an
//! in-memory map in tests), and the compare-and-swap update loop every write goes through.

#[cfg(test)]
use std::cell::RefCell;
#[cfg(test)]
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    /// Someone else wrote the key since our read; read again and retry.
    CasMismatch,
    Failed,
}

/// Shared data semantics: `get` returns the value and its CAS token; `set` with `Some(cas)`
/// succeeds only if the key was not written since that token was read.
pub trait Store {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError>;
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;
}

/// Bounded CAS retries: contention comes from a handful of workers, never unbounded.
const MAX_ATTEMPTS: usize = 32;

/// Read-modify-write with CAS. `f` gets the current value (None when absent) and returns the
/// new value, or None to leave the key alone. Returns what was written.
pub fn update<S: Store + ?Sized>(
    store: &S,
    key: &str,
    mut f: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
) -> Result<Option<Vec<u8>>, StoreError> {
    for _ in 0..MAX_ATTEMPTS {
        let (current, cas) = store.get(key)?;
        let Some(next) = f(current.as_deref()) else { return Ok(None) };
        match store.set(key, &next, cas) {
            Ok(()) => return Ok(Some(next)),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Failed) => return Err(StoreError),
        }
    }
    Err(StoreError)
}

/// An in-memory [`Store`] with Envoy's CAS semantics, for tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemStore {
    map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: RefCell<u32>,
    /// Number of successful writes (lets tests assert the hot path writes nothing).
    pub writes: RefCell<usize>,
    /// Number of reads (lets tests count the hot path's shared-data reads).
    pub reads: RefCell<usize>,
}

#[cfg(test)]
impl Store for MemStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        *self.reads.borrow_mut() += 1;
        Ok(match self.map.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        let mut map = self.map.borrow_mut();
        if let (Some(expected), Some((_, current))) = (cas, map.get(key)) {
            if expected != 0 && expected != *current {
                return Err(SetError::CasMismatch);
            }
        }
        let mut next = self.next_cas.borrow_mut();
        *next += 1;
        map.insert(key.to_string(), (value.to_vec(), *next));
        *self.writes.borrow_mut() += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose first `n` sets fail with CasMismatch after a concurrent write.
    struct Contended {
        inner: MemStore,
        conflicts: RefCell<usize>,
    }

    impl Store for Contended {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
            if *self.conflicts.borrow() > 0 {
                *self.conflicts.borrow_mut() -= 1;
                // Another worker increments first.
                let (cur, c) = self.inner.get(key).map_err(|_| SetError::Failed)?;
                let n: u32 = cur.and_then(|v| String::from_utf8(v).ok()).and_then(|s| s.parse().ok()).unwrap_or(0);
                self.inner.set(key, (n + 1).to_string().as_bytes(), c)?;
            }
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn cas_update_retries_and_loses_no_increment() {
        let s = Contended { inner: MemStore::default(), conflicts: RefCell::new(3) };
        let incr = |cur: Option<&[u8]>| {
            let n: u32 = cur.and_then(|v| std::str::from_utf8(v).ok()).and_then(|s| s.parse().ok()).unwrap_or(0);
            Some((n + 1).to_string().into_bytes())
        };
        s.inner.set("k", b"0", None).ok();
        for _ in 0..5 {
            assert!(update(&s, "k", incr).is_ok());
        }
        // 5 own increments + 3 concurrent ones.
        assert_eq!(s.inner.get("k").ok().and_then(|(v, _)| v), Some(b"8".to_vec()));
    }
}
