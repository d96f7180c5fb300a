//! LZ4 frames (the standard frame format, `lz4 -dc` compatible).
//!
//! **Writing: one frame per file, one independent block per batch.** A file
//! starts with a frame header (FLG: version 01, independent blocks, block
//! checksums, content checksum; BD: 4 MiB blocks). Each batch becomes one
//! block (a batch over 4 MiB, several) with its own xxh32 checksum, and
//! completing the file writes the end mark and the content checksum.
//!
//! Why not one frame per batch: Wireshark 4.0's LZ4 reader (Debian 12's
//! tshark/capinfos) stops with "File has 4294967290-byte packet" after about
//! 9 MB of decompressed data in any concatenation of frames, even of frames
//! made by the `lz4` CLI, while it reads a single frame of any size. One
//! frame per file keeps every file readable by tshark as written, and the
//! per-block checksums keep what per-batch frames gave: a file cut short by
//! a crash yields every complete, verified block.
//!
//! Blocks are compressed with `lz4_flex::block::compress_into` into a buffer
//! kept across batches, so compressing a batch allocates nothing. A block
//! that does not shrink is stored uncompressed.
//!
//! **Reading**: [`FramesReader`] decodes frame by frame and block by block
//! (independent or linked blocks, any block size, optional checksums, any
//! number of concatenated and skippable frames), hands out each complete
//! block's data as soon as it is verified, and stops cleanly at a cut,
//! reporting how many bytes it left over. Corruption (a bad checksum, an
//! impossible block size) is an error, not a truncation.

use std::hash::Hasher;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use twox_hash::XxHash32;

/// Magic number of an LZ4 frame (little-endian on disk).
pub const MAGIC: u32 = 0x184D_2204;
const SKIPPABLE_MASK: u32 = 0xFFFF_FFF0;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;

const FLG_VERSION: u8 = 0x40;
const FLG_VERSION_MASK: u8 = 0xC0;
const FLG_BLOCK_INDEPENDENT: u8 = 0x20;
const FLG_BLOCK_CHECKSUM: u8 = 0x10;
const FLG_CONTENT_SIZE: u8 = 0x08;
const FLG_CONTENT_CHECKSUM: u8 = 0x04;
const FLG_RESERVED: u8 = 0x02;
const FLG_DICT_ID: u8 = 0x01;
const UNCOMPRESSED: u32 = 0x8000_0000;

/// Largest block the writer makes (BD code 7).
pub const BLOCK_MAX: usize = 4 << 20;
const BD_4MIB: u8 = 7 << 4;
/// Linked blocks may refer back this far.
const WINDOW: usize = 64 << 10;

/// Whether `bytes` start with the LZ4 frame magic.
pub fn is_lz4(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == MAGIC
}

fn xxh32(data: &[u8]) -> u32 {
    XxHash32::oneshot(0, data)
}

/// Writes one frame in pieces: [`FrameWriter::header`] when a file opens,
/// [`FrameWriter::blocks`] per batch, [`FrameWriter::end`] when it completes.
pub struct FrameWriter {
    out: Vec<u8>,
    content: XxHash32,
    /// The content checksum before the last [`FrameWriter::blocks`] call,
    /// for [`FrameWriter::rollback`].
    before_last: XxHash32,
}

impl Default for FrameWriter {
    fn default() -> Self {
        FrameWriter {
            out: Vec::new(),
            content: XxHash32::with_seed(0),
            before_last: XxHash32::with_seed(0),
        }
    }
}

impl FrameWriter {
    /// A writer with an empty buffer (it grows to the largest batch once).
    pub fn new() -> Self {
        Self::default()
    }

