//! The writer threads: each drains the rings of its share of (job, queue)
//! series into their file series.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use linecap_dataplane::ring::Consumer;
use linecap_writer::series::{FileSeries, SeriesCounters};

/// What a writer thread drains for one queue of one job.
pub(super) struct WriterInput {
    pub(super) consumer: Consumer,
    pub(super) series: FileSeries,
    /// Where it publishes the series' counters.
    pub(super) counters: Arc<Mutex<SeriesCounters>>,
    /// Index of the (job, queue) report its errors go to.
    pub(super) report: usize,
    /// Live queue with time rotation (-G): the period in ns. An idle live
    /// link sends no packet of the next period to complete the file, so
    /// the writer completes it once the period is over (plus a grace).
    pub(super) live_period_ns: Option<u64>,
}

impl WriterInput {
    /// Publish the counters and keep the series' error, if any.
    fn publish(&mut self, errors: &Mutex<Vec<(usize, String)>>) {
        if let Some(e) = self.series.take_error() {
            errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((self.report, format!("writer: {e}")));
        }
        *self.counters.lock().unwrap_or_else(|e| e.into_inner()) = *self.series.counters();
    }
}

/// Drain the rings of this writer's queues into their file series until
/// every producer has closed its ring and every batch is written.
pub(super) fn writer_loop(
    mut inputs: Vec<WriterInput>,
    errors: &Mutex<Vec<(usize, String)>>,
    rotate_gen: &AtomicU64,
    delay: Option<Duration>,
    grace_ns: u64,
) {
    let mut idle: u32 = 0;
    let mut seen_gen = 0;
    let mut checked_idle = std::time::Instant::now();
    loop {
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
        let mut all_finished = true;
        for WriterInput {
            consumer,
            series,
            counters,
            report,
            ..
        } in inputs.iter_mut()
        {
            // Bound the work per queue per pass so one busy queue cannot starve the others.
            for _ in 0..consumer.capacity() {
                let Some(batch) = consumer.peek() else { break };
                let meta = *batch.meta;
                if series.write_batch(&meta, batch.records).is_err()
                    && let Some(e) = series.take_error()
                {
                    let mut errs = errors.lock().unwrap_or_else(|e| e.into_inner());
                    // Keep the first few messages; the counters carry the rest.
                    if errs.iter().filter(|(r, _)| r == report).count() < 5 {
                        errs.push((*report, format!("writer: {e}")));
                    }
                }
                consumer.release();
                if let Some(d) = delay {
                    std::thread::sleep(d);
                }
                progressed = true;
            }
            *counters.lock().unwrap_or_else(|e| e.into_inner()) = *series.counters();
            all_finished &= consumer.is_finished();
        }
        if all_finished {
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
    for WriterInput {
        series,
        counters,
        report,
        ..
    } in inputs.iter_mut()
    {
        if let Err(e) = series.close_current() {
            errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((*report, format!("closing the last file: {e}")));
        }
        *counters.lock().unwrap_or_else(|e| e.into_inner()) = *series.counters();
    }
}
