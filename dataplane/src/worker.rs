//! The per-queue worker: burst loop, per-packet pipeline, ERF batcher.
//!
//! One worker serves one queue on one core. It owns the producer side of its
//! queue's ring and writes ERF records straight into the ring slot it holds;
//! a full slot (or one older than the flush tick) is committed to the writer.
//! When no slot is free the frame is dropped and counted (`ring_full`), and
//! the loss is carried in the `lctr` of the next record written, so it is
//! visible in the data itself. Nothing here allocates, formats, logs or
//! returns a `Result` per packet.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use linecap_wire::batch::{BatchMeta, batch_flags};
use linecap_wire::erf::{self, ETH_RECORD_OVERHEAD, FRAME_MAX};
use linecap_wire::flow::{self, PacketInfo, Parsed};

use crate::clock::Clock;
use crate::counters::{SharedCounters, WorkerCounters};
use crate::flowtable::{
    BurstPacket, EXPIRE_STEP_BUCKETS, FlowCounters, FlowRecord, FlowTable, KeyHash, NO_SLOT, WAYS,
};
use crate::jobctl::{LaneCommand, LaneControl};
use crate::policy::anon::AnonMode;
use crate::policy::bpf::Filter;
use crate::policy::cryptopan::CryptoPan;
use crate::policy::macpseudo::MacPseudonyms;
use crate::policy::sample::Sampler;
use crate::policy::snaplen::{Snaplen, kept_len};
use crate::ring::Producer;
use crate::source::{Frame, FrameSink, RxQueue, RxStatus};

/// What a worker needs to know, fixed at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Queue number (goes into every batch).
    pub queue: u32,
    /// ERF interface number (0-3) written into every record.
    pub iface: u8,
    /// Frames asked from the source per poll.
    pub burst_max: usize,
    /// A partly filled batch older than this is handed to the writer.
    pub flush_after_ns: u64,
    /// Cut batches where packet time crosses a multiple of this period, so
    /// the writer can start files exactly on time-rotation boundaries.
    pub rotate_every_ns: Option<u64>,
    /// When the ring is full: `None` drops the frame and counts it (live
    /// queues: the NIC will not wait); `Some(t)` waits up to `t` ns for the
    /// writer to free a slot before dropping (offline sources, where the
    /// file is the buffer and replay should be lossless).
    pub backpressure_ns: Option<u64>,
}

impl WorkerConfig {
    /// Defaults for `queue`: burst 64, flush after 100 ms, no time cuts.
    pub fn new(queue: u32) -> Self {
        WorkerConfig {
            queue,
            iface: 0,
            burst_max: 64,
            flush_after_ns: 100_000_000,
            rotate_every_ns: None,
            backpressure_ns: None,
        }
    }
}

/// How often outside counters (kernel socket statistics) are re-read.
const STATS_REFRESH_NS: u64 = 100_000_000;
/// Upper bound of polls when draining a live queue after a stop.
const DRAIN_POLLS_MAX: usize = 100_000;

/// Why the worker loop returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerExit {
    /// The source ended.
    SourceEnded,
    /// The stop flag was raised.
    Stopped,
}

/// Where a worker hands the flow records its table ends (an exporter's
/// non-blocking queue). Called per record, never per packet.
pub type FlowSink = Box<dyn FnMut(&FlowRecord) + Send>;

/// The queue's own flow table and where its records go.
struct Flows {
    table: FlowTable,
    sink: FlowSink,
    /// Monotonic time the counters were last published.
    published_ns: u64,
    /// Whether the table's pages were faulted in on this thread yet.
    touched: bool,
    /// Packet time and monotonic time of the last frame (to advance the
    /// packet clock while a live queue is idle).
    last_packet_ns: u64,
    last_packet_mono_ns: u64,
    shared: Arc<std::sync::Mutex<FlowCounters>>,
    /// This burst's IP packets in the table's form; each one's bucket line
    /// is prefetched when it is queued. Capacity fixed at start-up (the
    /// burst size), flushed early if a source hands more.
    pending: Burst,
    /// The previous burst's packets, staged (their slots found and
    /// prefetched) at the end of that burst and applied at the end of this
    /// one: the table lags the frames by one burst so its DRAM misses
    /// overlap a burst of other work (issue 19). Flushed when the queue is
    /// idle or ends, and at finish.
    staged: Burst,
    /// The slots `FlowTable::stage` found for `staged`.
    staged_slots: Vec<u32>,
    /// Scratch for staging `pending` (same capacity).
    pending_slots: Vec<u32>,
    /// How many buckets the expiry cursor visits a burst.
    sweep: ExpiryPace,
}

/// Packet time of one round of the expiry cursor over the table when the
/// queue is busy enough (the old full sweep ran once a second too).
pub const EXPIRE_SWEEP_NS: u64 = 1_000_000_000;

/// The expiry cursor's pace (issue 19 item 3): one round of the table per
/// [`EXPIRE_SWEEP_NS`] of packet time, but never less than one bucket a
/// burst nor more than [`EXPIRE_STEP_BUCKETS`]. At 1 M flows and 14 Mpps
/// four buckets every burst went round the table three times a second,
/// its 32 hot lines a burst a tenth of the worker's DRAM misses
/// (`docs/benchmarks.md`, 2026-12-04); at low rates the step is what it
/// was, so a flow still ends at most one round after it is due.
#[derive(Debug, Default, Clone, Copy)]
struct ExpiryPace {
    /// Packet time up to which the round is paid for (`None` before the
    /// first burst).
    paid_ns: Option<u64>,
}

impl ExpiryPace {
    /// Buckets to visit now, at packet time `now_ns`, of a table of
    /// `buckets` buckets.
    #[inline(always)]
    fn step(&mut self, now_ns: u64, buckets: usize) -> usize {
        let per_bucket = (EXPIRE_SWEEP_NS / buckets.max(1) as u64).max(1);
        // The first burst starts the round; a backlog beyond one round buys
        // nothing (the step is capped).
        let paid = self
            .paid_ns
            .unwrap_or(now_ns)
            .max(now_ns.saturating_sub(EXPIRE_SWEEP_NS));
        let due = now_ns.saturating_sub(paid) / per_bucket;
        let n = (due.min(EXPIRE_STEP_BUCKETS as u64) as usize).max(1);
        self.paid_ns = Some(paid + n as u64 * per_bucket);
        n
    }
}

/// What a capture job keeps of each frame (issue 8's policies), applied in
/// the worker in this order: filter → parse (once per frame, shared by the
/// jobs) → sample → flow table (first job only) → snaplen → ERF record →
/// anonymise and pseudonymise MACs (in the ring slot: the source's frame is
/// read-only).
#[derive(Default)]
pub struct Policies {
    /// tcpdump-syntax filter, compiled by libpcap, run by the cBPF interpreter.
    pub filter: Option<Filter>,
    /// Which frames to keep.
    pub sampler: Option<Sampler>,
    /// Keep the first N bytes of each frame.
    pub snaplen: Option<Snaplen>,
    /// Crypto-PAn key and which addresses to rewrite.
    pub anonymize: Option<(CryptoPan, AnonMode)>,
    /// Replace unicast MAC addresses by keyed pseudonyms.
    pub mac_pseudonyms: Option<MacPseudonyms>,
}

/// How often the flow table's counters are published (monotonic time).
/// Expiry itself runs a bounded step per burst ([`FlowTable::expire_step`]).
const FLOW_PUBLISH_NS: u64 = 1_000_000_000;

/// Most capture jobs one worker serves (a bound fixed at build time: every
/// job costs a ring and a file series per queue).
pub const MAX_JOBS: usize = 16;