    /// The 7-byte frame header; starts a new content checksum.
    pub fn header(&mut self) -> [u8; 7] {
        self.content = XxHash32::with_seed(0);
        self.before_last = XxHash32::with_seed(0);
        let mut h = [0u8; 7];
        h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4] = FLG_VERSION | FLG_BLOCK_INDEPENDENT | FLG_BLOCK_CHECKSUM | FLG_CONTENT_CHECKSUM;
        h[5] = BD_4MIB;
        h[6] = (xxh32(&h[4..6]) >> 8) as u8;
        h
    }

    /// `input` as one or more checksummed blocks; the slice is valid until the next call.
    pub fn blocks(&mut self, input: &[u8]) -> &[u8] {
        let chunks = input.len().div_ceil(BLOCK_MAX).max(1);
        let worst =
            chunks * (8 + lz4_flex::block::get_maximum_output_size(BLOCK_MAX.min(input.len())));
        if self.out.len() < worst {
            self.out.resize(worst, 0);
        }
        self.before_last = self.content.clone();
        self.content.write(input);
        let out = &mut self.out;
        let mut pos = 0;
        for chunk in input.chunks(BLOCK_MAX) {
            let body = pos + 4;
            let (size_word, len) = match lz4_flex::block::compress_into(chunk, &mut out[body..]) {
                Ok(n) if n < chunk.len() => (n as u32, n),
                // Not smaller (or no room, which the sizing rules out): store raw.
                _ => {
                    out[body..body + chunk.len()].copy_from_slice(chunk);
                    (chunk.len() as u32 | UNCOMPRESSED, chunk.len())
                }
            };
            out[pos..body].copy_from_slice(&size_word.to_le_bytes());
            let sum = xxh32(&out[body..body + len]);
            out[body + len..body + len + 4].copy_from_slice(&sum.to_le_bytes());
            pos = body + len + 4;
        }
        &out[..pos]
    }

    /// Forget the last [`FrameWriter::blocks`] call: its blocks could not be
    /// written (a full disk), so the content checksum must not count them.
    /// Without this, the end mark of a file that lost a batch would carry a
    /// checksum its content does not match, and readers would call the whole
    /// file corrupt.
    pub fn rollback(&mut self) {
        self.content = self.before_last.clone();
    }

    /// End mark and content checksum: the frame is complete after these 8 bytes.
    pub fn end(&mut self) -> [u8; 8] {
        let mut e = [0u8; 8];
        e[4..8].copy_from_slice(&self.content.finish_32().to_le_bytes());
        e
    }

    /// A whole frame for `input` (header, blocks, end), for tests and tools.
    pub fn frame(&mut self, input: &[u8]) -> Vec<u8> {
        let mut v = self.header().to_vec();
        v.extend_from_slice(self.blocks(input));
        v.extend_from_slice(&self.end());
        v
    }
}

/// What a [`FramesReader`] found, readable after (or during) reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FramesStatus {
    /// Complete frames decoded (end mark seen).
    pub frames: u64,
    /// Complete blocks decoded.
    pub blocks: u64,
    /// Compressed bytes consumed by complete blocks, headers and end marks.
    pub compressed_bytes: u64,
    /// Bytes after the last complete block that did not form one (a cut).
    pub truncated_bytes: u64,
}

/// Per-frame state of the reader.
struct FrameState {
    block_checksum: bool,
    content_checksum: bool,
    independent: bool,
    block_max: usize,
    hasher: XxHash32,
}

/// A `Read` over the decompressed content of a concatenation of LZ4 frames.
pub struct FramesReader<R: Read> {
    inner: R,
    raw: Vec<u8>,
    decoded: Vec<u8>,
    pos: usize,
    /// Last up-to-64 KiB of output (dictionary for linked blocks).
    window: Vec<u8>,
    frame: Option<FrameState>,
    done: bool,
    status: Arc<Mutex<FramesStatus>>,
}

/// Outcome of reading exactly `n` bytes.
enum Fill {
    Full,
    Short,
}

fn corrupt(at: u64, msg: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("corrupt LZ4 data at compressed offset {at}: {msg}"),
    )
}

impl<R: Read> FramesReader<R> {
    /// Read frames from `inner`.
    pub fn new(inner: R) -> Self {
        FramesReader {
            inner,
            raw: Vec::new(),
            decoded: Vec::new(),
            pos: 0,
            window: Vec::with_capacity(WINDOW),
            frame: None,
            done: false,
            status: Arc::new(Mutex::new(FramesStatus::default())),
        }
    }

    /// A handle on the reader's status that stays valid after the reader is moved.
    pub fn status(&self) -> Arc<Mutex<FramesStatus>> {
        self.status.clone()
    }

