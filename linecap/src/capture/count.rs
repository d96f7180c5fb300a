//! `-c COUNT`: the capture stops after COUNT frames were received, over all
//! queues together, exactly.
//!
//! Each queue's source is wrapped: before a poll it reserves at most a
//! burst of the frames left, polls at most that many, and gives back what
//! it did not receive, so the queues together never take more than COUNT.
//! Once none are left, the limit is `reached` (the supervisor then stops the
//! capture as on SIGINT); a file or generator source ends there, and a live
//! queue still drains what the NIC already delivered to it, counting those
//! frames as `after_count` drops so every frame stays accounted for.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use linecap_dataplane::source::{Frame, FrameSink, NicDrops, RxQueue, RxStatus, SourceDrops};

/// Bits of [`CountLimit`]'s state word that hold the frames left; the bits
/// above hold the frames reserved by polls under way.
const LEFT_BITS: u32 = 40;
const LEFT_MASK: u64 = (1 << LEFT_BITS) - 1;
const _: () = assert!(crate::limits::COUNT_MAX == LEFT_MASK);
/// The most one poll reserves (the rest of the word, 2^24 frames, bounds
/// all polls under way together; bursts are far smaller).
const RESERVE_MAX: u64 = 1 << 16;

/// The frames left to receive, shared by every queue.
///
/// One atomic word holds both the frames left and the frames reserved by
/// polls still under way, so "none left and none outstanding" is one load:
/// with two atomics a look could read `left == 0`, then another queue give
/// frames back and settle, then read `outstanding == 0`, and stop the capture
/// with frames still to receive (seen as a `-c 100` capture ending at 63).
#[derive(Debug)]
pub struct CountLimit {
    /// `left | outstanding << LEFT_BITS`.
    state: AtomicU64,
    reached: AtomicBool,
}

impl CountLimit {
    /// A limit of `count` frames (at most `limits::COUNT_MAX`; validation refuses more).
    pub fn new(count: u64) -> Self {
        CountLimit {
            state: AtomicU64::new(count.min(LEFT_MASK)),
            reached: AtomicBool::new(count == 0),
        }
    }

    /// Whether every frame allowed was received.
    pub fn reached(&self) -> bool {
        self.reached.load(Ordering::Relaxed)
    }

    /// Take up to `want` frames of what is left; returns how many.
    fn reserve(&self, want: u64) -> u64 {
        let want = want.min(RESERVE_MAX);
        let prev = self
            .state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                let (left, out) = (s & LEFT_MASK, s >> LEFT_BITS);
                let got = left.min(want);
                Some((left - got) | ((out + got) << LEFT_BITS))
            })
            .unwrap_or(0);
        (prev & LEFT_MASK).min(want)
    }

    /// The poll that reserved `k` received `n` of them: give back the rest.
    fn settle(&self, k: u64, n: u64) {
        let back = k.saturating_sub(n);
        let _ = self
            .state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                let (left, out) = (s & LEFT_MASK, s >> LEFT_BITS);
                Some((left + back).min(LEFT_MASK) | (out.saturating_sub(k) << LEFT_BITS))
            });
    }

    fn check(&self) {
        if self.state.load(Ordering::SeqCst) == 0 {
            self.reached.store(true, Ordering::Relaxed);
        }
    }
}

/// A source that receives no more than the shared limit allows.
pub struct Limited<'a, R> {
    inner: &'a mut R,
    limit: &'a CountLimit,
    /// Frames a live queue read after the limit was reached.
    pub after_count: u64,
}

impl<'a, R: RxQueue> Limited<'a, R> {
    /// Wrap `inner`.
    pub fn new(inner: &'a mut R, limit: &'a CountLimit) -> Self {
        Limited {
            inner,
            limit,
            after_count: 0,
        }
    }
}

struct Counting<'s, S> {
    sink: &'s mut S,
    n: u64,
}

