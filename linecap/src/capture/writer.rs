//! The writer threads: each drains the rings of its share of (job, queue)
//! series into their file series.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use linecap_dataplane::ring::Consumer;
use linecap_writer::series::{FileSeries, SeriesCounters};

/// What a writer thread drains for one queue of one job.
pub(crate) struct WriterInput {
    pub(super) consumer: Consumer,
    pub(super) series: FileSeries,
    /// Where it publishes the series' counters.
    pub(super) counters: Arc<Mutex<SeriesCounters>>,
    /// Index of the (job, queue) report its errors go to.
    pub(super) report: usize,
    /// Jobs added through the control API keep their errors here instead.
    pub(super) errors: Option<Arc<Mutex<Vec<String>>>>,
    /// Live queue with time rotation (-G): the period in ns. An idle live
    /// link sends no packet of the next period to complete the file, so
    /// the writer completes it once the period is over (plus a grace).
    pub(super) live_period_ns: Option<u64>,
    /// Raised once the ring is closed, drained and the last file complete.
    pub(super) done: Arc<AtomicBool>,
    /// A job stopped through the API: what its last manifest says of it.
    pub(super) final_capture: Arc<Mutex<Option<serde_json::Value>>>,
}

impl WriterInput {
    /// The series of a job added through the control API.
    pub(crate) fn runtime(
        consumer: Consumer,
        series: FileSeries,
        q: &crate::capture::jobs::JobQueue,
        final_capture: Arc<Mutex<Option<serde_json::Value>>>,
        live_period_ns: Option<u64>,
    ) -> Self {
        WriterInput {
            consumer,
            series,
            counters: q.writer.clone(),
            report: usize::MAX,
            errors: Some(q.errors.clone()),
            live_period_ns,
            done: q.done.clone(),
            final_capture,
        }
    }

    /// Keep a writer error where its job's report will find it (the first
    /// few messages; the counters carry the rest).
    fn error(&self, errors: &Mutex<Vec<(usize, String)>>, msg: String) {
        match &self.errors {
            Some(own) => {
                let mut own = own.lock().unwrap_or_else(|e| e.into_inner());
                if own.len() < 5 {
                    own.push(msg);
                }
            }
            None => {
                let mut all = errors.lock().unwrap_or_else(|e| e.into_inner());
                if all.iter().filter(|(r, _)| *r == self.report).count() < 5 {
                    all.push((self.report, msg));
                }
            }
        }
    }

    /// The ring is closed and drained: complete the last file (saying the
    /// job stopped, if it was stopped) and report the series done.
    fn finish(&mut self, errors: &Mutex<Vec<(usize, String)>>) {
        if let Some(info) = self
            .final_capture
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            self.series.set_capture(info);
        }
        // Completes the last file and waits for its index (so the final
        // report counts it).
        if let Err(e) = self.series.finish() {
            self.error(errors, format!("closing the last file: {e}"));
        }
        *self.counters.lock().unwrap_or_else(|e| e.into_inner()) = *self.series.counters();
        self.done.store(true, Ordering::Release);
    }
}

impl WriterInput {
    /// Publish the counters and keep the series' error, if any.
    fn publish(&mut self, errors: &Mutex<Vec<(usize, String)>>) {
        if let Some(e) = self.series.take_error() {
            self.error(errors, format!("writer: {e}"));
        }
        *self.counters.lock().unwrap_or_else(|e| e.into_inner()) = *self.series.counters();
    }
}

/// Drain the rings of this writer's queues into their file series until
/// every producer has closed its ring and every batch is written. Series of
/// jobs added at runtime arrive through `inbox`; the loop ends once every
/// series is finished and the inbox is closed (or there is none).
pub(super) fn writer_loop(
    mut inputs: Vec<WriterInput>,
    inbox: Option<std::sync::mpsc::Receiver<WriterInput>>,
    errors: &Mutex<Vec<(usize, String)>>,
    rotate_gen: &AtomicU64,
    delay: Option<Duration>,
    grace_ns: u64,
) {
    let mut idle: u32 = 0;
    let mut seen_gen = 0;
    let mut checked_idle = std::time::Instant::now();
    let mut inbox_open = inbox.is_some();
    loop {
        if let Some(rx) = &inbox {
            loop {
                match rx.try_recv() {
                    Ok(i) => inputs.push(i),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        inbox_open = false;
                        break;
                    }
                }
            }
        }
        let gen_now = rotate_gen.load(Ordering::Relaxed);
        if gen_now != seen_gen {
            // SIGHUP: complete every open file; the next batch starts a new one.
            seen_gen = gen_now;
            for i in inputs.iter_mut() {
                i.series.rotate_now();
                i.publish(errors);
            }
        }
        let mut progressed = false;
        for input in inputs.iter_mut() {
            // Bound the work per queue per pass so one busy queue cannot starve the others.
            for _ in 0..input.consumer.capacity() {
                let Some(batch) = input.consumer.peek_mut() else {
                    break;
                };
                let meta = *batch.meta;
                // From the slot itself where it can (`--direct-io`, plain
                // files, records at the file's phase): no copy of the batch;
                // the index thread reads it from the slot, which `release`
                // then waits for.
                let plan = input.series.prepare_in_place(&meta, batch.area, batch.at);
                // (`lend` and `peek` cannot fail on the slot just peeked.)
                let lent = plan.and_then(|p| input.consumer.lend().map(|slot| (p, slot)));
                let failed = match lent {
                    Some((plan, slot)) => {
                        let lent: linecap_writer::indexer::Lent = slot;
                        input.series.write_in_place(&meta, plan, &lent).is_err()
                    }
                    _ => match input.consumer.peek() {
                        Some(b) => input.series.write_batch(&meta, b.records).is_err(),
                        None => false,
                    },
                };
                // Where the next slot's records should start (before the
                // release, so the slot after this one is the one meant).
                if let Some(phase) = input.series.next_phase() {
                    input
                        .consumer
                        .publish_phase(phase, input.series.bytes_to_rotation());
                }
                input.consumer.release();
                if failed && let Some(e) = input.series.take_error() {
                    input.error(errors, format!("writer: {e}"));
                }
                if let Some(d) = delay {
                    std::thread::sleep(d);
                }
                progressed = true;
            }
            *input.counters.lock().unwrap_or_else(|e| e.into_inner()) = *input.series.counters();
        }
        // A closed ring that is drained: its series is complete.
        let mut i = 0;
        while i < inputs.len() {
            if inputs[i].consumer.is_finished() {
                let mut done = inputs.swap_remove(i);
                done.finish(errors);
            } else {
                i += 1;
            }
        }
        if inputs.is_empty() && !inbox_open {
            break;
        }
        if checked_idle.elapsed() >= Duration::from_millis(250) {
            checked_idle = std::time::Instant::now();
            let now_ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            for i in inputs.iter_mut() {
                if let Some(period) = i.live_period_ns
                    && i.consumer.peek().is_none()
                    && i.series.complete_if_period_over(period, now_ns, grace_ns)
                {
                    i.publish(errors);
                }
            }
        }
        if progressed {
            idle = 0;
        } else {
            idle = idle.saturating_add(1);
            if idle < 100 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}
