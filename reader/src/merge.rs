//! Reading many capture files as one time-ordered stream (libtrace's
//! "ordered combiner").
//!
//! Inputs are grouped into *streams*: the files of one linecap queue (same
//! directory, same queue number in the name) form one stream read in
//! sequence order; any other file is a stream of its own. Streams are merged
//! by timestamp, ties going to the lower stream. Within a stream the order
//! of the file is kept, so a trace whose timestamps step backwards keeps its
//! order when read alone.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::read::{CaptureReader, Packet, ReadStats};
use linecap_writer::names;

/// What reading one file gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// Counts.
    pub stats: ReadStats,
    /// Why reading stopped early, if it did.
    pub error: Option<String>,
}

/// Suffixes of files a directory walk picks up.
const CAPTURE_SUFFIXES: [&str; 6] = [".erf.lz4", ".erf", ".pcap", ".pcapng", ".lz4", ".cap"];

fn is_capture_name(name: &str, include_partial: bool) -> bool {
    if let Some(rest) = name.strip_prefix('.') {
        // A manifest's hidden temporary is not a capture file (it was
        // `.NAME.json.part` before 2026-12-02, `.NAME.json.tmp` since).
        return include_partial && rest.ends_with(".part") && !rest.ends_with(".json.part");
    }
    CAPTURE_SUFFIXES.iter().any(|s| name.ends_with(s))
}

