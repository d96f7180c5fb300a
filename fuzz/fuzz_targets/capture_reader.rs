//! `writer::read::CaptureReader` (format detection, pcap / pcapng via
//! pcap-parser, ERF, LZ4 frames) over arbitrary bytes. The reader takes a
//! path, so each input is written to one file per process on tmpfs
//! (`/dev/shm` when present). The input's last byte picks the file name:
//! odd → `*.erf` (the permissive ERF detection of files named so), even →
//! a name without `.erf` (the strict one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use linecap_reader::read::{CaptureReader, Packet};
use std::path::PathBuf;
use std::sync::OnceLock;

fn paths() -> &'static (PathBuf, PathBuf) {
    static P: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    P.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let pid = std::process::id();
        (
            base.join(format!("linecap-fuzz-{pid}.erf")),
            base.join(format!("linecap-fuzz-{pid}.cap")),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let (erf_name, other_name) = paths();
    let path = if data.last().is_some_and(|b| b & 1 == 1) {
        erf_name
    } else {
        other_name
    };
    std::fs::write(path, data).expect("cannot write the fuzz input file");
    let Ok(mut r) = CaptureReader::open(path) else {
        return;
    };
    let _ = (r.format(), r.compressed());
    let mut p = Packet::default();
    let mut n = 0u64;
    loop {
        match r.next(&mut p) {
            Ok(true) => {
                n += 1;
                assert!(
                    p.data.len() <= p.wire_len as usize,
                    "captured more than the wire length"
                );
                assert!(
                    p.data.len() <= 1 << 24,
                    "a packet larger than any format allows"
                );
                if n > 100_000 {
                    break;
                }
            }
            Ok(false) => break,
            Err(_) => break,
        }
    }
    let st = r.stats();
    assert_eq!(st.packets, n);
    assert!(st.truncated_bytes <= data.len() as u64);
    // Once at the end (or after an error), the reader stays there.
    assert!(!r.next(&mut p).unwrap_or(false));
});