/// One capture job's output side in a worker: its policies, its ring, the
/// batch it is filling, and its counters. Every job sees every frame the
/// queue receives; its accounting is separate and exact.
struct Lane {
    /// The capture job's id (its index at start-up; the control API numbers
    /// jobs it adds after those).
    job: u32,
    /// Queue-level counters when the job joined the queue (zero for the jobs
    /// of the start): a job added at runtime counts from then on.
    base: WorkerCounters,
    producer: Producer,
    /// The job's counters; the queue-level fields (rx, source drops) are
    /// copied in from the worker's when published.
    local: WorkerCounters,
    shared: Arc<SharedCounters>,
    policies: Policies,
    /// Bytes used in the held slot.
    fill: usize,
    batch_bytes: usize,
    next_seq: u64,
    /// Monotonic time the held batch was started.
    batch_started_ns: u64,
    lost_since_record: u64,
    lost_since_batch: u64,
    /// Backpressure gave up waiting: drop (and count) until a slot frees.
    stalled: bool,
    /// Next packet-time rotation boundary (0 = not yet known; `u64::MAX`
    /// without rotation): [`Lane::record`]'s common way takes frames
    /// stamped below it.
    next_boundary_ns: u64,
    rotate_pending: bool,
    /// [`Lane::record`]'s common way takes frames of at most this many
    /// bytes ([`Lane::set_plain_limits`]; 0 when the job rewrites frames:
    /// such a frame of 0 bytes has nothing to rewrite).
    plain_len_max: usize,
    /// The last frame's stamp in ns and as ERF's 32.32 fixed point: frames
    /// of one burst often share a stamp (the synthetic source, DPDK with
    /// `--dpdk-timestamps burst`), converted once (issue 19 item 4).
    erf_ts: (u64, u64),
}

impl Lane {
    fn new(producer: Producer, shared: Arc<SharedCounters>, policies: Policies) -> Self {
        let batch_bytes = producer.batch_bytes();
        let mut lane = Lane {
            job: 0,
            base: WorkerCounters::default(),
            producer,
            local: WorkerCounters::default(),
            shared,
            policies,
            fill: 0,
            batch_bytes,
            next_seq: 0,
            batch_started_ns: 0,
            lost_since_record: 0,
            lost_since_batch: 0,
            stalled: false,
            next_boundary_ns: 0,
            rotate_pending: false,
            erf_ts: (0, erf::ns_to_ts(0)),
            plain_len_max: 0,
        };
        lane.set_plain_limits();
        lane
    }

    /// Hand the held batch (if any, and not empty) to the writer.
    fn commit(&mut self) {
        if !self.producer.holds_slot() {
            return;
        }
        let fill = self.fill as u64;
        let (meta, _) = self.producer.slot_mut();
        meta.records_len = fill;
        let packets = meta.packets;
        self.producer.commit();
        self.fill = 0;
        self.local.batches += 1;
        self.local.ring_packets += packets;
    }

    fn start_batch(&mut self, cfg: &WorkerConfig, now_ns: u64, abort: Option<&AtomicBool>) -> bool {
        if !self.producer.acquire() && !self.wait_for_slot(cfg, abort) {
            return false;
        }
        self.stalled = false;
        let flags = if self.rotate_pending {
            batch_flags::ROTATE_BEFORE
        } else {
            0
        };
        if self.rotate_pending {
            // The writer starts a new file with this batch: its records go
            // at phase 0 of the slot (see `ring`, "records at the file's phase").
            self.producer.start_file();
        }
        self.rotate_pending = false;
        let meta = BatchMeta {
            queue: cfg.queue,
            flags,
            seq: self.next_seq,
            lost_before: self.lost_since_batch,
            ..BatchMeta::default()
        };
        *self.producer.slot_mut().0 = meta;
        self.next_seq += 1;
        self.lost_since_batch = 0;
        self.fill = 0;
        self.batch_started_ns = now_ns;
        true
    }

    /// Backpressure mode: wait (spin, yield, then sleep) for a free slot, at
    /// most `backpressure_ns` once; after a timeout the lane is *stalled*
    /// and drops (counted) without waiting until the writer frees a slot.
    #[cold]
    fn wait_for_slot(&mut self, cfg: &WorkerConfig, abort: Option<&AtomicBool>) -> bool {
        let Some(limit_ns) = cfg.backpressure_ns else {
            return false;
        };
        if self.stalled {
            return false;
        }
        let aborted = || abort.is_some_and(|f| f.load(Ordering::Relaxed));
        let start = std::time::Instant::now();
        let mut polls: u32 = 0;
        while (start.elapsed().as_nanos() as u64) < limit_ns && !aborted() {
            polls = polls.saturating_add(1);
            idle_wait(polls, false);
            if self.producer.acquire() {
                self.local.backpressure_waits += 1;
                return true;
            }
        }
        self.stalled = true;
        false
    }

    #[inline(always)]
    fn drop_ring_full(&mut self, wire_len: u32) {
        self.local.ring_full_packets += 1;
        self.local.ring_full_bytes += wire_len as u64;
        self.lost_since_record += 1;
        self.lost_since_batch += 1;
    }

    /// Write one kept frame as an ERF record into the held batch (snaplen,
    /// time cuts, anonymisation); drop and count it if no slot is free.
    ///
    /// The common frame (issue 19 item 4: the record path chosen once) is
    /// written here inline: it needs no cut, crosses no rotation boundary,
    /// carries no loss in its `lctr`, fits the held batch, and its job
    /// rewrites nothing. Every other frame takes [`Lane::record_general`].
    #[inline(always)]
    fn record(
        &mut self,
        frame: &Frame<'_>,
        info: Option<&PacketInfo>,
        cfg: &WorkerConfig,
        now_ns: u64,
        abort: Option<&AtomicBool>,
    ) {
        let len = frame.data.len();
        if len <= self.plain_len_max
            && frame.ts_ns < self.next_boundary_ns
            && self.lost_since_record == 0
            && self.producer.holds_slot()
            && self.fill + ETH_RECORD_OVERHEAD + len <= self.batch_bytes
        {
            self.write(frame.data, frame, cfg.iface, 0, 0);
        } else {
            self.record_general(frame, info, cfg, now_ns, abort);
        }
    }

    /// [`Lane::record`] for every frame the common way does not take.
    #[inline(never)]
    fn record_general(
        &mut self,
        frame: &Frame<'_>,
        info: Option<&PacketInfo>,
        cfg: &WorkerConfig,
        now_ns: u64,
        abort: Option<&AtomicBool>,
    ) {
        let mut extra_flags = 0;
        let keep = kept_len(self.policies.snaplen, frame.data.len());
        let data = if keep > FRAME_MAX {
            self.local.frames_cut += 1;
            extra_flags = erf::flags::TRUNC;
            &frame.data[..FRAME_MAX]
        } else {
            &frame.data[..keep]
        };

        match cfg.rotate_every_ns {
            Some(period) if frame.ts_ns >= self.next_boundary_ns => {
                if self.next_boundary_ns != 0 {
                    self.commit();
                    self.rotate_pending = true;
                }
                self.next_boundary_ns = (frame.ts_ns / period + 1) * period;
            }
            Some(_) => {}
            None => self.next_boundary_ns = u64::MAX,
        }

        let need = ETH_RECORD_OVERHEAD + data.len();
        if self.producer.holds_slot() && self.fill + need > self.batch_bytes {
            self.commit();
        }
        if !self.producer.holds_slot() && !self.start_batch(cfg, now_ns, abort) {
            self.drop_ring_full(frame.wire_len);
            return;
        }

        // A loss above what one lctr holds is carried on into the next
        // records, so the sum of the lctr fields always equals the loss.
        let lctr = self.lost_since_record.min(u16::MAX as u64) as u16;
        self.lost_since_record -= u64::from(lctr);
        let at = self.fill;
        self.write(data, frame, cfg.iface, extra_flags, lctr);
        let rec = &mut self.producer.slot_mut().1[at + ETH_RECORD_OVERHEAD..at + need];
        if let (Some((pan, mode)), Some(info)) = (self.policies.anonymize.as_mut(), info) {
            pan.anonymize_frame(rec, info, *mode);
        }
        if let Some(m) = self.policies.mac_pseudonyms.as_mut() {
            m.rewrite_frame(rec);
        }
    }

    /// Append `data` (the kept part of `frame`) as one ERF record to the
    /// held batch, which has room for it.
    #[inline(always)]
    fn write(&mut self, data: &[u8], frame: &Frame<'_>, iface: u8, extra_flags: u8, lctr: u16) {
        let need = ETH_RECORD_OVERHEAD + data.len();
        if frame.ts_ns != self.erf_ts.0 {
            self.erf_ts = (frame.ts_ns, erf::ns_to_ts(frame.ts_ns));
        }
        let fill = self.fill;
        let (meta, buf) = self.producer.slot_mut();
        let rec = &mut buf[fill..fill + need];
        erf::write_eth_header_ts(
            rec,
            self.erf_ts.1,
            iface,
            extra_flags,
            data.len(),
            frame.wire_len,
            lctr,
        );
        rec[ETH_RECORD_OVERHEAD..].copy_from_slice(data);
        if meta.packets == 0 {
            meta.first_ts_ns = frame.ts_ns;
        }
        meta.last_ts_ns = frame.ts_ns;
        meta.packets += 1;
        meta.bytes_wire += frame.wire_len as u64;
        meta.bytes_captured += data.len() as u64;
        self.fill = fill + need;
    }

