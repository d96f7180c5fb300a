//! One queue's rotating series of capture files.
//!
//! Files are written under a hidden name (`.NAME.part`) and renamed to
//! `NAME` only when complete, so every visible file is whole (stenographer's
//! rule). Names sort by creation and say queue and start time:
//!
//! ```text
//! q00-00000007-20100710T045619.466743000Z.erf.lz4
//! │   │        └ first packet's time (UTC, ns)
//! │   └ sequence number on the queue (continues across restarts)
//! └ queue
//! ```
//!
//! Next to each complete file a manifest `NAME.json` gives its time range,
//! packet and byte counts, and the drops reported before its batches.
//! Rotation: by size (after the batch that crosses it), by time (the worker
//! cuts batches exactly on aligned boundaries and flags the first batch of a
//! new period), and a file-count ring that deletes the oldest complete file.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use linecap_wire::batch::BatchMeta;
use serde::{Deserialize, Serialize};

use crate::lz4frame::FrameWriter;
use crate::names;

/// How one queue's files are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesConfig {
    /// Directory of this queue's files (created if missing).
    pub dir: PathBuf,
    /// Queue number (in names and manifests).
    pub queue: u32,
    /// Close a file once it holds at least this many bytes.
    pub rotate_bytes: Option<u64>,
    /// Keep at most this many complete files; delete the oldest beyond.
    pub rotate_files: Option<u32>,
    /// LZ4-compress each batch (`.erf.lz4`) or write plain ERF (`.erf`).
    pub compress: bool,
    /// Permission bits of new files.
    pub file_mode: u32,
    /// `fdatasync` each file before it is renamed into view.
    pub sync_on_close: bool,
}

impl SeriesConfig {
    /// Defaults: compressed, no rotation, mode 0640, sync on close.
    pub fn new(dir: PathBuf, queue: u32) -> Self {
        SeriesConfig {
            dir,
            queue,
            rotate_bytes: None,
            rotate_files: None,
            compress: true,
            file_mode: 0o640,
            sync_on_close: true,
        }
    }
}

/// The manifest written next to each complete file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// File name (in the same directory).
    pub file: String,
    /// Queue.
    pub queue: u32,
    /// Sequence number on the queue.
    pub seq: u64,
    /// `"lz4-frame"` or `"none"`.
    pub compression: String,
    /// First packet's time, ns since the epoch.
    pub first_ts_ns: u64,
    /// Last packet's time (the largest seen), ns since the epoch.
    pub last_ts_ns: u64,
    /// Packets in the file.
    pub packets: u64,
    /// Sum of wire lengths (FCS excluded).
    pub bytes_wire: u64,
    /// Sum of captured frame bytes.
    pub bytes_captured: u64,
    /// ERF bytes before compression.
    pub bytes_erf: u64,
    /// Bytes of the file on disk.
    pub bytes_file: u64,
    /// Batches (= LZ4 frames when compressed).
    pub batches: u64,
    /// Packets the queue reported lost before this file's batches.
    pub lost_packets: u64,
    /// linecap version that wrote the file.
    pub writer: String,
}

/// Counts of one series (one queue's writer side).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeriesCounters {
    /// Batches written.
    pub batches: u64,
    /// Packets written.
    pub packets: u64,
    /// Wire bytes of the packets written.
    pub bytes_wire: u64,
    /// ERF bytes before compression.
    pub bytes_erf: u64,
    /// Bytes written to files.
    pub bytes_file: u64,
    /// Files completed (renamed into view).
    pub files_closed: u64,
    /// Files deleted by the file-count ring.
    pub files_deleted: u64,
    /// Packets in batches that could not be written (stage `writer`).
    pub drop_packets: u64,
    /// Batches that could not be written.
    pub drop_batches: u64,
    /// Files whose completion failed (sync, rename, manifest or end mark):
    /// their packets are written but the file may still carry its hidden
    /// `.part` name. Reported, not counted as drops.
    pub close_errors: u64,
}

struct OpenFile {
    file: File,
    hidden: PathBuf,
    visible: PathBuf,
    manifest: Manifest,
}

/// One queue's file series.
pub struct FileSeries {
    cfg: SeriesConfig,
    encoder: FrameWriter,
    cur: Option<OpenFile>,
    next_seq: u64,
    /// Complete files, oldest first (for the file-count ring).
    complete: VecDeque<PathBuf>,
    counters: SeriesCounters,
    last_error: Option<String>,
}

