//! LZ4 frames (the standard frame format, `lz4 -dc` compatible).
//!
//! **Writing**: each batch becomes one complete frame: independent blocks,
//! content size and content checksum set. The frame is built around
//! `lz4_flex::block::compress_into` into a buffer kept across batches, so
//! compressing a batch allocates nothing (lz4_flex's `FrameEncoder` owns its
//! buffers per encoder and is consumed by `finish`, which would allocate per
//! batch). A block that does not shrink is stored uncompressed.
//!
//! **Reading**: [`FramesReader`] walks the frame structure itself to find
//! where each frame ends, and hands only *complete* frames to lz4_flex's
//! `FrameDecoder` (which checks header, block and content checksums). A file
//! cut short by a crash therefore yields every complete frame and then ends,
//! with [`FramesStatus::truncated_bytes`] saying how much was left over.
//! Linked-block frames written by the `lz4` CLI decode too.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

/// Magic number of an LZ4 frame (little-endian on disk).
pub const MAGIC: u32 = 0x184D_2204;
const SKIPPABLE_MASK: u32 = 0xFFFF_FFF0;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;

const FLG_VERSION: u8 = 0x40;
const FLG_BLOCK_INDEPENDENT: u8 = 0x20;
const FLG_BLOCK_CHECKSUM: u8 = 0x10;
const FLG_CONTENT_SIZE: u8 = 0x08;
const FLG_CONTENT_CHECKSUM: u8 = 0x04;
const FLG_DICT_ID: u8 = 0x01;

/// Block size the writer uses (BD code 7: 4 MiB).
const BLOCK_MAX: usize = 4 << 20;
const BD_4MIB: u8 = 7 << 4;

/// Whether `bytes` start with the LZ4 frame magic.
pub fn is_lz4(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == MAGIC
}

fn xxh32(data: &[u8]) -> u32 {
    twox_hash::XxHash32::oneshot(0, data)
}

/// Turns batches into frames, reusing one output buffer.
#[derive(Default)]
pub struct FrameEncoder {
    out: Vec<u8>,
}

impl FrameEncoder {
    /// An encoder with an empty buffer (it grows to the largest batch once).
    pub fn new() -> Self {
        Self::default()
    }

    /// Encode `input` as one frame; the returned slice is valid until the next call.
    pub fn encode(&mut self, input: &[u8]) -> &[u8] {
        let blocks = input.len().div_ceil(BLOCK_MAX).max(1);
        let worst = 19
            + blocks * (4 + lz4_flex::block::get_maximum_output_size(BLOCK_MAX.min(input.len())))
            + 8;
        if self.out.len() < worst {
            self.out.resize(worst, 0);
        }
        let out = &mut self.out;
        // Frame descriptor: FLG, BD, content size, header checksum.
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4] = FLG_VERSION | FLG_BLOCK_INDEPENDENT | FLG_CONTENT_SIZE | FLG_CONTENT_CHECKSUM;
        out[5] = BD_4MIB;
        out[6..14].copy_from_slice(&(input.len() as u64).to_le_bytes());
        out[14] = (xxh32(&out[4..14]) >> 8) as u8;
        let mut pos = 15;
        for chunk in input.chunks(BLOCK_MAX) {
            let body = pos + 4;
            let n = match lz4_flex::block::compress_into(chunk, &mut out[body..]) {
                Ok(n) if n < chunk.len() => n,
                // Not smaller (or no room, which the sizing above rules out): store raw.
                _ => {
                    out[body..body + chunk.len()].copy_from_slice(chunk);
                    out[pos..body]
                        .copy_from_slice(&(chunk.len() as u32 | 0x8000_0000).to_le_bytes());
                    pos = body + chunk.len();
                    continue;
                }
            };
            out[pos..body].copy_from_slice(&(n as u32).to_le_bytes());
            pos = body + n;
        }
        out[pos..pos + 4].copy_from_slice(&0u32.to_le_bytes());
        out[pos + 4..pos + 8].copy_from_slice(&xxh32(input).to_le_bytes());
        &out[..pos + 8]
    }
}

/// What a [`FramesReader`] found, readable after (or during) reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FramesStatus {
    /// Complete frames decoded.
    pub frames: u64,
    /// Compressed bytes consumed by complete frames (and skippable frames).
    pub compressed_bytes: u64,
    /// Bytes after the last complete frame that did not form a frame.
    pub truncated_bytes: u64,
}

