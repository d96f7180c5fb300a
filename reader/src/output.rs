//! Writing packets out as pcap (nanosecond), pcapng or ERF.
//!
//! These three writers are a few dozen lines each and must produce exactly
//! the bytes the formats specify (ns magic, `if_tsresol = 9`, ERF's
//! `wlen = len + 4`), so they are written here rather than taken from a crate
//! whose defaults (µs resolution) would have to be overridden.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use linecap_wire::erf;

use crate::read::Packet;

/// Output container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFormat {
    /// pcap with nanosecond timestamps (magic `a1b23c4d`), Ethernet.
    Pcap,
    /// pcapng, one Ethernet interface with `if_tsresol` = 10^-9.
    PcapNg,
    /// ERF type 2 (ETH) records.
    Erf,
}

impl std::str::FromStr for OutFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pcap" => Ok(OutFormat::Pcap),
            "pcapng" => Ok(OutFormat::PcapNg),
            "erf" => Ok(OutFormat::Erf),
            _ => Err(format!(
                "unknown format {s:?}: expected pcap, pcapng or erf"
            )),
        }
    }
}

/// Snap length announced in pcap/pcapng headers.
const SNAPLEN: u32 = 262_144;

/// Writes packets to one output.
pub struct PacketWriter<W: Write> {
    out: W,
    format: OutFormat,
    written: u64,
}

impl PacketWriter<BufWriter<File>> {
    /// Create (truncate) `path`; `-` means standard output is not supported
    /// here, the caller picks a path.
    pub fn create(path: &Path, format: OutFormat) -> io::Result<Self> {
        let f = File::create(path)?;
        Self::new(BufWriter::with_capacity(1 << 20, f), format)
    }
}

impl<W: Write> PacketWriter<W> {
    /// Start an output: writes the file header for pcap and pcapng.
    pub fn new(out: W, format: OutFormat) -> io::Result<Self> {
        Self::with_interfaces(out, format, &[])
    }

    /// Like [`PacketWriter::new`], with one pcapng interface per name (the
    /// name in `if_name`; packets go to one with [`PacketWriter::write_on`]).
    /// No names: one unnamed interface. pcap and ERF ignore the names.
    pub fn with_interfaces(mut out: W, format: OutFormat, names: &[String]) -> io::Result<Self> {
        match format {
            OutFormat::Pcap => {
                out.write_all(&0xa1b2_3c4du32.to_le_bytes())?;
                out.write_all(&2u16.to_le_bytes())?;
                out.write_all(&4u16.to_le_bytes())?;
                out.write_all(&0i32.to_le_bytes())?; // thiszone
                out.write_all(&0u32.to_le_bytes())?; // sigfigs
                out.write_all(&SNAPLEN.to_le_bytes())?;
                out.write_all(&1u32.to_le_bytes())?; // LINKTYPE_ETHERNET
            }
            OutFormat::PcapNg => {
                // Section header block.
                out.write_all(&0x0a0d_0d0au32.to_le_bytes())?;
                out.write_all(&28u32.to_le_bytes())?;
                out.write_all(&0x1a2b_3c4du32.to_le_bytes())?;
                out.write_all(&1u16.to_le_bytes())?;
                out.write_all(&0u16.to_le_bytes())?;
                out.write_all(&(-1i64).to_le_bytes())?;
                out.write_all(&28u32.to_le_bytes())?;
                // Interface description blocks with if_tsresol = 9 (ns).
                let unnamed = [String::new()];
                let names = if names.is_empty() {
                    &unnamed[..]
                } else {
                    names
                };
                for name in names {
                    let name = name.as_bytes();
                    let name_opt = if name.is_empty() {
                        0
                    } else {
                        4 + name.len().next_multiple_of(4)
                    };
                    let total = (32 + name_opt) as u32;
                    out.write_all(&1u32.to_le_bytes())?;
                    out.write_all(&total.to_le_bytes())?;
                    out.write_all(&1u16.to_le_bytes())?; // linktype
                    out.write_all(&0u16.to_le_bytes())?;
                    out.write_all(&SNAPLEN.to_le_bytes())?;
                    if !name.is_empty() {
                        out.write_all(&2u16.to_le_bytes())?; // if_name
                        out.write_all(&(name.len() as u16).to_le_bytes())?;
                        out.write_all(name)?;
                        out.write_all(&[0u8; 3][..name.len().next_multiple_of(4) - name.len()])?;
                    }
                    out.write_all(&9u16.to_le_bytes())?; // if_tsresol
                    out.write_all(&1u16.to_le_bytes())?;
                    out.write_all(&[9, 0, 0, 0])?;
                    out.write_all(&0u32.to_le_bytes())?; // opt_endofopt
                    out.write_all(&total.to_le_bytes())?;
                }
            }
            OutFormat::Erf => {}
        }
        Ok(PacketWriter {
            out,
            format,
            written: 0,
        })
    }

