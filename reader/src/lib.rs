//! The read side of linecap: everything that reads stored captures back.
//! Readers for pcap, pcapng and ERF (plain or LZ4, `read`), the ordered merge
//! of per-queue file series by time (`merge`), and pcap/pcapng/ERF output
//! (`output`), and queries by time and filter through the per-file index
//! (`query`, `query_expr`).
//!
//! It depends on `linecap-writer` only for what both sides must agree on: the
//! file names of a series (`names`), the LZ4 frame format (`lz4frame`) and the
//! index (`indexer`: reading and rebuilding `NAME.idx`).
#![forbid(unsafe_code)]

pub mod merge;
pub mod output;
pub mod query;
pub mod query_expr;
pub mod read;
