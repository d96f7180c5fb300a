//! The DPDK receive path (feature `dpdk`): Debian's DPDK 22.11 through a thin
//! binding of linecap's own.
//!
//! One noun per module: [`sys`] (bindgen declarations and the C shim for the
//! static-inline functions), [`eal`] (EAL arguments and the once-per-process
//! initialisation), [`port`] (a port configured with its queues, RSS and
//! mempools, and each queue as an [`crate::source::RxQueue`]), [`pktsock`]
//! (the kernel packet socket behind a net_af_packet queue). `unsafe` in
//! this crate lives here, in [`crate::afxdp`] and in the batch ring, each block
//! with a `// SAFETY:` line.

pub mod eal;
pub mod pktsock;
pub mod port;
pub mod sys;

pub use eal::{Eal, EalError};
pub use port::{DpdkQueue, Port, PortConfig, PortInfo, StopMethod, TscStamps};