impl<S: FrameSink> FrameSink for Counting<'_, S> {
    #[inline]
    fn frame(&mut self, frame: Frame<'_>) {
        self.n += 1;
        self.sink.frame(frame);
    }
}

struct Discard(u64);

impl FrameSink for Discard {
    #[inline]
    fn frame(&mut self, _frame: Frame<'_>) {
        self.0 += 1;
    }
}

impl<R: RxQueue> RxQueue for Limited<'_, R> {
    fn poll_burst<S: FrameSink>(&mut self, max: usize, sink: &mut S) -> RxStatus {
        let k = self.limit.reserve(max as u64);
        if k == 0 {
            self.limit.check();
            if !self.inner.drain_on_stop() {
                // A file or generator: nothing more is read.
                return RxStatus::Ended;
            }
            // A live queue: what the NIC delivered before the inflow is cut
            // is read and counted, not captured.
            let mut d = Discard(0);
            let status = self.inner.poll_burst(max, &mut d);
            self.after_count += d.0;
            // Frames(n) keeps a stopping worker draining until the queue is empty.
            return status;
        }
        let mut c = Counting { sink, n: 0 };
        let status = self.inner.poll_burst(k as usize, &mut c);
        self.limit.settle(k, c.n);
        self.limit.check();
        status
    }

    fn drops(&self) -> SourceDrops {
        self.inner.drops()
    }

    fn nic_drops(&self) -> NicDrops {
        self.inner.nic_drops()
    }

    fn refresh(&mut self) {
        self.inner.refresh();
    }

    fn drain_on_stop(&self) -> bool {
        self.inner.drain_on_stop()
    }

    fn stop_inflow(&mut self) -> bool {
        self.inner.stop_inflow()
    }

    fn busy_poll(&self) -> bool {
        self.inner.busy_poll()
    }

    fn clock_source(&self) -> &'static str {
        self.inner.clock_source()
    }

    fn error(&self) -> Option<String> {
        self.inner.error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_exceed_the_limit() {
        let l = CountLimit::new(100);
        assert_eq!(l.reserve(64), 64);
        assert_eq!(l.reserve(64), 36);
        assert_eq!(l.reserve(64), 0);
        // The first poll got all 64; the second only 26 of its 36.
        l.settle(64, 64);
        l.settle(36, 26);
        l.check();
        assert!(!l.reached());
        assert_eq!(l.reserve(64), 10);
        l.settle(10, 10);
        l.check();
        assert!(l.reached());
    }

    /// Four threads reserve, receive part and settle until the limit is
    /// reached: together they receive exactly the limit, never less.
    #[test]
    fn threads_together_receive_exactly_the_limit() {
        for round in 0..50u64 {
            let l = CountLimit::new(1000 + round);
            let got = AtomicU64::new(0);
            std::thread::scope(|s| {
                for t in 0..4u64 {
                    let (l, got) = (&l, &got);
                    s.spawn(move || {
                        let mut i = t;
                        while !l.reached() {
                            let k = l.reserve(64);
                            // Receive 0..=k frames, varying.
                            let n = if k == 0 { 0 } else { (i * 7919) % (k + 1) };
                            i += 1;
                            got.fetch_add(n, Ordering::SeqCst);
                            l.settle(k, n);
                            l.check();
                        }
                    });
                }
            });
            assert_eq!(got.load(Ordering::SeqCst), 1000 + round);
        }
    }

    #[test]
    fn not_reached_while_another_queue_may_give_frames_back() {
        let l = CountLimit::new(100);
        let a = l.reserve(64);
        let b = l.reserve(64);
        assert_eq!((a, b), (64, 36));
        l.settle(a, a);
        // `left` is 0, but queue b's 36 are not received yet.
        l.check();
        assert!(!l.reached(), "b may still give frames back");
        l.settle(b, 20);
        l.check();
        assert!(!l.reached());
        assert_eq!(l.reserve(64), 16);
        l.settle(16, 16);
        l.check();
        assert!(l.reached());
    }
}
