//! What this machine adds to a per-burst time by itself: a fixed compute
//! step (a dependent multiply chain that touches no memory) as long as the
//! median burst it stands beside, timed the same way and as many times.
//! Its max ÷ median is the VM's own (timer interrupts, the hypervisor
//! running another guest on this vCPU), which no design of the burst can
//! go below: a per-burst max ÷ median goal is judged against it.
//!
//! A second floor does the same with a step that waits on DRAM as the
//! table's bursts do ([`timing_floor_dram`]: independent loads of random
//! lines of a 256 MiB array): an interrupt costs such a step more than it
//! costs a step in registers (the lines it had in flight, the cache lines
//! the handler evicts), so its tail is the floor for a burst at 1 M flows.

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

/// `loads` loads of random 8-byte words of `mem` (independent of each
/// other, as a burst's table lines are), summed.
#[inline(never)]
fn dram_step(mem: &[u64], loads: u32, seed: u64) -> u64 {
    let mask = mem.len() - 1;
    let mut x = seed | 1;
    let mut sum = 0u64;
    for _ in 0..loads {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        sum = sum.wrapping_add(mem[x as usize & mask]);
    }
    std::hint::black_box(sum)
}

/// [`timing_floor`] with a step of random DRAM loads over `bytes` (a power
/// of two, touched first) instead of a chain in registers.
pub fn timing_floor_dram(median_ns: f64, samples: usize, bytes: usize) -> Floor {
    let words = (bytes / 8).next_power_of_two().max(1 << 10);
    let mem: Vec<u64> = (0..words as u64).collect();
    let mut per_load: Vec<f64> = (0..9)
        .map(|i| {
            let t0 = Instant::now();
            dram_step(&mem, 10_000, i + 7);
            t0.elapsed().as_nanos() as f64 / 10_000.0
        })
        .collect();
    per_load.sort_by(f64::total_cmp);
    let mut loads = (median_ns / per_load[4].max(0.01)).round().clamp(1.0, 1e8) as u32;
    // Loads of a long run overlap more than those of a short step: scale
    // once by the median of 101 steps of the first guess.
    let mut trial: Vec<f64> = (0..101)
        .map(|i| {
            let t0 = Instant::now();
            dram_step(&mem, loads, i * 31 + 3);
            t0.elapsed().as_nanos() as f64
        })
        .collect();
    trial.sort_by(f64::total_cmp);
    loads = (f64::from(loads) * median_ns / trial[50].max(1.0))
        .round()
        .clamp(1.0, 1e8) as u32;
    let samples = samples.max(1);
    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples {
        let t0 = Instant::now();
        dram_step(&mem, loads, i as u64 * 0x9e37_79b9 + 1);
        lat.push(t0.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
    }
    Floor {
        lat: percentiles(lat),
        samples,
    }
}

/// Both floors beside a suite's per-burst times (`lat`: p50, p99, p99.9,
/// max over `samples` bursts): printed under the suite's goal line, and
/// their figures for its JSON.
pub fn print_floors(lat: (f64, f64, f64, f64), samples: usize) -> serde_json::Value {
    let cpu = timing_floor(lat.0, samples);
    let dram = timing_floor_dram(lat.0, samples, 256 << 20);
    for (what, f) in [
        ("compute step (registers only)", &cpu),
        ("step of random DRAM loads", &dram),
    ] {
        println!(
            "    this machine's own, a fixed {:.0}-ns {what} timed {} times: max / median {:.1}x \
             ({:.0} / {:.0} ns), p99.9 {:.1}x",
            lat.0,
            f.samples,
            f.spread(),
            f.lat.3,
            f.lat.0,
            f.lat.2 / f.lat.0.max(1.0),
        );
    }
    serde_json::json!({
        "p999_over_median": lat.2 / lat.0.max(1.0), "samples": samples,
        "machine_floor_ratio": cpu.spread(), "machine_floor_p50_ns": cpu.lat.0,
        "machine_floor_p999_ns": cpu.lat.2, "machine_floor_max_ns": cpu.lat.3,
        "dram_floor_ratio": dram.spread(), "dram_floor_p50_ns": dram.lat.0,
        "dram_floor_p999_ns": dram.lat.2, "dram_floor_max_ns": dram.lat.3,
    })
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
        let d = timing_floor_dram(1_000.0, 300, 1 << 20);
        assert_eq!(d.samples, 300);
        assert!(d.lat.0 > 0.0 && d.lat.3 >= d.lat.0);
    }
}
