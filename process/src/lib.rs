//! Incremental, parallel processing of what linecap captured
//! (bismark-passive's session processors, libtrace's per-thread state and
//! combiner).
//!
//! A *processor* ([`Processor`]) keeps a state per queue series. The runner
//! ([`run::run`]) feeds it the records of each completed file of the series
//! in sequence order, series in parallel; after every file the processors'
//! rows go to partitioned Parquet (`date=YYYY-MM-DD/hour=HH/`) and their
//! states are saved with a cursor (sequence number, manifest checksum), so a
//! re-run reads only the files it has not seen. The states of all series are
//! merged ([`Processor::merge`], associative) into one global summary.
//!
//! Built-in processors: [`flows`], [`hosts`], [`dnsproc`] (named `dns`). More
//! are added by implementing [`Processor`] and listing them in [`builtin`].
#![forbid(unsafe_code)]

pub mod dns;
pub mod dnsproc;
pub mod flows;
pub mod hosts;
pub mod output;
pub mod run;

use std::sync::Arc;

use linecap_wire::flow::Parsed;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The series a state belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesInfo {
    /// Stable id (`qQQ-HASH`), used in state and output file names.
    pub id: String,
    /// The anonymisation context of the series: the capture job and its
    /// address anonymisation, from the manifest (`job=main;anon=none`).
    pub context: String,
}

/// One captured record, as a processor sees it.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Timestamp, ns since the epoch (the packet clock).
    pub ts_ns: u64,
    /// Wire length without FCS.
    pub wire_len: u32,
    /// Captured bytes from the Ethernet header.
    pub data: &'a [u8],
    /// The frame's flow key and offsets (`wire::flow::parse_frame`, done once).
    pub parsed: &'a Parsed,
}

/// The file that just ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Sequence number in the series.
    pub seq: u64,
    /// File name.
    pub name: String,
}

/// Type of an output column (Parquet INT64 or UTF8, nullable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    /// Signed 64-bit (Spark `bigint`).
    I64,
    /// UTF-8 string.
    Str,
}

/// One output column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: &'static str,
    /// Type.
    pub ty: ColType,
}

