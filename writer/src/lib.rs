//! The file side of linecap: LZ4-framed ERF files written in rotating series,
//! and the tools that read captures back (any of pcap, pcapng, ERF, plain or
//! LZ4), merge queues by time and write pcap, pcapng or ERF.
//!
//! This crate knows nothing of the capture path: it takes batches of ERF
//! records and their [`linecap_wire::batch::BatchMeta`].
#![forbid(unsafe_code)]

pub mod lz4frame;
pub mod merge;
pub mod names;
pub mod output;
pub mod read;
pub mod series;
