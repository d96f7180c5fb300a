//! The canary: a planted bug the fuzzer must find, proving the harness
//! (instrumentation, corpus, crash detection, `run.sh`'s exit status) works.
//! It panics on inputs starting with `LINECAP!`; one branch per byte, so
//! coverage feedback leads the fuzzer there step by step.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 8
        && data[0] == b'L'
        && data[1] == b'I'
        && data[2] == b'N'
        && data[3] == b'E'
        && data[4] == b'C'
        && data[5] == b'A'
        && data[6] == b'P'
        && data[7] == b'!'
    {
        panic!("canary found: the fuzz harness works");
    }
});
