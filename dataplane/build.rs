//! Compile the XDP program (`ebpf/linecap_xdp.c`) with clang into OUT_DIR,
//! three times (plain, `-DLINECAP_DEV_BOUND` and `-DLINECAP_NO_META`), where `src/afxdp/loader.rs` and
//! `src/afxdp/devbound.rs` embed it. No object file is committed.
//!
//! With the `dpdk` feature, also generate the DPDK bindings (bindgen) and
//! build the C shim (`csrc/dpdk_shim.c`, cc), both with the flags
//! `pkg-config --cflags --libs libdpdk` gives, as they are.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    #[cfg(feature = "dpdk")]
    dpdk::build();
    let src =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../ebpf/linecap_xdp.c");
    println!("cargo:rerun-if-changed={}", src.display());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // Two programs from one source: bpf_ktime_get_ns() only (loaded by aya,
    // native and generic mode), and the device-bound variant that also asks
    // the driver for its RX hardware timestamp (src/afxdp/devbound.rs).
    compile_xdp(&src, &out_dir.join("linecap_xdp.o"), &[]);
    compile_xdp(
        &src,
        &out_dir.join("linecap_xdp_hw.o"),
        &["-DLINECAP_DEV_BOUND"],
    );
    // And the plain program without XDP metadata, for kernels whose
    // verifier refuses bpf_xdp_adjust_meta (src/afxdp/loader.rs).
    compile_xdp(
        &src,
        &out_dir.join("linecap_xdp_nometa.o"),
        &["-DLINECAP_NO_META"],
    );
}

fn compile_xdp(src: &std::path::Path, out: &std::path::Path, defines: &[&str]) {
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .args(defines)
        .arg("-I/usr/include/x86_64-linux-gnu")
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "{clang} failed to compile {} {defines:?} ({s}): see its messages above",
            src.display()
        ),
        Err(e) => panic!(
            "cannot run {clang} to build the XDP program ({e}): install clang, llvm and libbpf-dev \
             (bash .ci/setup does)"
        ),
    }
}

#[cfg(feature = "dpdk")]
mod dpdk {
    use std::path::PathBuf;
    use std::process::Command;

    fn pkg_config(arg: &str) -> Vec<String> {
        let out = Command::new("pkg-config")
            .args([arg, "libdpdk"])
            .output()
            .unwrap_or_else(|e| {
                panic!("the dpdk feature needs pkg-config ({e}): apt-get install pkg-config libdpdk-dev")
            });
        if !out.status.success() {
            panic!(
                "pkg-config {arg} libdpdk failed: {} (the dpdk feature needs Debian's DPDK 22.11: \
                 apt-get install dpdk dpdk-dev libdpdk-dev libclang-dev pkg-config)",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // The flags hold no quoted spaces (checked on Debian 12); `-include
        // rte_config.h` is two words and stays two words.
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .collect()
    }

    pub fn build() {
        let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("csrc");
        for f in ["dpdk_shim.c", "dpdk_shim.h", "dpdk_wrapper.h"] {
            println!("cargo:rerun-if-changed={}", dir.join(f).display());
        }
        let cflags = pkg_config("--cflags");
        let mut cc = cc::Build::new();
        cc.file(dir.join("dpdk_shim.c"))
            .include(&dir)
            .warnings(true);
        for f in &cflags {
            cc.flag(f);
        }
        cc.compile("linecap_dpdk_shim");

        let bindings = bindgen::Builder::default()
            .header(dir.join("dpdk_wrapper.h").display().to_string())
            .clang_args(&cflags)
            .clang_arg(format!("-I{}", dir.display()))
            .allowlist_function("lc_.*")
            .allowlist_function("rte_eal_init|rte_eal_cleanup|rte_strerror|rte_get_tsc_hz")
            .allowlist_function("rte_socket_id|rte_thread_register|rte_thread_unregister")
            .allowlist_function("rte_pktmbuf_pool_create|rte_pktmbuf_free_bulk|rte_mempool_free")
            .allowlist_function("rte_mempool_avail_count|rte_mempool_in_use_count")
            .allowlist_function("rte_mbuf_dynfield_lookup|rte_mbuf_dynflag_lookup")
            .allowlist_function("rte_eth_dev_configure|rte_eth_dev_info_get|rte_eth_dev_socket_id")
            .allowlist_function("rte_eth_rx_queue_setup|rte_eth_tx_queue_setup")
            .allowlist_function("rte_eth_dev_start|rte_eth_dev_stop|rte_eth_dev_close")
            .allowlist_function("rte_eth_dev_rx_queue_stop")
            .allowlist_function("rte_eth_dev_get_port_by_name|rte_eth_dev_count_avail")
            .allowlist_function("rte_eth_promiscuous_enable|rte_eth_stats_get")
            .allowlist_function(
                "rte_eth_xstats_get_names|rte_eth_xstats_get|rte_eth_xstats_get_by_id",
            )
            .allowlist_function("rte_eth_dev_adjust_nb_rx_tx_desc|rte_eth_dev_rss_hash_conf_get")
            .allowlist_type("lc_mbuf_layout")
            .allowlist_var("RTE_ETH_.*|RTE_MAX_ETHPORTS|RTE_ETHDEV_QUEUE_STAT_CNTRS")
            .allowlist_var("RTE_MBUF_DEFAULT_BUF_SIZE|RTE_PKTMBUF_HEADROOM|RTE_MAX_LCORE")
            .derive_default(true)
            .layout_tests(false)
            .generate_comments(false)
            .generate()
            .unwrap_or_else(|e| {
                panic!("bindgen over the DPDK headers failed ({e}): is libclang-dev installed?")
            });
        let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("dpdk_bindings.rs");
        // Edition 2024 wants `unsafe extern` blocks; this bindgen writes `extern`.
        let text = bindings
            .to_string()
            .replace("\nextern \"C\" {", "\nunsafe extern \"C\" {");
        std::fs::write(&out, text).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));

        // Dynamic linking, as pkg-config says; the PMDs are plugins EAL loads
        // from its driver directory at start-up.
        for f in pkg_config("--libs") {
            if let Some(l) = f.strip_prefix("-l") {
                println!("cargo:rustc-link-lib=dylib={l}");
            } else if let Some(p) = f.strip_prefix("-L") {
                println!("cargo:rustc-link-search=native={p}");
            }
        }
    }
}
