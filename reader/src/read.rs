//! Reading capture files: pcap (µs and ns), pcapng and ERF, each either
//! plain or LZ4-compressed (a concatenation of LZ4 frames, as linecap and
//! the `lz4` CLI write). The format is detected from the content, not the name.
//!
//! pcap and pcapng are parsed with `pcap-parser` (rusticata; fuzzed, handles
//! both byte orders and per-interface timestamp resolution). ERF is parsed
//! with the `wire` crate's record view, which is linecap's own format.
//!
//! A file cut short (a crash, a disk that filled) is read up to its last
//! complete record and the reader says how many bytes it left over; corrupt
//! data in the middle of a file is an error naming the offset.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use linecap_wire::erf::{self, Record, record_type};
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{Block, Linktype, PcapBlockOwned, PcapError};

use linecap_writer::lz4frame::{self, FramesReader, FramesStatus};

/// One packet read from a file; buffers are reused between calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packet {
    /// Timestamp, ns since the epoch.
    pub ts_ns: u64,
    /// Wire length without FCS (pcap convention).
    pub wire_len: u32,
    /// Captured bytes, starting at the Ethernet header.
    pub data: Vec<u8>,
    /// Interface (ERF interface bits; pcapng interface id; 0 for pcap).
    pub iface: u8,
    /// ERF loss counter of the record (0 for other formats).
    pub lctr: u16,
}

/// The container format of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Classic pcap.
    Pcap,
    /// pcapng.
    PcapNg,
    /// ERF.
    Erf,
}

/// Why reading failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read.
    // `cause` is deliberately not an error `source`: the message already
    // says it, and a source would print it twice in `{:#}` chains
    // ("… (os error 2): … (os error 2)").
    #[error("{path}: {cause}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        cause: io::Error,
    },
    /// The content is not a capture this reader knows, or is corrupt.
    #[error("{path}: {msg}")]
    Format {
        /// File.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
}

/// Counts a reader keeps about its file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Packets returned.
    pub packets: u64,
    /// Records skipped because they hold no Ethernet frame (ERF metadata,
    /// pcapng packets on non-Ethernet interfaces).
    pub skipped_non_ethernet: u64,
    /// Bytes at the end of the file that did not form a complete record or
    /// LZ4 frame (a file cut short).
    pub truncated_bytes: u64,
    /// Complete LZ4 frames read (0 for uncompressed files).
    pub lz4_frames: u64,
    /// Complete LZ4 blocks read (one per batch in linecap's files).
    pub lz4_blocks: u64,
}

const PCAP_BUFFER_BYTES: usize = 1 << 20;

/// What is wrong with a pcap / pcapng file header, in words (not the
/// parser's internal `Incomplete(4)`).
fn header_error<I: std::fmt::Debug>(format: Format, available: usize, e: &PcapError<I>) -> String {
    let (name, len) = match format {
        Format::PcapNg => ("pcapng", "section header block"),
        _ => ("pcap", "24-byte file header"),
    };
    match e {
        PcapError::Incomplete(_) | PcapError::Eof => format!(
            "truncated {name} file: it ends ({available} bytes) before its {len} is complete"
        ),
        PcapError::HeaderNotRecognized => format!("not a valid {name} file header"),
        other => format!("invalid {name} file header ({other:?})"),
    }
}

enum Inner {
    Empty,
    Pcap {
        reader: Box<dyn PcapReaderIterator + Send>,
        nanos: bool,
        /// pcapng: per interface (linktype is Ethernet, resolution units/s, offset s).
        ifaces: Vec<(bool, u64, i64)>,
    },
    Erf {
        input: BufReader<Box<dyn Read + Send>>,
        buf: Vec<u8>,
        offset: u64,
    },
}

/// Reads packets from one capture file.
pub struct CaptureReader {
    path: PathBuf,
    format: Format,
    compressed: bool,
    inner: Inner,
    lz4: Option<Arc<Mutex<FramesStatus>>>,
    stats: ReadStats,
    done: bool,
}

