//! Drops beginning at a stage, logged when they happen: the supervisor
//! reads each queue's counters about once a second and warns when a loss
//! counter moved, at most once per [`EVERY`] per (queue, stage), with the
//! frames lost since the last line and in all. The capture path only counts.

use std::time::Duration;

use linecap_writer::lograte::RateLimit;

/// The loss stages watched, in [`DropWatch::observe`]'s order.
pub const STAGES: [&str; 4] = ["ring_full", "nic", "source", "writer"];
/// How often one (queue, stage) logs again while it keeps dropping.
pub const EVERY: Duration = Duration::from_secs(10);

/// What the supervisor has logged so far, per report (job, queue).
pub struct DropWatch {
    logged: Vec<[u64; 4]>,
    limits: Vec<[RateLimit; 4]>,
}

impl DropWatch {
    /// Watch `n` (job, queue) reports.
    pub fn new(n: usize) -> DropWatch {
        DropWatch {
            logged: vec![[0; 4]; n],
            limits: (0..n)
                .map(|_| std::array::from_fn(|_| RateLimit::new(EVERY)))
                .collect(),
        }
    }

    /// The totals of report `i` now, per stage of [`STAGES`]; logs the
    /// stages that moved (rate-limited). Returns how many lines it logged.
    pub fn observe(&mut self, i: usize, job: &str, queue: u32, now: [u64; 4]) -> usize {
        let (Some(logged), Some(limits)) = (self.logged.get_mut(i), self.limits.get_mut(i)) else {
            return 0;
        };
        let mut lines = 0;
        for s in 0..STAGES.len() {
            if now[s] <= logged[s] || limits[s].allow().is_none() {
                continue;
            }
            let delta = now[s] - logged[s];
            let what = if logged[s] == 0 { "began" } else { "continue" };
            tracing::warn!(
                job,
                queue,
                stage = STAGES[s],
                frames = delta,
                total = now[s],
                "drops {what} at stage {} on queue {queue}: {delta} frames ({} in all)",
                STAGES[s],
                now[s]
            );
            logged[s] = now[s];
            lines += 1;
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_when_a_stage_starts_dropping_then_rate_limits() {
        let mut w = DropWatch::new(2);
        assert_eq!(w.observe(0, "main", 0, [0, 0, 0, 0]), 0);
        assert_eq!(w.observe(0, "main", 0, [5, 0, 0, 0]), 1);
        // Within the interval: counted, not logged.
        assert_eq!(w.observe(0, "main", 0, [9, 0, 0, 0]), 0);
        // Another stage, another report: each logs its own start.
        assert_eq!(w.observe(0, "main", 0, [9, 0, 0, 3]), 1);
        assert_eq!(w.observe(1, "main", 1, [0, 2, 0, 0]), 1);
        // Out of range is ignored, not a panic.
        assert_eq!(w.observe(7, "main", 7, [1, 1, 1, 1]), 0);
    }
}