    /// Packets written.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Append one packet (pcapng: on interface 0).
    pub fn write(&mut self, p: &Packet) -> io::Result<()> {
        self.write_on(p, 0)
    }

    /// Append one packet; pcapng puts it on interface `iface` (one of the
    /// names given to [`PacketWriter::with_interfaces`]).
    pub fn write_on(&mut self, p: &Packet, iface: u32) -> io::Result<()> {
        let caplen = p.data.len() as u32;
        let orig = p.wire_len.max(caplen);
        match self.format {
            OutFormat::Pcap => {
                let mut h = [0u8; 16];
                h[0..4].copy_from_slice(&((p.ts_ns / 1_000_000_000) as u32).to_le_bytes());
                h[4..8].copy_from_slice(&((p.ts_ns % 1_000_000_000) as u32).to_le_bytes());
                h[8..12].copy_from_slice(&caplen.to_le_bytes());
                h[12..16].copy_from_slice(&orig.to_le_bytes());
                self.out.write_all(&h)?;
                self.out.write_all(&p.data)?;
            }
            OutFormat::PcapNg => {
                let padded = caplen.next_multiple_of(4);
                let total = 32 + padded;
                let mut h = [0u8; 28];
                h[0..4].copy_from_slice(&6u32.to_le_bytes());
                h[4..8].copy_from_slice(&total.to_le_bytes());
                h[8..12].copy_from_slice(&iface.to_le_bytes());
                h[12..16].copy_from_slice(&((p.ts_ns >> 32) as u32).to_le_bytes());
                h[16..20].copy_from_slice(&(p.ts_ns as u32).to_le_bytes());
                h[20..24].copy_from_slice(&caplen.to_le_bytes());
                h[24..28].copy_from_slice(&orig.to_le_bytes());
                self.out.write_all(&h)?;
                self.out.write_all(&p.data)?;
                self.out
                    .write_all(&[0u8; 3][..(padded - caplen) as usize])?;
                self.out.write_all(&total.to_le_bytes())?;
            }
            OutFormat::Erf => {
                let data = &p.data[..p.data.len().min(erf::FRAME_MAX)];
                let mut h = [0u8; erf::ETH_RECORD_OVERHEAD];
                let cut = if data.len() < p.data.len() {
                    erf::flags::TRUNC
                } else {
                    0
                };
                erf::write_eth_header(&mut h, p.ts_ns, p.iface, cut, data.len(), orig, p.lctr);
                self.out.write_all(&h)?;
                self.out.write_all(data)?;
            }
        }
        self.written += 1;
        Ok(())
    }

    /// Flush and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::CaptureReader;

    #[test]
    fn every_format_reads_back_exactly() {
        let pkts: Vec<Packet> = (0..5u32)
            .map(|i| Packet {
                ts_ns: 1_600_000_000_123_456_789 + i as u64,
                wire_len: 100 + i,
                data: (0..(60 + i)).map(|b| b as u8).collect(),
                iface: 0,
                lctr: 0,
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        for fmt in [OutFormat::Pcap, OutFormat::PcapNg, OutFormat::Erf] {
            let path = dir.path().join(format!("{fmt:?}"));
            let mut w = PacketWriter::create(&path, fmt).unwrap();
            for p in &pkts {
                w.write(p).unwrap();
            }
            w.finish().unwrap();
            let mut r = CaptureReader::open(&path).unwrap();
            let mut got = Vec::new();
            let mut p = Packet::default();
            while r.next(&mut p).unwrap() {
                got.push(p.clone());
            }
            assert_eq!(got, pkts, "{fmt:?}");
        }
    }
}
