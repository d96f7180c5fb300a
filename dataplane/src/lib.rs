//! The capture side of linecap: receive queues, per-queue workers, and the
//! shared-memory ring that carries full ERF batches to the writer threads.
//!
//! `unsafe` is confined to [`ring`] (slot memory shared between threads),
//! [`afxdp`] (rings and UMEM shared with the kernel), with the `dpdk`
//! feature to `dpdk` (the DPDK binding and the mbufs it hands over), and
//! to [`prefetch`] (one cache-hint intrinsic for the flow table).
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod afxdp;
pub mod applabel;
pub mod clock;
pub mod counters;
#[cfg(feature = "dpdk")]
#[allow(unsafe_code)]
pub mod dpdk;
pub mod flowtable;
pub mod jobctl;
pub mod policy;
#[allow(unsafe_code)]
pub mod prefetch;
#[allow(unsafe_code)]
pub mod ring;
pub mod source;
pub mod synthetic;
pub mod worker;
