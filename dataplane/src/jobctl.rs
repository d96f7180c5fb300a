//! Capture jobs added and removed while a worker runs (the control API).
//!
//! The supervisor (an API thread, never a capture core) sends each worker a
//! [`LaneCommand`] through a bounded channel, then bumps one shared
//! [`AtomicU64`] epoch. A worker reads the epoch once per burst, at the burst
//! boundary (one relaxed load: the capture path takes no lock); when it has
//! moved, the worker applies what is in its mailbox and stores the epoch it
//! has reached into its own `applied` counter. The supervisor waits until
//! every worker has applied the epoch before it answers: from then on every
//! frame a worker polls goes through the new set of jobs.
//!
//! A removed job's lane commits its last batch and closes its ring: the
//! writer drains it, completes the job's last file and ends the series.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use crate::counters::SharedCounters;
use crate::ring::Producer;
use crate::worker::{MAX_JOBS, Policies};

/// What the supervisor asks a running worker to do, at a burst boundary.
// Sent a few times per job change, moved (not copied per packet): a Box would
// only move the free onto the capture core.
#[allow(clippy::large_enum_variant)]
pub enum LaneCommand {
    /// Start job `job` on this queue: its ring, its counters, its policies.
    Add {
        /// The job's id (stable for its lifetime; never reused while it runs).
        job: u32,
        /// The producer side of the job's ring for this queue.
        producer: Producer,
        /// Where the lane publishes its counters.
        shared: Arc<SharedCounters>,
        /// The job's policies, built for this worker.
        policies: Policies,
    },
    /// Stop job `job`: commit its last batch, publish its counters, close its ring.
    Remove {
        /// The job's id.
        job: u32,
    },
}

/// The worker's side: its mailbox and the epochs.
pub struct LaneControl {
    pub(crate) inbox: Receiver<LaneCommand>,
    pub(crate) epoch: Arc<AtomicU64>,
    pub(crate) applied: Arc<AtomicU64>,
    pub(crate) seen: u64,
}

/// The supervisor's side of one worker's mailbox.
pub struct LaneSender {
    outbox: SyncSender<LaneCommand>,
    applied: Arc<AtomicU64>,
}

impl LaneSender {
    /// Queue a command for the worker (applied after the next epoch bump).
    /// Fails when the worker is gone or its mailbox is full.
    #[allow(clippy::result_large_err)] // the command comes back to its sender, rarely
    pub fn send(&self, cmd: LaneCommand) -> Result<(), LaneCommand> {
        self.outbox.try_send(cmd).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(c)
            | std::sync::mpsc::TrySendError::Disconnected(c) => c,
        })
    }

    /// The epoch whose commands the worker has applied.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }
}

/// The epoch every worker of a capture reads.
#[derive(Clone, Default)]
pub struct Epoch(Arc<AtomicU64>);

impl Epoch {
    /// A fresh epoch at 0.
    pub fn new() -> Self {
        Epoch::default()
    }

    /// Publish the commands sent so far; returns the new epoch to wait for.
    pub fn bump(&self) -> u64 {
        self.0.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// One mailbox for a worker: the worker's end and the supervisor's.
    pub fn mailbox(&self) -> (LaneControl, LaneSender) {
        // Each command is one job on this queue: at most MAX_JOBS can be pending.
        let (tx, rx) = sync_channel(MAX_JOBS);
        let applied = Arc::new(AtomicU64::new(self.0.load(Ordering::Acquire)));
        (
            LaneControl {
                inbox: rx,
                epoch: self.0.clone(),
                applied: applied.clone(),
                seen: self.0.load(Ordering::Acquire),
            },
            LaneSender {
                outbox: tx,
                applied,
            },
        )
    }
}

impl LaneControl {
    /// The epoch, if it has moved since the worker last applied one.
    #[inline]
    pub(crate) fn moved(&self) -> Option<u64> {
        let e = self.epoch.load(Ordering::Acquire);
        (e != self.seen).then_some(e)
    }

    /// The next pending command, if any.
    pub(crate) fn next(&self) -> Option<LaneCommand> {
        // Empty or disconnected (the supervisor is gone): nothing to do.
        self.inbox.try_recv().ok()
    }

