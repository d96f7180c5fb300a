//! `bench seqcheck`: the receiver side of the generator's sequence numbers.
//!
//! Reads captures (linecap output directories, or pcap/pcapng/ERF files,
//! plain or LZ4) stream by stream, picks out the generator's synthetic
//! frames (sequence number at bytes 42..50, see `gen::frames`), and reports
//! how many there were, how many distinct, duplicates, which of `0..N` are
//! missing, and reordering: within each stream (a queue's file series), a
//! frame whose number is below the highest seen before it.

use std::path::PathBuf;

use clap::Parser;
use linecap_reader::read::{CaptureReader, Packet};

use crate::pktgen::frames::sequence;

/// `bench seqcheck` flags.
#[derive(Parser, Debug)]
#[command(
    name = "bench seqcheck",
    about = "Check the generator's sequence numbers in captures: count, gaps, duplicates, reordering",
    after_help = "Exit status 0 when every number 0..N is present exactly once (N from --expect, or the highest seen + 1), 1 otherwise.\n\nExample: bench seqcheck /tmp/cap --expect 100000"
)]
pub struct SeqArgs {
    /// Capture directories (one stream per queue) or files.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Frames the generator sent (its `sent` count).
    #[arg(long, value_name = "N")]
    pub expect: Option<u64>,
    /// Write the result as JSON to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// What the check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqReport {
    /// Frames read, in all.
    pub frames: u64,
    /// Of those, carrying a generator sequence number.
    pub numbered: u64,
    pub distinct: u64,
    pub duplicates: u64,
    /// Numbers below `expect` never seen.
    pub missing: u64,
    /// The first few missing numbers.
    pub first_missing: Vec<u64>,
    /// Numbers at or above `expect`.
    pub beyond: u64,
    /// Frames whose number is below the highest seen earlier in its stream.
    pub reordered: u64,
    pub streams: usize,
    pub expect: u64,
}

impl SeqReport {
    pub fn exact(&self) -> bool {
        self.missing == 0
            && self.duplicates == 0
            && self.beyond == 0
            && self.distinct == self.expect
    }
}

/// The sequence numbers in each stream of the captures under `paths`
/// (a directory: one stream per queue), and the count of frames read.
pub fn read_streams(paths: &[PathBuf]) -> Result<(Vec<Vec<u64>>, u64), String> {
    let streams = linecap_reader::merge::plan(paths, false).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(streams.len());
    let mut frames = 0u64;
    let mut p = Packet::default();
    for files in &streams {
        let mut seqs = Vec::new();
        for f in files {
            let mut rd = CaptureReader::open(f).map_err(|e| format!("{}: {e}", f.display()))?;
            while rd
                .next(&mut p)
                .map_err(|e| format!("{}: {e}", f.display()))?
            {
                frames += 1;
                if let Some(s) = sequence(&p.data) {
                    seqs.push(s);
                }
            }
        }
        out.push(seqs);
    }
    Ok((out, frames))
}

/// Check the captures under `paths` against `expect` (or the highest + 1).
pub fn check(paths: &[PathBuf], expect: Option<u64>) -> Result<SeqReport, String> {
    let (streams, frames) = read_streams(paths)?;
    let mut r = summarize(&streams, expect);
    r.frames = frames;
    Ok(r)
}

