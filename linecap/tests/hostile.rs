//! Hostile traces: generated captures that are legal but extreme (extension
//! header chains at and over the limit, fragment floods, zero and backwards
//! timestamp deltas, 14-byte and 64 KiB frames) or corrupt (pcap records with
//! wlen < caplen, bogus snaplens, broken ERF headers, files cut in the
//! middle). Each one goes through `linecap capture`, `linecap flows` and
//! `linecap read` of the capture's output: no panic anywhere, a clear error
//! where there is one, and accounting that adds up.
//!
//! The traces are written into a temporary directory by this file, so what
//! each one holds is documented here (and in `docs/reliability.md`).

mod common;

use common::*;
use linecap_reader::output::{OutFormat, PacketWriter};
use linecap_reader::read::{CaptureReader, Packet};
use std::path::{Path, PathBuf};
use std::process::Output;

const T0_NS: u64 = 1_700_000_000_000_000_000;

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0xaa, 0x02, 0, 0, 0, 0, 0xbb];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// IPv6 / `ext` destination-options headers / UDP.
fn ipv6_chain(ext: usize) -> Vec<u8> {
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&((ext * 8 + 8) as u16).to_be_bytes());
    ip.push(if ext == 0 { 17 } else { 60 });
    ip.push(64);
    ip.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8].repeat(4)[..16]);
    ip.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb9].repeat(4)[..16]);
    for i in 0..ext {
        let next = if i + 1 == ext { 17 } else { 60 };
        ip.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    ip.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0]);
    eth(0x86dd, &ip)
}

/// An IPv4 fragment of datagram `ident` at `offset_units` × 8 bytes.
fn ipv4_fragment(ident: u16, offset_units: u16, more: bool, src: [u8; 4]) -> Vec<u8> {
    let payload = [0xabu8; 16];
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&(20 + payload.len() as u16).to_be_bytes());
    ip.extend_from_slice(&ident.to_be_bytes());
    ip.extend_from_slice(&(offset_units | if more { 0x2000 } else { 0 }).to_be_bytes());
    ip.extend_from_slice(&[64, 17, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&[10, 9, 9, 9]);
    if offset_units == 0 {
        // The first fragment starts with the UDP header.
        ip.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 200, 0, 0]);
        ip.extend_from_slice(&payload[8..]);
    } else {
        ip.extend_from_slice(&payload);
    }
    eth(0x0800, &ip)
}