    /// Record that every command up to `epoch` is applied.
    pub(crate) fn applied(&mut self, epoch: u64) {
        self.seen = epoch;
        self.applied.store(epoch, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::ring::{Consumer, HugePages, RingConfig, ring};
    use crate::source::{Frame, FrameSink, RxQueue, RxStatus, SourceDrops};
    use crate::worker::{Worker, WorkerConfig};

    /// A source that hands out `per_poll` 60-byte frames per poll, frame
    /// `n` being `make(n)`, until `total`.
    struct Numbered {
        next: u32,
        total: u32,
        per_poll: u32,
        make: fn(u32) -> [u8; 60],
    }

    /// A frame with its number in the first 4 bytes.
    fn numbered(n: u32) -> [u8; 60] {
        let mut buf = [0u8; 60];
        buf[..4].copy_from_slice(&n.to_be_bytes());
        buf
    }

    impl RxQueue for Numbered {
        fn poll_burst<S: FrameSink>(&mut self, _max: usize, sink: &mut S) -> RxStatus {
            if self.next >= self.total {
                return RxStatus::Ended;
            }
            let end = (self.next + self.per_poll).min(self.total);
            let n = end - self.next;
            while self.next < end {
                let buf = (self.make)(self.next);
                sink.frame(Frame {
                    data: &buf,
                    wire_len: 60,
                    ts_ns: 1_000_000_000 + u64::from(self.next),
                });
                self.next += 1;
            }
            RxStatus::Frames(n as usize)
        }
        fn drops(&self) -> SourceDrops {
            SourceDrops::default()
        }
    }

    /// A worker with one job (its ring's consumer returned) that takes
    /// commands from a mailbox.
    fn controlled_worker() -> (Worker, Consumer, Epoch, LaneSender) {
        let (p0, c0) = rings();
        let epoch = Epoch::new();
        let (control, sender) = epoch.mailbox();
        let w = Worker::new(
            WorkerConfig::new(0),
            p0,
            Arc::new(SharedCounters::default()),
        )
        .with_control(control);
        (w, c0, epoch, sender)
    }

    fn rings() -> (Producer, Consumer) {
        ring(RingConfig {
            slots: 8,
            batch_bytes: 64 * 1024,
            hugepages: HugePages::Never,
        })
        .unwrap()
    }

    /// The frame numbers in every batch the consumer holds.
    fn numbers(c: &mut Consumer) -> Vec<u32> {
        frames(c)
            .iter()
            .map(|f| u32::from_be_bytes(f[..4].try_into().unwrap()))
            .collect()
    }

    #[test]
    fn a_job_added_and_removed_between_bursts_sees_exactly_the_frames_in_between() {
        let (p0, mut c0) = rings();
        let shared0 = Arc::new(SharedCounters::default());
        let epoch = Epoch::new();
        let (control, sender) = epoch.mailbox();
        let mut w = Worker::new(WorkerConfig::new(0), p0, shared0.clone()).with_control(control);
        let mut rx = Numbered {
            next: 0,
            total: 300,
            per_poll: 10,
            make: numbered,
        };
        let clock = ManualClock::default();
        for _ in 0..5 {
            w.poll_once(&mut rx, &clock);
        }
        // Add job 7 after frame 49: it must see frames 50..150 exactly.
        let (p1, mut c1) = rings();
        let shared1 = Arc::new(SharedCounters::default());
        assert!(
            sender
                .send(LaneCommand::Add {
                    job: 7,
                    producer: p1,
                    shared: shared1.clone(),
                    policies: Policies::default(),
                })
                .is_ok()
        );
        let e = epoch.bump();
        assert_ne!(sender.applied(), e, "applied only at the next burst");
        for _ in 0..10 {
            w.poll_once(&mut rx, &clock);
        }
        assert_eq!(sender.applied(), e);
        assert!(sender.send(LaneCommand::Remove { job: 7 }).is_ok());
        let e = epoch.bump();
        while rx.next < rx.total {
            w.poll_once(&mut rx, &clock);
        }
        assert_eq!(sender.applied(), e);
        w.finish(&mut rx);
        assert_eq!(numbers(&mut c1), (50..150).collect::<Vec<_>>());
        assert!(c1.is_finished(), "the removed job's ring is closed");
        assert_eq!(numbers(&mut c0), (0..300).collect::<Vec<_>>());
        // The added job counts from when it joined: seen = written.
        let j = shared1.snapshot();
        assert_eq!((j.rx_packets, j.ring_packets), (100, 100));
        let q = shared0.snapshot();
        assert_eq!((q.rx_packets, q.ring_packets), (300, 300));
    }

    /// IPv4/UDP frame `n`: 10.0.0.1:1000 -> 10.0.0.2:(2000 + n).
    fn udp_frame(n: u32) -> [u8; 60] {
        let mut f = [0u8; 60];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&46u16.to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&1000u16.to_be_bytes());
        f[36..38].copy_from_slice(&(2000 + n as u16).to_be_bytes());
        f[38..40].copy_from_slice(&26u16.to_be_bytes());
        f
    }

    /// The frames of every batch the consumer holds.
    fn frames(c: &mut Consumer) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(b) = c.peek() {
            let mut off = 0;
            while off < b.records.len() {
                let rlen = u16::from_be_bytes([b.records[off + 10], b.records[off + 11]]) as usize;
                out.push(b.records[off + 18..off + rlen].to_vec());
                off += rlen;
            }
            c.release();
        }
        out
    }

