//! Completing a file a crash left behind (`.NAME.part`, issue 14).
//!
//! At start a series looks for its queue's hidden files. Each is checked
//! block by block (LZ4 block checksum, then every ERF record inside it, or
//! record by record for plain ERF); the file is cut after its last verified
//! block, given the LZ4 end mark and the content checksum of what it keeps,
//! synced, renamed into view, and given a manifest that says `recovered`.
//! A file with no verified block is removed. Nothing is invented: the
//! manifest's counts are those of the records the file keeps.

use std::fs::{self, File, OpenOptions};
use std::hash::Hasher;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use linecap_wire::erf::{ETH_RECORD_OVERHEAD, HEADER_LEN, Record};
use twox_hash::XxHash32;

use crate::lz4frame::{BLOCK_MAX, FrameWriter};
use crate::names;
use crate::series::Manifest;

/// What became of one leftover `.part` file.
#[derive(Debug)]
pub enum Recovered {
    /// Completed and renamed into view; its manifest.
    Completed(PathBuf, Box<Manifest>),
    /// Held no verified block: removed.
    Removed,
}

/// Running counts over the kept records.
#[derive(Default)]
struct Tally {
    packets: u64,
    first_ts_ns: u64,
    last_ts_ns: u64,
    bytes_wire: u64,
    bytes_captured: u64,
    bytes_erf: u64,
    lost: u64,
}

impl Tally {
    /// Walk the ERF records of `buf`; `None` unless it is exactly whole records.
    fn records(buf: &[u8]) -> Option<Tally> {
        let mut t = Tally::default();
        let mut off = 0;
        while off < buf.len() {
            let h = Record::parse_header(&buf[off..]).ok()?;
            let rlen = h.rlen as usize;
            if rlen < ETH_RECORD_OVERHEAD.min(HEADER_LEN) || off + rlen > buf.len() {
                return None;
            }
            let ts = h.ts_ns();
            if t.packets == 0 {
                t.first_ts_ns = ts;
            }
            t.last_ts_ns = t.last_ts_ns.max(ts);
            t.packets += 1;
            t.bytes_wire += u64::from(h.wlen);
            t.bytes_captured += rlen.saturating_sub(ETH_RECORD_OVERHEAD) as u64;
            t.lost += u64::from(h.lctr);
            off += rlen;
        }
        t.bytes_erf = buf.len() as u64;
        Some(t)
    }

    fn add(&mut self, o: Tally) {
        if o.packets == 0 {
            return;
        }
        if self.packets == 0 {
            self.first_ts_ns = o.first_ts_ns;
        }
        self.last_ts_ns = self.last_ts_ns.max(o.last_ts_ns);
        self.packets += o.packets;
        self.bytes_wire += o.bytes_wire;
        self.bytes_captured += o.bytes_captured;
        self.bytes_erf += o.bytes_erf;
        self.lost += o.lost;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..])? {
            0 => return Ok(false),
            n => got += n,
        }
    }
    Ok(true)
}

/// Verify an LZ4 file: (kept length, blocks, tally, content hash, complete).
fn scan_lz4(f: &mut File) -> io::Result<(u64, u64, Tally, u32, bool)> {
    let mut header = [0u8; 7];
    let expect = FrameWriter::new().header();
    if !read_full(f, &mut header)? || header != expect {
        return Ok((0, 0, Tally::default(), 0, false));
    }
    let mut good = 7u64;
    let mut blocks = 0u64;
    let mut tally = Tally::default();
    let mut content = XxHash32::with_seed(0);
    let mut block = Vec::new();
    let mut plain = vec![0u8; BLOCK_MAX];
    // Records of one batch may span several 4 MiB blocks; they are checked
    // once the batch's last block is in (a block shorter than BLOCK_MAX).
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_blocks = 0u64;
    let mut pending_hash = content.clone();
    loop {
        let mut word = [0u8; 4];
        if !read_full(f, &mut word)? {
            break;
        }
        let w = u32::from_le_bytes(word);
        if w == 0 {
            // The end mark: the file was complete, only not renamed.
            let mut sum = [0u8; 4];
            if read_full(f, &mut sum)?
                && pending.is_empty()
                && u32::from_le_bytes(sum) == content.finish_32()
            {
                return Ok((good + 8, blocks, tally, content.finish_32(), true));
            }
            break;
        }
        let len = (w & 0x7fff_ffff) as usize;
        if len > BLOCK_MAX {
            break;
        }
        block.resize(len + 4, 0);
        if !read_full(f, &mut block)? {
            break;
        }
        let (body, sum) = block.split_at(len);
        if XxHash32::oneshot(0, body) != u32::from_le_bytes([sum[0], sum[1], sum[2], sum[3]]) {
            break;
        }
        let data: &[u8] = if w & 0x8000_0000 != 0 {
            body
        } else {
            match lz4_flex::block::decompress_into(body, &mut plain) {
                Ok(n) => &plain[..n],
                Err(_) => break,
            }
        };
        content.write(data);
        pending.extend_from_slice(data);
        pending_blocks += 1;
        if data.len() == BLOCK_MAX {
            continue;
        }
        match Tally::records(&pending) {
            Some(t) => {
                tally.add(t);
                blocks += pending_blocks;
                good = f.stream_position()?;
                pending.clear();
                pending_blocks = 0;
                pending_hash = content.clone();
            }
            None => break,
        }
    }
    Ok((good, blocks, tally, pending_hash.finish_32(), false))
}

