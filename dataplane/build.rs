//! Compile the XDP program (`ebpf/linecap_xdp.c`) with clang into OUT_DIR,
//! where `src/afxdp/loader.rs` embeds it. No object file is committed.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../ebpf/linecap_xdp.c");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("linecap_xdp.o");
    println!("cargo:rerun-if-changed={}", src.display());
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg("-I/usr/include/x86_64-linux-gnu")
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "{clang} failed to compile {} ({s}): see its messages above",
            src.display()
        ),
        Err(e) => panic!(
            "cannot run {clang} to build the XDP program ({e}): install clang, llvm and libbpf-dev \
             (bash .ci/setup does)"
        ),
    }
}
