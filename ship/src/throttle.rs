//! The upload bandwidth cap: one token bucket shared by every uploader
//! thread, so the cap holds for the whole process.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket of `rate` bytes per second (burst: a tenth of a second).
#[derive(Debug)]
pub struct Throttle {
    rate_bytes_per_s: u64,
    burst_bytes: u64,
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    /// A cap of `rate_bytes_per_s` (at least 1 KiB/s).
    pub fn new(rate_bytes_per_s: u64) -> Self {
        let rate = rate_bytes_per_s.max(1024);
        let burst = (rate / 10).max(1024);
        Throttle {
            rate_bytes_per_s: rate,
            burst_bytes: burst,
            state: Mutex::new((burst as f64, Instant::now())),
        }
    }

    /// The cap, bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate_bytes_per_s
    }

    /// Wait until some of `want` bytes may be sent; how many (1..=want).
    pub fn take(&self, want: usize) -> usize {
        let want = (want as u64).clamp(1, self.burst_bytes);
        loop {
            let wait = {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let elapsed = now.duration_since(st.1).as_secs_f64();
                st.0 = (st.0 + elapsed * self.rate_bytes_per_s as f64).min(self.burst_bytes as f64);
                st.1 = now;
                if st.0 >= 1.0 {
                    let n = (st.0 as u64).min(want);
                    st.0 -= n as f64;
                    return n as usize;
                }
                (1.0 - st.0) / self.rate_bytes_per_s as f64
            };
            std::thread::sleep(Duration::from_secs_f64(wait.max(0.001)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_bounds_the_bytes_per_second() {
        let t = Throttle::new(200_000);
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < 100_000 {
            sent += t.take(64 * 1024) as u64;
        }
        // 100 kB at 200 kB/s with a 20 kB burst takes at least 0.4 s.
        assert!(
            start.elapsed() >= Duration::from_millis(380),
            "{:?}",
            start.elapsed()
        );
    }
}
