//! Which planned probes are due: each one every `health_check_interval`, their first runs
//! spread evenly over one interval so a large model list does not probe all at once.
//!
//! The schedule is per VM and only runs while the VM holds the lease. A VM that (re)gains the
//! lease starts a fresh spread: it cannot know when the previous holder last probed each
//! deployment, and one early probe after a handover is harmless.

#[derive(Debug, Default)]
pub struct Schedule {
    /// Next due time per planned probe; empty while not armed.
    next_due_ms: Vec<u64>,
}

impl Schedule {
    /// Forgets the timetable (the lease was lost); the next [`Schedule::due`] starts a new spread.
    pub fn disarm(&mut self) {
        self.next_due_ms.clear();
    }

    /// Indices (into the planned probes, `count` of them) due at `now_ms`; each index returned is
    /// rescheduled one interval later (or one interval from now when ticks were missed).
    pub fn due(&mut self, count: usize, now_ms: u64, interval_ms: u64) -> Vec<usize> {
        let interval_ms = interval_ms.max(1);
        if self.next_due_ms.len() != count {
            let step = interval_ms / count.max(1) as u64;
            self.next_due_ms = (0..count as u64).map(|i| now_ms.saturating_add(i.saturating_mul(step))).collect();
        }
        let mut due = Vec::new();
        for (i, next) in self.next_due_ms.iter_mut().enumerate() {
            if *next <= now_ms {
                due.push(i);
                *next = next.saturating_add(interval_ms);
                if *next <= now_ms {
                    *next = now_ms.saturating_add(interval_ms);
                }
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_probes_spread_over_one_interval_then_every_interval() {
        let mut s = Schedule::default();
        assert_eq!(s.due(4, 0, 4_000), [0]);
        assert_eq!(s.due(4, 1_000, 4_000), [1]);
        assert_eq!(s.due(4, 2_500, 4_000), [2]);
        assert_eq!(s.due(4, 3_000, 4_000), [3]);
        assert!(s.due(4, 3_999, 4_000).is_empty());
        assert_eq!(s.due(4, 4_000, 4_000), [0]);
    }

    #[test]
    fn each_probe_runs_once_per_interval_at_one_second_ticks() {
        let mut s = Schedule::default();
        let mut counts = [0; 2];
        for t in 0..10u64 {
            for i in s.due(2, t * 1000, 1000) {
                counts[i] += 1;
            }
        }
        // Probe 1 is first due at 500 ms, so it first runs on the tick at 1 s.
        assert_eq!(counts, [10, 9]);
    }

    #[test]
    fn missed_ticks_do_not_cause_a_burst() {
        let mut s = Schedule::default();
        assert_eq!(s.due(1, 0, 1_000), [0]);
        assert_eq!(s.due(1, 10_000, 1_000), [0]);
        assert!(s.due(1, 10_500, 1_000).is_empty());
        assert_eq!(s.due(1, 11_000, 1_000), [0]);
    }

    #[test]
    fn disarm_restarts_the_spread() {
        let mut s = Schedule::default();
        assert_eq!(s.due(2, 0, 10_000), [0]);
        s.disarm();
        assert_eq!(s.due(2, 100, 10_000), [0]);
        assert!(s.due(2, 200, 10_000).is_empty());
    }
}