/// Verify a plain ERF file: (kept length, tally).
fn scan_erf(f: &mut File) -> io::Result<(u64, Tally)> {
    let mut all = Vec::new();
    f.read_to_end(&mut all)?;
    let mut off = 0usize;
    while off + HEADER_LEN <= all.len() {
        let Ok(h) = Record::parse_header(&all[off..]) else {
            break;
        };
        if off + h.rlen as usize > all.len() {
            break;
        }
        off += h.rlen as usize;
    }
    Ok((off as u64, Tally::records(&all[..off]).unwrap_or_default()))
}

/// Fsync a directory (after a rename in it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Complete (or remove) the leftover hidden file `hidden` of queue `queue`.
pub fn recover_part(hidden: &Path, queue: u32, file_mode: u32) -> io::Result<Recovered> {
    let dir = hidden.parent().unwrap_or(Path::new("."));
    let name = hidden
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other(format!("{}: not a series file", hidden.display())))?;
    let visible_name = name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(".part"))
        .ok_or_else(|| {
            io::Error::other(format!("{}: not a hidden series file", hidden.display()))
        })?;
    let (_, seq) = names::parse(visible_name)
        .ok_or_else(|| io::Error::other(format!("{}: not a series file", hidden.display())))?;
    let compress = visible_name.ends_with(".lz4");
    let mut f = OpenOptions::new().read(true).write(true).open(hidden)?;
    let (good, batches, tally, end) = if compress {
        let (good, blocks, tally, hash, complete) = scan_lz4(&mut f)?;
        let end = (!complete && tally.packets > 0).then(|| {
            let mut e = [0u8; 8];
            e[4..8].copy_from_slice(&hash.to_le_bytes());
            e
        });
        (good, blocks, tally, end)
    } else {
        let (good, tally) = scan_erf(&mut f)?;
        (good, u64::from(tally.packets > 0), tally, None)
    };
    if tally.packets == 0 {
        drop(f);
        fs::remove_file(hidden)?;
        sync_dir(dir)?;
        return Ok(Recovered::Removed);
    }
    f.set_len(good)?;
    let mut bytes_file = good;
    if let Some(e) = end {
        f.seek(SeekFrom::Start(good))?;
        f.write_all(&e)?;
        bytes_file += e.len() as u64;
    }
    f.sync_all()?;
    drop(f);
    let visible = dir.join(visible_name);
    fs::rename(hidden, &visible)?;
    let manifest = recovered_manifest(
        visible_name,
        queue,
        seq,
        compress,
        &tally,
        bytes_file,
        batches,
    );
    crate::series::write_manifest(&visible, &manifest, file_mode, true)?;
    Ok(Recovered::Completed(visible, Box::new(manifest)))
}

/// The manifest of a file completed at start: the counts of its records.
fn recovered_manifest(
    name: &str,
    queue: u32,
    seq: u64,
    compress: bool,
    tally: &Tally,
    bytes_file: u64,
    batches: u64,
) -> Manifest {
    Manifest {
        file: name.into(),
        queue,
        seq,
        compression: if compress { "lz4-frame" } else { "none" }.into(),
        first_ts_ns: tally.first_ts_ns,
        last_ts_ns: tally.last_ts_ns,
        packets: tally.packets,
        bytes_wire: tally.bytes_wire,
        bytes_captured: tally.bytes_captured,
        bytes_erf: tally.bytes_erf,
        bytes_file,
        batches,
        lost_packets: tally.lost,
        writer: concat!("linecap ", env!("CARGO_PKG_VERSION")).into(),
        recovered: true,
        ..Manifest::default()
    }
}

/// A complete file in view without its manifest (a crash between the
/// file's rename and its manifest's): write the manifest from the file's
/// records, marked `recovered` (and `truncated` if the file does not end
/// where its last verified block or record does). The file is not changed:
/// it was synced before it was renamed.
pub fn manifest_for_visible(visible: &Path, queue: u32, file_mode: u32) -> io::Result<Manifest> {
    let name = visible
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other(format!("{}: not a series file", visible.display())))?;
    let (_, seq) = names::parse(name)
        .ok_or_else(|| io::Error::other(format!("{}: not a series file", visible.display())))?;
    let compress = name.ends_with(".lz4");
    let mut f = File::open(visible)?;
    let len = f.metadata()?.len();
    let (good, batches, tally) = if compress {
        let (good, blocks, tally, _, _) = scan_lz4(&mut f)?;
        (good, blocks, tally)
    } else {
        let (good, tally) = scan_erf(&mut f)?;
        (good, u64::from(tally.packets > 0), tally)
    };
    let mut manifest = recovered_manifest(name, queue, seq, compress, &tally, len, batches);
    manifest.truncated = good != len;
    crate::series::write_manifest(visible, &manifest, file_mode, true)?;
    Ok(manifest)
}
