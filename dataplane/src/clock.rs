//! Time as an argument: the worker and sources read clocks through this trait
//! so tests can drive flushing and rotation without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A source of nanoseconds.
pub trait Clock {
    /// Nanoseconds on this clock's scale.
    fn now_ns(&self) -> u64;
}

/// Wall-clock time: ns since the Unix epoch (packet timestamps).
#[derive(Debug, Clone, Copy, Default)]
pub struct RealtimeClock;

impl Clock for RealtimeClock {
    fn now_ns(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
}

/// Monotonic time since the clock was created (flush ticks).
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock(Instant);

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock(Instant::now())
    }
}

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// A clock tests set by hand.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `ns`.
    pub fn new(ns: u64) -> Self {
        ManualClock(AtomicU64::new(ns))
    }
    /// Move the clock to `ns`.
    pub fn set(&self, ns: u64) {
        self.0.store(ns, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now_ns(&self) -> u64 {
        (**self).now_ns()
    }
}

/// Maps a frame clock (ns of `CLOCK_MONOTONIC` from the XDP program, or TSC
/// ticks on DPDK) to wall-clock ns, per queue.
///
/// The map is an anchor pair (source reading, wall reading) and a rate (wall
/// ns per source tick, 32.32 fixed point). [`WallMap::reanchor`] is called on
/// the worker's stats tick with a fresh pair: the wall offset moves towards
/// the new pair by at most `max_step_ns` per call (NTP slews the wall clock
/// by at most 500 ppm, so a bounded step keeps up with it), except that an
/// error beyond `jump_ns` (someone set the clock) is taken at once.
/// [`WallMap::map`] never returns less than it returned before, so the
/// timestamps of one queue never go backwards; frames held back that way are
/// counted in [`WallMap::clamped`]. Time is an argument: tests feed pairs.
#[derive(Debug, Clone)]
pub struct WallMap {
    src_anchor: u64,
    wall_anchor: u64,
    /// Wall ns per source tick, << 32.
    rate: u64,
    max_step_ns: u64,
    jump_ns: u64,
    last_ns: u64,
    clamped: u64,
}

impl WallMap {
    /// Bounded step per re-anchor by default: 1 ms.
    pub const MAX_STEP_NS: u64 = 1_000_000;
    /// Errors beyond this are clock settings, taken at once: 1 s.
    pub const JUMP_NS: u64 = 1_000_000_000;

    /// A map anchored at (`src`, `wall`) with `ticks_per_s` source ticks per
    /// second (1e9 for a ns clock).
    pub fn new(src: u64, wall: u64, ticks_per_s: u64) -> Self {
        let rate = ((1_000_000_000u128 << 32) / u128::from(ticks_per_s.max(1))) as u64;
        WallMap {
            src_anchor: src,
            wall_anchor: wall,
            rate,
            max_step_ns: Self::MAX_STEP_NS,
            jump_ns: Self::JUMP_NS,
            last_ns: 0,
            clamped: 0,
        }
    }

    /// The same with a different step bound (tests, profiles).
    pub fn with_max_step(mut self, max_step_ns: u64) -> Self {
        self.max_step_ns = max_step_ns;
        self
    }

    #[inline]
    fn raw(&self, src: u64) -> u64 {
        let d = i128::from(src) - i128::from(self.src_anchor);
        // Rounded to the nearest ns (the rate is truncated to 32.32).
        let w = i128::from(self.wall_anchor) + ((d * i128::from(self.rate) + (1 << 31)) >> 32);
        w.clamp(0, i128::from(u64::MAX)) as u64
    }

    /// Wall ns for a source reading: never less than the previous result.
    #[inline]
    pub fn map(&mut self, src: u64) -> u64 {
        let w = self.raw(src);
        if w < self.last_ns {
            self.clamped += 1;
            return self.last_ns;
        }
        self.last_ns = w;
        w
    }

    /// Re-anchor on a fresh (source, wall) pair read together. Returns the
    /// step taken (signed ns).
    pub fn reanchor(&mut self, src: u64, wall: u64) -> i64 {
        let predicted = self.raw(src);
        let err = i128::from(wall) - i128::from(predicted);
        let step = if err.unsigned_abs() > u128::from(self.jump_ns) {
            err
        } else {
            err.clamp(-i128::from(self.max_step_ns), i128::from(self.max_step_ns))
        };
        self.src_anchor = src;
        self.wall_anchor = (i128::from(predicted) + step).clamp(0, i128::from(u64::MAX)) as u64;
        step.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// Frames whose mapped time was held at the previous frame's.
    pub fn clamped(&self) -> u64 {
        self.clamped
    }
}

#[cfg(test)]
mod wallmap_tests {
    use super::WallMap;

    #[test]
    fn maps_with_the_anchor_offset_per_frame() {
        let mut m = WallMap::new(1_000, 5_000_000_000, 1_000_000_000);
        assert_eq!(m.map(1_000), 5_000_000_000);
        assert_eq!(m.map(1_007), 5_000_000_007);
        assert_eq!(m.map(2_000), 5_000_001_000);
    }

    #[test]
    fn tsc_rate_converts_ticks() {
        // 2.5 GHz: 2500 ticks are 1000 ns.
        let mut m = WallMap::new(0, 1_000, 2_500_000_000);
        assert_eq!(m.map(2_500), 2_000);
    }

    #[test]
    fn reanchor_steps_are_bounded_and_time_never_goes_back() {
        let mut m = WallMap::new(0, 10_000_000, 1_000_000_000).with_max_step(100);
        assert_eq!(m.map(1_000), 10_001_000);
        // The wall clock is now 5 µs behind the map: step back by 100 ns only.
        assert_eq!(m.reanchor(2_000, 10_002_000 - 5_000), -100);
        assert_eq!(m.map(2_000), 10_001_900);
        // A frame stamped before the re-anchor maps below the last result:
        // held, never backwards, and counted.
        assert_eq!(m.map(1_950), 10_001_900);
        assert_eq!(m.clamped(), 1);
        // 5 µs ahead: forward by 100 ns.
        assert_eq!(m.reanchor(3_000, 10_002_900 + 5_000), 100);
        assert_eq!(m.map(3_000), 10_003_000);
    }

    #[test]
    fn a_clock_setting_is_taken_at_once() {
        let mut m = WallMap::new(0, 1_000_000_000_000, 1_000_000_000);
        let step = m.reanchor(10, 1_000_000_000_010 + 3_600_000_000_000);
        assert_eq!(step, 3_600_000_000_000);
        assert_eq!(m.map(10), 1_000_000_000_010 + 3_600_000_000_000);
    }
}
