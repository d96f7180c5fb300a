//! Packet and record formats shared by the capture path and the file tools.
//!
//! Every view follows the smoltcp `wire` contract: `new_checked()` validates the
//! buffer once, after which no accessor panics on any input.
#![no_std]
#![forbid(unsafe_code)]

pub mod batch;
pub mod erf;
