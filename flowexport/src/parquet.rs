//! Parquet flow logs: `DIR/date=YYYY-MM-DD/hour=HH/flows-<start>-<seq>.parquet`,
//! partitioned by the flow record's end time (UTC), written by one thread
//! off the capture path with the `parquet` and `arrow` crates (Apache
//! arrow-rs). Each file is written under a hidden `.NAME.tmp` name and
//! renamed when complete, so readers (DuckDB, Spark) only see whole files.
//!
//! Columns (source = the flow's initiator; `rev_` = responder → initiator):
//! `flow_start`, `flow_end` (timestamp ns, UTC), `ip_version`, `protocol`,
//! `is_fragment`, `vlans` (outer.inner, "" if none), `src_addr`, `src_port`,
//! `dst_addr`, `dst_port`, `packets`, `bytes`, `rev_packets`, `rev_bytes`,
//! `captured_bytes`, `rev_captured_bytes`, `tcp_flags`, `rev_tcp_flags`,
//! `end_reason` (idle, active, end, input_end, evicted), `sampling_rate`
//! (the fraction of packets or flows the capture's first job kept; 1 when
//! unsampled), `app` (application label, `unknown` if none), `app_method`
//! (`payload`, `port` = a port-only guess, `proto`, `unknown`),
//! `first_bytes` / `rev_first_bytes` (binary: the first ≤ 4 captured bytes
//! of the first payload each way, empty if none) and `first_len` /
//! `rev_first_len` (that payload's size, 0 if none), so outside tools can
//! relabel (see docs/applabel.md).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::parquet::arrow::ArrowWriter;
use ::parquet::basic::Compression;
use ::parquet::file::properties::WriterProperties;
use anyhow::Context;
use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Float64Array, RecordBatch, StringArray,
    TimestampNanosecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use linecap_dataplane::flowtable::{A_TO_B, B_TO_A, FlowRecord};
use linecap_wire::flow::IpFamily;
use linecap_writer::names::utc_rfc3339;

use crate::ExportReport;

/// Rows a partition buffers before it is written as one file.
pub const ROWS_PER_FILE: usize = 1 << 16;

fn schema() -> Arc<Schema> {
    let ts = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("flow_start", ts.clone(), false),
        Field::new("flow_end", ts, false),
        Field::new("ip_version", DataType::UInt8, false),
        Field::new("protocol", DataType::UInt8, false),
        Field::new("is_fragment", DataType::Boolean, false),
        Field::new("vlans", DataType::Utf8, false),
        Field::new("src_addr", DataType::Utf8, false),
        Field::new("src_port", DataType::UInt16, false),
        Field::new("dst_addr", DataType::Utf8, false),
        Field::new("dst_port", DataType::UInt16, false),
        Field::new("packets", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("rev_packets", DataType::UInt64, false),
        Field::new("rev_bytes", DataType::UInt64, false),
        Field::new("captured_bytes", DataType::UInt64, false),
        Field::new("rev_captured_bytes", DataType::UInt64, false),
        Field::new("tcp_flags", DataType::UInt8, false),
        Field::new("rev_tcp_flags", DataType::UInt8, false),
        Field::new("end_reason", DataType::Utf8, false),
        Field::new("sampling_rate", DataType::Float64, false),
        Field::new("app", DataType::Utf8, false),
        Field::new("app_method", DataType::Utf8, false),
        Field::new("first_bytes", DataType::Binary, false),
        Field::new("first_len", DataType::UInt32, false),
        Field::new("rev_first_bytes", DataType::Binary, false),
        Field::new("rev_first_len", DataType::UInt32, false),
    ]))
}

/// `date=YYYY-MM-DD/hour=HH` of a time.
pub fn partition(ts_ns: u64) -> String {
    let t = utc_rfc3339(ts_ns); // YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ
    format!("date={}/hour={}", &t[..10], &t[11..13])
}