/// Shorthand for a column list.
pub const fn col(name: &'static str, ty: ColType) -> Column {
    Column { name, ty }
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cell {
    /// An integer.
    I64(i64),
    /// A string.
    Str(String),
    /// No value.
    Null,
}

impl From<u64> for Cell {
    fn from(v: u64) -> Cell {
        Cell::I64(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<String> for Cell {
    fn from(v: String) -> Cell {
        Cell::Str(v)
    }
}

impl From<Option<String>> for Cell {
    fn from(v: Option<String>) -> Cell {
        v.map_or(Cell::Null, Cell::Str)
    }
}

/// One output row; `ts_ns` picks its `date=/hour=` partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    /// Partition time (UTC).
    pub ts_ns: u64,
    /// Values, one per column of the processor.
    pub cells: Vec<Cell>,
}

/// A session processor: state per series, fed in sequence order.
///
/// Contract: the output (rows and state) must depend only on the records and
/// file boundaries it is given, never on wall time, thread or hash order, so
/// that a re-run after a crash writes the same rows again. `merge` must be
/// associative (and, for a summary independent of series order, commutative).
pub trait Processor: Send + Sync + 'static {
    /// The state kept per series between files and runs.
    type State: Serialize + DeserializeOwned + Send + 'static;
    /// Name on the command line and of the output table.
    fn name(&self) -> &'static str;
    /// Columns of the output table.
    fn columns(&self) -> &'static [Column];
    /// A new series' state.
    fn init(&self, series: &SeriesInfo) -> Self::State;
    /// One record; rows that are complete go to `out`.
    fn record(&self, state: &mut Self::State, rec: &Record<'_>, out: &mut Vec<Row>);
    /// The end of a file (rows to flush, if any, go to `out`).
    fn end_of_file(&self, state: &mut Self::State, file: &FileInfo, out: &mut Vec<Row>);
    /// Combine the state of another series into `into`.
    fn merge(&self, into: &mut Self::State, other: Self::State);
    /// The global summary of a (merged) state, as JSON.
    fn summary(&self, state: &Self::State) -> serde_json::Value;
    /// Rows still open in the state (flows not ended, hours not over):
    /// written to `OUT/open/NAME.parquet`, replaced on every run.
    fn open_rows(&self, _state: &Self::State, _out: &mut Vec<Row>) {}
}

/// Why a saved state could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StateError(pub String);

/// A processor's state bound to its processor (type-erased for the runner).
pub trait Instance: Send {
    /// See [`Processor::record`].
    fn record(&mut self, rec: &Record<'_>, out: &mut Vec<Row>);
    /// See [`Processor::end_of_file`].
    fn end_of_file(&mut self, file: &FileInfo, out: &mut Vec<Row>);
    /// The state as JSON.
    fn save(&self) -> serde_json::Value;
    /// Merge a saved state (of another series) into this one.
    fn merge_saved(&mut self, other: serde_json::Value) -> Result<(), StateError>;
    /// See [`Processor::summary`].
    fn summary(&self) -> serde_json::Value;
    /// See [`Processor::open_rows`].
    fn open_rows(&self, out: &mut Vec<Row>);
}

/// A processor as the runner holds it.
pub trait DynProcessor: Send + Sync {
    /// See [`Processor::name`].
    fn name(&self) -> &'static str;
    /// See [`Processor::columns`].
    fn columns(&self) -> &'static [Column];
    /// A fresh state.
    fn start(&self, series: &SeriesInfo) -> Box<dyn Instance>;
    /// A saved state.
    fn load(&self, saved: serde_json::Value) -> Result<Box<dyn Instance>, StateError>;
}

struct Bound<P: Processor> {
    p: Arc<P>,
    state: P::State,
}

impl<P: Processor> Instance for Bound<P> {
    fn record(&mut self, rec: &Record<'_>, out: &mut Vec<Row>) {
        self.p.record(&mut self.state, rec, out);
    }
    fn end_of_file(&mut self, file: &FileInfo, out: &mut Vec<Row>) {
        self.p.end_of_file(&mut self.state, file, out);
    }
    fn save(&self) -> serde_json::Value {
        serde_json::to_value(&self.state).unwrap_or(serde_json::Value::Null)
    }
    fn merge_saved(&mut self, other: serde_json::Value) -> Result<(), StateError> {
        let o: P::State = serde_json::from_value(other)
            .map_err(|e| StateError(format!("{} state: {e}", self.p.name())))?;
        self.p.merge(&mut self.state, o);
        Ok(())
    }
    fn summary(&self) -> serde_json::Value {
        self.p.summary(&self.state)
    }
    fn open_rows(&self, out: &mut Vec<Row>) {
        self.p.open_rows(&self.state, out);
    }
}

impl<P: Processor> DynProcessor for Arc<P> {
    fn name(&self) -> &'static str {
        P::name(self)
    }
    fn columns(&self) -> &'static [Column] {
        P::columns(self)
    }
    fn start(&self, series: &SeriesInfo) -> Box<dyn Instance> {
        Box::new(Bound {
            p: Arc::clone(self),
            state: self.init(series),
        })
    }
    fn load(&self, saved: serde_json::Value) -> Result<Box<dyn Instance>, StateError> {
        let state = serde_json::from_value(saved)
            .map_err(|e| StateError(format!("{} state: {e}", P::name(self))))?;
        Ok(Box::new(Bound {
            p: Arc::clone(self),
            state,
        }))
    }
}

/// Settings of the built-in processors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Flow idle timeout, ns of packet time.
    pub idle_ns: u64,
    /// Flow active timeout, ns of packet time.
    pub active_ns: u64,
    /// Most flows (and most DNS address mappings) one series keeps.
    pub capacity: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            idle_ns: 60_000_000_000,
            active_ns: 300_000_000_000,
            capacity: 1 << 20,
        }
    }
}

/// Names of the built-in processors, in the default order.
pub const BUILTIN: [&str; 3] = ["flows", "hosts", "dns"];

/// A built-in processor by name (`None` for an unknown name).
pub fn builtin(name: &str, s: &Settings) -> Option<Box<dyn DynProcessor>> {
    Some(match name {
        "flows" => Box::new(Arc::new(flows::Flows::new(*s))),
        "hosts" => Box::new(Arc::new(hosts::Hosts)),
        "dns" => Box::new(Arc::new(dnsproc::Dns::new(*s))),
        _ => return None,
    })
}

/// Rows sorted, for comparisons.
pub fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort();
    rows
}

/// `[u8; 16]` address bytes (IPv4 in the first 4) as text.
pub fn addr_text(v6: bool, b: &[u8; 16]) -> String {
    if v6 {
        std::net::Ipv6Addr::from(*b).to_string()
    } else {
        std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()
    }
}
