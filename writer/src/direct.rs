//! O_DIRECT output (issue 19 item 5, `--direct-io`).
//!
//! A file written with direct I/O has two descriptors: the series' own
//! buffered one (append mode: the LZ4 header when the file opens, the end
//! mark and the sync when it closes) and a second one opened with
//! `O_DIRECT`, which writes every batch. A batch goes out as **one** aligned
//! `pwrite` that starts at the 4 KiB block the file's last bytes are in:
//!
//! ```text
//!   file:   ... | block k: edge (kept in memory) | new bytes ...          |
//!   write:        [edge][the batch's bytes][zeros to the next 4 KiB]
//! ```
//!
//! The *edge* (the bytes of the file's last, partial block, under 4 KiB) is
//! kept in memory from the previous write, so nothing is read back; the
//! zeros after the batch pad the write to a whole block and are overwritten
//! by the next batch, or cut when the file closes (`set_len` to its true
//! length before the end mark). So no byte of a batch passes through the
//! page cache, and the disk sees one sequential stream, each block written
//! once, the last block of each batch twice.
//!
//! The bytes are laid out in an aligned staging buffer: the series' own, or,
//! with plain files and an index thread, a buffer of the index thread's pool
//! that is then handed to it as its copy of the batch — one `memcpy` of the
//! batch on the writer thread, not two.
//!
//! **Or in place** ([`Staging::fill_around`], [`Staging::write_span`]): when the batch lies in an
//! aligned buffer with room around it (a ring slot) and starts in it at the
//! file's phase (its offset modulo [`ALIGN`] is the edge's length), the
//! edge is copied in front of it, zeros after it, and the span is written
//! from there: no copy of the batch. The ring places the records of each
//! slot at the phase the writer publishes (`linecap_dataplane::ring`).
//!
//! A batch is completely written when [`Staging::append`] returns, as with
//! buffered writes: a failure drops that batch only (the caller cuts the
//! file back to its previous length; the edge is unchanged, so the next
//! write rewrites that block whole). A crash leaves at most one block of
//! zeros after the last batch of a hidden file: recovery
//! ([`crate::recover`]) cuts a file after its last whole record or block,
//! and zeros are neither. Completion (`fdatasync`, rename, manifest) is
//! unchanged.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// File offset, length and memory alignment of every direct write: 4096
/// suits every logical block size Linux devices have (512 or 4096).
pub const ALIGN: usize = 4096;

/// Where a batch landed in a staging buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staged {
    /// Index of the batch's first byte in the buffer.
    pub at: usize,
    /// The batch's length.
    pub len: usize,
}

/// The staging buffer and the edge of one series' open file.
pub struct Staging {
    buf: Vec<u8>,
    /// The bytes of the file's last partial block (`len % ALIGN` of them).
    edge: Vec<u8>,
}

impl Default for Staging {
    fn default() -> Self {
        Self::new()
    }
}

impl Staging {
    /// An empty staging buffer (it grows to the largest batch, once).
    pub fn new() -> Self {
        Staging {
            buf: Vec::new(),
            edge: Vec::with_capacity(ALIGN),
        }
    }

    /// A new file opens holding `written` (the LZ4 header, or nothing),
    /// under one block.
    pub fn reset(&mut self, written: &[u8]) {
        debug_assert!(written.len() < ALIGN);
        self.edge.clear();
        self.edge.extend_from_slice(written);
    }

    /// Append `bytes` to the file open as `direct` (`O_DIRECT`), whose
    /// length is now `len` (the edge must be its last `len % ALIGN` bytes).
    /// The bytes are laid out in `into` when given (the caller then owns
    /// that copy, at the returned place), else in the series' own buffer.
    /// On return the file is `len + bytes.len()` long plus zeros to the
    /// next block, which the next append or the close cuts.
    pub fn append(
        &mut self,
        direct: &File,
        len: u64,
        bytes: &[u8],
        into: Option<&mut Vec<u8>>,
    ) -> io::Result<Staged> {
        let mut own = std::mem::take(&mut self.buf);
        let buf = into.unwrap_or(&mut own);
        let laid = self.lay_out(buf, bytes);
        let r = self.write_laid(direct, len, buf, laid);
        self.buf = own;
        r.map(|()| laid.staged())
    }