fn batch(recs: &[FlowRecord], sampling_rate: f64) -> anyhow::Result<RecordBatch> {
    let dirs = |r: &FlowRecord| {
        if r.a_initiated {
            (A_TO_B, B_TO_A)
        } else {
            (B_TO_A, A_TO_B)
        }
    };
    let u64col = |f: &dyn Fn(&FlowRecord) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(recs.iter().map(f)))
    };
    let labels: Vec<_> = recs
        .iter()
        .map(linecap_dataplane::applabel::label)
        .collect();
    let head = |r: &FlowRecord, d: usize| r.first_payload.dir.get(d).copied().unwrap_or_default();
    let head_bytes = |d: &dyn Fn(&FlowRecord) -> usize| -> ArrayRef {
        Arc::new(BinaryArray::from_iter_values(recs.iter().map(|r| {
            let h = head(r, d(r));
            h.bytes[..usize::from(h.captured.min(4))].to_vec()
        })))
    };
    let head_len = |d: &dyn Fn(&FlowRecord) -> usize| -> ArrayRef {
        Arc::new(UInt32Array::from_iter_values(
            recs.iter().map(|r| head(r, d(r)).len),
        ))
    };
    let endpoint = |r: &FlowRecord, src: bool| {
        let k = &r.key;
        if r.a_initiated == src {
            (k.addr_a().to_string(), k.port_a())
        } else {
            (k.addr_b().to_string(), k.port_b())
        }
    };
    let cols: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampNanosecondArray::from_iter_values(recs.iter().map(|r| r.first_ns as i64))
                .with_timezone("UTC"),
        ),
        Arc::new(
            TimestampNanosecondArray::from_iter_values(recs.iter().map(|r| r.last_ns as i64))
                .with_timezone("UTC"),
        ),
        Arc::new(UInt8Array::from_iter_values(recs.iter().map(
            |r| match r.key.family() {
                IpFamily::V4 => 4,
                IpFamily::V6 => 6,
            },
        ))),
        Arc::new(UInt8Array::from_iter_values(
            recs.iter().map(|r| r.key.proto()),
        )),
        Arc::new(BooleanArray::from(
            recs.iter().map(|r| r.key.is_fragment()).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from_iter_values(recs.iter().map(|r| {
            r.key
                .vlan_ids()
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(".")
        }))),
        Arc::new(StringArray::from_iter_values(
            recs.iter().map(|r| endpoint(r, true).0),
        )),
        Arc::new(UInt16Array::from_iter_values(
            recs.iter().map(|r| endpoint(r, true).1),
        )),
        Arc::new(StringArray::from_iter_values(
            recs.iter().map(|r| endpoint(r, false).0),
        )),
        Arc::new(UInt16Array::from_iter_values(
            recs.iter().map(|r| endpoint(r, false).1),
        )),
        u64col(&|r| r.packets[dirs(r).0]),
        u64col(&|r| r.bytes[dirs(r).0]),
        u64col(&|r| r.packets[dirs(r).1]),
        u64col(&|r| r.bytes[dirs(r).1]),
        u64col(&|r| r.captured_bytes[dirs(r).0]),
        u64col(&|r| r.captured_bytes[dirs(r).1]),
        Arc::new(UInt8Array::from_iter_values(
            recs.iter().map(|r| r.tcp_flags[dirs(r).0]),
        )),
        Arc::new(UInt8Array::from_iter_values(
            recs.iter().map(|r| r.tcp_flags[dirs(r).1]),
        )),
        Arc::new(StringArray::from_iter_values(
            recs.iter().map(|r| r.end_reason.name()),
        )),
        Arc::new(Float64Array::from_iter_values(
            recs.iter().map(|_| sampling_rate),
        )),
        Arc::new(StringArray::from_iter_values(labels.iter().map(|l| l.name))),
        Arc::new(StringArray::from_iter_values(
            labels.iter().map(|l| l.method.name()),
        )),
        head_bytes(&|r| dirs(r).0),
        head_len(&|r| dirs(r).0),
        head_bytes(&|r| dirs(r).1),
        head_len(&|r| dirs(r).1),
    ];
    Ok(RecordBatch::try_new(schema(), cols)?)
}

/// Write `recs` as one Parquet file in `dir/part`, hidden until complete.
fn write_file(
    dir: &Path,
    part: &str,
    name: &str,
    recs: &[FlowRecord],
    sampling_rate: f64,
) -> anyhow::Result<()> {
    let pdir = dir.join(part);
    fs::create_dir_all(&pdir).with_context(|| format!("creating {}", pdir.display()))?;
    let tmp = pdir.join(format!(".{name}.tmp"));
    let fin = pdir.join(name);
    let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut w = ArrowWriter::try_new(file, schema(), Some(props))?;
    w.write(&batch(recs, sampling_rate)?)?;
    w.close()?;
    fs::rename(&tmp, &fin).with_context(|| format!("renaming to {}", fin.display()))?;
    Ok(())
}

/// The Parquet sink: buffers per partition, writes a file when a partition
/// holds [`ROWS_PER_FILE`] rows, and the rest at [`ParquetSink::finish`].
pub struct ParquetSink {
    dir: PathBuf,
    start: String,
    sampling_rate: f64,
    parts: BTreeMap<String, Vec<FlowRecord>>,
    seq: u64,
    report: ExportReport,
}

impl ParquetSink {
    /// A sink writing under `dir` (created now, so a bad path fails at start).
    pub fn new(dir: PathBuf, sampling_rate: f64) -> anyhow::Result<ParquetSink> {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let start = linecap_writer::names::utc_compact(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        );
        Ok(ParquetSink {
            dir,
            start,
            sampling_rate,
            parts: BTreeMap::new(),
            seq: 0,
            report: ExportReport {
                name: "parquet".into(),
                ..Default::default()
            },
        })
    }

    fn flush(&mut self, part: &str) -> anyhow::Result<()> {
        let Some(recs) = self.parts.get_mut(part) else {
            return Ok(());
        };
        if recs.is_empty() {
            return Ok(());
        }
        let name = format!("flows-{}-{:06}.parquet", self.start, self.seq);
        self.seq += 1;
        write_file(&self.dir, part, &name, recs, self.sampling_rate)?;
        self.report.records += recs.len() as u64;
        self.report.units += 1;
        recs.clear();
        Ok(())
    }

    /// Buffer `recs`; write every partition that reached [`ROWS_PER_FILE`].
    pub fn write(&mut self, recs: &[FlowRecord]) -> anyhow::Result<()> {
        for r in recs {
            let part = partition(r.last_ns);
            let v = self.parts.entry(part.clone()).or_default();
            v.push(*r);
            if v.len() >= ROWS_PER_FILE {
                self.flush(&part)?;
            }
        }
        Ok(())
    }

    /// Write what every partition still holds.
    pub fn finish(mut self) -> anyhow::Result<ExportReport> {
        let parts: Vec<String> = self.parts.keys().cloned().collect();
        for part in parts {
            self.flush(&part)?;
        }
        Ok(self.report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_by_utc_hour() {
        assert_eq!(partition(0), "date=1970-01-01/hour=00");
        // 2010-07-10 04:56:19 UTC
        assert_eq!(
            partition(1_278_737_779_466_743_000),
            "date=2010-07-10/hour=04"
        );
    }
}
