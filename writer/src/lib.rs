//! The write side of linecap: LZ4-framed ERF files written in rotating
//! series, with their manifests and names. Reading captures back (any of
//! pcap, pcapng, ERF, plain or LZ4), merging queues by time and writing
//! pcap/pcapng/ERF output live in `linecap-reader`.
//!
//! This crate knows nothing of the capture path: it takes batches of ERF
//! records and their [`linecap_wire::batch::BatchMeta`].
#![forbid(unsafe_code)]

pub mod direct;
pub mod indexer;
pub mod lograte;
pub mod lz4frame;
pub mod names;
pub mod recover;
pub mod series;
