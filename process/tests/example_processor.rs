//! The example processor of docs/processing.md, compiled and run: SYNs per
//! hour over a capture series.

mod common;

use std::sync::Arc;

use linecap_process::*;
use linecap_wire::flow::Parsed;
use serde::{Deserialize, Serialize};

struct Syns;

#[derive(Default, Serialize, Deserialize)]
struct SynState {
    hour: u64,
    count: u64,
    total: u64,
}

const COLS: &[Column] = &[
    col("hour_start_ns", ColType::I64),
    col("syns", ColType::I64),
];
const HOUR: u64 = 3_600_000_000_000;

impl Processor for Syns {
    type State = SynState;
    fn name(&self) -> &'static str {
        "syns"
    }
    fn columns(&self) -> &'static [Column] {
        COLS
    }
    fn init(&self, _: &SeriesInfo) -> SynState {
        SynState::default()
    }
    fn record(&self, st: &mut SynState, rec: &Record<'_>, out: &mut Vec<Row>) {
        let hour = rec.ts_ns / HOUR;
        if hour > st.hour && st.count > 0 {
            out.push(Row {
                ts_ns: st.hour * HOUR,
                cells: vec![(st.hour * HOUR).into(), st.count.into()],
            });
            st.count = 0;
        }
        st.hour = st.hour.max(hour);
        if let Parsed::Ip(i) = rec.parsed
            && i.key.proto() == 6
            && i.tcp_flags & 0x12 == 0x02
        {
            st.count += 1;
            st.total += 1;
        }
    }
    fn end_of_file(&self, _: &mut SynState, _: &FileInfo, _: &mut Vec<Row>) {}
    fn merge(&self, into: &mut SynState, other: SynState) {
        into.total += other.total;
    }
    fn summary(&self, st: &SynState) -> serde_json::Value {
        serde_json::json!({"syns": st.total})
    }
}

#[test]
fn the_documented_example_processor_runs() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in");
    // Two traces from different days: the first one's hour ends.
    let traces = [
        common::shared("traces").join("zeek__wikipedia.pcap"),
        common::shared("traces").join("zeek__http_bro.org.pcap"),
    ];
    common::capture(&traces, &input, 2, 10);
    let out = d.path().join("out");
    run::run(&run::Options {
        inputs: vec![input],
        state: d.path().join("state"),
        out: out.clone(),
        processors: vec![Box::new(Arc::new(Syns))],
        threads: 2,
        crash_at_step: None,
    })
    .unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let total = summary["processors"]["syns"]["syns"].as_u64().unwrap();
    // tshark: tcp.flags.syn==1 && tcp.flags.ack==0 in the two traces.
    let want: u64 = traces
        .iter()
        .map(|t| {
            let o = std::process::Command::new("tshark")
                .arg("-r")
                .arg(t)
                .args(["-Y", "tcp.flags.syn==1 && tcp.flags.ack==0"])
                .output()
                .expect("tshark (run .ci/setup)");
            String::from_utf8_lossy(&o.stdout).lines().count() as u64
        })
        .sum();
    assert!(want > 0);
    assert_eq!(total, want);
    let rows = output::read_rows(&out.join("syns"), COLS).unwrap();
    assert!(!rows.is_empty(), "the first trace's hour ended");
}
