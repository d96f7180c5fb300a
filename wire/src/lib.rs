//! Packet and record formats shared by the capture path and the file tools.
//!
//! Every view follows the smoltcp `wire` contract: `new_checked()` validates the
//! buffer once, after which no accessor panics on any input.
//!
//! Header views (each a `Packet<T: AsRef<[u8]>>` with a private `field`
//! module of byte ranges, `new_unchecked`, `new_checked` and `check_len`):
//! [`ethernet`], [`vlan`], [`mpls`], [`ipv4`], [`ipv6`] (with the extension
//! header walk), [`tcp`], [`udp`], [`icmp`] (ICMPv4 and ICMPv6) and [`sctp`].
//! Accessors of this crate's views go further than smoltcp's: they read with
//! `get()`, so even on a view made by `new_unchecked` over too short a buffer
//! they return 0 / an empty slice instead of panicking.
//!
//! [`flow`] walks a whole Ethernet frame to its flow key, without allocation
//! and without panicking, for the capture workers.
#![no_std]
#![forbid(unsafe_code)]

pub mod applabel;
pub mod batch;
pub mod erf;
pub mod error;
pub mod ethernet;
pub mod flow;
pub mod icmp;
pub mod index;
pub mod ipv4;
pub mod ipv6;
pub mod mpls;
pub mod sctp;
pub mod tcp;
pub mod udp;
pub mod vlan;

mod bytes;
#[cfg(test)]
mod proptests;

pub use error::WireError;
