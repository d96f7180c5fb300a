//! A rate limit for operational log lines (a failing disk must not flood
//! the journal): the first event logs at once, later ones at most once per
//! interval, saying how many were left out meanwhile.

use std::time::{Duration, Instant};

/// Allows one event per `every`; counts the ones it refuses.
#[derive(Debug)]
pub struct RateLimit {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// A limit of one event per `every`.
    pub const fn new(every: Duration) -> RateLimit {
        RateLimit {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(events left out since the last allowed one)` if this event may
    /// be logged now, else `None` (and it is counted).
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_event_passes_then_the_rest_are_counted() {
        let mut r = RateLimit::new(Duration::from_secs(3600));
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), None);
        assert_eq!(r.allow(), None);
        let mut z = RateLimit::new(Duration::ZERO);
        assert_eq!(z.allow(), Some(0));
        assert_eq!(z.allow(), Some(0));
        r.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(r.allow(), Some(2));
    }
}