/// Count, gaps, duplicates and reordering of sequence numbers, given per
/// stream in capture order.
pub fn summarize(streams: &[Vec<u64>], expect: Option<u64>) -> SeqReport {
    let mut r = SeqReport {
        streams: streams.len(),
        ..SeqReport::default()
    };
    let mut seen: Vec<u64> = Vec::with_capacity(streams.iter().map(Vec::len).sum());
    for seqs in streams {
        let mut high: Option<u64> = None;
        for &s in seqs {
            r.frames += 1;
            r.numbered += 1;
            if high.is_some_and(|h| s < h) {
                r.reordered += 1;
            }
            high = Some(high.map_or(s, |h| h.max(s)));
            seen.push(s);
        }
    }
    seen.sort_unstable();
    let before = seen.len() as u64;
    seen.dedup();
    r.distinct = seen.len() as u64;
    r.duplicates = before - r.distinct;
    r.expect = expect.unwrap_or_else(|| seen.last().map_or(0, |h| h + 1));
    r.beyond = seen.iter().filter(|&&s| s >= r.expect).count() as u64;
    let below = r.distinct - r.beyond;
    r.missing = r.expect - below;
    if r.missing > 0 {
        let mut it = seen.iter().peekable();
        for want in 0..r.expect {
            while it.next_if(|&&s| s < want).is_some() {}
            if it.next_if(|&&s| s == want).is_none() {
                r.first_missing.push(want);
                if r.first_missing.len() == 10 {
                    break;
                }
            }
        }
    }
    r
}

pub fn to_json(r: &SeqReport) -> serde_json::Value {
    serde_json::json!({
        "frames": r.frames, "numbered": r.numbered, "distinct": r.distinct,
        "duplicates": r.duplicates, "missing": r.missing, "first_missing": r.first_missing,
        "beyond_expected": r.beyond, "reordered_within_stream": r.reordered,
        "streams": r.streams, "expected": r.expect, "exact": r.exact(),
    })
}

pub fn main(args: Vec<String>) -> i32 {
    let a = match SeqArgs::try_parse_from(std::iter::once("bench seqcheck".to_string()).chain(args))
    {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let r = match check(&a.paths, a.expect) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench seqcheck: {e}");
            return 2;
        }
    };
    eprintln!(
        "bench seqcheck: {} frames in {} streams, {} numbered, {} distinct of 0..{}; missing {} {:?}, duplicates {}, beyond {}, reordered within a stream {}: {}",
        r.frames,
        r.streams,
        r.numbered,
        r.distinct,
        r.expect,
        r.missing,
        r.first_missing,
        r.duplicates,
        r.beyond,
        r.reordered,
        if r.exact() { "EXACT" } else { "NOT EXACT" }
    );
    if let Some(p) = &a.json {
        let s = serde_json::to_string_pretty(&to_json(&r)).unwrap_or_default();
        if p.as_os_str() == "-" {
            println!("{s}");
        } else if let Err(e) = std::fs::write(p, s) {
            eprintln!("bench seqcheck: {}: {e}", p.display());
            return 2;
        }
    }
    if r.exact() { 0 } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktgen::frames::FrameSet;
    use linecap_reader::output::{OutFormat, PacketWriter};

    fn capture(path: &std::path::Path, seqs: &[u64]) {
        let set = FrameSet::synthetic(&[64], 10).unwrap();
        let mut buf = vec![0u8; 64];
        let mut w = PacketWriter::create(path, OutFormat::Pcap).unwrap();
        for (i, &s) in seqs.iter().enumerate() {
            let n = set.build(s, &mut buf);
            w.write(&Packet {
                ts_ns: 1_000 + i as u64,
                wire_len: n as u32,
                data: buf[..n].to_vec(),
                ..Packet::default()
            })
            .unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn finds_gaps_duplicates_and_reordering() {
        let dir = std::env::temp_dir().join(format!("seqcheck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("ok.pcap");
        capture(&ok, &[0, 1, 2, 3, 4]);
        let r = check(std::slice::from_ref(&ok), Some(5)).unwrap();
        assert!(r.exact(), "{r:?}");
        let bad = dir.join("bad.pcap");
        capture(&bad, &[0, 2, 1, 2, 5, 4]);
        let r = check(std::slice::from_ref(&bad), Some(6)).unwrap();
        assert_eq!((r.missing, r.duplicates, r.reordered), (1, 1, 2), "{r:?}");
        assert_eq!(r.first_missing, vec![3]);
        assert!(!r.exact());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
