//! `writer::lz4frame::FramesReader` over arbitrary bytes: it must stop with
//! data, a clean end, a reported cut or an `InvalidData` error, never panic,
//! and never report more truncated bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linecap_writer::lz4frame::FramesReader;
use std::io::Read;

fuzz_target!(|data: &[u8]| {
    let mut r = FramesReader::new(data);
    let status = r.status();
    let mut buf = vec![0u8; 1 << 16];
    let mut out = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out += n as u64;
                // Bound the work per input (a 4 MiB block of zeros is legal).
                if out > 64 << 20 {
                    break;
                }
            }
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
                break;
            }
        }
    }
    let st = status.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        st.compressed_bytes + st.truncated_bytes <= data.len() as u64,
        "consumed {} + truncated {} > input {}",
        st.compressed_bytes,
        st.truncated_bytes,
        data.len()
    );
});