    fn st(&self) -> std::sync::MutexGuard<'_, FramesStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn offset(&self) -> u64 {
        self.st().compressed_bytes
    }

    /// Append exactly `n` bytes of the stream to `raw`.
    fn fill(&mut self, n: usize) -> io::Result<Fill> {
        let start = self.raw.len();
        self.raw.resize(start + n, 0);
        let mut got = 0;
        while got < n {
            match self.inner.read(&mut self.raw[start + got..]) {
                Ok(0) => {
                    self.raw.truncate(start + got);
                    return Ok(Fill::Short);
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Fill::Full)
    }

    /// Stop at a cut: what was read of the unfinished piece is reported.
    fn cut(&mut self) -> io::Result<bool> {
        let n = self.raw.len() as u64;
        self.st().truncated_bytes = n;
        self.done = true;
        Ok(false)
    }

    /// Consume `raw` as a complete piece.
    fn consumed(&mut self) {
        let n = self.raw.len() as u64;
        self.st().compressed_bytes += n;
        self.raw.clear();
    }

    /// Decode the next block into `decoded`. `Ok(false)` at the end of the stream.
    fn next_block(&mut self) -> io::Result<bool> {
        loop {
            if self.frame.is_none() && !self.read_frame_header()? {
                return Ok(false);
            }
            let at = self.offset();
            self.raw.clear();
            if let Fill::Short = self.fill(4)? {
                return self.cut();
            }
            let word = u32::from_le_bytes([self.raw[0], self.raw[1], self.raw[2], self.raw[3]]);
            let Some(fs) = self.frame.as_ref() else {
                continue;
            };
            let (block_checksum, content_checksum, block_max) =
                (fs.block_checksum, fs.content_checksum, fs.block_max);
            if word == 0 {
                // End mark, then the content checksum.
                if content_checksum {
                    if let Fill::Short = self.fill(4)? {
                        return self.cut();
                    }
                    let want =
                        u32::from_le_bytes([self.raw[4], self.raw[5], self.raw[6], self.raw[7]]);
                    let got = self.frame.as_ref().map_or(0, |f| f.hasher.finish_32());
                    if want != got {
                        return Err(corrupt(at, "content checksum mismatch"));
                    }
                }
                self.consumed();
                self.frame = None;
                self.st().frames += 1;
                continue;
            }
            let len = (word & !UNCOMPRESSED) as usize;
            if len > block_max {
                return Err(corrupt(
                    at,
                    format!("block of {len} bytes in a frame of {block_max}-byte blocks"),
                ));
            }
            let extra = if block_checksum { 4 } else { 0 };
            if let Fill::Short = self.fill(len + extra)? {
                return self.cut();
            }
            let data = &self.raw[4..4 + len];
            if block_checksum {
                let want = u32::from_le_bytes([
                    self.raw[4 + len],
                    self.raw[5 + len],
                    self.raw[6 + len],
                    self.raw[7 + len],
                ]);
                if xxh32(data) != want {
                    return Err(corrupt(at, "block checksum mismatch"));
                }
            }
            self.decoded.clear();
            self.pos = 0;
            if word & UNCOMPRESSED != 0 {
                self.decoded.extend_from_slice(data);
            } else {
                self.decoded.resize(block_max, 0);
                let independent = self.frame.as_ref().is_none_or(|f| f.independent);
                let n = if independent || self.window.is_empty() {
                    lz4_flex::block::decompress_into(data, &mut self.decoded)
                } else {
                    lz4_flex::block::decompress_into_with_dict(
                        data,
                        &mut self.decoded,
                        &self.window,
                    )
                }
                .map_err(|e| corrupt(at, e))?;
                self.decoded.truncate(n);
            }
            if let Some(f) = self.frame.as_mut() {
                f.hasher.write(&self.decoded);
                if !f.independent {
                    let keep = WINDOW
                        .saturating_sub(self.decoded.len())
                        .min(self.window.len());
                    self.window.drain(..self.window.len() - keep);
                    let from = self.decoded.len().saturating_sub(WINDOW);
                    self.window.extend_from_slice(&self.decoded[from..]);
                }
            }
            self.consumed();
            self.st().blocks += 1;
            return Ok(true);
        }
    }

    /// Read a frame header (skipping skippable frames). `Ok(false)` at the end.
    fn read_frame_header(&mut self) -> io::Result<bool> {
        loop {
            let at = self.offset();
            self.raw.clear();
            if let Fill::Short = self.fill(4)? {
                return if self.raw.is_empty() {
                    self.done = true;
                    Ok(false)
                } else {
                    self.cut()
                };
            }
            let magic = u32::from_le_bytes([self.raw[0], self.raw[1], self.raw[2], self.raw[3]]);
            if magic & SKIPPABLE_MASK == SKIPPABLE_MAGIC {
                if let Fill::Short = self.fill(4)? {
                    return self.cut();
                }
                let len = u32::from_le_bytes([self.raw[4], self.raw[5], self.raw[6], self.raw[7]]);
                let skipped = io::copy(&mut (&mut self.inner).take(len as u64), &mut io::sink())?;
                if skipped < len as u64 {
                    self.raw.resize(8 + skipped as usize, 0);
                    return self.cut();
                }
                self.st().compressed_bytes += 8 + len as u64;
                self.raw.clear();
                continue;
            }
            if magic != MAGIC {
                return Err(corrupt(
                    at,
                    format!("not an LZ4 frame (magic {magic:#010x})"),
                ));
            }
            if let Fill::Short = self.fill(2)? {
                return self.cut();
            }
            let (flg, bd) = (self.raw[4], self.raw[5]);
            if flg & FLG_VERSION_MASK != FLG_VERSION || flg & FLG_RESERVED != 0 || bd & 0x8F != 0 {
                return Err(corrupt(
                    at,
                    format!("bad frame descriptor FLG {flg:#04x} BD {bd:#04x}"),
                ));
            }
            let block_max = match (bd >> 4) & 7 {
                4 => 64 << 10,
                5 => 256 << 10,
                6 => 1 << 20,
                7 => 4 << 20,
                c => return Err(corrupt(at, format!("unknown block size code {c}"))),
            };
            if flg & FLG_DICT_ID != 0 {
                return Err(corrupt(at, "frames with a dictionary id are not supported"));
            }
            let rest = if flg & FLG_CONTENT_SIZE != 0 { 8 } else { 0 } + 1;
            if let Fill::Short = self.fill(rest)? {
                return self.cut();
            }
            let hc = self.raw[self.raw.len() - 1];
            if (xxh32(&self.raw[4..self.raw.len() - 1]) >> 8) as u8 != hc {
                return Err(corrupt(at, "frame header checksum mismatch"));
            }
            self.consumed();
            self.window.clear();
            self.frame = Some(FrameState {
                block_checksum: flg & FLG_BLOCK_CHECKSUM != 0,
                content_checksum: flg & FLG_CONTENT_CHECKSUM != 0,
                independent: flg & FLG_BLOCK_INDEPENDENT != 0,
                block_max,
                hasher: XxHash32::with_seed(0),
            });
            return Ok(true);
        }
    }
}

impl<R: Read> Read for FramesReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.decoded.len() {
            if self.done || !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.decoded.len() - self.pos);
        buf[..n].copy_from_slice(&self.decoded[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8 ^ (i / 7919) as u8).collect()
    }

    fn decode_all(bytes: &[u8]) -> (Vec<u8>, FramesStatus) {
        let mut r = FramesReader::new(bytes);
        let st = r.status();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        let s = st.lock().unwrap().clone();
        (out, s)
    }

    /// A file as the series writes it: header, one block group per batch, end.
    fn file(parts: &[&[u8]]) -> (Vec<u8>, Vec<usize>) {
        let mut w = FrameWriter::new();
        let mut f = w.header().to_vec();
        let mut ends = Vec::new();
        for p in parts {
            f.extend_from_slice(w.blocks(p));
            ends.push(f.len());
        }
        f.extend_from_slice(&w.end());
        (f, ends)
    }

    #[test]
    fn a_rolled_back_batch_leaves_the_content_checksum_of_what_was_written() {
        // The series encodes a batch, fails to write it (disk full), and
        // writes the next one: the end mark must match the two it wrote.
        let (a, lost, b) = (sample(5000), sample(7000), sample(3000));
        let mut w = FrameWriter::new();
        let mut f = w.header().to_vec();
        f.extend_from_slice(w.blocks(&a));
        let _ = w.blocks(&lost);
        w.rollback();
        f.extend_from_slice(w.blocks(&b));
        f.extend_from_slice(&w.end());
        let (out, st) = decode_all(&f);
        assert_eq!(out, [a, b].concat());
        assert_eq!(st.frames, 1);
    }

    #[test]
    fn a_file_is_one_standard_frame_lz4_flex_decodes() {
        let a = sample(100_000);
        let b = vec![7u8; 5_000_000]; // two blocks, compressible
        let (f, _) = file(&[&a, &b, &[]]);
        let mut one = Vec::new();
        lz4_flex::frame::FrameDecoder::new(&f[..])
            .read_to_end(&mut one)
            .unwrap();
        assert_eq!(one.len(), a.len() + b.len());
        let (out, st) = decode_all(&f);
        assert_eq!(out, one);
        assert_eq!((st.frames, st.blocks, st.truncated_bytes), (1, 3, 0));
        assert_eq!(st.compressed_bytes, f.len() as u64);
    }

    #[test]
    fn concatenated_and_linked_frames_from_lz4_flex_decode() {
        let mut cat = Vec::new();
        let data = sample(300_000);
        for linked in [false, true] {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(if linked {
                    lz4_flex::frame::BlockMode::Linked
                } else {
                    lz4_flex::frame::BlockMode::Independent
                })
                .content_checksum(true);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            std::io::Write::write_all(&mut enc, &data).unwrap();
            cat.extend_from_slice(&enc.finish().unwrap());
        }
        let (out, st) = decode_all(&cat);
        assert_eq!(out.len(), 2 * data.len());
        assert!(out[..data.len()] == data[..] && out[data.len()..] == data[..]);
        assert_eq!(st.frames, 2);
    }

    #[test]
    fn incompressible_blocks_are_stored() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let noise: Vec<u8> = (0..10_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let f = FrameWriter::new().frame(&noise);
        assert!(f.len() <= noise.len() + 7 + 8 + 8);
        assert_eq!(decode_all(&f).0, noise);
    }

    #[test]
    fn every_cut_yields_only_complete_blocks() {
        let parts = [sample(3000), sample(5000), sample(2000)];
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let (f, ends) = file(&refs);
        for cut in 0..f.len() {
            let (out, st) = decode_all(&f[..cut]);
            let complete = ends.iter().filter(|&&e| e <= cut).count();
            let expect: usize = parts[..complete].iter().map(Vec::len).sum();
            assert_eq!(out.len(), expect, "cut at {cut}");
            let last_end = if complete == 0 {
                7.min(cut)
            } else {
                ends[complete - 1]
            };
            let header_done = usize::from(cut >= 7) * 7;
            let consumed = if complete == 0 { header_done } else { last_end };
            if cut < f.len() {
                assert_eq!(st.truncated_bytes as usize, cut - consumed, "cut at {cut}");
            }
        }
        assert_eq!(decode_all(&f).1.truncated_bytes, 0);
    }

    #[test]
    fn corruption_is_an_error_not_a_truncation() {
        let f = FrameWriter::new().frame(&sample(4000));
        // (A flip in the end mark can read as the size of a block the file is
        // too short for: that is indistinguishable from a cut, and reported so.)
        for at in [5, 9, f.len() / 2, f.len() - 2] {
            let mut bad = f.clone();
            bad[at] ^= 0x40;
            let mut out = Vec::new();
            let err = FramesReader::new(&bad[..])
                .read_to_end(&mut out)
                .unwrap_err();
            assert_eq!(
                err.kind(),
                io::ErrorKind::InvalidData,
                "flip at {at}: {err}"
            );
        }
        // A block size beyond the frame's maximum is corruption, not a cut.
        let mut huge = f.clone();
        huge[7..11].copy_from_slice(&(64u32 << 20).to_le_bytes());
        let err = FramesReader::new(&huge[..])
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("block of"), "{err}");
        let mut junk = f.clone();
        junk.extend_from_slice(b"garbage!");
        let err = FramesReader::new(&junk[..])
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("not an LZ4 frame"), "{err}");
    }

    #[test]
    fn skippable_frames_are_skipped() {
        let mut f = Vec::new();
        f.extend_from_slice(&0x184D_2A53u32.to_le_bytes());
        f.extend_from_slice(&3u32.to_le_bytes());
        f.extend_from_slice(b"abc");
        f.extend_from_slice(&FrameWriter::new().frame(b"hello"));
        assert_eq!(decode_all(&f).0, b"hello");
    }
}