/// A `Read` over the decompressed content of a concatenation of LZ4 frames.
pub struct FramesReader<R: Read> {
    inner: R,
    raw: Vec<u8>,
    decoded: Vec<u8>,
    pos: usize,
    done: bool,
    status: Arc<Mutex<FramesStatus>>,
    /// Largest frame accepted, so a corrupt length cannot exhaust memory.
    frame_bytes_max: usize,
}

/// Largest compressed frame the reader buffers (1 GiB).
pub const FRAME_BYTES_MAX: usize = 1 << 30;

/// Outcome of reading exactly `n` bytes.
enum Fill {
    Full,
    /// The stream ended after this many of them.
    Short(usize),
}

impl<R: Read> FramesReader<R> {
    /// Read frames from `inner`.
    pub fn new(inner: R) -> Self {
        FramesReader {
            inner,
            raw: Vec::new(),
            decoded: Vec::new(),
            pos: 0,
            done: false,
            status: Arc::new(Mutex::new(FramesStatus::default())),
            frame_bytes_max: FRAME_BYTES_MAX,
        }
    }

    /// A handle on the reader's status that stays valid after the reader is moved.
    pub fn status(&self) -> Arc<Mutex<FramesStatus>> {
        self.status.clone()
    }

    /// Append exactly `n` bytes of the stream to `raw`.
    fn fill(&mut self, n: usize) -> io::Result<Fill> {
        if self.raw.len() + n > self.frame_bytes_max {
            return Err(invalid(format!(
                "LZ4 frame larger than {} bytes (corrupt block size?)",
                self.frame_bytes_max
            )));
        }
        let start = self.raw.len();
        self.raw.resize(start + n, 0);
        let mut got = 0;
        while got < n {
            match self.inner.read(&mut self.raw[start + got..]) {
                Ok(0) => {
                    self.raw.truncate(start + got);
                    return Ok(Fill::Short(got));
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Fill::Full)
    }

    fn mark_truncated(&mut self) {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .truncated_bytes = self.raw.len() as u64;
        self.done = true;
    }

    /// Read and decode the next complete frame into `decoded`.
    /// Returns `false` at the end of the stream (clean or truncated).
    fn next_frame(&mut self) -> io::Result<bool> {
        loop {
            self.raw.clear();
            match self.fill(4)? {
                Fill::Full => {}
                Fill::Short(0) => {
                    self.done = true;
                    return Ok(false);
                }
                Fill::Short(_) => {
                    self.mark_truncated();
                    return Ok(false);
                }
            }
            let magic = u32::from_le_bytes([self.raw[0], self.raw[1], self.raw[2], self.raw[3]]);
            if magic & SKIPPABLE_MASK == SKIPPABLE_MAGIC {
                if let Fill::Short(_) = self.fill(4)? {
                    self.mark_truncated();
                    return Ok(false);
                }
                let len = u32::from_le_bytes([self.raw[4], self.raw[5], self.raw[6], self.raw[7]]);
                let skipped = io::copy(&mut (&mut self.inner).take(len as u64), &mut io::sink())?;
                if skipped < len as u64 {
                    self.raw.resize(8 + skipped as usize, 0);
                    self.mark_truncated();
                    return Ok(false);
                }
                self.status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .compressed_bytes += 8 + len as u64;
                continue;
            }
            if magic != MAGIC {
                let consumed = self
                    .status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .compressed_bytes;
                return Err(invalid(format!(
                    "not an LZ4 frame at compressed offset {consumed} (magic {magic:#010x})"
                )));
            }
            if !self.read_frame_body()? {
                self.mark_truncated();
                return Ok(false);
            }
            self.decoded.clear();
            self.pos = 0;
            lz4_flex::frame::FrameDecoder::new(&self.raw[..])
                .read_to_end(&mut self.decoded)
                .map_err(|e| {
                    let consumed = self
                        .status
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .compressed_bytes;
                    invalid(format!(
                        "bad LZ4 frame at compressed offset {consumed}: {e}"
                    ))
                })?;
            let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
            st.frames += 1;
            st.compressed_bytes += self.raw.len() as u64;
            return Ok(true);
        }
    }

    /// Read the rest of a frame whose magic is in `raw`. `false` if the stream ends first.
    fn read_frame_body(&mut self) -> io::Result<bool> {
        if let Fill::Short(_) = self.fill(2)? {
            return Ok(false);
        }
        let flg = self.raw[4];
        if flg & 0xC0 != FLG_VERSION {
            return Err(invalid(format!(
                "unsupported LZ4 frame version in FLG {flg:#04x}"
            )));
        }
        let desc_rest = if flg & FLG_CONTENT_SIZE != 0 { 8 } else { 0 }
            + if flg & FLG_DICT_ID != 0 { 4 } else { 0 }
            + 1;
        if let Fill::Short(_) = self.fill(desc_rest)? {
            return Ok(false);
        }
        let block_checksum = if flg & FLG_BLOCK_CHECKSUM != 0 { 4 } else { 0 };
        loop {
            let at = self.raw.len();
            if let Fill::Short(_) = self.fill(4)? {
                return Ok(false);
            }
            let size = u32::from_le_bytes([
                self.raw[at],
                self.raw[at + 1],
                self.raw[at + 2],
                self.raw[at + 3],
            ]);
            if size == 0 {
                break;
            }
            let len = (size & 0x7FFF_FFFF) as usize;
            if let Fill::Short(_) = self.fill(len + block_checksum)? {
                return Ok(false);
            }
        }
        if flg & FLG_CONTENT_CHECKSUM != 0
            && let Fill::Short(_) = self.fill(4)?
        {
            return Ok(false);
        }
        Ok(true)
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<R: Read> Read for FramesReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.decoded.len() {
            if self.done || !self.next_frame()? {
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

    #[test]
    fn frames_round_trip_through_lz4_flex_and_concatenate() {
        let mut enc = FrameEncoder::new();
        let mut file = Vec::new();
        let a = sample(100_000);
        let b = vec![7u8; 5_000_000]; // two blocks, compressible
        let c: Vec<u8> = Vec::new();
        for part in [&a, &b, &c] {
            let frame = enc.encode(part).to_vec();
            // Each frame alone is a standard frame lz4_flex decodes.
            let mut one = Vec::new();
            lz4_flex::frame::FrameDecoder::new(&frame[..])
                .read_to_end(&mut one)
                .unwrap();
            assert_eq!(&one, part);
            file.extend_from_slice(&frame);
        }
        let (out, st) = decode_all(&file);
        assert_eq!(out.len(), a.len() + b.len());
        assert_eq!(&out[..a.len()], &a[..]);
        assert_eq!(st.frames, 3);
        assert_eq!(st.truncated_bytes, 0);
        assert_eq!(st.compressed_bytes, file.len() as u64);
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
        let frame = FrameEncoder::new().encode(&noise).to_vec();
        assert!(frame.len() <= noise.len() + 27);
        assert_eq!(decode_all(&frame).0, noise);
    }

    #[test]
    fn every_cut_yields_only_complete_frames() {
        let mut enc = FrameEncoder::new();
        let parts = [sample(3000), sample(5000), sample(2000)];
        let mut file = Vec::new();
        let mut ends = Vec::new();
        for p in &parts {
            file.extend_from_slice(enc.encode(p));
            ends.push(file.len());
        }
        for cut in 0..file.len() {
            let (out, st) = decode_all(&file[..cut]);
            let complete = ends.iter().filter(|&&e| e <= cut).count();
            let expect: usize = parts[..complete].iter().map(Vec::len).sum();
            assert_eq!(out.len(), expect, "cut at {cut}");
            assert_eq!(st.frames as usize, complete);
            let last_end = if complete == 0 { 0 } else { ends[complete - 1] };
            assert_eq!(st.truncated_bytes as usize, cut - last_end, "cut at {cut}");
        }
    }

    #[test]
    fn corruption_is_an_error_not_data() {
        let mut frame = FrameEncoder::new().encode(&sample(4000)).to_vec();
        let n = frame.len();
        frame[n - 10] ^= 0xff;
        let mut out = Vec::new();
        let err = FramesReader::new(&frame[..])
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut junk = FrameEncoder::new().encode(&sample(10)).to_vec();
        junk.extend_from_slice(b"garbage!");
        let err = FramesReader::new(&junk[..])
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(err.to_string().contains("not an LZ4 frame"), "{err}");
    }

    #[test]
    fn skippable_frames_are_skipped() {
        let mut file = Vec::new();
        file.extend_from_slice(&0x184D_2A53u32.to_le_bytes());
        file.extend_from_slice(&3u32.to_le_bytes());
        file.extend_from_slice(b"abc");
        file.extend_from_slice(FrameEncoder::new().encode(b"hello"));
        assert_eq!(decode_all(&file).0, b"hello");
    }
}
