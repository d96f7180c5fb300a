//! The AF_XDP receive path: an XDP program redirects each queue's frames
//! into an AF_XDP socket; the queue's worker reads them straight from the
//! socket's UMEM.
//!
//! One noun per module, as in s2n-quic-xdp: [`sys`] (kernel ABI and
//! syscalls), [`ring`] (the rings shared with the kernel, tested over plain
//! memory), [`socket`] (UMEM + socket as an `RxQueue`), [`loader`] (the XDP
//! program, loaded and attached with aya), [`devbound`] (its device-bound
//! variant with the RX hardware timestamp kfunc, loaded and attached with
//! raw `bpf()` calls), [`ifstats`] (which interface
//! counters are loss before XDP, per driver), and [`tx`] (a transmit-only
//! socket for the packet generator in `bench/`). `unsafe` in this crate lives here
//! and in the batch ring, each block with a `// SAFETY:` line.

pub mod devbound;
pub mod ifstats;
pub mod loader;
pub mod ring;
pub mod socket;
pub mod sys;

pub use ifstats::IfaceCounters;
pub use loader::{AttachMode, XdpAttachment, XdpQueueStats, XdpTimestamps};
pub use socket::{BindInfo, XskConfig, XskSocket, ZeroCopy};
