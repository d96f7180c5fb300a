//! Flow export, off the capture path.
//!
//! * [`FlowRecord`]: what the flow table ends (re-exported from
//!   `linecap-dataplane`, where the table that produces it lives);
//! * [`ipfix`]: a pure IPFIX (RFC 7011 / RFC 5103) encoder, no I/O;
//! * [`parquet`]: the Parquet flow-log writer (cargo feature `parquet`);
//! * [`runner`]: one exporter thread. Each capture worker hands its expired
//!   flows over its own bounded SPSC queue ([`FlowProducer`]); a full queue
//!   drops the record and counts it there, in that producer.
//!
//! Dependency direction: `runner` uses `ipfix` and `parquet`; neither of
//! those knows about `runner` except for the [`ExportReport`] type, which
//! lives in this file.
#![forbid(unsafe_code)]

pub mod ipfix;
#[cfg(feature = "parquet")]
pub mod parquet;
pub mod runner;

pub use linecap_dataplane::flowtable::FlowRecord;
pub use runner::{ExportConfig, Exporter, FlowProducer};

/// What one exporter sink did.
#[derive(Debug, Default, Clone)]
pub struct ExportReport {
    /// Which sink (`ipfix`, `parquet`).
    pub name: String,
    /// Records written.
    pub records: u64,
    /// Messages / files written.
    pub units: u64,
    /// Errors met (sending or writing), counted.
    pub errors: u64,
}
