//! What this machine adds to a per-burst time by itself: a fixed compute
//! step (a dependent multiply chain that touches no memory) as long as the
//! median burst it stands beside, timed the same way and as many times.
//! Its max ÷ median is the VM's own (timer interrupts, the hypervisor
//! running another guest on this vCPU), which no design of the burst can
//! go below: a per-burst max ÷ median goal is judged against it.

use std::time::Instant;

/// p50, p99, p99.9 and max of a set of times (ns).
pub fn percentiles(mut v: Vec<u32>) -> (f64, f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0, 0.0);
    }
    v.sort_unstable();
    let at = |q: f64| f64::from(v[((v.len() - 1) as f64 * q) as usize]);
    (at(0.5), at(0.99), at(0.999), f64::from(v[v.len() - 1]))
}

/// `iters` rounds of a multiply-xorshift chain, each depending on the last.
#[inline(never)]
fn fixed_step(iters: u32, seed: u64) -> u64 {
    let mut h = seed | 1;
    for _ in 0..iters {
        h = (h ^ (h >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    std::hint::black_box(h)
}

/// The fixed step's times: `samples` steps of about `median_ns` each
/// (calibrated here), timed one by one with `Instant` as the bursts are.
pub struct Floor {
    /// p50, p99, p99.9, max (ns).
    pub lat: (f64, f64, f64, f64),
    pub samples: usize,
}

impl Floor {
    pub fn spread(&self) -> f64 {
        self.lat.3 / self.lat.0.max(1.0)
    }
}

/// Time the fixed step `samples` times, sized to `median_ns`.
pub fn timing_floor(median_ns: f64, samples: usize) -> Floor {
    // Calibrate on the median of 9 timings of 10 k rounds.
    let mut per_round: Vec<f64> = (0..9)
        .map(|i| {
            let t0 = Instant::now();
            fixed_step(10_000, i);
            t0.elapsed().as_nanos() as f64 / 10_000.0
        })
        .collect();
    per_round.sort_by(f64::total_cmp);
    let iters = (median_ns / per_round[4].max(0.01)).round().clamp(1.0, 1e8) as u32;
    let samples = samples.max(1);
    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples {
        let t0 = Instant::now();
        fixed_step(iters, i as u64);
        lat.push(t0.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
    }
    Floor {
        lat: percentiles(lat),
        samples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_set() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentiles(v), (500.0, 990.0, 999.0, 1000.0));
        assert_eq!(percentiles(Vec::new()), (0.0, 0.0, 0.0, 0.0));
    }

    #[test]
    fn the_floor_takes_as_many_samples_as_asked() {
        let f = timing_floor(1_000.0, 500);
        assert_eq!(f.samples, 500);
        assert!(f.lat.0 > 0.0 && f.lat.3 >= f.lat.0);
    }
}