    /// Set what [`Lane::record`]'s common way allows from the policies:
    /// frames up to the snaplen and to what a record holds, none when the
    /// job rewrites frames (anonymisation, MAC pseudonyms).
    fn set_plain_limits(&mut self) {
        let p = &self.policies;
        self.plain_len_max = if p.anonymize.is_some() || p.mac_pseudonyms.is_some() {
            0
        } else {
            kept_len(p.snaplen, FRAME_MAX)
        };
    }

    /// Publish the lane's counters with the queue-level fields of `queue`.
    fn publish(&mut self, queue: &WorkerCounters) {
        self.local.lctr_pending = self.lost_since_record;
        copy_queue_fields(&mut self.local, queue, &self.base);
        self.shared.publish(&self.local);
    }
}

/// Copy the queue-level counters (received, source and NIC drops: the same
/// for every job of the queue) into a job's counters, counted from `base`
/// (the queue's values when the job joined it).
fn copy_queue_fields(job: &mut WorkerCounters, queue: &WorkerCounters, base: &WorkerCounters) {
    job.rx_packets = queue.rx_packets - base.rx_packets;
    job.rx_bytes = queue.rx_bytes - base.rx_bytes;
    job.rx_captured_bytes = queue.rx_captured_bytes - base.rx_captured_bytes;
    job.source_unsupported = queue.source_unsupported - base.source_unsupported;
    job.source_nic = queue.source_nic - base.source_nic;
    job.nic_imissed = queue.nic_imissed - base.nic_imissed;
    job.nic_ierrors = queue.nic_ierrors - base.nic_ierrors;
    job.nic_rx_nombuf = queue.nic_rx_nombuf - base.nic_rx_nombuf;
    job.nic_iface_dropped = queue.nic_iface_dropped - base.nic_iface_dropped;
    job.nic_iface_rx_packets = queue.nic_iface_rx_packets - base.nic_iface_rx_packets;
    job.nic_port_rx_packets = queue.nic_port_rx_packets - base.nic_port_rx_packets;
    job.nic_queue_dropped = queue.nic_queue_dropped - base.nic_queue_dropped;
    job.nic_socket_dropped = queue.nic_socket_dropped - base.nic_socket_dropped;
    job.nic_socket_packets = queue.nic_socket_packets - base.nic_socket_packets;
    job.lctr_outside = queue.lctr_outside - base.lctr_outside;
}

/// One queue's worker: one source, one optional flow table, and one lane
/// (ring, batch, policies, counters) per capture job.
pub struct Worker {
    cfg: WorkerConfig,
    /// Queue-level counters (rx, source drops).
    queue: WorkerCounters,
    lanes: Vec<Lane>,
    /// Monotonic time read once per burst.
    now_ns: u64,
    /// Monotonic time the source's outside counters were last refreshed.
    refreshed_ns: u64,
    /// Raised to abandon a backpressure wait (the capture is stopping).
    abort: Option<Arc<AtomicBool>>,
    /// The queue's flow table, when flow tracking is on (fed by the first job).
    flows: Option<Flows>,
    /// Whether anything needs the parse (flow table, flow sampling,
    /// anonymisation); chosen when the worker is built, not per frame.
    parse: bool,
    /// Jobs added and removed at runtime (the control API), read per burst.
    control: Option<LaneControl>,
    /// Loss on this queue counted outside the worker (AF_XDP: the XDP
    /// program's `not_redirected`, the interface's drops), read on the
    /// stats tick and folded into the next record's `lctr`.
    outside_loss: Option<OutsideLoss>,
    /// Its latest reading.
    outside_now: u64,
}

/// Reads a queue's loss counted outside the worker (monotonic, frames).
pub type OutsideLoss = Box<dyn Fn() -> u64 + Send>;

impl Worker {
    /// A worker with one job writing into `producer` and publishing into
    /// `shared`.
    pub fn new(cfg: WorkerConfig, producer: Producer, shared: Arc<SharedCounters>) -> Self {
        let mut lanes = Vec::with_capacity(MAX_JOBS);
        lanes.push(Lane::new(producer, shared, Policies::default()));
        Worker {
            cfg,
            queue: WorkerCounters::default(),
            lanes,
            now_ns: 0,
            refreshed_ns: 0,
            abort: None,
            flows: None,
            parse: false,
            control: None,
            outside_loss: None,
            outside_now: 0,
        }
    }

    /// Fold the loss `probe` reads (counted outside the worker, e.g. by the
    /// supervisor from the XDP program's map and the interface's counters;
    /// it must only grow) into the `lctr` of the queue's next records. Read
    /// on the stats tick and at the end, never per packet.
    pub fn with_outside_loss(mut self, probe: OutsideLoss) -> Self {
        self.outside_loss = Some(probe);
        self
    }

    /// Whether any job or the flow table needs each frame parsed.
    fn needs_parse(&self) -> bool {
        self.flows.is_some()
            || self.lanes.iter().any(|l| {
                l.policies.anonymize.is_some()
                    || l.policies.sampler.as_ref().is_some_and(|s| s.needs_parse())
            })
    }

    /// A flag that, when raised, ends any backpressure wait at once (the
    /// frame is then dropped and counted): give the capture's stop flag so a
    /// stuck writer cannot delay a shutdown.
    pub fn with_abort(mut self, flag: Arc<AtomicBool>) -> Self {
        self.abort = Some(flag);
        self
    }

    /// Apply `policies` to every frame of the first job.
    pub fn with_policies(mut self, policies: Policies) -> Self {
        self.lanes[0].policies = policies;
        self.lanes[0].set_plain_limits();
        self.parse = self.needs_parse();
        self
    }

    /// Add another capture job: it sees every frame the queue receives,
    /// applies its own `policies` and writes into its own ring, publishing
    /// its own counters. At most [`MAX_JOBS`] jobs.
    pub fn with_job(
        mut self,
        producer: Producer,
        shared: Arc<SharedCounters>,
        policies: Policies,
    ) -> Result<Self, Producer> {
        if self.lanes.len() >= MAX_JOBS {
            return Err(producer);
        }
        let mut lane = Lane::new(producer, shared, policies);
        lane.job = self.lanes.len() as u32;
        self.lanes.push(lane);
        self.parse = self.needs_parse();
        Ok(self)
    }

    /// Take capture jobs added and removed while the worker runs from
    /// `control` (read once per burst; see [`crate::jobctl`]).
    pub fn with_control(mut self, control: LaneControl) -> Self {
        self.control = Some(control);
        self
    }

    /// Apply the jobs the supervisor added or removed (at a burst boundary).
    #[cold]
    fn apply_lane_commands(&mut self, epoch: u64) {
        let Some(control) = self.control.as_mut() else {
            return;
        };
        while let Some(cmd) = control.next() {
            match cmd {
                LaneCommand::Add {
                    job,
                    producer,
                    shared,
                    policies,
                } => {
                    // The supervisor never sends more than MAX_JOBS lanes;
                    // a Vec with that capacity does not allocate here.
                    if self.lanes.len() < MAX_JOBS {
                        let mut lane = Lane::new(producer, shared, policies);
                        lane.job = job;
                        lane.base = self.queue;
                        lane.publish(&self.queue);
                        self.lanes.push(lane);
                    }
                }
                LaneCommand::Remove { job } => {
                    if let Some(i) = self.lanes.iter().position(|l| l.job == job) {
                        let mut lane = self.lanes.remove(i);
                        lane.commit();
                        lane.publish(&self.queue);
                        lane.producer.close();
                    }
                }
            }
        }
        control.applied(epoch);
        // A job added (or the last one that needed it removed) changes
        // whether frames are parsed: anonymisation and flow sampling of a
        // job added at runtime need the parse as much as those of the start.
        self.parse = self.needs_parse();
    }