const PCAP_MAGICS: [u32; 4] = [0xa1b2_c3d4, 0xd4c3_b2a1, 0xa1b2_3c4d, 0x4d3c_b2a1];
const PCAPNG_MAGIC: u32 = 0x0a0d_0d0a;

impl CaptureReader {
    /// Open `path`, detecting compression and format.
    pub fn open(path: &Path) -> Result<Self, ReadError> {
        let io_err = |cause| ReadError::Io {
            path: path.to_path_buf(),
            cause,
        };
        let file = File::open(path).map_err(io_err)?;
        let mut raw = BufReader::with_capacity(1 << 16, file);
        let compressed = lz4frame::is_lz4(raw.fill_buf().map_err(io_err)?);
        let (stream, lz4): (Box<dyn Read + Send>, _) = if compressed {
            let frames = FramesReader::new(raw);
            let status = frames.status();
            (Box::new(frames), Some(status))
        } else {
            (Box::new(raw), None)
        };
        Self::from_stream(path, stream, compressed, lz4)
    }

    fn from_stream(
        path: &Path,
        stream: Box<dyn Read + Send>,
        compressed: bool,
        lz4: Option<Arc<Mutex<FramesStatus>>>,
    ) -> Result<Self, ReadError> {
        let fmt_err = |msg: String| ReadError::Format {
            path: path.to_path_buf(),
            msg,
        };
        let mut input = BufReader::with_capacity(1 << 16, stream);
        let head = input.fill_buf().map_err(|cause| ReadError::Io {
            path: path.to_path_buf(),
            cause,
        })?;
        let head_len = head.len();
        let magic =
            (head.len() >= 4).then(|| u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
        let (format, inner) = match magic {
            Some(m) if PCAP_MAGICS.contains(&m) || m == PCAPNG_MAGIC => {
                let format = if m == PCAPNG_MAGIC {
                    Format::PcapNg
                } else {
                    Format::Pcap
                };
                let reader = pcap_parser::create_reader(PCAP_BUFFER_BYTES, input)
                    .map_err(|e| fmt_err(header_error(format, head_len, &e)))?;
                (
                    format,
                    Inner::Pcap {
                        reader,
                        nanos: false,
                        ifaces: Vec::new(),
                    },
                )
            }
            // Nothing to read (an empty file, or one cut inside its first
            // LZ4 frame, as a crash can leave): zero packets, and any
            // leftover bytes are reported as truncation.
            _ if head.is_empty() => (Format::Erf, Inner::Empty),
            _ => {
                // No magic: ERF has none, so the first records must be plausible.
                let named_erf = path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(".erf"));
                match plausible_erf(head, named_erf) {
                    true => {}
                    _ if head.len() < erf::HEADER_LEN => {
                        return Err(fmt_err(format!(
                            "too short for any capture format ({} bytes)",
                            head.len()
                        )));
                    }
                    _ => {
                        return Err(fmt_err(
                            "not a pcap, pcapng or ERF file (no known magic, no valid ERF header)"
                                .into(),
                        ));
                    }
                }
                (
                    Format::Erf,
                    Inner::Erf {
                        input,
                        buf: Vec::with_capacity(erf::RLEN_MAX),
                        offset: 0,
                    },
                )
            }
        };
        Ok(CaptureReader {
            path: path.to_path_buf(),
            format,
            compressed,
            inner,
            lz4,
            stats: ReadStats::default(),
            done: false,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The container format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether the file is LZ4-compressed.
    pub fn compressed(&self) -> bool {
        self.compressed
    }

    /// Counts so far (complete after `next` returned `Ok(false)`).
    pub fn stats(&self) -> ReadStats {
        let mut s = self.stats.clone();
        if let Some(st) = &self.lz4 {
            let st = st.lock().unwrap_or_else(|e| e.into_inner());
            s.truncated_bytes += st.truncated_bytes;
            s.lz4_frames = st.frames;
            s.lz4_blocks = st.blocks;
        }
        s
    }

    /// Read the next packet into `pkt`. `Ok(false)` at the end of the file.
    pub fn next(&mut self, pkt: &mut Packet) -> Result<bool, ReadError> {
        if self.done {
            return Ok(false);
        }
        let got = match &mut self.inner {
            Inner::Empty => Ok(false),
            Inner::Pcap {
                reader,
                nanos,
                ifaces,
            } => next_pcap(reader.as_mut(), nanos, ifaces, pkt, &mut self.stats),
            Inner::Erf { input, buf, offset } => next_erf(input, buf, offset, pkt, &mut self.stats),
        };
        match got {
            Ok(true) => {
                self.stats.packets += 1;
                Ok(true)
            }
            Ok(false) => {
                self.done = true;
                Ok(false)
            }
            Err(msg) => {
                self.done = true;
                Err(ReadError::Format {
                    path: self.path.clone(),
                    msg,
                })
            }
        }
    }
}

fn next_pcap(
    reader: &mut dyn PcapReaderIterator,
    nanos: &mut bool,
    ifaces: &mut Vec<(bool, u64, i64)>,
    pkt: &mut Packet,
    stats: &mut ReadStats,
) -> Result<bool, String> {
    let mut refills_without_progress = 0;
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                refills_without_progress = 0;
                let mut got = false;
                match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        if h.network != Linktype::ETHERNET {
                            return Err(format!(
                                "link type {} is not supported (linecap reads Ethernet captures)",
                                h.network.0
                            ));
                        }
                        *nanos = h.is_nanosecond_precision();
                    }
                    PcapBlockOwned::Legacy(b) => {
                        let sub = if *nanos {
                            b.ts_usec as u64
                        } else {
                            b.ts_usec as u64 * 1_000
                        };
                        let caplen = (b.caplen as usize).min(b.data.len());
                        fill(
                            pkt,
                            b.ts_sec as u64 * 1_000_000_000 + sub,
                            b.origlen,
                            &b.data[..caplen],
                            0,
                        );
                        got = true;
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        let resol = ts_resolution(idb.if_tsresol).ok_or_else(|| {
                            format!(
                                "interface {} has a timestamp resolution (if_tsresol {:#04x}) linecap cannot represent",
                                ifaces.len(),
                                idb.if_tsresol
                            )
                        })?;
                        ifaces.push((idb.linktype == Linktype::ETHERNET, resol, idb.ts_offset()));
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => ifaces.clear(),
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        match ifaces.get(epb.if_id as usize) {
                            Some(&(true, resol, off)) => {
                                let units = ((epb.ts_high as u64) << 32) | epb.ts_low as u64;
                                let ns = (units as u128 * 1_000_000_000 / resol as u128) as i128
                                    + off as i128 * 1_000_000_000;
                                let caplen = (epb.caplen as usize).min(epb.data.len());
                                fill(
                                    pkt,
                                    ns.clamp(0, u64::MAX as i128) as u64,
                                    epb.origlen,
                                    &epb.data[..caplen],
                                    epb.if_id.min(255) as u8,
                                );
                                got = true;
                            }
                            Some(_) => stats.skipped_non_ethernet += 1,
                            None => {
                                return Err(format!(
                                    "packet on interface {} which no interface block describes",
                                    epb.if_id
                                ));
                            }
                        }
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        // No timestamp and no interface id: interface 0, time 0.
                        match ifaces.first() {
                            Some(&(true, _, _)) => {
                                let caplen = spb.data.len().min(spb.origlen as usize);
                                fill(pkt, 0, spb.origlen, &spb.data[..caplen], 0);
                                got = true;
                            }
                            _ => stats.skipped_non_ethernet += 1,
                        }
                    }
                    PcapBlockOwned::NG(_) => {}
                }
                reader.consume(offset);
                if got {
                    return Ok(true);
                }
            }
            Err(PcapError::Eof) => return Ok(false),
            Err(PcapError::UnexpectedEof) => {
                // A record cut short at the end of the file.
                stats.truncated_bytes += reader.data().len() as u64;
                return Ok(false);
            }
            Err(PcapError::Incomplete(_)) => {
                if reader.reader_exhausted() {
                    // A record cut short at the end of the file.
                    stats.truncated_bytes += reader.data().len() as u64;
                    return Ok(false);
                }
                refills_without_progress += 1;
                if refills_without_progress > 2 {
                    return Err(format!(
                        "a block larger than the {PCAP_BUFFER_BYTES}-byte read buffer"
                    ));
                }
                reader.refill().map_err(|e| format!("read error: {e:?}"))?;
            }
            Err(PcapError::BufferTooSmall) => {
                return Err(format!(
                    "a record after byte {} is larger than the {PCAP_BUFFER_BYTES}-byte read buffer (corrupt length?)",
                    reader.consumed()
                ));
            }
            Err(e) => {
                let what = format!("{e:?}");
                return Err(format!(
                    "corrupt capture after byte {}: {what}",
                    reader.consumed()
                ));
            }
        }
    }
}

