//! The read side of linecap: everything that reads stored captures back.
//! Readers for pcap, pcapng and ERF (plain or LZ4, `read`), the ordered merge
//! of per-queue file series by time (`merge`), and pcap/pcapng/ERF output
//! (`output`).
//!
//! It depends on `linecap-writer` only for what both sides must agree on: the
//! file names of a series (`names`) and the LZ4 frame format (`lz4frame`).
#![forbid(unsafe_code)]

pub mod merge;
pub mod output;
pub mod read;