    /// Track flows in `table` (owned by this worker, no sharing) and hand
    /// every record it ends to `sink`; the table's counters are published
    /// into `counters` once per burst. The table sees the frames the first
    /// job keeps (after its filter and sampling).
    pub fn with_flows(
        mut self,
        table: FlowTable,
        sink: FlowSink,
        counters: Arc<std::sync::Mutex<FlowCounters>>,
    ) -> Self {
        self.flows = Some(Flows {
            table,
            sink,
            published_ns: 0,
            touched: false,
            last_packet_ns: 0,
            last_packet_mono_ns: 0,
            shared: counters,
            pending: Burst::new(self.cfg.burst_max.max(1)),
            staged: Burst::new(self.cfg.burst_max.max(1)),
            staged_slots: Vec::with_capacity(self.cfg.burst_max.max(1)),
            pending_slots: Vec::with_capacity(self.cfg.burst_max.max(1)),
            sweep: ExpiryPace::default(),
        });
        self.parse = true;
        self
    }

    /// Fault the flow table's pages in from the calling thread (the
    /// worker's own core), once; the first poll does it if nobody did.
    pub fn prepare(&mut self) {
        if let Some(f) = self.flows.as_mut()
            && !f.touched
        {
            f.table.first_touch();
            f.touched = true;
        }
    }

    /// The first job's counters (exact; the shared copy lags by one burst).
    pub fn counters(&self) -> WorkerCounters {
        self.job_counters(0)
    }

    /// Job `job`'s counters, queue-level fields included.
    pub fn job_counters(&self, job: usize) -> WorkerCounters {
        let lane = &self.lanes[job];
        let mut c = lane.local;
        c.lctr_pending = lane.lost_since_record;
        copy_queue_fields(&mut c, &self.queue, &lane.base);
        c
    }

    /// Run until the source ends or `stop` is raised, then flush the last
    /// batch, publish the counters and close the ring.
    pub fn run<R: RxQueue, C: Clock>(
        &mut self,
        rx: &mut R,
        clock: &C,
        stop: &AtomicBool,
    ) -> WorkerExit {
        let mut idle_polls: u32 = 0;
        let busy = rx.busy_poll();
        let exit = loop {
            if stop.load(Ordering::Relaxed) {
                if rx.drain_on_stop() {
                    // Read what the kernel already queued (bounded), then
                    // stop the queue's inflow and read once more what came
                    // in between, so nothing that reached the queue is
                    // freed uncounted; the final counter read is in finish().
                    self.drain(rx, clock);
                    if rx.stop_inflow() {
                        self.drain(rx, clock);
                    }
                }
                break WorkerExit::Stopped;
            }
            let status = self.poll_once(rx, clock);
            match status {
                RxStatus::Frames(_) => idle_polls = 0,
                RxStatus::Idle => {
                    idle_polls = idle_polls.saturating_add(1);
                    idle_wait(idle_polls, busy);
                }
                RxStatus::Ended => break WorkerExit::SourceEnded,
            }
        };
        self.finish(rx);
        exit
    }

    /// Poll until the queue stays idle for 3 ms (at most DRAIN_POLLS_MAX polls).
    fn drain<R: RxQueue, C: Clock>(&mut self, rx: &mut R, clock: &C) {
        let mut idle = 0;
        for _ in 0..DRAIN_POLLS_MAX {
            match self.poll_once(rx, clock) {
                RxStatus::Frames(_) => idle = 0,
                RxStatus::Idle if idle < 3 => {
                    idle += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                RxStatus::Idle | RxStatus::Ended => break,
            }
        }
    }

    /// One burst: poll the source, flush on the tick, publish counters.
    pub fn poll_once<R: RxQueue, C: Clock>(&mut self, rx: &mut R, clock: &C) -> RxStatus {
        if let Some(epoch) = self.control.as_ref().and_then(LaneControl::moved) {
            self.apply_lane_commands(epoch);
        }
        self.now_ns = clock.now_ns();
        self.prepare();
        let status = match self.lanes.as_mut_slice() {
            // The fast path chosen once (issue 19 item 4): one job and
            // nothing that needs the parse get their own receive loop, the
            // record path inlined into it.
            [lane] if !self.parse => rx.poll_burst(
                self.cfg.burst_max,
                &mut Unparsed {
                    lane,
                    queue: &mut self.queue,
                    cfg: &self.cfg,
                    now_ns: self.now_ns,
                    abort: self.abort.as_deref(),
                },
            ),
            // One job whose only parse-needing policy is the flow table:
            // the common frame's parse, table entry and record inlined too.
            [lane]
                if lane.policies.sampler.is_none()
                    && lane.policies.anonymize.is_none()
                    && let Some(flows) = self.flows.as_mut() =>
            {
                rx.poll_burst(
                    self.cfg.burst_max,
                    &mut Tracked {
                        job: Unparsed {
                            lane,
                            queue: &mut self.queue,
                            cfg: &self.cfg,
                            now_ns: self.now_ns,
                            abort: self.abort.as_deref(),
                        },
                        flows,
                    },
                )
            }
            _ => rx.poll_burst(self.cfg.burst_max, self),
        };
        for lane in self.lanes.iter_mut() {
            if lane.producer.holds_slot()
                && self.now_ns.saturating_sub(lane.batch_started_ns) >= self.cfg.flush_after_ns
            {
                lane.commit();
            }
        }
        if self.now_ns.saturating_sub(self.refreshed_ns) >= STATS_REFRESH_NS {
            self.refreshed_ns = self.now_ns;
            rx.refresh();
            self.read_outside();
        }
        if let Some(f) = self.flows.as_mut() {
            f.after_burst(self.now_ns, status);
        }
        self.publish(rx);
        status
    }

    /// Commit the held batches, end every flow, refresh the source's
    /// counters, publish, and close the rings.
    pub fn finish<R: RxQueue>(&mut self, rx: &mut R) {
        for lane in self.lanes.iter_mut() {
            lane.commit();
        }
        if let Some(f) = self.flows.as_mut() {
            f.flush();
            let Flows { table, sink, .. } = f;
            table.drain(sink);
            f.publish();
        }
        rx.refresh();
        self.read_outside();
        self.publish(rx);
        for lane in self.lanes.iter_mut() {
            lane.producer.close();
        }
    }

    fn read_outside(&mut self) {
        if let Some(p) = &self.outside_loss {
            self.outside_now = self.outside_now.max(p());
        }
    }

    fn publish<R: RxQueue>(&mut self, rx: &R) {
        let drops = rx.drops();
        // issue 14: the source's NIC/socket loss since the last look goes
        // into the lctr of each lane's next record (and its batch's
        // lost_before), like ring-full loss.
        let nic_new = drops.nic.saturating_sub(self.queue.source_nic);
        if nic_new > 0 {
            for lane in self.lanes.iter_mut() {
                lane.lost_since_record += nic_new;
                lane.lost_since_batch += nic_new;
            }
        }
        let outside_new = self.outside_now.saturating_sub(self.queue.lctr_outside);
        if outside_new > 0 {
            for lane in self.lanes.iter_mut() {
                lane.lost_since_record += outside_new;
                lane.lost_since_batch += outside_new;
            }
            self.queue.lctr_outside = self.outside_now;
        }
        self.queue.source_unsupported = drops.unsupported;
        self.queue.source_nic = drops.nic;
        let nic = rx.nic_drops();
        self.queue.nic_imissed = nic.imissed;
        self.queue.nic_ierrors = nic.ierrors;
        self.queue.nic_rx_nombuf = nic.rx_nombuf;
        self.queue.nic_iface_dropped = nic.iface_dropped;
        self.queue.nic_iface_rx_packets = nic.iface_rx_packets;
        self.queue.nic_port_rx_packets = nic.port_rx_packets;
        self.queue.nic_queue_dropped = nic.queue_dropped;
        self.queue.nic_socket_dropped = nic.socket_dropped;
        self.queue.nic_socket_packets = nic.socket_packets;
        for lane in self.lanes.iter_mut() {
            lane.publish(&self.queue);
        }
    }
}

/// The sink of [`Worker::poll_once`]'s fast path: one job, no parse (and,
/// in [`Tracked`], the job of the flows fast path).
struct Unparsed<'a> {
    lane: &'a mut Lane,
    queue: &'a mut WorkerCounters,
    cfg: &'a WorkerConfig,
    now_ns: u64,
    abort: Option<&'a AtomicBool>,
}

impl FrameSink for Unparsed<'_> {
    #[inline(always)]
    fn frame(&mut self, mut frame: Frame<'_>) {
        count_rx(self.queue, &mut frame);
        self.lane
            .keep_unparsed(&frame, self.cfg, self.now_ns, self.abort);
    }
}