impl FileSeries {
    /// Prepare the series: create the directory, and continue the sequence
    /// numbers (and the file-count ring) of files already there.
    pub fn new(cfg: SeriesConfig) -> io::Result<Self> {
        fs::create_dir_all(&cfg.dir)?;
        let mut existing: Vec<(u64, PathBuf)> = fs::read_dir(&cfg.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let (q, seq) = names::parse(&name)?;
                (q == cfg.queue && !name.starts_with('.') && !name.ends_with(".json"))
                    .then(|| (seq, e.path()))
            })
            .collect();
        existing.sort();
        let next_seq = existing.last().map_or(0, |(s, _)| s + 1);
        Ok(FileSeries {
            cfg,
            encoder: FrameWriter::new(),
            cur: None,
            next_seq,
            complete: existing.into_iter().map(|(_, p)| p).collect(),
            counters: SeriesCounters::default(),
            last_error: None,
        })
    }

    /// The queue this series belongs to.
    pub fn queue(&self) -> u32 {
        self.cfg.queue
    }

    /// Counts so far.
    pub fn counters(&self) -> &SeriesCounters {
        &self.counters
    }

    /// The last write error, if any (for the operator's log).
    pub fn take_error(&mut self) -> Option<String> {
        self.last_error.take()
    }

    /// Path of the file being written, if one is open.
    pub fn current_path(&self) -> Option<&Path> {
        self.cur.as_ref().map(|c| c.hidden.as_path())
    }

    /// Append one batch. On an I/O error the batch is counted as a writer
    /// drop, the file is cut back to its last complete block (the next batch
    /// goes right after it), and the error is returned; the series stays
    /// usable. Errors completing a file (rotation) do not affect the batch:
    /// they are counted in `close_errors` and kept for [`FileSeries::take_error`].
    pub fn write_batch(&mut self, meta: &BatchMeta, records: &[u8]) -> io::Result<()> {
        if meta.packets == 0 {
            return Ok(());
        }
        if meta.rotate_before() {
            self.complete_current();
        }
        match self.try_write(meta, records) {
            Ok(()) => {
                if self.cfg.rotate_bytes.is_some_and(|max| {
                    self.cur
                        .as_ref()
                        .is_some_and(|c| c.manifest.bytes_file >= max)
                }) {
                    self.complete_current();
                }
                Ok(())
            }
            Err(e) => {
                self.counters.drop_packets += meta.packets;
                self.counters.drop_batches += 1;
                self.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Complete the open file now (SIGHUP); the next batch opens a new one.
    /// A failure is counted in `close_errors` and kept for [`FileSeries::take_error`].
    pub fn rotate_now(&mut self) {
        self.complete_current();
    }

    /// Complete the open file, recording (not returning) a failure.
    fn complete_current(&mut self) {
        if let Err(e) = self.close_current() {
            self.counters.close_errors += 1;
            self.last_error = Some(format!("completing a file: {e}"));
        }
    }

    fn try_write(&mut self, meta: &BatchMeta, records: &[u8]) -> io::Result<()> {
        if self.cur.is_none() {
            self.open_new(meta.first_ts_ns)?;
        }
        let bytes: &[u8] = if self.cfg.compress {
            self.encoder.blocks(records)
        } else {
            records
        };
        let Some(cur) = self.cur.as_mut() else {
            return Err(io::Error::other("no open file"));
        };
        let good_len = cur.manifest.bytes_file;
        if let Err(e) = cur.file.write_all(bytes) {
            // Leave no partial block behind; the file is in append mode, so
            // the next batch lands right after the last complete one.
            let _ = cur.file.set_len(good_len);
            return Err(e);
        }
        let m = &mut cur.manifest;
        m.last_ts_ns = m.last_ts_ns.max(meta.last_ts_ns);
        m.packets += meta.packets;
        m.bytes_wire += meta.bytes_wire;
        m.bytes_captured += meta.bytes_captured;
        m.bytes_erf += records.len() as u64;
        m.bytes_file += bytes.len() as u64;
        m.batches += 1;
        m.lost_packets += meta.lost_before;
        let c = &mut self.counters;
        c.batches += 1;
        c.packets += meta.packets;
        c.bytes_wire += meta.bytes_wire;
        c.bytes_erf += records.len() as u64;
        c.bytes_file += bytes.len() as u64;
        Ok(())
    }

    fn open_new(&mut self, first_ts_ns: u64) -> io::Result<()> {
        let ext = if self.cfg.compress { "erf.lz4" } else { "erf" };
        let name = names::file_name(self.cfg.queue, self.next_seq, first_ts_ns, ext);
        let hidden = self.cfg.dir.join(names::hidden(&name));
        let visible = self.cfg.dir.join(&name);
        let mut file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(self.cfg.file_mode)
            .open(&hidden)?;
        let mut header_len = 0;
        if self.cfg.compress {
            let h = self.encoder.header();
            if let Err(e) = file.write_all(&h) {
                drop(file);
                let _ = fs::remove_file(&hidden);
                return Err(e);
            }
            header_len = h.len() as u64;
        }
        self.counters.bytes_file += header_len;
        self.cur = Some(OpenFile {
            file,
            hidden,
            visible,
            manifest: Manifest {
                file: name,
                queue: self.cfg.queue,
                seq: self.next_seq,
                compression: if self.cfg.compress {
                    "lz4-frame"
                } else {
                    "none"
                }
                .into(),
                first_ts_ns,
                last_ts_ns: first_ts_ns,
                bytes_file: header_len,
                writer: concat!("linecap ", env!("CARGO_PKG_VERSION")).into(),
                ..Manifest::default()
            },
        });
        self.next_seq += 1;
        Ok(())
    }

    /// Complete the open file (if any): end the LZ4 frame, sync, rename into
    /// view, write its manifest, and apply the file-count ring. The series
    /// moves on to a new file whatever happens.
    pub fn close_current(&mut self) -> io::Result<()> {
        let Some(mut cur) = self.cur.take() else {
            return Ok(());
        };
        if self.cfg.compress {
            let end = self.encoder.end();
            cur.file.write_all(&end)?;
            cur.manifest.bytes_file += end.len() as u64;
            self.counters.bytes_file += end.len() as u64;
        }
        if self.cfg.sync_on_close {
            cur.file.sync_data()?;
        }
        drop(cur.file);
        fs::rename(&cur.hidden, &cur.visible)?;
        let manifest_path = names::manifest_path(&cur.visible);
        let tmp = manifest_path.with_file_name(names::hidden(
            &manifest_path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy(),
        ));
        let json = serde_json::to_vec_pretty(&cur.manifest).map_err(io::Error::other)?;
        fs::write(&tmp, json)?;
        fs::set_permissions(
            &tmp,
            std::os::unix::fs::PermissionsExt::from_mode(self.cfg.file_mode),
        )?;
        fs::rename(&tmp, &manifest_path)?;
        self.counters.files_closed += 1;
        self.complete.push_back(cur.visible);
        if let Some(keep) = self.cfg.rotate_files {
            while self.complete.len() > keep.max(1) as usize {
                if let Some(old) = self.complete.pop_front() {
                    let _ = fs::remove_file(names::manifest_path(&old));
                    match fs::remove_file(&old) {
                        Ok(()) => self.counters.files_deleted += 1,
                        // Someone else removed it already: nothing to do.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for FileSeries {
    fn drop(&mut self) {
        let _ = self.close_current();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::{CaptureReader, Packet};
    use linecap_wire::batch::batch_flags;
    use linecap_wire::erf;

    /// A batch of `n` 60-byte records starting at time `t0`.
    fn batch(seq: u64, n: u64, t0: u64, rotate: bool) -> (BatchMeta, Vec<u8>) {
        let mut recs = Vec::new();
        for i in 0..n {
            let mut r = vec![0u8; erf::ETH_RECORD_OVERHEAD + 60];
            erf::write_eth_header(&mut r, t0 + i, 0, 0, 60, 60, 0);
            r[erf::ETH_RECORD_OVERHEAD] = seq as u8;
            recs.extend_from_slice(&r);
        }
        let meta = BatchMeta {
            seq,
            packets: n,
            bytes_wire: n * 60,
            bytes_captured: n * 60,
            first_ts_ns: t0,
            last_ts_ns: t0 + n - 1,
            records_len: recs.len() as u64,
            flags: if rotate {
                batch_flags::ROTATE_BEFORE
            } else {
                0
            },
            ..BatchMeta::default()
        };
        (meta, recs)
    }

    fn visible(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with('.') && !n.ends_with(".json"))
            .collect();
        v.sort();
        v
    }

    fn count_packets(path: &Path) -> u64 {
        let mut r = CaptureReader::open(path).unwrap();
        let mut p = Packet::default();
        let mut n = 0;
        while r.next(&mut p).unwrap() {
            n += 1;
        }
        n
    }

    #[test]
    fn hidden_while_open_renamed_with_manifest_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileSeries::new(SeriesConfig::new(dir.path().into(), 2)).unwrap();
        let (m, r) = batch(0, 10, 1_278_472_579_466_743_000, false);
        s.write_batch(&m, &r).unwrap();
        assert!(visible(dir.path()).is_empty(), "open file must be hidden");
        let hidden = s.current_path().unwrap().to_path_buf();
        assert!(
            hidden
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".q02-00000000-")
        );
        s.close_current().unwrap();
        let names = visible(dir.path());
        assert_eq!(
            names,
            vec!["q02-00000000-20100707T031619.466743000Z.erf.lz4"]
        );
        let path = dir.path().join(&names[0]);
        assert_eq!(count_packets(&path), 10);
        let man: Manifest =
            serde_json::from_slice(&fs::read(names::manifest_path(&path)).unwrap()).unwrap();
        assert_eq!(man.packets, 10);
        assert_eq!(man.bytes_erf, r.len() as u64);
        assert_eq!(man.bytes_file, fs::metadata(&path).unwrap().len());
        assert_eq!(man.last_ts_ns, 1_278_472_579_466_743_009);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn rotates_by_size_by_time_flag_and_keeps_a_file_ring() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SeriesConfig {
            rotate_bytes: Some(2_000),
            rotate_files: Some(3),
            compress: false,
            ..SeriesConfig::new(dir.path().into(), 0)
        };
        let mut s = FileSeries::new(cfg.clone()).unwrap();
        // 20 records of 78 bytes = 1560 bytes per batch: each second batch crosses 2000.
        for seq in 0..10 {
            let (m, r) = batch(seq, 20, 1_000_000_000 * (seq + 1), seq == 5);
            s.write_batch(&m, &r).unwrap();
        }
        s.close_current().unwrap();
        // Files: [0,1] [2,3] [4] (time cut before 5) [5,6] [7,8] [9] → 6 files, ring keeps 3.
        assert_eq!(s.counters().files_closed, 6);
        assert_eq!(s.counters().files_deleted, 3);
        let names = visible(dir.path());
        assert_eq!(names.len(), 3);
        assert!(names[0].starts_with("q00-00000003-"), "{names:?}");
        let total: u64 = names
            .iter()
            .map(|n| count_packets(&dir.path().join(n)))
            .sum();
        assert_eq!(total, 100);
        let manifests = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".json")
            })
            .count();
        assert_eq!(manifests, 3, "deleted files take their manifests with them");
        drop(s);
        // A restart continues the sequence and the ring.
        let mut s = FileSeries::new(cfg).unwrap();
        let (m, r) = batch(0, 1, 99_000_000_000, false);
        s.write_batch(&m, &r).unwrap();
        s.close_current().unwrap();
        let names = visible(dir.path());
        assert_eq!(names.len(), 3);
        assert!(names[2].starts_with("q00-00000006-"), "{names:?}");
    }

    #[test]
    fn write_errors_are_counted_drops_and_the_series_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileSeries::new(SeriesConfig::new(dir.path().join("q"), 0)).unwrap();
        let (m, r) = batch(0, 5, 1_000, false);
        s.write_batch(&m, &r).unwrap();
        // The directory vanishes under the series: completing the file fails
        // (a close error, the batch already written stays written) and the
        // next batch cannot open a file (a counted drop).
        let (m2, r2) = batch(1, 5, 2_000, true);
        fs::remove_dir_all(dir.path().join("q")).unwrap();
        assert!(s.write_batch(&m2, &r2).is_err());
        let c = *s.counters();
        assert_eq!((c.packets, c.drop_packets, c.close_errors), (5, 5, 1));
        assert!(s.take_error().is_some());
        // Space (here: the directory) comes back: writing resumes.
        fs::create_dir_all(dir.path().join("q")).unwrap();
        let (m3, r3) = batch(2, 5, 3_000, false);
        s.write_batch(&m3, &r3).unwrap();
        s.close_current().unwrap();
        assert_eq!(s.counters().packets, 10);
    }

    #[test]
    fn a_failed_write_leaves_no_hole() {
        // Simulate a short write by truncating behind the series' back is not
        // possible portably; instead check the recovery mechanism itself: a
        // file cut back with set_len in append mode continues at the cut.
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileSeries::new(SeriesConfig::new(dir.path().into(), 0)).unwrap();
        let (m, r) = batch(0, 5, 1_000, false);
        s.write_batch(&m, &r).unwrap();
        let good = s.cur.as_ref().unwrap().manifest.bytes_file;
        let cur = s.cur.as_mut().unwrap();
        cur.file.write_all(b"partial block garbage").unwrap();
        cur.file.set_len(good).unwrap();
        let (m2, r2) = batch(1, 5, 2_000, false);
        s.write_batch(&m2, &r2).unwrap();
        s.close_current().unwrap();
        let names = visible(dir.path());
        assert_eq!(count_packets(&dir.path().join(&names[0])), 10);
    }

    #[test]
    fn the_file_ring_ignores_files_removed_by_someone_else() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SeriesConfig {
            rotate_bytes: Some(100),
            rotate_files: Some(1),
            ..SeriesConfig::new(dir.path().into(), 0)
        };
        let mut s = FileSeries::new(cfg).unwrap();
        let (m, r) = batch(0, 5, 1_000, false);
        s.write_batch(&m, &r).unwrap();
        for n in visible(dir.path()) {
            fs::remove_file(dir.path().join(n)).unwrap();
        }
        let (m2, r2) = batch(1, 5, 2_000, false);
        s.write_batch(&m2, &r2).unwrap();
        let c = *s.counters();
        assert_eq!((c.packets, c.drop_packets, c.close_errors), (10, 0, 0));
    }
}