fn walk(dir: &Path, include_partial: bool, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let ty = e.file_type()?;
        let path = e.path();
        if ty.is_dir() {
            walk(&path, include_partial, out)?;
        } else if ty.is_file() && is_capture_name(&e.file_name().to_string_lossy(), include_partial)
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Turn command-line inputs into streams. Directories are walked (hidden
/// partial files only with `include_partial`); files named explicitly are
/// always read.
pub fn plan(inputs: &[PathBuf], include_partial: bool) -> io::Result<Vec<Vec<PathBuf>>> {
    let mut files = Vec::new();
    for input in inputs {
        let meta = fs::metadata(input)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", input.display())))?;
        if meta.is_dir() {
            walk(input, include_partial, &mut files)?;
        } else {
            files.push(input.clone());
        }
    }
    let mut queues: BTreeMap<(PathBuf, u32), Vec<(u64, PathBuf)>> = BTreeMap::new();
    let mut streams = Vec::new();
    for f in files {
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        match names::parse(&name) {
            Some((q, seq)) => {
                let dir = f.parent().unwrap_or(Path::new("")).to_path_buf();
                queues.entry((dir, q)).or_default().push((seq, f));
            }
            None => streams.push(vec![f]),
        }
    }
    for (_, mut files) in queues {
        files.sort();
        files.dedup();
        streams.push(files.into_iter().map(|(_, f)| f).collect());
    }
    Ok(streams)
}

struct Stream {
    files: Vec<PathBuf>,
    next_file: usize,
    reader: Option<CaptureReader>,
    head: Option<Packet>,
    /// A buffer to read the next head into.
    spare: Option<Packet>,
}

/// Merges streams by time.
pub struct Merger {
    streams: Vec<Stream>,
    reports: Vec<FileReport>,
    /// The stream the last packet came from.
    last: usize,
}

impl Merger {
    /// A merger over `streams` (from [`plan`]).
    pub fn new(streams: Vec<Vec<PathBuf>>) -> Self {
        Merger {
            streams: streams
                .into_iter()
                .map(|files| Stream {
                    files,
                    next_file: 0,
                    reader: None,
                    head: None,
                    spare: None,
                })
                .collect(),
            reports: Vec::new(),
            last: 0,
        }
    }

    /// The index (in [`plan`]'s order) of the stream the last packet
    /// [`Merger::next`] returned came from: per-queue counts (issue 14).
    pub fn last_stream(&self) -> usize {
        self.last
    }

    /// One report per file read so far (complete once `next` returned false).
    pub fn reports(&self) -> &[FileReport] {
        &self.reports
    }

    /// Advance `stream` to its next packet, opening files as needed;
    /// errors are recorded in the reports and the stream moves on.
    fn refill(&mut self, i: usize) {
        let s = &mut self.streams[i];
        let mut pkt = s.spare.take().unwrap_or_default();
        loop {
            if s.reader.is_none() {
                let Some(path) = s.files.get(s.next_file) else {
                    return;
                };
                s.next_file += 1;
                match CaptureReader::open(path) {
                    Ok(r) => s.reader = Some(r),
                    Err(e) => {
                        self.reports.push(FileReport {
                            path: path.clone(),
                            stats: ReadStats::default(),
                            error: Some(e.to_string()),
                        });
                        continue;
                    }
                }
            }
            let Some(r) = s.reader.as_mut() else { continue };
            match r.next(&mut pkt) {
                Ok(true) => {
                    s.head = Some(pkt);
                    return;
                }
                Ok(false) => {
                    self.reports.push(FileReport {
                        path: r.path().to_path_buf(),
                        stats: r.stats(),
                        error: None,
                    });
                    s.reader = None;
                }
                Err(e) => {
                    self.reports.push(FileReport {
                        path: r.path().to_path_buf(),
                        stats: r.stats(),
                        error: Some(e.to_string()),
                    });
                    s.reader = None;
                }
            }
        }
    }

    /// The next packet in time order, moved into `out`. `false` when all streams are done.
    pub fn next(&mut self, out: &mut Packet) -> bool {
        let mut best: Option<usize> = None;
        for i in 0..self.streams.len() {
            if self.streams[i].head.is_none() {
                self.refill(i);
            }
            if let Some(h) = &self.streams[i].head {
                let better = match best {
                    None => true,
                    Some(b) => self.streams[b]
                        .head
                        .as_ref()
                        .is_some_and(|bh| h.ts_ns < bh.ts_ns),
                };
                if better {
                    best = Some(i);
                }
            }
        }
        let Some(b) = best else { return false };
        self.last = b;
        if let Some(mut h) = self.streams[b].head.take() {
            // Hand the packet out and keep `out`'s old buffer for the refill.
            std::mem::swap(out, &mut h);
            self.streams[b].spare = Some(h);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{OutFormat, PacketWriter};

    fn write(path: &Path, ts: &[u64]) {
        let mut w = PacketWriter::create(path, OutFormat::Erf).unwrap();
        for &t in ts {
            w.write(&Packet {
                ts_ns: t,
                wire_len: 60,
                data: vec![t as u8; 60],
                ..Packet::default()
            })
            .unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn queues_merge_by_time_and_files_of_a_queue_concatenate() {
        let d = tempfile::tempdir().unwrap();
        let q0 = d.path().join("q00");
        let q1 = d.path().join("q01");
        fs::create_dir_all(&q0).unwrap();
        fs::create_dir_all(&q1).unwrap();
        write(&q0.join(names::file_name(0, 0, 1, "erf")), &[1, 4, 3]);
        write(&q0.join(names::file_name(0, 1, 6, "erf")), &[6, 9]);
        write(&q1.join(names::file_name(1, 0, 2, "erf")), &[2, 5, 7, 8]);
        fs::write(q1.join("notes.txt"), b"ignored").unwrap();
        write(&q1.join(".q01-00000001-x.erf.part"), &[10]);
        // A manifest's hidden temporary (older versions named it `.part`).
        fs::write(q1.join(".q01-00000000-x.erf.json.part"), b"{").unwrap();
        let streams = plan(&[d.path().to_path_buf()], false).unwrap();
        assert_eq!(streams.len(), 2);
        let mut m = Merger::new(streams);
        let mut p = Packet::default();
        let mut ts = Vec::new();
        while m.next(&mut p) {
            ts.push(p.ts_ns);
        }
        // q0's backwards step (4 then 3) is kept; the rest interleaves by time.
        assert_eq!(ts, vec![1, 2, 4, 3, 5, 6, 7, 8, 9]);
        assert_eq!(m.reports().len(), 3);
        assert!(m.reports().iter().all(|r| r.error.is_none()));

        let streams = plan(&[d.path().to_path_buf()], true).unwrap();
        let mut m = Merger::new(streams);
        let mut n = 0;
        while m.next(&mut p) {
            n += 1;
        }
        assert_eq!(n, 10, "the partial file is read when asked");
        assert_eq!(m.reports().len(), 4, "the manifest's temporary is not read");
        assert!(m.reports().iter().all(|r| r.error.is_none()));
    }

    #[test]
    fn unreadable_files_are_reported_and_skipped() {
        let d = tempfile::tempdir().unwrap();
        let good = d.path().join("a.erf");
        let bad = d.path().join("b.pcap");
        write(&good, &[1, 2]);
        fs::write(&bad, b"not a capture, honestly").unwrap();
        let mut m = Merger::new(plan(&[good, bad.clone()], false).unwrap());
        let mut p = Packet::default();
        let mut n = 0;
        while m.next(&mut p) {
            n += 1;
        }
        assert_eq!(n, 2);
        let r = m.reports().iter().find(|r| r.path == bad).unwrap();
        assert!(r.error.as_deref().unwrap().contains("not a pcap"));
        assert!(plan(&[d.path().join("missing")], false).is_err());
    }
}