/// The sink of [`Worker::poll_once`] for one job whose only parse-needing
/// policy is the flow table (no sampling, no anonymisation).
struct Tracked<'a> {
    job: Unparsed<'a>,
    flows: &'a mut Flows,
}

impl FrameSink for Tracked<'_> {
    #[inline(always)]
    fn frame(&mut self, mut frame: Frame<'_>) {
        let Tracked { job, flows } = self;
        count_rx(job.queue, &mut frame);
        if let Some(f) = &job.lane.policies.filter
            && !f.matches(frame.data, frame.wire_len)
        {
            job.lane.local.filter_packets += 1;
            return;
        }
        // The common frame goes to the table without a PacketInfo
        // (`parse_common`); any other takes the full parse, a call.
        if let Some(c) = flow::parse_common(frame.data) {
            job.lane.local.parsed_ip += 1;
            flows.push_common(&c, &frame, job.now_ns);
            job.lane
                .record(&frame, None, job.cfg, job.now_ns, job.abort);
        } else {
            self.other(&frame);
        }
    }
}

impl Tracked<'_> {
    /// A frame [`flow::parse_common`] did not take.
    #[inline(never)]
    fn other(&mut self, frame: &Frame<'_>) {
        let p = flow::parse_frame(frame.data);
        let mut hash = None;
        let Tracked { job, flows } = self;
        job.lane.keep(
            frame,
            &p,
            &mut hash,
            Some(&mut **flows),
            job.cfg,
            job.now_ns,
            job.abort,
        );
    }
}

/// Count a received frame in the queue's counters, made never shorter on
/// the wire than what was captured of it.
#[inline(always)]
fn count_rx(queue: &mut WorkerCounters, frame: &mut Frame<'_>) {
    frame.wire_len = frame
        .wire_len
        .max(frame.data.len().min(u32::MAX as usize) as u32);
    queue.rx_packets += 1;
    queue.rx_bytes += frame.wire_len as u64;
    queue.rx_captured_bytes += frame.data.len() as u64;
}

impl FrameSink for Worker {
    #[inline]
    fn frame(&mut self, mut frame: Frame<'_>) {
        count_rx(&mut self.queue, &mut frame);
        // Parsed once, when the first job that keeps the frame needs it; the
        // flow hash once, when sampling or the flow table needs it.
        let mut parsed: Option<Parsed> = None;
        let mut hash: Option<KeyHash> = None;
        let cfg = &self.cfg;
        let abort = self.abort.as_deref();
        if !self.parse {
            // Nothing needs the parse, several jobs (one job takes
            // [`Unparsed`], chosen per burst in `poll_once`).
            for lane in self.lanes.iter_mut() {
                lane.keep_unparsed(&frame, cfg, self.now_ns, abort);
            }
            return;
        }
        let now_ns = self.now_ns;
        if let [lane] = self.lanes.as_mut_slice() {
            // One job (issue 19): no lane loop, and the parse is built in
            // place instead of behind a lazily filled Option.
            if let Some(f) = &lane.policies.filter
                && !f.matches(frame.data, frame.wire_len)
            {
                lane.local.filter_packets += 1;
                return;
            }
            // (Flows only, no sampler, no anonymisation: [`Tracked`].)
            let p = flow::parse_frame(frame.data);
            lane.keep(
                &frame,
                &p,
                &mut hash,
                self.flows.as_mut(),
                cfg,
                now_ns,
                abort,
            );
            return;
        }
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            if let Some(f) = &lane.policies.filter
                && !f.matches(frame.data, frame.wire_len)
            {
                lane.local.filter_packets += 1;
                continue;
            }
            let p: &Parsed = parsed.get_or_insert_with(|| flow::parse_frame(frame.data));
            let flows = if i == 0 { self.flows.as_mut() } else { None };
            lane.keep(&frame, p, &mut hash, flows, cfg, now_ns, abort);
        }
    }
}

impl Lane {
    /// A frame no job needs parsed: filter, sample, write the record.
    #[inline(always)]
    fn keep_unparsed(
        &mut self,
        frame: &Frame<'_>,
        cfg: &WorkerConfig,
        now_ns: u64,
        abort: Option<&AtomicBool>,
    ) {
        if let Some(f) = &self.policies.filter
            && !f.matches(frame.data, frame.wire_len)
        {
            self.local.filter_packets += 1;
            return;
        }
        if let Some(s) = self.policies.sampler.as_mut()
            && !s.keep_packet()
        {
            self.local.sample_packets += 1;
            return;
        }
        self.record(frame, None, cfg, now_ns, abort);
    }

    /// A frame this job's filter kept: sample, count the parse, feed the
    /// flow table (`flows`: the first job only), write the record.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn keep(
        &mut self,
        frame: &Frame<'_>,
        p: &Parsed,
        hash: &mut Option<KeyHash>,
        flows: Option<&mut Flows>,
        cfg: &WorkerConfig,
        now_ns: u64,
        abort: Option<&AtomicBool>,
    ) {
        if let Some(s) = self.policies.sampler.as_mut()
            && !s.keep_hashed(p, hash)
        {
            self.local.sample_packets += 1;
            return;
        }
        match p {
            Parsed::Ip(_) => self.local.parsed_ip += 1,
            Parsed::NonIp => self.local.parsed_non_ip += 1,
            Parsed::Truncated => self.local.parsed_truncated += 1,
            Parsed::Malformed => self.local.parsed_malformed += 1,
        }
        if let Some(f) = flows {
            f.push(p, hash, frame);
            f.last_packet_ns = frame.ts_ns;
            f.last_packet_mono_ns = now_ns;
        }
        self.record(frame, p.ip(), cfg, now_ns, abort);
    }
}

/// A burst of table packets with a capacity fixed at start-up, each one
/// written in place (a `Vec::push` built it on the stack and copied it).
struct Burst {
    items: Box<[BurstPacket]>,
    len: usize,
}