/// Units per second of a pcapng `if_tsresol` byte: bit 7 clear = 10^-n s,
/// set = 2^-n s (pcap-parser 0.17 mis-decodes the binary form, so it is
/// done here). `None` when the resolution does not fit in a u64.
fn ts_resolution(tsresol: u8) -> Option<u64> {
    let n = (tsresol & 0x7f) as u32;
    if tsresol & 0x80 == 0 {
        10u64.checked_pow(n)
    } else {
        1u64.checked_shl(n).filter(|_| n < 64)
    }
}

fn fill(pkt: &mut Packet, ts_ns: u64, orig_len: u32, data: &[u8], iface: u8) {
    pkt.ts_ns = ts_ns;
    pkt.wire_len = orig_len.max(data.len() as u32);
    pkt.data.clear();
    pkt.data.extend_from_slice(data);
    pkt.iface = iface;
    pkt.lctr = 0;
}

/// Whether `head` (the first bytes of a stream, up to 64 KiB) starts like
/// ERF, which has no magic number. Each header must have a type linecap
/// knows (the Ethernet family, META, PAD), a length that holds its headers,
/// and no unknown flag bits. A file named `*.erf*` needs one such header;
/// any other needs a first record that fits in `head` followed by a second
/// plausible header (or the end of the file), so random bytes are not taken
/// for a capture.
fn plausible_erf(head: &[u8], named_erf: bool) -> bool {
    let header_ok = |at: usize| -> Option<usize> {
        let h = Record::parse_header(head.get(at..)?).ok()?;
        let known = record_type::is_ethernet(h.rtype)
            || h.rtype == record_type::META
            || h.rtype == record_type::PAD;
        let min = h.payload_offset()
            + if record_type::is_ethernet(h.rtype) {
                erf::ETH_PAD_LEN
            } else {
                0
            };
        (known && h.flags & 0xc0 == 0 && (h.rlen as usize) >= min.max(erf::HEADER_LEN))
            .then_some(h.rlen as usize)
    };
    let Some(first) = header_ok(0) else {
        return false;
    };
    if named_erf {
        return true;
    }
    match first.cmp(&head.len()) {
        std::cmp::Ordering::Greater => false,
        std::cmp::Ordering::Equal => true,
        std::cmp::Ordering::Less => {
            head.len() - first < erf::HEADER_LEN || header_ok(first).is_some()
        }
    }
}