/// A small IPv4/UDP frame of `len` bytes (at least 42).
fn udp_frame(len: usize, tag: u32) -> Vec<u8> {
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((len - 14) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    ip.extend_from_slice(&[0x04, 0xd2, 0x16, 0x2e]);
    ip.extend_from_slice(&((len - 34) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(&tag.to_be_bytes());
    ip.resize(len - 14, 0x5a);
    eth(0x0800, &ip)
}

fn write_pcap(path: &Path, frames: &[(u64, Vec<u8>)]) {
    let mut w = PacketWriter::create(path, OutFormat::Pcap).unwrap();
    for (ts, f) in frames {
        w.write(&Packet {
            ts_ns: *ts,
            wire_len: f.len() as u32,
            data: f.clone(),
            ..Packet::default()
        })
        .unwrap();
    }
    w.finish().unwrap();
}

/// A classic µs pcap written byte by byte: (ts_sec, ts_usec, incl_len,
/// orig_len, data) per record; `incl_len` need not match the data.
fn raw_pcap(snaplen: u32, records: &[(u32, u32, u32, u32, Vec<u8>)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&snaplen.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    for (s, us, incl, orig, data) in records {
        for w in [s, us, incl, orig] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(data);
    }
    b
}

/// One ERF ETH record with the given type byte and rlen, and `frame` after
/// the 2 pad bytes (whatever rlen says).
fn erf_record(type_byte: u8, rlen: u16, frame: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&((1_700_000_000u64) << 32).to_le_bytes());
    r.push(type_byte);
    r.push(0x04);
    r.extend_from_slice(&rlen.to_be_bytes());
    r.extend_from_slice(&0u16.to_be_bytes());
    r.extend_from_slice(&((frame.len() + 4) as u16).to_be_bytes());
    r.extend_from_slice(&[0, 0]);
    r.extend_from_slice(frame);
    r
}

fn good_erf(tag: u32) -> Vec<u8> {
    let f = udp_frame(60, tag);
    erf_record(2, (18 + f.len()) as u16, &f)
}

/// The hostile traces: (file name, what it holds, frames a reader returns
/// when it reads the whole file, or `None` when the file is corrupt and only
/// "no panic, balanced accounting" is asked).
fn make_traces(dir: &Path) -> Vec<(PathBuf, &'static str, Option<u64>)> {
    let mut v = Vec::new();
    let mut add = |name: &str, what: &'static str, n: Option<u64>, bytes: Option<Vec<u8>>| {
        let p = dir.join(name);
        if let Some(b) = bytes {
            std::fs::write(&p, b).unwrap();
        }
        v.push((p, what, n));
    };

    // IPv6 extension-header chains: 0..=16 headers (the limit) and 17 to 64
    // (over it: Malformed for the flow key, still captured and written).
    let frames: Vec<(u64, Vec<u8>)> = (0..=64)
        .map(|n| (T0_NS + n as u64, ipv6_chain(n)))
        .collect();
    write_pcap(&dir.join("ipv6_ext_chain.pcap"), &frames);
    add(
        "ipv6_ext_chain.pcap",
        "IPv6 with 0..64 destination-options headers (limit 16)",
        Some(65),
        None,
    );

    // Fragment flood: 10 000 IPv4 fragments of 1 000 datagrams from 100
    // sources, interleaved (all first fragments, then all second ones, ...).
    let mut frames = Vec::new();
    for round in 0..10u16 {
        for d in 0..1000u16 {
            let offset = round * 2;
            let src = [10, 1, (d % 100) as u8, 1];
            frames.push((
                T0_NS + frames.len() as u64 * 100,
                ipv4_fragment(d, offset, round != 9, src),
            ));
        }
    }
    write_pcap(&dir.join("fragment_flood.pcap"), &frames);
    add(
        "fragment_flood.pcap",
        "10 000 IPv4 fragments of 1 000 datagrams, interleaved",
        Some(10_000),
        None,
    );

    // Timestamps: 1000 frames with the same time, then 1000 going back 1 µs
    // each, then time 0, then the largest second a u32 holds.
    let mut frames = Vec::new();
    for i in 0..1000 {
        frames.push((T0_NS, udp_frame(64, i)));
    }
    for i in 0..1000u64 {
        frames.push((T0_NS - i * 1000, udp_frame(64, 1000 + i as u32)));
    }
    frames.push((0, udp_frame(64, 9_000)));
    frames.push((
        u32::MAX as u64 * 1_000_000_000 + 999_999_999,
        udp_frame(64, 9_001),
    ));
    frames.push((T0_NS, udp_frame(64, 9_002)));
    write_pcap(&dir.join("timestamps.pcap"), &frames);
    add(
        "timestamps.pcap",
        "zero and backwards time deltas, time 0, time 2^32-1 s",
        Some(2003),
        None,
    );

    // Sizes: the shortest Ethernet frame (14 bytes, header only), 15, 60,
    // and the longest pcap allows here: 65535 (longer than an ERF record
    // holds: cut to 65517 and flagged), plus 9000 (jumbo).
    let mut frames = vec![
        (T0_NS, eth(0x0800, &[])),
        (T0_NS + 1, eth(0x0800, &[0x45])),
        (T0_NS + 2, udp_frame(60, 1)),
        (T0_NS + 3, udp_frame(65535, 2)),
        (T0_NS + 4, udp_frame(9000, 3)),
        (T0_NS + 5, udp_frame(65535, 4)),
    ];
    frames.push((T0_NS + 6, eth(0x86dd, &[0x60])));
    write_pcap(&dir.join("sizes.pcap"), &frames);
    add(
        "sizes.pcap",
        "frames of 14, 15, 60, 9000 and 65535 bytes",
        Some(7),
        None,
    );

    // pcap records whose wire length is smaller than the captured length
    // (orig_len 0, 1, caplen - 1), between good ones.
    let f = udp_frame(100, 7);
    let recs: Vec<(u32, u32, u32, u32, Vec<u8>)> = vec![
        (1_700_000_000, 0, 100, 100, f.clone()),
        (1_700_000_000, 1, 100, 0, f.clone()),
        (1_700_000_000, 2, 100, 1, f.clone()),
        (1_700_000_000, 3, 100, 99, f.clone()),
        (1_700_000_000, 4, 100, 100, f.clone()),
    ];
    add(
        "wlen_lt_caplen.pcap",
        "pcap records with orig_len 0, 1 and caplen-1 < caplen",
        Some(5),
        Some(raw_pcap(65535, &recs)),
    );

    // Bogus snaplens in the file header, with good records.
    let recs: Vec<_> = (0..10)
        .map(|i| (1_700_000_000, i, 100, 100, udp_frame(100, i)))
        .collect();
    add(
        "snaplen_0.pcap",
        "pcap file header with snaplen 0",
        Some(10),
        Some(raw_pcap(0, &recs)),
    );
    add(
        "snaplen_ffffffff.pcap",
        "pcap file header with snaplen 0xFFFFFFFF",
        Some(10),
        Some(raw_pcap(0xFFFF_FFFF, &recs)),
    );
    // A record claiming 4 GiB of captured data.
    let mut recs = recs.clone();
    recs.push((1_700_000_001, 0, 0xFFFF_FFF0, 100, udp_frame(100, 99)));
    add(
        "caplen_4g.pcap",
        "a pcap record with incl_len 0xFFFFFFF0",
        None,
        Some(raw_pcap(65535, &recs)),
    );

    // Corrupt ERF: good records, then a broken one, then good ones again.
    let erf_with = |bad: Vec<u8>| {
        let mut b = Vec::new();
        for i in 0..5 {
            b.extend(good_erf(i));
        }
        b.extend(bad);
        for i in 5..10 {
            b.extend(good_erf(i));
        }
        b
    };
    let f = udp_frame(60, 0);
    add(
        "erf_rlen_0.erf",
        "ERF: a record with rlen 0 after 5 good ones",
        None,
        Some(erf_with(erf_record(2, 0, &f))),
    );
    add(
        "erf_rlen_short.erf",
        "ERF: a record with rlen 10 (< 16-byte header)",
        None,
        Some(erf_with(erf_record(2, 10, &f))),
    );
    add(
        "erf_rlen_eth_short.erf",
        "ERF: an ETH record with rlen 16 (no room for the 2 pad bytes)",
        None,
        Some(erf_with(erf_record(2, 16, &f))),
    );
    // Extension headers whose chain never ends (every header says "another
    // follows") and runs past rlen.
    let mut bad = erf_record(0x82, 18 + 60, &[0xffu8; 60]);
    bad[16] = 0x80;
    add(
        "erf_bad_ext_chain.erf",
        "ERF: an extension-header chain that runs past rlen",
        None,
        Some(erf_with(bad)),
    );
    // As the first record (format detection sees it).
    let mut first = erf_record(0x82, 18 + 60, &[0xffu8; 60]);
    first.extend(good_erf(1));
    add(
        "erf_bad_ext_first.erf",
        "ERF: the first record has a runaway extension chain",
        None,
        Some(first),
    );
    // rlen larger than the rest of the file.
    add(
        "erf_rlen_past_end.erf",
        "ERF: the last record's rlen runs past the end of the file",
        Some(5),
        Some({
            let mut b = Vec::new();
            for i in 0..5 {
                b.extend(good_erf(i));
            }
            b.extend(erf_record(2, 60_000, &f));
            b
        }),
    );

    // Files cut in the middle of a record: pcap, pcapng, ERF, and linecap's
    // own .erf.lz4 cut inside an LZ4 block.
    let src = shared("traces/tcpreplay__test.pcap");
    let b = std::fs::read(&src).unwrap();
    add(
        "cut.pcap",
        "a pcap cut in the middle (inside a record)",
        None,
        Some(b[..b.len() / 2 + 7].to_vec()),
    );
    let b = std::fs::read(shared("traces/libtrace__100_packets.pcapng")).unwrap();
    add(
        "cut.pcapng",
        "a pcapng cut in the middle of a block",
        None,
        Some(b[..b.len() / 2 + 3].to_vec()),
    );
    let b = std::fs::read(shared("traces/libtrace__100_packets.erf")).unwrap();
    add(
        "cut.erf",
        "an ERF file cut in the middle of a record",
        None,
        Some(b[..b.len() / 2 + 5].to_vec()),
    );
    let cap = dir.join("lz4src");
    run_ok(
        linecap()
            .arg("capture")
            .arg("--source")
            .arg(format!("file:{}", src.display()))
            // Several LZ4 blocks, so the cut leaves complete ones before it.
            .args(["--batch-bytes", "64K"])
            .arg("--out")
            .arg(&cap),
    );
    let lz4 = files_with(&cap, ".erf.lz4");
    let b = std::fs::read(&lz4[0]).unwrap();
    add(
        "cut.erf.lz4",
        "a linecap .erf.lz4 file cut inside an LZ4 block",
        None,
        Some(b[..b.len() / 2].to_vec()),
    );
    v
}

fn no_panic(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() != Some(101) && !stderr.contains("panicked"),
        "{what} panicked ({}):\n{stderr}",
        out.status
    );
    assert!(
        out.status.code().is_some(),
        "{what} died of a signal: {}\n{stderr}",
        out.status
    );
}

/// Frames a reader gets from `path` (stops at the first error).
fn readable_frames(path: &Path) -> u64 {
    let Ok(mut r) = CaptureReader::open(path) else {
        return 0;
    };
    let mut p = Packet::default();
    let mut n = 0;
    while let Ok(true) = r.next(&mut p) {
        n += 1;
    }
    n
}

#[test]
fn hostile_traces_go_through_capture_flows_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (trace, what, frames) in make_traces(dir.path()) {
        checked += 1;
        let name = trace.file_name().unwrap().to_string_lossy().into_owned();
        let out = dir.path().join(format!("out-{name}"));
        let rep = dir.path().join(format!("{name}.json"));
        let cap = run(linecap()
            .arg("capture")
            .arg("--source")
            .arg(format!("file:{}", trace.display()))
            .arg("--out")
            .arg(&out)
            .arg("--report-json")
            .arg(&rep));
        no_panic(&cap, &format!("capture of {name} ({what})"));
        let code = cap.status.code().unwrap();
        let stderr = String::from_utf8_lossy(&cap.stderr).into_owned()
            + &String::from_utf8_lossy(&cap.stdout);
        assert!(
            code == 0 || code == 1,
            "capture of {name} ({what}) exited {code}:\n{stderr}"
        );
        if code == 1 {
            assert!(
                stderr.contains(&format!("error: {}", trace.display())),
                "capture of {name}: exit 1 without a clear error:\n{stderr}"
            );
        }
        let r = report(&rep);
        assert_balanced(&r);
        let seen = total(&r, |q| q["seen"].as_u64().unwrap());
        let written = total(&r, |q| q["written"].as_u64().unwrap());
        // The reader's own count of the file is what the capture saw.
        assert_eq!(seen, readable_frames(&trace), "{name}: seen");
        if let Some(n) = frames
            && (seen != n || code != 0)
        {
            failures.push(format!("{name}: seen {seen}, want {n}, exit {code}"));
        }

        if written == 0 {
            assert!(files_with(&out, ".erf.lz4").is_empty());
            continue;
        }
        // Read back what was written: every file whole, the counts equal.
        let rb = run(linecap().arg("read").arg(&out).arg("--stats"));
        no_panic(&rb, &format!("read of the capture of {name}"));
        assert!(
            rb.status.success(),
            "read of the capture of {name} failed:\n{}",
            String::from_utf8_lossy(&rb.stderr)
        );
        let back: u64 = files_with(&out, ".erf.lz4")
            .iter()
            .map(|f| readable_frames(f))
            .sum();
        assert_eq!(back, written, "{name}: read back vs written");

        // Flows over the hostile file itself.
        let fl = run(linecap().arg("flows").arg(&trace).args(["--format", "tsv"]));
        no_panic(&fl, &format!("flows of {name} ({what})"));
        let code = fl.status.code().unwrap();
        assert!(
            code == 0 || code == 1,
            "flows of {name} exited {code}:\n{}",
            String::from_utf8_lossy(&fl.stderr)
        );
        // And over the capture's output, which must always be clean.
        let fl = run(linecap().arg("flows").arg(&out).args(["--format", "tsv"]));
        no_panic(&fl, &format!("flows of the capture of {name}"));
        assert!(
            fl.status.success(),
            "flows of the capture of {name} failed:\n{}",
            String::from_utf8_lossy(&fl.stderr)
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(checked, 18, "every hostile trace checked");
}