impl Burst {
    fn new(capacity: usize) -> Self {
        Burst {
            items: vec![BurstPacket::default(); capacity].into_boxed_slice(),
            len: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.len == self.items.len()
    }

    /// Append `p`; the caller has made room ([`Burst::is_full`] false).
    #[inline(always)]
    fn push(&mut self, p: BurstPacket) {
        debug_assert!(!self.is_full(), "push into a full burst");
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = p;
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[BurstPacket] {
        &self.items[..self.len]
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

impl Flows {
    /// Stage one of the burst: keep the frame's parse and flow hash for the
    /// table (frames without a flow key are only counted).
    #[inline(always)]
    fn push(&mut self, p: &Parsed, hash: &mut Option<KeyHash>, frame: &Frame<'_>) {
        let Parsed::Ip(info) = p else {
            self.table.count_untracked(p);
            return;
        };
        if self.pending.is_full() {
            self.flush();
        }
        let (ts, wire, cap) = (frame.ts_ns, frame.wire_len, frame.data.len() as u32);
        // The key is encoded once: hashed from its words here, or by flow
        // sampling before (then only encoded here).
        let p = match *hash {
            Some(h) => BurstPacket::hashed(info, h, ts, wire, cap),
            None => {
                let p = BurstPacket::new(info, ts, wire, cap);
                *hash = Some(p.key_hash());
                p
            }
        };
        self.table.prefetch_bucket(p.hash());
        self.pending.push(p);
    }

    /// [`Flows::push`] for a frame [`flow::parse_common`] took.
    #[inline(always)]
    fn push_common(&mut self, c: &flow::CommonFlow, frame: &Frame<'_>, now_ns: u64) {
        if self.pending.is_full() {
            self.flush();
        }
        let cap = frame.data.len() as u32;
        let p = BurstPacket::common(c, frame.ts_ns, frame.wire_len, cap);
        self.table.prefetch_bucket(p.hash());
        self.pending.push(p);
        self.last_packet_ns = frame.ts_ns;
        self.last_packet_mono_ns = now_ns;
    }

    /// Once per burst (and per idle poll): update the table with the
    /// burst's packets (staged), hand over what it ended, and run one
    /// bounded expiry step. While the queue is idle the packet clock
    /// advances by the monotonic time since its last frame, so idle flows of
    /// a quiet live queue still expire (a file replay is never idle).
    fn after_burst(&mut self, now_mono_ns: u64, status: RxStatus) {
        if matches!(status, RxStatus::Frames(_)) {
            // Stage this burst (its bucket lines were prefetched as its
            // frames came), then apply the previous one (its slot lines
            // were prefetched a burst ago).
            self.pending_slots.clear();
            self.pending_slots.resize(self.pending.len, NO_SLOT);
            self.table
                .stage(self.pending.as_slice(), &mut self.pending_slots);
            self.table.apply(self.staged.as_slice(), &self.staged_slots);
            std::mem::swap(&mut self.staged, &mut self.pending);
            std::mem::swap(&mut self.staged_slots, &mut self.pending_slots);
            self.pending.clear();
        } else {
            // Idle or ended: nothing to overlap with.
            self.flush();
        }
        let mut clock = self.table.now_ns();
        if status == RxStatus::Idle && self.last_packet_ns != 0 {
            clock = clock
                .max(self.last_packet_ns + now_mono_ns.saturating_sub(self.last_packet_mono_ns));
        }
        let n = self.sweep.step(clock, self.table.capacity() / WAYS);
        let Flows { table, sink, .. } = self;
        table.expire_step(clock, n, sink);
        if now_mono_ns.saturating_sub(self.published_ns) >= FLOW_PUBLISH_NS {
            self.published_ns = now_mono_ns;
            self.publish();
        }
    }

    /// Apply everything queued: the staged burst, then the pending one.
    fn flush(&mut self) {
        self.table.apply(self.staged.as_slice(), &self.staged_slots);
        self.staged.clear();
        self.staged_slots.clear();
        self.table.update_burst(self.pending.as_slice());
        self.pending.clear();
    }

    fn publish(&self) {
        *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = *self.table.counters();
    }
}

/// Spin, then yield, then sleep briefly: an idle queue costs little CPU and a
/// busy one never enters the kernel to wait. A busy-poll queue (DPDK) never
/// sleeps: it spins, then yields, so a frame's TSC stamp is taken within a
/// yield of its arrival (not after a 50 µs sleep and the timer slack); it
/// does not spin only, which on a shared core starves the other threads.
fn idle_wait(idle_polls: u32, busy: bool) {
    if idle_polls < 64 {
        std::hint::spin_loop();
    } else if idle_polls < 128 || busy {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::ring::{Consumer, HugePages, RingConfig, ring};
    use crate::source::SourceDrops;

    /// A source that hands out a fixed list of (len, ts) frames, `per_poll` at a time.
    struct ListSource {
        frames: Vec<(usize, u64)>,
        next: usize,
        per_poll: usize,
        buf: Vec<u8>,
    }

    impl ListSource {
        fn new(frames: Vec<(usize, u64)>, per_poll: usize) -> Self {
            let max = frames.iter().map(|f| f.0).max().unwrap_or(0);
            ListSource {
                frames,
                next: 0,
                per_poll,
                buf: (0..max).map(|i| i as u8).collect(),
            }
        }
    }

    impl RxQueue for ListSource {
        fn poll_burst<S: FrameSink>(&mut self, max: usize, sink: &mut S) -> RxStatus {
            if self.next == self.frames.len() {
                return RxStatus::Ended;
            }
            let n = max.min(self.per_poll).min(self.frames.len() - self.next);
            for _ in 0..n {
                let (len, ts_ns) = self.frames[self.next];
                self.next += 1;
                sink.frame(Frame {
                    data: &self.buf[..len],
                    wire_len: len as u32,
                    ts_ns,
                });
            }
            RxStatus::Frames(n)
        }
        fn drops(&self) -> SourceDrops {
            SourceDrops::default()
        }
    }

    fn setup(slots: usize, cfg: WorkerConfig) -> (Worker, Consumer, Arc<SharedCounters>) {
        let (p, c) = ring(RingConfig {
            slots,
            batch_bytes: 1 << 16,
            hugepages: HugePages::Never,
        })
        .unwrap();
        let shared = Arc::new(SharedCounters::default());
        (Worker::new(cfg, p, shared.clone()), c, shared)
    }

    fn drain(c: &mut Consumer) -> Vec<(BatchMeta, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(b) = c.peek() {
            out.push((*b.meta, b.records.to_vec()));
            c.release();
        }
        out
    }

    fn records(bytes: &[u8]) -> Vec<erf::RecordHeader> {
        let mut v = Vec::new();
        let mut off = 0;
        while off < bytes.len() {
            let r = erf::Record::new_checked(&bytes[off..]).unwrap();
            v.push(*r.header());
            off += r.header().rlen as usize;
        }
        v
    }

    #[test]
    fn batches_are_cut_when_full_and_records_are_exact() {
        // 1000-byte frames: 64 KiB holds 64 records of 1018 bytes.
        let frames: Vec<_> = (0..200).map(|i| (1000, 1_000 + i)).collect();
        let (mut w, mut c, shared) = setup(8, WorkerConfig::new(3));
        let stop = AtomicBool::new(false);
        let clock = ManualClock::new(0);
        let mut src = ListSource::new(frames, 7);
        // 8 slots hold all 200 frames (4 batches), so nothing is dropped.
        assert_eq!(w.run(&mut src, &clock, &stop), WorkerExit::SourceEnded);
        let batches = drain(&mut c);
        assert_eq!(batches.len(), 4);
        let counts: Vec<u64> = batches.iter().map(|b| b.0.packets).collect();
        assert_eq!(counts, vec![64, 64, 64, 8]);
        let mut ts = 1_000;
        for (seq, (meta, recs)) in batches.iter().enumerate() {
            assert_eq!(meta.seq, seq as u64);
            assert_eq!(meta.queue, 3);
            assert_eq!(meta.records_len as usize, recs.len());
            let hs = records(recs);
            assert_eq!(hs.len() as u64, meta.packets);
            assert_eq!(meta.first_ts_ns, ts);
            for h in hs {
                assert_eq!(h.ts_ns(), ts);
                assert_eq!(h.wlen, 1004);
                assert_eq!(h.rlen, 1018);
                assert_eq!(h.lctr, 0);
                ts += 1;
            }
        }
        let snap = shared.snapshot();
        assert_eq!(snap.rx_packets, 200);
        assert_eq!(snap.ring_packets, 200);
        assert_eq!(snap.batches, 4);
        assert_eq!(snap.ring_full_packets, 0);
    }

    /// issue 14: loss counted outside the worker (AF_XDP's XDP stage and
    /// interface, read by the supervisor) is read on the stats tick and at
    /// the end, carried in the lctr of the next record once, and what came
    /// after the last record stays pending.
    #[test]
    fn outside_loss_is_carried_in_lctr_once() {
        use std::sync::atomic::AtomicU64;
        let (w, mut c, shared) = setup(8, WorkerConfig::new(0));
        let cell = Arc::new(AtomicU64::new(0));
        let probe = cell.clone();
        let mut w = w.with_outside_loss(Box::new(move || probe.load(Ordering::Relaxed)));
        let clock = ManualClock::new(0);
        let mut src = ListSource::new(vec![(100, 1), (100, 2), (100, 3)], 1);
        w.poll_once(&mut src, &clock); // frame 1
        cell.store(40, Ordering::Relaxed);
        // Not read before the stats tick: frame 2 carries nothing.
        clock.set(STATS_REFRESH_NS / 2);
        w.poll_once(&mut src, &clock);
        // On the tick the 40 are read: frame 3 carries them.
        clock.set(STATS_REFRESH_NS + 1);
        w.poll_once(&mut src, &clock);
        // A reading that goes down is ignored (the probe must only grow).
        cell.store(30, Ordering::Relaxed);
        clock.set(3 * STATS_REFRESH_NS);
        w.poll_once(&mut src, &clock);
        cell.store(45, Ordering::Relaxed);
        w.finish(&mut src);
        let lctrs: Vec<u16> = drain(&mut c)
            .iter()
            .flat_map(|(_, r)| records(r).into_iter().map(|h| h.lctr))
            .collect();
        // The records were written before the tick's read, except frame 3
        // which was written in the same poll, before the counters were
        // published: the 40 wait for a later record, so they are pending.
        assert_eq!(lctrs.iter().map(|&l| u64::from(l)).sum::<u64>(), 0);
        let k = shared.snapshot();
        assert_eq!(k.lctr_outside, 45);
        assert_eq!(k.lctr_pending, 45);
        // A later record carries all of it.
        let mut src2 = ListSource::new(vec![(100, 9)], 1);
        let (w2, mut c2, _) = setup(8, WorkerConfig::new(0));
        let cell2 = Arc::new(AtomicU64::new(7));
        let probe2 = cell2.clone();
        let mut w2 = w2.with_outside_loss(Box::new(move || probe2.load(Ordering::Relaxed)));
        clock.set(10 * STATS_REFRESH_NS);
        w2.poll_once(&mut ListSource::new(vec![], 1), &clock);
        w2.poll_once(&mut src2, &clock);
        w2.finish(&mut src2);
        let hs: Vec<u16> = drain(&mut c2)
            .iter()
            .flat_map(|(_, r)| records(r).into_iter().map(|h| h.lctr))
            .collect();
        assert_eq!(hs, vec![7]);
    }

    /// issue 14: on a stop, a live queue is drained, its inflow stopped,
    /// and drained again when it can still be read: frames that arrived
    /// between the first drain and the stop are read, not lost.
    #[test]
    fn stop_drains_stops_the_inflow_and_drains_again() {
        struct Stoppable {
            inner: ListSource,
            late: Vec<(usize, u64)>,
            stopped: bool,
        }
        impl RxQueue for Stoppable {
            fn poll_burst<S: FrameSink>(&mut self, max: usize, sink: &mut S) -> RxStatus {
                match self.inner.poll_burst(max, sink) {
                    RxStatus::Ended => RxStatus::Idle,
                    s => s,
                }
            }
            fn drops(&self) -> SourceDrops {
                SourceDrops::default()
            }
            fn drain_on_stop(&self) -> bool {
                true
            }
            fn stop_inflow(&mut self) -> bool {
                // What reached the queue before its inflow was cut.
                self.stopped = true;
                self.inner.frames.append(&mut self.late);
                true
            }
        }
        let (mut w, _c, shared) = setup(8, WorkerConfig::new(0));
        let clock = ManualClock::new(0);
        let mut src = Stoppable {
            inner: ListSource::new(vec![(100, 1), (100, 2)], 1),
            late: vec![(100, 3), (100, 4), (100, 5)],
            stopped: false,
        };
        let stop = AtomicBool::new(true);
        assert_eq!(w.run(&mut src, &clock, &stop), WorkerExit::Stopped);
        assert!(src.stopped);
        assert_eq!(shared.snapshot().rx_packets, 5);
    }

    #[test]
    fn full_ring_drops_are_counted_and_carried_in_lctr() {
        let frames: Vec<_> = (0..300).map(|i| (1000, i + 1)).collect();
        let (mut w, mut c, _) = setup(2, WorkerConfig::new(0));
        let clock = ManualClock::new(0);
        let mut src = ListSource::new(frames, 64);
        // Nobody drains: 2 batches of 64 fit, the rest is dropped.
        for _ in 0..10 {
            w.poll_once(&mut src, &clock);
        }
        let k = w.counters();
        assert_eq!(k.rx_packets, 300);
        assert_eq!(k.ring_full_packets, 300 - 128);
        assert_eq!(k.ring_full_bytes, (300 - 128) * 1000);
        // Free the ring and send more: the first new record carries the loss.
        let first = drain(&mut c);
        assert_eq!(first.len(), 2);
        let mut src2 = ListSource::new(vec![(100, 1_000), (100, 1_001)], 64);
        w.poll_once(&mut src2, &clock);
        w.finish(&mut src2);
        let next = drain(&mut c);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].0.lost_before, 300 - 128);
        let hs = records(&next[0].1);
        assert_eq!(hs[0].lctr, (300 - 128) as u16);
        assert_eq!(hs[1].lctr, 0);
        let k = w.counters();
        assert_eq!(k.rx_packets, k.ring_packets + k.ring_full_packets);
    }

    /// issue 14: a source's NIC/socket drops reach the `lctr` of the next
    /// records, counted once (and the `lost_before` of the next batch
    /// started, through the same counter as ring-full loss).
    #[test]
    fn source_nic_drops_are_carried_in_lctr() {
        struct Lossy {
            inner: ListSource,
            nic: u64,
        }
        impl RxQueue for Lossy {
            fn poll_burst<S: FrameSink>(&mut self, max: usize, sink: &mut S) -> RxStatus {
                self.inner.poll_burst(max, sink)
            }
            fn drops(&self) -> SourceDrops {
                SourceDrops {
                    unsupported: 0,
                    nic: self.nic,
                }
            }
        }
        let (mut w, mut c, _) = setup(8, WorkerConfig::new(0));
        let clock = ManualClock::new(0);
        let mut src = Lossy {
            inner: ListSource::new(vec![(100, 1), (100, 2)], 1),
            nic: 0,
        };
        w.poll_once(&mut src, &clock); // frame 1, no loss yet
        src.nic = 70_000; // the socket dropped 70 000 frames meanwhile
        w.poll_once(&mut src, &clock); // frame 2 is written before the loss is seen
        let mut src2 = Lossy {
            inner: ListSource::new((0..3).map(|i| (100, 10 + i)).collect(), 64),
            nic: 70_005,
        };
        w.poll_once(&mut src2, &clock);
        w.finish(&mut src2);
        let batches = drain(&mut c);
        let lctrs: Vec<u64> = batches
            .iter()
            .flat_map(|(_, r)| records(r).into_iter().map(|h| u64::from(h.lctr)))
            .collect();
        assert_eq!(lctrs.iter().sum::<u64>(), 70_000, "{lctrs:?}");
        // The 5 seen at the end have no record after them: pending.
        assert_eq!(w.counters().lctr_pending, 5);
    }

    #[test]
    fn jobs_have_their_own_rings_policies_and_exact_counters() {
        // Job 0 keeps everything into a 2-slot ring nobody drains; job 1
        // keeps the first 100 bytes of every 3rd frame into a roomy ring.
        let frames: Vec<_> = (0..300).map(|i| (1000, i + 1)).collect();
        let (w, mut c0, shared0) = setup(2, WorkerConfig::new(0));
        let (p1, mut c1) = ring(RingConfig {
            slots: 16,
            batch_bytes: 1 << 16,
            hugepages: HugePages::Never,
        })
        .unwrap();
        let shared1 = Arc::new(SharedCounters::default());
        let policies = Policies {
            sampler: Some(
                Sampler::new(crate::policy::sample::SamplePolicy::EveryNth { n: 3 }).unwrap(),
            ),
            snaplen: Snaplen::new(100),
            ..Policies::default()
        };
        let Ok(mut w) = w.with_job(p1, shared1.clone(), policies) else {
            panic!("a second job is allowed");
        };
        let clock = ManualClock::new(0);
        let mut src = ListSource::new(frames, 64);
        for _ in 0..10 {
            w.poll_once(&mut src, &clock);
        }
        w.finish(&mut src);
        // Job 0 lost what its full ring could not take, and only that.
        let k0 = shared0.snapshot();
        assert_eq!(k0.rx_packets, 300);
        assert_eq!(k0.ring_full_packets, 300 - 128);
        assert_eq!(k0.ring_packets, 128);
        assert_eq!(drain(&mut c0).len(), 2);
        // Job 1 is not affected by job 0's overload: exactly every 3rd frame, cut to 100 bytes.
        let k1 = shared1.snapshot();
        assert_eq!(k1.rx_packets, 300, "each job sees every frame");
        assert_eq!(k1.sample_packets, 200);
        assert_eq!(k1.ring_full_packets, 0);
        assert_eq!(k1.ring_packets, 100);
        assert_eq!(k1.rx_packets, k1.ring_packets + k1.sample_packets);
        let recs: Vec<_> = drain(&mut c1)
            .iter()
            .flat_map(|(_, b)| records(b))
            .collect();
        assert_eq!(recs.len(), 100);
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.wlen, 1000 + 4);
            assert_eq!(r.rlen as usize, ETH_RECORD_OVERHEAD + 100);
            assert_eq!(r.lctr, 0);
            // The 3rd, 6th, ... frame: timestamps 3, 6, ... ns.
            assert_eq!(erf::ts_to_ns(r.ts), 3 * (i as u64 + 1));
        }
        assert_eq!(w.job_counters(1), k1);
    }

    #[test]
    fn backpressure_waits_for_the_writer_instead_of_dropping() {
        let cfg = WorkerConfig {
            backpressure_ns: Some(5_000_000_000),
            ..WorkerConfig::new(0)
        };
        let (mut w, mut c, _) = setup(2, cfg);
        let frames: Vec<_> = (0..1000).map(|i| (1000, i + 1)).collect();
        let mut src = ListSource::new(frames, 64);
        let stop = AtomicBool::new(false);
        let drained = std::thread::scope(|s| {
            let t = s.spawn(move || {
                let mut n = 0;
                while !c.is_finished() || c.occupancy() > 0 {
                    if let Some(b) = c.peek() {
                        n += b.meta.packets;
                        c.release();
                    }
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
                n
            });
            w.run(&mut src, &ManualClock::new(0), &stop);
            t.join().unwrap()
        });
        assert_eq!(drained, 1000);
        assert_eq!(w.counters().ring_full_packets, 0);
        assert!(w.counters().backpressure_waits > 0);
    }

    #[test]
    fn a_stuck_writer_stalls_backpressure_once_and_the_abort_flag_ends_it() {
        let cfg = WorkerConfig {
            backpressure_ns: Some(50_000_000),
            burst_max: 1000,
            ..WorkerConfig::new(0)
        };
        let (w, mut c, _) = setup(2, cfg);
        let abort = Arc::new(AtomicBool::new(false));
        let mut w = w.with_abort(abort.clone());
        let frames: Vec<_> = (0..300).map(|i| (1000, i + 1)).collect();
        let mut src = ListSource::new(frames, 300);
        let clock = ManualClock::new(0);
        let t = std::time::Instant::now();
        // Nobody drains: 2 batches fit, then one 50 ms wait, then drops.
        w.poll_once(&mut src, &clock);
        let waited = t.elapsed();
        assert!(
            waited < std::time::Duration::from_secs(2),
            "waited {waited:?}"
        );
        assert_eq!(w.counters().ring_full_packets, 300 - 128);
        // A slot frees: the worker is no longer stalled and waits again.
        c.peek().unwrap();
        c.release();
        abort.store(true, Ordering::Relaxed);
        let mut more = ListSource::new((0..100).map(|i| (1000, i + 500)).collect(), 100);
        let t = std::time::Instant::now();
        w.poll_once(&mut more, &clock);
        assert!(
            t.elapsed() < std::time::Duration::from_millis(40),
            "abort must end the wait"
        );
        assert_eq!(w.counters().ring_full_packets, 300 - 128 + 100 - 64);
    }

    #[test]
    fn lctr_saturates() {
        let cfg = WorkerConfig {
            burst_max: 100_000,
            ..WorkerConfig::new(0)
        };
        let (mut w, mut c, _) = setup(2, cfg);
        let clock = ManualClock::new(0);
        let mut big = ListSource::new(vec![(60_000, 1); 70_002], 100_000);
        w.poll_once(&mut big, &clock); // 2 batches of 1, 70_000 dropped
        drain(&mut c);
        let mut one = ListSource::new(vec![(60, 2)], 1);
        w.poll_once(&mut one, &clock);
        w.finish(&mut one);
        let b = drain(&mut c);
        assert_eq!(records(&b[0].1)[0].lctr, u16::MAX);
        assert_eq!(b[0].0.lost_before, 70_000);
        // The rest of the loss is still owed to the data: the next records carry it.
        assert_eq!(w.counters().lctr_pending, 70_000 - u64::from(u16::MAX));
    }

    #[test]
    fn partial_batch_is_flushed_on_the_tick() {
        let (mut w, mut c, _) = setup(4, WorkerConfig::new(0));
        let clock = ManualClock::new(0);
        let mut src = ListSource::new(vec![(60, 1), (60, 2)], 1);
        w.poll_once(&mut src, &clock);
        assert!(c.peek().is_none(), "young batch stays with the worker");
        clock.set(50_000_000);
        w.poll_once(&mut src, &clock);
        assert!(c.peek().is_none());
        clock.set(100_000_000);
        w.poll_once(&mut src, &clock);
        let b = drain(&mut c);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].0.packets, 2);
    }

