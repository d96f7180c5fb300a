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
    reached: AtomicBool,
}

impl CountLimit {
    /// A limit of `count` frames.
    pub fn new(count: u64) -> Self {
        CountLimit {
            left: AtomicU64::new(count),
            reached: AtomicBool::new(count == 0),
        }
    }

    /// Whether every frame allowed was received.
    pub fn reached(&self) -> bool {
        self.reached.load(Ordering::Relaxed)
    }

    /// Take up to `want` frames of what is left; returns how many.
    fn reserve(&self, want: u64) -> u64 {
        let prev = self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| {
                Some(l - l.min(want))
            })
            .unwrap_or(0);
        prev.min(want)
    }

    /// Give back `n` reserved frames that did not come.
    fn give_back(&self, n: u64) {
        if n > 0 {
            self.left.fetch_add(n, Ordering::AcqRel);
        }
    }

    fn check(&self) {
        if self.left.load(Ordering::Acquire) == 0 {
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
        self.limit.give_back(k.saturating_sub(c.n));
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
        l.give_back(10);
        assert!(!{
            l.check();
            l.reached()
        });
        assert_eq!(l.reserve(64), 10);
        l.check();
        assert!(l.reached());
    }
}
