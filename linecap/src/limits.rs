//! The limits of a capture, named once: the command line, the profile and
//! the run-time checks all refer to these constants, so a value one of them
//! accepts is never refused by another.

/// Smallest batch (one ERF record can be 64 KiB).
pub const BATCH_BYTES_MIN: u64 = 64 << 10;
/// Largest batch (one LZ4 block).
pub const BATCH_BYTES_MAX: u64 = 4 << 20;
/// Default batch.
pub const BATCH_BYTES_DEFAULT: u64 = 1 << 20;
/// Fewest slots a queue's ring may have.
pub const RING_SLOTS_MIN: usize = 2;
/// Most slots a queue's ring may have.
pub const RING_SLOTS_MAX: usize = 1 << 16;
/// Default ring slots.
pub const RING_SLOTS_DEFAULT: usize = 16;
/// Most writer threads.
pub const WRITER_THREADS_MAX: usize = 64;
/// Most queues one capture runs (sources, spread and DPDK queues together).
pub const QUEUES_MAX: u32 = 256;
/// Most queues one file source is spread over.
pub const SPREAD_MAX: u32 = 256;
/// Smallest AF_XDP ring.
pub const XSK_RING_MIN: u32 = 64;
/// Largest AF_XDP ring.
pub const XSK_RING_MAX: u32 = 1 << 20;
/// Default AF_XDP ring.
pub const XSK_RING_DEFAULT: u32 = 16 * 1024;
/// Longest rotation period (100 years).
pub const ROTATE_SECONDS_MAX: u64 = 100 * 365 * 86_400;
/// Longest `--metrics-hold`.
pub const METRICS_HOLD_MAX_S: f64 = 3600.0;
/// Where metrics are served by default.
pub const METRICS_DEFAULT_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 9464);
/// Smallest and largest flow table.
pub const FLOW_CAPACITY_MIN: usize = 1024;
/// Largest flow table.
pub const FLOW_CAPACITY_MAX: usize = 1 << 26;
/// Most bytes `check-host` writes to time a directory.
pub const WRITE_TEST_BYTES_MAX: u64 = 1 << 30;
/// Longest user name `--user` / `host.user` takes.
pub const USER_NAME_MAX: usize = 32;
/// Longest interface name (the kernel's IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// The largest `-c` (2^40 - 1 frames, about 3 hours at 100 Mpps): the
/// count shares one atomic word with the frames reserved by polls.
pub const COUNT_MAX: u64 = (1 << 40) - 1;