    /// Lay the edge, `bytes` and zeros to the next block out in `buf`
    /// (cleared first), aligned, for [`Staging::write_laid`]; the batch is
    /// at the returned place.
    pub fn lay_out(&self, buf: &mut Vec<u8>, bytes: &[u8]) -> Laid {
        let total = self.edge.len() + bytes.len();
        let padded = total.next_multiple_of(ALIGN);
        buf.clear();
        // Room for the alignment too; the buffer never moves after this.
        buf.reserve(ALIGN + padded);
        // align_offset of a u8 pointer is always below ALIGN.
        let pad = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        buf.resize(pad, 0);
        buf.extend_from_slice(&self.edge);
        let at = buf.len();
        buf.extend_from_slice(bytes);
        buf.resize(pad + padded, 0);
        Laid {
            pad,
            padded,
            at,
            len: bytes.len(),
        }
    }

    /// Write what [`Staging::lay_out`] put in `buf` to the file open as
    /// `direct`, whose length is now `len` (the edge must be its last
    /// `len % ALIGN` bytes); on success the edge becomes the new last block's.
    pub fn write_laid(
        &mut self,
        direct: &File,
        len: u64,
        buf: &[u8],
        laid: Laid,
    ) -> io::Result<()> {
        let span = &buf[laid.pad..laid.pad + laid.padded];
        self.write_span(direct, len, span, laid.at - laid.pad, laid.len)
    }
}

/// Where [`Staging::lay_out`] put a batch in its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Laid {
    pad: usize,
    padded: usize,
    at: usize,
    len: usize,
}

impl Laid {
    /// The batch's place in the buffer.
    pub fn staged(&self) -> Staged {
        Staged {
            at: self.at,
            len: self.len,
        }
    }
}

impl Staging {
    /// Bytes of the file's last partial block kept: the phase (offset
    /// modulo [`ALIGN`]) at which the next batch starts.
    pub fn phase(&self) -> usize {
        self.edge.len()
    }

    /// Whether [`Staging::fill_around`] takes `len` bytes at `at` in `area`.
    pub fn fits_in_place(&self, area: &[u8], at: usize, len: usize) -> bool {
        at == self.edge.len()
            && area.as_ptr().align_offset(ALIGN) == 0
            && (at + len).next_multiple_of(ALIGN) <= area.len()
    }

    /// Make `area` ready for [`Staging::write_span`] of the batch at
    /// `area[at..at + n]`, which [`Staging::fits_in_place`]: the edge goes
    /// in `area[..at]`, zeros after the batch to the next block. Returns
    /// the span's length. The batch's bytes are not changed (nor copied).
    pub fn fill_around(&self, area: &mut [u8], at: usize, n: usize) -> usize {
        let total = at + n;
        let padded = total.next_multiple_of(ALIGN);
        area[..at].copy_from_slice(&self.edge);
        area[total..padded].fill(0);
        padded
    }

    /// Write `span` (an area made ready by [`Staging::fill_around`] for a
    /// batch of `n` bytes at `at`, cut to the length it returned) to the
    /// file open as `direct`, whose length is now `len`; on success the
    /// edge becomes the new last block's.
    pub fn write_span(
        &mut self,
        direct: &File,
        len: u64,
        span: &[u8],
        at: usize,
        n: usize,
    ) -> io::Result<()> {
        debug_assert_eq!(len % ALIGN as u64, self.edge.len() as u64);
        if at != self.edge.len() || !span.len().is_multiple_of(ALIGN) || span.len() < at + n {
            return Err(io::Error::other(
                "batch not placed for an in-place direct write",
            ));
        }
        direct.write_all_at(span, len - at as u64)?;
        let total = at + n;
        let keep = total % ALIGN;
        self.edge.clear();
        self.edge.extend_from_slice(&span[total - keep..total]);
        Ok(())
    }
}