/// Read exactly `buf.len()` bytes; returns how many were read before EOF.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn next_erf(
    input: &mut BufReader<Box<dyn Read + Send>>,
    buf: &mut Vec<u8>,
    offset: &mut u64,
    pkt: &mut Packet,
    stats: &mut ReadStats,
) -> Result<bool, String> {
    loop {
        buf.resize(erf::HEADER_LEN, 0);
        let got = read_full(input, buf).map_err(|e| e.to_string())?;
        if got == 0 {
            return Ok(false);
        }
        if got < erf::HEADER_LEN {
            stats.truncated_bytes += got as u64;
            return Ok(false);
        }
        let rlen = u16::from_be_bytes([buf[10], buf[11]]) as usize;
        if rlen < erf::HEADER_LEN {
            return Err(format!(
                "corrupt ERF record at byte {offset}: rlen {rlen} is shorter than its header"
            ));
        }
        buf.resize(rlen, 0);
        let got = read_full(input, &mut buf[erf::HEADER_LEN..]).map_err(|e| e.to_string())?;
        if got < rlen - erf::HEADER_LEN {
            stats.truncated_bytes += (erf::HEADER_LEN + got) as u64;
            return Ok(false);
        }
        let rec = Record::new_checked(buf)
            .map_err(|e| format!("corrupt ERF record at byte {offset}: {e}"))?;
        *offset += rlen as u64;
        let h = *rec.header();
        match rec.eth_frame() {
            Some(frame) => {
                fill(
                    pkt,
                    h.ts_ns(),
                    rec.wire_len(),
                    frame,
                    h.flags & erf::flags::IFACE_MASK,
                );
                pkt.lctr = h.lctr;
                return Ok(true);
            }
            None if h.rtype == record_type::PAD => {}
            None => stats.skipped_non_ethernet += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared")
            .join(rel)
    }

    fn read_all(path: &Path) -> (Vec<Packet>, ReadStats) {
        let mut r = CaptureReader::open(path).unwrap();
        let mut out = Vec::new();
        let mut p = Packet::default();
        while r.next(&mut p).unwrap() {
            out.push(p.clone());
        }
        (out, r.stats())
    }

    #[test]
    fn reads_pcap_pcapng_and_erf_of_the_same_trace_alike() {
        let (pcap, _) = read_all(&shared("traces/libtrace__100_packets.pcap"));
        let (ng, _) = read_all(&shared("traces/libtrace__100_packets.pcapng"));
        let (erf, _) = read_all(&shared("traces/libtrace__100_packets.erf"));
        assert_eq!(pcap.len(), 100);
        assert_eq!(erf.len(), 100);
        // The three copies are anonymised differently (MAC and IP bytes
        // differ; tshark agrees), so compare shape and time, not bytes.
        for ((a, b), c) in pcap.iter().zip(&ng).zip(&erf) {
            assert_eq!(a.data.len(), b.data.len());
            assert_eq!(a.data.len(), c.data.len());
            assert_eq!(a.wire_len, b.wire_len);
            // libtrace converted the DAG capture to pcap keeping ERF's wlen
            // (FCS included) as orig_len; linecap reads wlen - 4.
            assert_eq!(a.wire_len, c.wire_len + 4);
            assert_eq!(a.ts_ns, b.ts_ns);
            // (The ERF copy's clock also differs by a few µs.)
            assert!(
                a.ts_ns.abs_diff(c.ts_ns) < 10_000,
                "{} {}",
                a.ts_ns,
                c.ts_ns
            );
        }
    }

    #[test]
    fn reads_the_reference_lz4_files_to_the_original_trace() {
        let (orig, _) = read_all(&shared("traces/tcpreplay__test.pcap"));
        assert_eq!(orig.len(), 179);
        for f in ["default", "B4-blockcrc-nocontentcrc", "B4-linked"] {
            let (got, st) = read_all(&shared(&format!(
                "reference/lz4/tcpreplay__test.pcap.{f}.lz4"
            )));
            assert_eq!(got, orig, "{f}");
            assert_eq!(st.truncated_bytes, 0);
            assert!(st.lz4_frames >= 1);
        }
    }

    #[test]
    fn reads_erf_from_other_writers() {
        let (orig, _) = read_all(&shared("traces/tcpreplay__test.pcap"));
        for f in ["mergecap-4.0.17", "traceconvert-3.0.22"] {
            let (got, st) = read_all(&shared(&format!(
                "reference/erf_writers/tcpreplay__test.{f}.erf"
            )));
            assert_eq!(got.len(), orig.len(), "{f}");
            for (g, o) in got.iter().zip(&orig) {
                assert_eq!(
                    (g.ts_ns, g.wire_len, &g.data),
                    (o.ts_ns, o.wire_len, &o.data),
                    "{f}"
                );
            }
            let meta = if f.starts_with("mergecap") { 3 } else { 0 };
            assert_eq!(st.skipped_non_ethernet, meta, "{f}");
        }
    }

    #[test]
    fn pcapng_binary_and_decimal_resolutions() {
        assert_eq!(ts_resolution(6), Some(1_000_000));
        assert_eq!(ts_resolution(9), Some(1_000_000_000));
        assert_eq!(ts_resolution(0x8a), Some(1024));
        assert_eq!(ts_resolution(0x80 | 63), Some(1 << 63));
        assert_eq!(ts_resolution(0x80 | 64), None);
        assert_eq!(ts_resolution(20), None);
        // A pcapng whose interface ticks in 2^-10 s: a packet at
        // 1600000000.5 s (tshark shows the same).
        let mut f = Vec::new();
        let shb: [u32; 7] = [
            0x0a0d_0d0a,
            28,
            0x1a2b_3c4d,
            1,
            0xffff_ffff,
            0xffff_ffff,
            28,
        ];
        f.extend(shb.iter().flat_map(|w| w.to_le_bytes()));
        // IDB with if_tsresol = 0x8a.
        let idb: [u32; 5] = [1, 32, 1, 0, 0x0001_0009];
        f.extend(idb.iter().flat_map(|w| w.to_le_bytes()));
        f.extend_from_slice(&[0x8a, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&32u32.to_le_bytes());
        let ts: u64 = 1_600_000_000 * 1024 + 512;
        let epb: [u32; 7] = [6, 32 + 60, 0, (ts >> 32) as u32, ts as u32, 60, 60];
        f.extend(epb.iter().flat_map(|w| w.to_le_bytes()));
        f.extend_from_slice(&[0u8; 60]);
        f.extend_from_slice(&(32u32 + 60).to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.pcapng");
        std::fs::write(&p, &f).unwrap();
        let (got, _) = read_all(&p);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].ts_ns, 1_600_000_000_500_000_000);
    }

    #[test]
    fn random_bytes_are_rarely_taken_for_erf() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut accepted = 0;
        for _ in 0..1000 {
            let buf: Vec<u8> = (0..5000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            accepted += usize::from(plausible_erf(&buf, false));
        }
        assert!(
            accepted == 0,
            "{accepted} of 1000 random buffers looked like ERF"
        );
        for t in [
            "libtrace__100_packets.erf",
            "libtrace__5_packets.erf",
            "libtrace__provenance.erf",
        ] {
            let real = std::fs::read(shared(&format!("traces/{t}"))).unwrap();
            let head = &real[..real.len().min(65536)];
            assert!(plausible_erf(head, false), "{t}");
        }
    }

    #[test]
    fn truncated_files_read_to_the_last_complete_record() {
        let bytes = std::fs::read(shared("traces/libtrace__5_packets.erf")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cut.erf");
        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        let (got, st) = read_all(&p);
        assert_eq!(got.len(), 4);
        assert!(st.truncated_bytes > 0);
        let bytes = std::fs::read(shared("traces/zeek__icmp_5-pings.pcap")).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
        let (got, st) = read_all(&p);
        assert_eq!(got.len(), 9);
        assert!(st.truncated_bytes > 0);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk");
        std::fs::write(&p, b"this is not a capture file at all").unwrap();
        let msg = match CaptureReader::open(&p) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("garbage accepted"),
        };
        assert!(msg.contains("not a pcap, pcapng or ERF"), "{msg}");
        // An empty file (a crash can leave one) holds zero packets.
        std::fs::write(&p, b"").unwrap();
        let mut r = CaptureReader::open(&p).unwrap();
        assert!(!r.next(&mut Packet::default()).unwrap());
        // So does a file cut inside its first LZ4 block, with the cut reported
        // (the 7-byte frame header is complete, 3 bytes of the block are not).
        let frame = linecap_writer::lz4frame::FrameWriter::new().frame(&[0u8; 100]);
        std::fs::write(&p, &frame[..10]).unwrap();
        let mut r = CaptureReader::open(&p).unwrap();
        assert!(!r.next(&mut Packet::default()).unwrap());
        assert_eq!(r.stats().truncated_bytes, 3);
    }
}