    #[test]
    fn time_boundaries_cut_batches_and_mark_rotation() {
        let cfg = WorkerConfig {
            rotate_every_ns: Some(1_000),
            ..WorkerConfig::new(0)
        };
        let (mut w, mut c, _) = setup(8, cfg);
        let clock = ManualClock::new(0);
        let ts = [1_500, 1_900, 2_000, 2_100, 1_950, 5_000];
        let mut src = ListSource::new(ts.iter().map(|&t| (60, t)).collect(), 64);
        w.run(&mut src, &clock, &AtomicBool::new(false));
        let b = drain(&mut c);
        let shape: Vec<(u64, bool)> = b
            .iter()
            .map(|b| (b.0.packets, b.0.rotate_before()))
            .collect();
        // A backwards timestamp (1950) stays in the current file.
        assert_eq!(shape, vec![(2, false), (3, true), (1, true)]);
    }

    #[test]
    fn oversize_frames_are_cut_and_flagged() {
        let (p, mut c) = ring(RingConfig {
            slots: 2,
            batch_bytes: 1 << 17,
            hugepages: HugePages::Never,
        })
        .unwrap();
        let mut w = Worker::new(WorkerConfig::new(0), p, Arc::new(SharedCounters::default()));
        let mut src = ListSource::new(vec![(70_000, 1)], 1);
        w.run(&mut src, &ManualClock::new(0), &AtomicBool::new(false));
        assert_eq!(w.counters().frames_cut, 1);
        let b = drain(&mut c);
        let h = records(&b[0].1)[0];
        assert_eq!(h.rlen as usize, erf::RLEN_MAX);
        assert_eq!(h.flags & erf::flags::TRUNC, erf::flags::TRUNC);
        assert_eq!(h.wlen, u16::MAX);
    }

