//! The `hosts` processor: per IP address and UTC hour, packets and bytes it
//! sent (`out`) and received (`in`). An hour's rows are written when the
//! series' packet clock passes the hour's end; the hour still running stays
//! in the state (and in `OUT/open/hosts.parquet`). A packet older than the
//! clock's hour (a trace stepping back in time) opens that hour again: its
//! rows are written with the next hour change, so an (address, hour) may
//! have several rows, to be summed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ColType, Column, FileInfo, Processor, Record, Row, SeriesInfo, addr_text, col};
use linecap_wire::flow::{IpFamily, Parsed};

const HOUR_NS: u64 = 3_600_000_000_000;

/// The `hosts` processor.
pub struct Hosts;

/// Counts of one address in one hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Packets sent.
    pub pkts_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Packets received.
    pub pkts_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.pkts_out += o.pkts_out;
        self.bytes_out += o.bytes_out;
        self.pkts_in += o.pkts_in;
        self.bytes_in += o.bytes_in;
    }
}

/// The `hosts` state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostsState {
    /// The series' anonymisation context.
    pub context: String,
    /// The packet clock's hour (hours since the epoch).
    pub clock_hour: u64,
    /// Open hours: hour → address text → counts.
    pub open: BTreeMap<u64, BTreeMap<String, Counts>>,
    /// Totals of the rows written.
    pub written: Counts,
    /// Rows written.
    pub rows: u64,
}

const COLUMNS: &[Column] = &[
    col("hour_start_ns", ColType::I64),
    col("context", ColType::Str),
    col("addr", ColType::Str),
    col("pkts_out", ColType::I64),
    col("bytes_out", ColType::I64),
    col("pkts_in", ColType::I64),
    col("bytes_in", ColType::I64),
];

fn row(context: &str, hour: u64, addr: &str, c: &Counts) -> Row {
    Row {
        ts_ns: hour * HOUR_NS,
        cells: vec![
            (hour * HOUR_NS).into(),
            context.to_string().into(),
            addr.to_string().into(),
            c.pkts_out.into(),
            c.bytes_out.into(),
            c.pkts_in.into(),
            c.bytes_in.into(),
        ],
    }
}

impl Processor for Hosts {
    type State = HostsState;

    fn name(&self) -> &'static str {
        "hosts"
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn init(&self, series: &SeriesInfo) -> HostsState {
        HostsState {
            context: series.context.clone(),
            ..HostsState::default()
        }
    }

    fn record(&self, st: &mut HostsState, rec: &Record<'_>, out: &mut Vec<Row>) {
        let Parsed::Ip(info) = rec.parsed else {
            return;
        };
        let hour = rec.ts_ns / HOUR_NS;
        if hour > st.clock_hour {
            // Every hour before the new one is over.
            let later = st.open.split_off(&hour);
            for (h, addrs) in std::mem::replace(&mut st.open, later) {
                for (a, c) in &addrs {
                    out.push(row(&st.context, h, a, c));
                    st.written.add(c);
                    st.rows += 1;
                }
            }
            st.clock_hour = hour;
        }
        let k = &info.key;
        let v6 = k.family() == IpFamily::V6;
        let (src, dst) = if info.a_to_b {
            (k.addr_a_bytes(), k.addr_b_bytes())
        } else {
            (k.addr_b_bytes(), k.addr_a_bytes())
        };
        let bytes = u64::from(rec.wire_len);
        let h = st.open.entry(hour).or_default();
        let s = h.entry(addr_text(v6, src)).or_default();
        s.pkts_out += 1;
        s.bytes_out += bytes;
        let d = h.entry(addr_text(v6, dst)).or_default();
        d.pkts_in += 1;
        d.bytes_in += bytes;
    }

    fn end_of_file(&self, _st: &mut HostsState, _file: &FileInfo, _out: &mut Vec<Row>) {}

    fn merge(&self, into: &mut HostsState, other: HostsState) {
        if into.context != other.context && !into.context.is_empty() {
            into.context = "(several)".into();
        } else {
            into.context = other.context;
        }
        into.clock_hour = into.clock_hour.max(other.clock_hour);
        for (h, addrs) in other.open {
            let mine = into.open.entry(h).or_default();
            for (a, c) in addrs {
                mine.entry(a).or_default().add(&c);
            }
        }
        into.written.add(&other.written);
        into.rows += other.rows;
    }

    fn summary(&self, st: &HostsState) -> serde_json::Value {
        let mut open = Counts::default();
        let mut open_rows = 0u64;
        for addrs in st.open.values() {
            for c in addrs.values() {
                open.add(c);
                open_rows += 1;
            }
        }
        serde_json::json!({
            "rows": st.rows,
            "pkts_out": st.written.pkts_out,
            "bytes_out": st.written.bytes_out,
            "pkts_in": st.written.pkts_in,
            "bytes_in": st.written.bytes_in,
            "open_rows": open_rows,
            "open_pkts_out": open.pkts_out,
            "open_bytes_out": open.bytes_out,
        })
    }

    fn open_rows(&self, st: &HostsState, out: &mut Vec<Row>) {
        for (h, addrs) in &st.open {
            for (a, c) in addrs {
                out.push(row(&st.context, *h, a, c));
            }
        }
    }
}
