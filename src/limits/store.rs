//! The storage seam of the limits: read a value with its CAS token, write it back only if
//! nobody wrote in between.
//!
//! Why a trait of its own: admission is written as steps of exactly these two operations
//! (`admit.rs`), so tests can interleave the steps of many admissions against [`MemCas`] and see
//! every order workers could produce. It is what proxy-wasm shared data offers
//! (`get_shared_data` → value + cas, `set_shared_data` with that cas → `CasMismatch`), and the
//! same as [`crate::health::Store`]: every `Store` is a [`CasStore`] (the blanket impl below),
//! so the host's `Host::shared()` plugs in with no code. Issue 13's global mode does not
//! implement this trait (an RLS is not a CAS map): it replaces the [`super::Limiter`] instead.

#[cfg(test)]
use std::cell::RefCell;
#[cfg(test)]
use std::collections::{BTreeMap, VecDeque};

use crate::health::{SetError, Store, StoreError};

/// A value as read, with the token a conditional write must present.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Versioned {
    /// `None`: the key does not exist.
    pub value: Option<Vec<u8>>,
    /// `None` with an absent key: the write is unconditional (creating a key is the one write
    /// CAS cannot protect, hence keys are created empty at configure time).
    pub token: Option<u32>,
}

/// What a conditional write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Ok,
    /// Someone wrote the key since the read: read again.
    Conflict,
}

/// Read + conditional write: proxy-wasm shared data's contract.
pub trait CasStore {
    /// # Errors
    /// The store could not be read.
    fn read(&self, key: &str) -> Result<Versioned, StoreError>;
    /// Writes `value` if the key was not written since `token` was read.
    ///
    /// # Errors
    /// The store could not be written (not a CAS conflict).
    fn write(&self, key: &str, value: &[u8], token: Option<u32>) -> Result<Written, StoreError>;
}

impl<S: Store + ?Sized> CasStore for S {
    fn read(&self, key: &str) -> Result<Versioned, StoreError> {
        let (value, token) = self.get(key)?;
        Ok(Versioned { value, token })
    }

    fn write(&self, key: &str, value: &[u8], token: Option<u32>) -> Result<Written, StoreError> {
        match self.set(key, value, token) {
            Ok(()) => Ok(Written::Ok),
            Err(SetError::CasMismatch) => Ok(Written::Conflict),
            Err(SetError::Failed) => Err(StoreError),
        }
    }
}

/// A fault injected by [`MemCas`] on the next operation of a key.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next write of the key reports a conflict (as if another worker wrote first; the
    /// value is left alone).
    Conflict,
    /// The next read or write of the key fails.
    Fail,
}

/// In-memory CAS store with Envoy's semantics (tokens change on every write; a write with no
/// token is unconditional), counting operations and injecting faults per key.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemCas {
    map: RefCell<BTreeMap<String, (Vec<u8>, u32)>>,
    next_token: RefCell<u32>,
    faults: RefCell<BTreeMap<String, VecDeque<Fault>>>,
    pub reads: RefCell<u64>,
    pub writes: RefCell<u64>,
}

#[cfg(test)]
impl MemCas {
    /// Creates `keys` empty (what configure does, so every later write is CAS-protected).
    pub fn with_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> MemCas {
        let s = MemCas::default();
        for k in keys {
            s.write(k, b"", None).ok();
        }
        *s.writes.borrow_mut() = 0;
        s
    }

    pub fn inject(&self, key: &str, fault: Fault) {
        self.faults.borrow_mut().entry(key.to_string()).or_default().push_back(fault);
    }

    fn take_fault(&self, key: &str, on_write: bool) -> Option<Fault> {
        let mut faults = self.faults.borrow_mut();
        let queue = faults.get_mut(key)?;
        match queue.front() {
            Some(Fault::Fail) => queue.pop_front(),
            Some(Fault::Conflict) if on_write => queue.pop_front(),
            _ => None,
        }
    }

    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.map.borrow().get(key).map(|(v, _)| v.clone())
    }

    pub fn keys(&self) -> Vec<String> {
        self.map.borrow().keys().cloned().collect()
    }
}

#[cfg(test)]
impl CasStore for MemCas {
    fn read(&self, key: &str) -> Result<Versioned, StoreError> {
        *self.reads.borrow_mut() += 1;
        if self.take_fault(key, false) == Some(Fault::Fail) {
            return Err(StoreError);
        }
        Ok(match self.map.borrow().get(key) {
            Some((v, t)) => Versioned { value: Some(v.clone()), token: Some(*t) },
            None => Versioned::default(),
        })
    }

    fn write(&self, key: &str, value: &[u8], token: Option<u32>) -> Result<Written, StoreError> {
        match self.take_fault(key, true) {
            Some(Fault::Fail) => return Err(StoreError),
            Some(Fault::Conflict) => return Ok(Written::Conflict),
            None => {}
        }
        let mut map = self.map.borrow_mut();
        if let (Some(expected), Some((_, current))) = (token, map.get(key)) {
            if expected != *current {
                return Ok(Written::Conflict);
            }
        }
        let mut next = self.next_token.borrow_mut();
        *next += 1;
        map.insert(key.to_string(), (value.to_vec(), *next));
        *self.writes.borrow_mut() += 1;
        Ok(Written::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::MemStore;

    #[test]
    fn cas_semantics() {
        let s = MemCas::with_keys(["k"]);
        let a = s.read("k").unwrap();
        let b = s.read("k").unwrap();
        assert_eq!(a.value.as_deref(), Some(&b""[..]));
        assert_eq!(s.write("k", b"1", a.token), Ok(Written::Ok));
        // b read before a's write: conflict, value unchanged.
        assert_eq!(s.write("k", b"2", b.token), Ok(Written::Conflict));
        assert_eq!(s.value("k"), Some(b"1".to_vec()));
        // Absent key: no token, the write is unconditional.
        assert_eq!(s.read("new").unwrap(), Versioned::default());
        assert_eq!(s.write("new", b"x", None), Ok(Written::Ok));
        assert_eq!(*s.writes.borrow(), 2);
    }

    #[test]
    fn faults_apply_once_in_order() {
        let s = MemCas::with_keys(["k"]);
        s.inject("k", Fault::Conflict);
        s.inject("k", Fault::Fail);
        let v = s.read("k").unwrap();
        assert_eq!(s.write("k", b"1", v.token), Ok(Written::Conflict));
        assert_eq!(s.read("k"), Err(StoreError));
        let v = s.read("k").unwrap();
        assert_eq!(s.write("k", b"1", v.token), Ok(Written::Ok));
        // Faults are per key.
        s.inject("other", Fault::Fail);
        assert!(s.read("k").is_ok());
    }

    #[test]
    fn health_stores_are_cas_stores() {
        let s = MemStore::default();
        s.set("k", b"", None).unwrap();
        let v = CasStore::read(&s, "k").unwrap();
        assert_eq!(CasStore::write(&s, "k", b"1", v.token), Ok(Written::Ok));
        assert_eq!(CasStore::write(&s, "k", b"2", v.token), Ok(Written::Conflict));
    }
}