    /// The expiry cursor goes round the table once per second of packet
    /// time on a busy queue, one to four buckets a burst, and four a burst
    /// when bursts are far apart.
    #[test]
    fn the_expiry_cursor_goes_round_once_a_second_within_its_bounds() {
        let buckets = 1 << 18;
        let start = 1_764_806_400_000_000_000u64;
        let mut pace = ExpiryPace::default();
        // The first step after start-up: the round starts there.
        assert_eq!(pace.step(start, buckets), 1);
        // Busy: a burst every 8 µs for 3 s of packet time (about two
        // buckets a burst pay for a round a second).
        let mut visited = 0usize;
        let mut t = start;
        while t < start + 3 * EXPIRE_SWEEP_NS {
            t += 8_000;
            let n = pace.step(t, buckets);
            assert!((1..=EXPIRE_STEP_BUCKETS).contains(&n), "{n} buckets");
            visited += n;
        }
        // Three rounds.
        let rounds = visited as f64 / buckets as f64;
        assert!((2.9..3.1).contains(&rounds), "{rounds} rounds in 3 s");
        // Busier than a round a second needs (a burst every µs): the floor
        // of one bucket a burst; a clock that stands still moves it too.
        for _ in 0..1000 {
            t += 1_000;
            assert_eq!(pace.step(t, buckets), 1);
        }
        assert_eq!(pace.step(t, buckets), 1);
        // Quiet: a burst every 10 ms gets the full step.
        for _ in 0..100 {
            t += 10_000_000;
            assert_eq!(pace.step(t, buckets), EXPIRE_STEP_BUCKETS);
        }
    }

    #[test]
    fn the_parse_runs_only_when_something_needs_it() {
        let frames: Vec<_> = (0..50).map(|i| (60, i + 1)).collect();
        let (mut w, mut c, _) = setup(8, WorkerConfig::new(0));
        let mut src = ListSource::new(frames.clone(), 64);
        w.run(&mut src, &ManualClock::new(0), &AtomicBool::new(false));
        let k = w.counters();
        assert_eq!(k.ring_packets, 50);
        assert_eq!(
            k.parsed_ip + k.parsed_non_ip + k.parsed_truncated + k.parsed_malformed,
            0,
            "no flow table and no policy: no parse"
        );
        assert_eq!(records(&drain(&mut c)[0].1).len(), 50);
        // With a flow table every frame is parsed (and counted by kind).
        let (w, _c, _) = setup(8, WorkerConfig::new(0));
        let table = FlowTable::new(64, crate::flowtable::Timeouts::default()).unwrap();
        let mut w = w.with_flows(table, Box::new(|_| {}), Arc::default());
        let mut src = ListSource::new(frames, 64);
        w.run(&mut src, &ManualClock::new(0), &AtomicBool::new(false));
        let k = w.counters();
        assert_eq!(
            k.parsed_ip + k.parsed_non_ip + k.parsed_truncated + k.parsed_malformed,
            50
        );
    }
}
