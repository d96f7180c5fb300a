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

/// The frames left to receive, shared by every queue.
#[derive(Debug)]
pub struct CountLimit {
    left: AtomicU64,
    /// Frames reserved by polls still under way: the limit is reached only
    /// when none are left *and* no poll may still give some back (another
    /// queue's reservation that its poll did not fill).
    outstanding: AtomicU64,
    reached: AtomicBool,
}

impl CountLimit {
    /// A limit of `count` frames.
    pub fn new(count: u64) -> Self {
        CountLimit {
            left: AtomicU64::new(count),
            outstanding: AtomicU64::new(0),
            reached: AtomicBool::new(count == 0),
        }
    }

    /// Whether every frame allowed was received.
    pub fn reached(&self) -> bool {
        self.reached.load(Ordering::Relaxed)
    }

    /// Take up to `want` frames of what is left; returns how many.
    fn reserve(&self, want: u64) -> u64 {
        // Counted as outstanding before `left` moves, so `check` never sees
        // the frames gone from `left` and not yet in `outstanding`.
        self.outstanding.fetch_add(want, Ordering::SeqCst);
        let prev = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                Some(l - l.min(want))
            })
            .unwrap_or(0);
        let got = prev.min(want);
        self.outstanding.fetch_sub(want - got, Ordering::SeqCst);
        got
    }

    /// The poll that reserved `k` received `n` of them: give back the rest.
    fn settle(&self, k: u64, n: u64) {
        let back = k.saturating_sub(n);
        if back > 0 {
            self.left.fetch_add(back, Ordering::SeqCst);
        }
        self.outstanding.fetch_sub(k, Ordering::SeqCst);
    }

    fn check(&self) {
        if self.left.load(Ordering::SeqCst) == 0 && self.outstanding.load(Ordering::SeqCst) == 0 {
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