    #[test]
    fn a_job_added_at_runtime_gets_its_parse_dependent_policies() {
        // The worker starts with one job that needs no parse (its fast path);
        // a job added later anonymises addresses and samples one flow in 4:
        // both need the parse, so the worker must turn it on for the new job.
        use crate::policy::anon::AnonMode;
        use crate::policy::cryptopan::CryptoPan;
        use crate::policy::sample::{SamplePolicy, Sampler};
        let (mut w, mut c0, epoch, sender) = controlled_worker();
        let mut rx = Numbered {
            next: 0,
            total: 400,
            per_poll: 10,
            make: udp_frame,
        };
        let clock = ManualClock::default();
        w.poll_once(&mut rx, &clock);
        let policies = |flows: bool| Policies {
            anonymize: Some((CryptoPan::new(&[7u8; 32]), AnonMode::Both)),
            sampler: flows
                .then(|| Sampler::new(SamplePolicy::FlowsOneIn { n: 4, seed: 9 }).unwrap()),
            ..Policies::default()
        };
        let (p1, mut c1) = rings();
        let (p2, mut c2) = rings();
        for (job, producer, flows) in [(1, p1, false), (2, p2, true)] {
            let cmd = LaneCommand::Add {
                job,
                producer,
                shared: Arc::new(SharedCounters::default()),
                policies: policies(flows),
            };
            assert!(sender.send(cmd).is_ok());
        }
        epoch.bump();
        while rx.next < rx.total {
            w.poll_once(&mut rx, &clock);
        }
        w.finish(&mut rx);
        let plain = frames(&mut c0);
        assert_eq!(plain.len(), 400);
        assert_eq!(plain[0].as_slice(), udp_frame(0).as_slice());
        // Job 1 saw frames 10.. (added after the first burst), every address
        // rewritten.
        let anon = frames(&mut c1);
        assert_eq!(anon.len(), 390);
        for f in &anon {
            assert_ne!(
                &f[26..30],
                &[10, 0, 0, 1],
                "source address written in clear"
            );
            assert_ne!(
                &f[30..34],
                &[10, 0, 0, 2],
                "destination address written in clear"
            );
        }
        // Job 2 kept whole flows: the flows it kept are exactly those the
        // flow rule picks for its frames (each port pair is one flow here).
        let sampler = Sampler::new(SamplePolicy::FlowsOneIn { n: 4, seed: 9 }).unwrap();
        let want = (10..400)
            .filter(|&n| {
                let f = udp_frame(n);
                match linecap_wire::flow::parse_frame(&f) {
                    linecap_wire::flow::Parsed::Ip(info) => sampler.keep_flow(&info.key),
                    _ => false,
                }
            })
            .count();
        assert!(want > 0 && want < 390, "the rule picks some flows: {want}");
        assert_eq!(frames(&mut c2).len(), want);
    }

    #[test]
    fn removing_an_unknown_job_changes_nothing_and_is_still_applied() {
        let (mut w, mut c0, epoch, sender) = controlled_worker();
        let mut rx = Numbered {
            next: 0,
            total: 20,
            per_poll: 10,
            make: numbered,
        };
        assert!(sender.send(LaneCommand::Remove { job: 3 }).is_ok());
        let e = epoch.bump();
        let clock = ManualClock::default();
        w.poll_once(&mut rx, &clock);
        w.poll_once(&mut rx, &clock);
        w.finish(&mut rx);
        assert_eq!(sender.applied(), e);
        assert_eq!(numbers(&mut c0).len(), 20);
    }
}
