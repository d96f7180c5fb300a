//! O_DIRECT output (issue 19 item 5, `--direct-io`).
//!
//! A file written with direct I/O has two descriptors: the series' own
//! buffered one (append mode) and a second one opened with `O_DIRECT`. Each
//! batch's bytes go out in up to three parts:
//!
//! - the *head*, up to the next 4 KiB boundary of the file, through the
//!   buffered descriptor (it shares a page with the bytes before it);
//! - the *middle*, every whole 4 KiB block after it, copied into an aligned
//!   staging buffer (1 MiB, allocated once per series) and written with
//!   `pwrite` through the `O_DIRECT` descriptor, straight to the device;
//! - the *tail*, less than 4 KiB, through the buffered descriptor again.
//!
//! The direct ranges and the buffered pages never overlap, so no write waits
//! for the page cache to be flushed or invalidated; only the partial pages at
//! the batch edges (at most 8 KiB per batch) pass through the page cache. A
//! batch is completely written when [`Staging::append`] returns, as it is
//! with buffered writes: a failure drops that batch only (the caller cuts
//! the file back to its previous length), never bytes of earlier batches.
//! Completion (`fdatasync`, rename, manifest) is unchanged.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// File offset and memory alignment of every direct write: 4096 suits every
/// logical block size Linux devices have (512 or 4096).
pub const ALIGN: usize = 4096;

/// Bytes per direct `pwrite` (the size of the staging buffer).
pub const CHUNK: usize = 1 << 20;

/// The aligned staging buffer of one series.
pub struct Staging {
    mem: Vec<u8>,
    /// Where the 4096-aligned part of `mem` starts.
    start: usize,
}

impl Default for Staging {
    fn default() -> Self {
        Self::new()
    }
}

impl Staging {
    /// Allocate the buffer (CHUNK + ALIGN bytes, once).
    pub fn new() -> Self {
        let mem = vec![0u8; CHUNK + ALIGN];
        // align_offset of a u8 pointer is always below ALIGN.
        let start = mem.as_ptr().align_offset(ALIGN).min(ALIGN);
        Staging { mem, start }
    }

    /// Append `bytes` to the file open as `buffered` (append mode) and
    /// `direct` (`O_DIRECT`), whose length is now `len`.
    pub fn append(
        &mut self,
        buffered: &mut File,
        direct: &File,
        len: u64,
        bytes: &[u8],
    ) -> io::Result<()> {
        let mut pos = len;
        let into_block = (pos % ALIGN as u64) as usize;
        let head = if into_block == 0 {
            0
        } else {
            (ALIGN - into_block).min(bytes.len())
        };
        buffered.write_all(&bytes[..head])?;
        pos += head as u64;
        let mut rest = &bytes[head..];
        while rest.len() >= ALIGN {
            let n = (rest.len() / ALIGN * ALIGN).min(CHUNK);
            let stage = &mut self.mem[self.start..self.start + n];
            stage.copy_from_slice(&rest[..n]);
            direct.write_all_at(stage, pos)?;
            pos += n as u64;
            rest = &rest[n..];
        }
        buffered.write_all(rest)
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
        let block = &mut st.mem[st.start..st.start + ALIGN];
        block.fill(0);
        f.write_all_at(block, 0)
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

    /// Every split of head, middle and tail gives the file exactly the bytes
    /// appended, in order, whatever length it started at.
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
        let direct = open_direct(&path).unwrap();
        let mut st = Staging::new();
        let mut want = Vec::new();
        let mut x = 7u32;
        for n in [
            1usize,
            4095,
            4096,
            4097,
            100,
            CHUNK + 3 * ALIGN + 17,
            2 * CHUNK,
            0,
            8191,
            12_345,
        ] {
            let bytes: Vec<u8> = (0..n)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (x >> 16) as u8
                })
                .collect();
            st.append(&mut buffered, &direct, want.len() as u64, &bytes)
                .unwrap();
            want.extend_from_slice(&bytes);
            assert_eq!(fs::metadata(&path).unwrap().len(), want.len() as u64);
        }
        drop(direct);
        drop(buffered);
        assert!(
            fs::read(&path).unwrap() == want,
            "file differs from the bytes appended"
        );
    }

    #[test]
    fn the_probe_names_the_directory() {
        let e = probe(Path::new("/nonexistent-linecap-dir")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent-linecap-dir"), "{e}");
        assert!(e.to_string().contains("--direct-io"), "{e}");
    }
}
