//! Metadata of one batch of ERF records crossing the ring from a worker to a writer.

/// Describes the records in one ring slot. Plain data (`Copy`, `repr(C)`) so it
/// can live in shared memory next to the records it describes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchMeta {
    /// Queue that produced the batch.
    pub queue: u32,
    /// Flags, see [`batch_flags`].
    pub flags: u32,
    /// Sequence number of the batch on its queue (starts at 0, +1 per batch handed over).
    pub seq: u64,
    /// Number of ERF records in the batch.
    pub packets: u64,
    /// Sum of the frames' wire lengths (pcap convention, without FCS).
    pub bytes_wire: u64,
    /// Sum of captured frame bytes.
    pub bytes_captured: u64,
    /// Timestamp of the first record, ns since the epoch.
    pub first_ts_ns: u64,
    /// Timestamp of the last record, ns since the epoch.
    pub last_ts_ns: u64,
    /// Packets this queue dropped (any stage before the ring) since the previous batch.
    pub lost_before: u64,
    /// Length in bytes of the records that follow.
    pub records_len: u64,
}

/// Bits of [`BatchMeta::flags`].
pub mod batch_flags {
    /// The worker cut this batch at a time-rotation boundary: the writer
    /// starts a new file before writing it.
    pub const ROTATE_BEFORE: u32 = 1;
}

impl BatchMeta {
    /// Whether the writer must start a new file before this batch.
    pub const fn rotate_before(&self) -> bool {
        self.flags & batch_flags::ROTATE_BEFORE != 0
    }
}
