//! The cooldown record: which deployments are cooling, until when, and why.
//!
//! One shared-data value holds every cooling deployment as `id \t until_ms \t class \n` lines.
//! It stays tiny (only cooling deployments, expired lines pruned on write), so every request
//! can read it in one host call; the parsed [`CooldownView`] is rebuilt only when the value's
//! CAS token changes, which is rare.

use super::class::FailureClass;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CooldownEntry {
    pub until_ms: u64,
    pub class: FailureClass,
}

/// The decoded record, by deployment id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cooldowns {
    pub entries: Vec<(String, CooldownEntry)>,
}

impl Cooldowns {
    /// Decodes a record; malformed lines (e.g. from a future version) are skipped.
    pub fn decode(bytes: &[u8]) -> Cooldowns {
        let entries = bytes
            .split(|&b| b == b'\n')
            .filter_map(|line| {
                let line = std::str::from_utf8(line).ok()?;
                let mut parts = line.split('\t');
                let id = parts.next()?;
                let until_ms = parts.next()?.parse().ok()?;
                let class = FailureClass::parse(parts.next()?)?;
                Some((id.to_string(), CooldownEntry { until_ms, class }))
            })
            .collect();
        Cooldowns { entries }
    }

    /// Encodes the entries still cooling at `now_ms` whose ids `keep` accepts.
    pub fn encode(&self, now_ms: u64, keep: impl Fn(&str) -> bool) -> Vec<u8> {
        let mut out = Vec::new();
        for (id, e) in &self.entries {
            if e.until_ms > now_ms && keep(id) {
                out.extend_from_slice(id.as_bytes());
                out.push(b'\t');
                out.extend_from_slice(e.until_ms.to_string().as_bytes());
                out.push(b'\t');
                out.extend_from_slice(e.class.as_str().as_bytes());
                out.push(b'\n');
            }
        }
        out
    }

    pub fn get(&self, id: &str) -> Option<CooldownEntry> {
        self.entries.iter().find(|(i, _)| i == id).map(|(_, e)| *e)
    }

    /// Cools `id` until at least `until_ms` (an existing later deadline is kept: a failure
    /// during a cooldown extends it, never shortens it). Returns the resulting deadline.
    pub fn extend(&mut self, id: &str, until_ms: u64, class: FailureClass) -> u64 {
        match self.entries.iter_mut().find(|(i, _)| i == id) {
            Some((_, e)) => {
                if until_ms >= e.until_ms {
                    *e = CooldownEntry { until_ms, class };
                }
                e.until_ms
            }
            None => {
                self.entries.push((id.to_string(), CooldownEntry { until_ms, class }));
                until_ms
            }
        }
    }
}

/// Cooldown deadlines indexed by deployment position in the routing table: what the selection
/// reads per candidate, O(1) each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CooldownView {
    until_ms: Vec<u64>,
    classes: Vec<Option<FailureClass>>,
}

impl CooldownView {
    /// Maps a decoded record onto the table's deployment indices; unknown ids are ignored.
    pub fn new(cooldowns: &Cooldowns, index_of: &HashMap<String, usize>, deployments: usize) -> CooldownView {
        let mut view = CooldownView { until_ms: vec![0; deployments], classes: vec![None; deployments] };
        for (id, e) in &cooldowns.entries {
            if let Some(&i) = index_of.get(id) {
                if let (Some(u), Some(c)) = (view.until_ms.get_mut(i), view.classes.get_mut(i)) {
                    *u = e.until_ms;
                    *c = Some(e.class);
                }
            }
        }
        view
    }

    /// Milliseconds of cooldown left for deployment `index` at `now_ms`, if cooling.
    pub fn remaining_ms(&self, index: usize, now_ms: u64) -> Option<u64> {
        let until = self.until_ms.get(index).copied().unwrap_or(0);
        (until > now_ms).then(|| until - now_ms)
    }

    #[cfg(test)]
    pub fn class(&self, index: usize) -> Option<FailureClass> {
        self.classes.get(index).copied().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_prune() {
        let mut c = Cooldowns::default();
        c.extend("a", 1_000, FailureClass::RateLimit);
        c.extend("b", 5_000, FailureClass::ServerError);
        c.extend("gone", 9_000, FailureClass::Timeout);
        let bytes = c.encode(2_000, |id| id != "gone");
        let d = Cooldowns::decode(&bytes);
        assert_eq!(d.entries.len(), 1);
        assert_eq!(d.get("b"), Some(CooldownEntry { until_ms: 5_000, class: FailureClass::ServerError }));
    }

    #[test]
    fn extend_never_shortens() {
        let mut c = Cooldowns::default();
        assert_eq!(c.extend("a", 5_000, FailureClass::RateLimit), 5_000);
        assert_eq!(c.extend("a", 3_000, FailureClass::ServerError), 5_000);
        assert_eq!(c.get("a").map(|e| e.class), Some(FailureClass::RateLimit));
        assert_eq!(c.extend("a", 7_000, FailureClass::Timeout), 7_000);
    }

    #[test]
    fn decode_skips_garbage() {
        let d = Cooldowns::decode(b"a\t10\trate_limit\nbroken\nb\tx\treset\nc\t5\tnope\n\xff\n");
        assert_eq!(d.entries.len(), 1);
    }

    #[test]
    fn view_indexes_by_table_position() {
        let mut c = Cooldowns::default();
        c.extend("b", 5_000, FailureClass::ServerError);
        c.extend("unknown", 5_000, FailureClass::ServerError);
        let index: HashMap<String, usize> = [("a".to_string(), 0), ("b".to_string(), 1)].into();
        let v = CooldownView::new(&c, &index, 2);
        assert_eq!(v.remaining_ms(0, 1_000), None);
        assert_eq!(v.remaining_ms(1, 1_000), Some(4_000));
        assert_eq!(v.remaining_ms(1, 5_000), None);
        assert_eq!(v.class(1), Some(FailureClass::ServerError));
    }
}