/// Open `path` (already created by the series) a second time, for direct writes.
pub fn open_direct(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// Whether `dir` takes direct writes: create a hidden probe file there, write
/// one aligned block through `O_DIRECT`, remove it. The error says what failed.
pub fn probe(dir: &Path) -> io::Result<()> {
    let path = dir.join(format!(".direct-io-probe.{}.tmp", std::process::id()));
    let result = (|| {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)?;
        let mut st = Staging::new();
        st.append(&f, 0, &[0u8; ALIGN], None).map(|_| ())
    })();
    let _ = fs::remove_file(&path);
    result.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{} does not take O_DIRECT writes (--direct-io): {e}",
                dir.display()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// `n` bytes of a linear congruential sequence from `x`.
    fn noise(x: &mut u32, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                *x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (*x >> 16) as u8
            })
            .collect()
    }

    /// Appends of every length, from a file that starts with a few bytes
    /// (as an LZ4 header), give the file exactly the bytes appended, in
    /// order, with at most one block of zeros after them until the close
    /// cuts it; a caller's buffer gets the batch at the place returned.
    #[test]
    fn appends_land_in_order_at_any_length() {
        let dir = tempfile::tempdir().unwrap();
        if probe(dir.path()).is_err() {
            // tmpfs before 6.6 has no O_DIRECT: the series refuses it at start.
            panic!("the test directory takes no O_DIRECT writes");
        }
        let path = dir.path().join("f");
        let mut buffered = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let head = b"header!";
        buffered.write_all(head).unwrap();
        let direct = open_direct(&path).unwrap();
        let mut st = Staging::new();
        st.reset(head);
        let mut want = head.to_vec();
        let mut x = 7u32;
        let mut mine = Vec::new();
        for (i, n) in [
            1usize,
            4095,
            4096,
            4097,
            100,
            (1 << 20) + 3 * ALIGN + 17,
            2 << 20,
            0,
            8191,
            12_345,
        ]
        .into_iter()
        .enumerate()
        {
            let bytes = noise(&mut x, n);
            let into = (i % 2 == 1).then_some(&mut mine);
            let given = into.is_some();
            let at = st.append(&direct, want.len() as u64, &bytes, into).unwrap();
            if given {
                assert_eq!(&mine[at.at..at.at + at.len], &bytes[..]);
            }
            want.extend_from_slice(&bytes);
            let on_disk = fs::read(&path).unwrap();
            assert_eq!(on_disk.len(), want.len().next_multiple_of(ALIGN));
            assert!(on_disk[..want.len()] == want[..], "after append {i}");
            assert!(on_disk[want.len()..].iter().all(|&b| b == 0));
        }
        drop(direct);
        buffered.set_len(want.len() as u64).unwrap();
        buffered.write_all(b"end").unwrap();
        want.extend_from_slice(b"end");
        drop(buffered);
        assert!(
            fs::read(&path).unwrap() == want,
            "file differs from the bytes appended"
        );
    }

    /// In-place appends (records placed at the file's phase in an aligned
    /// area, as ring slots hold them) mixed with copied ones give the file
    /// exactly the bytes appended; a batch at the wrong phase is refused
    /// and changes nothing.
    #[test]
    fn in_place_appends_land_in_order() {
        let dir = tempfile::tempdir().unwrap();
        probe(dir.path()).expect("the test directory takes no O_DIRECT writes");
        let path = dir.path().join("f");
        let buffered = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let direct = open_direct(&path).unwrap();
        let mut st = Staging::new();
        st.reset(&[]);
        // An aligned area of 2 blocks + 64 KiB, as a ring slot's.
        let mut backing = vec![0xeeu8; 3 * ALIGN + (64 << 10)];
        let off = backing.as_ptr().align_offset(ALIGN);
        let area = &mut backing[off..off + 2 * ALIGN + (64 << 10)];
        let mut want = Vec::new();
        let mut x = 11u32;
        for (i, n) in [100usize, 4096, 5000, 1, 65_536, 4095, 12_000, 7]
            .into_iter()
            .enumerate()
        {
            let bytes = noise(&mut x, n);
            let at = st.phase();
            if i % 3 == 2 {
                st.append(&direct, want.len() as u64, &bytes, None).unwrap();
            } else {
                area[at..at + n].copy_from_slice(&bytes);
                // The wrong phase is refused, the edge unchanged.
                let wrong = (at + 8) % ALIGN;
                assert!(!st.fits_in_place(area, wrong, n));
                assert!(st.fits_in_place(area, at, n), "batch {i}");
                let padded = st.fill_around(area, at, n);
                st.write_span(&direct, want.len() as u64, &area[..padded], at, n)
                    .unwrap();
                assert_eq!(&area[at..at + n], &bytes[..], "the batch is unchanged");
            }
            want.extend_from_slice(&bytes);
            assert_eq!(st.phase(), want.len() % ALIGN);
            let on_disk = fs::read(&path).unwrap();
            assert_eq!(
                on_disk.len(),
                want.len().next_multiple_of(ALIGN),
                "after {i}"
            );
            assert!(on_disk[..want.len()] == want[..], "after append {i}");
            assert!(on_disk[want.len()..].iter().all(|&b| b == 0), "after {i}");
        }
        drop(direct);
        buffered.set_len(want.len() as u64).unwrap();
        assert!(fs::read(&path).unwrap() == want);
    }

    #[test]
    fn the_probe_names_the_directory() {
        let e = probe(Path::new("/nonexistent-linecap-dir")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent-linecap-dir"), "{e}");
        assert!(e.to_string().contains("--direct-io"), "{e}");
    }
}
