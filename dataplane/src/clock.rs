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
        self.hold(w)
    }

    /// Wall ns for a source reading as the map stands, without the
    /// never-backwards hold (for aligning a second clock, [`HwAlign`]).
    #[inline]
    pub fn peek(&self, src: u64) -> u64 {
        self.raw(src)
    }

    /// A wall time from elsewhere (a second clock aligned to this one) under
    /// the same never-backwards rule as [`WallMap::map`], so a queue that
    /// mixes the two never goes backwards.
    #[inline]
    pub fn hold(&mut self, w: u64) -> u64 {
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

/// Aligns a second frame clock, the NIC's PTP hardware clock (PHC), to wall
/// time, per queue, through frames that carry both a PHC stamp and a host
/// stamp (the XDP program's `bpf_ktime_get_ns()`, mapped by the queue's
/// [`WallMap`]).
///
/// A PHC may run on TAI (ptp4l's default), on UTC, or free from 0 at
/// driver load, and drifts against the host's crystal; linecap assumes none
/// of these. For each frame, `host wall − PHC` is the PHC-to-wall offset
/// plus the frame's latency from the wire to the XDP hook, so the smallest
/// sample of a tick is the offset plus the least latency. The first frame
/// sets the offset; on each re-anchor (the worker's stats tick) it moves
/// towards the tick's smallest sample by at most `max_step_ns`, or at once
/// beyond `jump_ns` (a clock set on either side). Between re-anchors the
/// offset is fixed, so the gaps between frames are the hardware's. Time is
/// an argument: tests feed stamps.
#[derive(Debug, Clone)]
pub struct HwAlign {
    off: i128,
    have: bool,
    tick_min: i128,
    max_step_ns: i128,
    jump_ns: i128,
}

impl Default for HwAlign {
    fn default() -> Self {
        HwAlign {
            off: 0,
            have: false,
            tick_min: i128::MAX,
            max_step_ns: i128::from(WallMap::MAX_STEP_NS),
            jump_ns: i128::from(WallMap::JUMP_NS),
        }
    }
}

impl HwAlign {
    /// The wall time of a frame with PHC stamp `hw_ns` whose host stamp maps
    /// to `host_wall_ns` (not yet held never-backwards: pass the result to
    /// [`WallMap::hold`]).
    #[inline]
    pub fn wall(&mut self, hw_ns: u64, host_wall_ns: u64) -> u64 {
        let sample = i128::from(host_wall_ns) - i128::from(hw_ns);
        if !self.have {
            self.off = sample;
            self.have = true;
        }
        self.tick_min = self.tick_min.min(sample);
        (i128::from(hw_ns) + self.off).clamp(0, i128::from(u64::MAX)) as u64
    }

    /// Move the offset towards the tick's smallest sample (bounded step).
    /// Returns the step taken (ns).
    pub fn reanchor(&mut self) -> i64 {
        if self.tick_min == i128::MAX {
            return 0;
        }
        let err = self.tick_min - self.off;
        let step = if err.abs() > self.jump_ns {
            err
        } else {
            err.clamp(-self.max_step_ns, self.max_step_ns)
        };
        self.off += step;
        self.tick_min = i128::MAX;
        step.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }
}

#[cfg(test)]
mod hwalign_tests {
    use super::{HwAlign, WallMap};

    #[test]
    fn keeps_the_hardware_gaps_and_follows_the_least_latency() {
        // PHC on TAI: 37 s ahead of the wall clock.
        let tai = 37_000_000_000u64;
        let wall0 = 1_700_000_000_000_000_000u64;
        let mut a = HwAlign::default();
        // Frame 1 reached the hook 5 µs after the wire, frame 2 2 µs after.
        let w1 = a.wall(wall0 + tai, wall0 + 5_000);
        let w2 = a.wall(wall0 + tai + 100, wall0 + 100 + 2_000);
        // Within the tick the hardware gap (100 ns) is kept.
        assert_eq!(w1, wall0 + 5_000);
        assert_eq!(w2 - w1, 100);
        // The re-anchor takes the least latency seen: 3 µs down.
        assert_eq!(a.reanchor(), -3_000);
        assert_eq!(
            a.wall(wall0 + tai + 1_000, wall0 + 1_000 + 9_000),
            wall0 + 1_000 + 2_000
        );
        // No frames, no step.
        a.reanchor();
        assert_eq!(a.reanchor(), 0);
    }

    #[test]
    fn steps_are_bounded_except_clock_settings() {
        let mut a = HwAlign::default();
        a.wall(1_000_000_000, 2_000_000_000);
        // The PHC drifted 5 ms slow against the host: 1 ms per tick.
        a.wall(1_100_000_000, 2_105_000_000);
        assert_eq!(a.reanchor(), 0); // the first frame's sample is the tick's least
        a.wall(1_200_000_000, 2_205_000_000);
        assert_eq!(a.reanchor(), WallMap::MAX_STEP_NS as i64);
        // Someone set the PHC 10 s forward: taken at once.
        a.wall(1_300_000_000 + 10_000_000_000, 2_305_000_000);
        assert_eq!(a.reanchor(), -(10_000_000_000 - 5_000_000 + 1_000_000));
    }

    #[test]
    fn a_queue_mixing_hardware_and_host_stamps_never_goes_back() {
        let mut m = WallMap::new(0, 1_000_000_000, 1_000_000_000);
        let mut a = HwAlign::default();
        let mut last = 0;
        let mut back = 0;
        // Alternate: hardware stamps (50 µs of jittery latency) and host-only ones.
        for i in 0..1_000u64 {
            let host = i * 10_000;
            let lat = (i * 7919) % 50_000;
            let w = if i % 3 == 0 {
                m.map(host + lat)
            } else {
                let hw_wall = a.wall(500 + host, m.peek(host + lat));
                m.hold(hw_wall)
            };
            back += usize::from(w < last);
            last = w;
            if i % 100 == 99 {
                a.reanchor();
            }
        }
        assert_eq!(back, 0);
        assert!(m.clamped() > 0, "the mix did need the hold");
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
