//! Where frames come from: the typed [`SourceSpec`] of `-i` / `--source`
//! values and of a profile's `[nic]` (no string round trip), and the
//! settings of a `dpdk:` port. It imports neither the command line nor the
//! configuration that use it.

use std::path::PathBuf;

use clap::Args;

use anyhow::{Context, bail};
use linecap_dataplane::synthetic::SyntheticConfig;

use crate::limits;

/// Where one or more queues get their frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A capture file (pcap, pcapng, ERF; plain or LZ4).
    File(PathBuf),
    /// Generated frames.
    Synthetic(SyntheticConfig),
    /// An interface's receive queues by AF_XDP (`None`: all of them).
    AfXdp {
        /// Interface name.
        ifname: String,
        /// Queues to capture.
        queues: Option<Vec<u32>>,
    },
    /// A DPDK port (PCI address or vdev) and its settings.
    Dpdk(DpdkSpec),
}

impl SourceSpec {
    pub fn label(&self) -> String {
        match self {
            SourceSpec::File(p) => format!("file:{}", p.display()),
            SourceSpec::Synthetic(c) => format!(
                "synth:{}:{}:{}",
                c.frame_len,
                c.flows,
                c.count.map_or("-".into(), |n| n.to_string())
            ),
            SourceSpec::AfXdp { ifname, .. } => format!("afxdp:{ifname}"),
            SourceSpec::Dpdk(d) => format!("dpdk:{}", d.device),
        }
    }
}

/// Parse a `--source` value.
pub fn parse_source(spec: &str) -> anyhow::Result<SourceSpec> {
    if let Some(path) = spec.strip_prefix("file:") {
        anyhow::ensure!(!path.is_empty(), "source {spec:?}: file: needs a path");
        return Ok(SourceSpec::File(PathBuf::from(path)));
    }
    if let Some(rest) = spec.strip_prefix("synth:") {
        let parts: Vec<&str> = rest.split(':').collect();
        anyhow::ensure!(
            (1..=4).contains(&parts.len()),
            "source {spec:?}: expected synth:SIZE[:FLOWS[:COUNT[:PPS]]]"
        );
        let num = |i: usize, what: &str| -> anyhow::Result<Option<u64>> {
            parts
                .get(i)
                .filter(|p| **p != "-")
                .map(|p| {
                    p.parse::<u64>()
                        .with_context(|| format!("source {spec:?}: {what} {p:?} is not a number"))
                })
                .transpose()
        };
        return Ok(SourceSpec::Synthetic(SyntheticConfig {
            frame_len: num(0, "SIZE")?.unwrap_or(0) as usize,
            flows: num(1, "FLOWS")?.unwrap_or(1).min(u32::MAX as u64) as u32,
            count: num(2, "COUNT")?,
            pps: num(3, "PPS")?,
        }));
    }
    if let Some(rest) = spec.strip_prefix("afxdp:") {
        let (ifname, queues) = match rest.split_once(':') {
            Some((i, q)) => (
                i,
                Some(crate::values::parse_list(q).map_err(anyhow::Error::msg)?),
            ),
            None => (rest, None),
        };
        anyhow::ensure!(
            !ifname.is_empty() && ifname.len() <= limits::IFNAME_MAX,
            "source {spec:?}: afxdp: needs an interface name (at most 15 characters)"
        );
        return Ok(SourceSpec::AfXdp {
            ifname: ifname.into(),
            queues,
        });
    }
    if let Some(dev) = spec.strip_prefix("dpdk:") {
        return Ok(SourceSpec::Dpdk(DpdkSpec::parse(dev)?));
    }
    bail!(
        "source {spec:?}: expected afxdp:IFACE[:QUEUES], dpdk:DEVICE, file:PATH or synth:SIZE[:FLOWS[:COUNT]]"
    )
}

/// Parse a tcpdump-style `-i` value: `IFACE` (AF_XDP, all its queues) or any
/// `--source` form (`afxdp:IFACE[:QUEUES]`, `dpdk:DEV`, `file:PATH`, `synth:…`).
pub fn parse_interface(spec: &str) -> anyhow::Result<SourceSpec> {
    const PREFIXES: [&str; 4] = ["afxdp:", "dpdk:", "file:", "synth:"];
    if PREFIXES.iter().any(|p| spec.starts_with(p)) {
        return parse_source(spec);
    }
    let ok = !spec.is_empty()
        && spec.len() <= limits::IFNAME_MAX
        && spec != "."
        && spec != ".."
        && !spec.contains(['/', ':'])
        && !spec.chars().any(char::is_whitespace);
    anyhow::ensure!(
        ok,
        "-i {spec:?}: expected an interface name (1-15 characters) or afxdp:IFACE[:QUEUES], \
         dpdk:DEVICE, file:PATH, synth:SIZE[:FLOWS[:COUNT[:PPS]]]"
    );
    Ok(SourceSpec::AfXdp {
        ifname: spec.into(),
        queues: None,
    })
}

/// How DPDK frames are stamped from the TSC when neither the NIC (timestamp
/// offload) nor the kernel (net_af_packet's ring) gives a receive time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DpdkStamps {
    /// One TSC read per frame (manifest clock `tsc`).
    #[default]
    Frame,
    /// One TSC read per receive burst, shared by its frames (manifest clock `tsc-burst`).
    Burst,
}

/// DPDK flags of `linecap capture` (the profile's `[dpdk]` and `[nic]` give the defaults).
#[derive(Args, Debug, Clone, Default)]
pub struct DpdkArgs {
    /// More EAL arguments for dpdk: sources, as one string (e.g. "-l 0 --socket-mem 1024");
    /// linecap adds --in-memory, --file-prefix, --no-pci (vdevs only), --vdev / -a for the
    /// devices, and --no-huge -m 512 when no hugepages are free, unless given here.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub eal_args: Option<String>,
    /// Receive queues per dpdk: port (one worker each; RSS spreads flows over them).
    #[arg(long, value_name = "N")]
    pub dpdk_queues: Option<u16>,
    /// Receive descriptors per DPDK queue (adjusted to the device's limits).
    #[arg(long, value_name = "N")]
    pub dpdk_rx_desc: Option<u16>,
    /// Mbufs per DPDK queue's mempool.
    #[arg(long, value_name = "N")]
    pub dpdk_mbufs: Option<u32>,
    /// Without NIC or kernel receive stamps: frame (a TSC read per frame: each frame its own
    /// stamp, about 13 ns per frame on a VM, see docs/benchmarks.md) or burst (one read per
    /// receive burst, shared by the burst's frames, as libtrace does). [default: frame]
    #[arg(long, value_name = "WHEN", value_enum)]
    pub dpdk_timestamps: Option<DpdkStamps>,
    /// RSS key, hex (colons allowed); must be symmetric (repeat every 2 bytes). Default 6d5a….
    #[arg(long, value_name = "HEX")]
    pub rss_key: Option<String>,
    /// Self-test (net_ring vdevs only): transmit the frames of this capture file into the port's
    /// own queues (frame i to queue i mod N), so the capture reads them back. Tests only.
    #[arg(long, value_name = "FILE", hide = true)]
    pub dpdk_selftest_inject: Option<PathBuf>,
}

impl DpdkArgs {
    /// The first DPDK flag that has a value, as the operator spells it.
    pub fn first_given(&self) -> Option<&'static str> {
        [
            (self.eal_args.is_some(), "--eal-args"),
            (self.dpdk_queues.is_some(), "--dpdk-queues"),
            (self.dpdk_rx_desc.is_some(), "--dpdk-rx-desc"),
            (self.dpdk_mbufs.is_some(), "--dpdk-mbufs"),
            (self.dpdk_timestamps.is_some(), "--dpdk-timestamps"),
            (self.rss_key.is_some(), "--rss-key"),
            (
                self.dpdk_selftest_inject.is_some(),
                "--dpdk-selftest-inject",
            ),
        ]
        .into_iter()
        .find_map(|(set, name)| set.then_some(name))
    }
}

/// One `dpdk:` source, with its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkSpec {
    /// The device as given (PCI address or vdev string).
    pub device: String,
    /// Receive queues.
    pub queues: u16,
    /// Receive descriptors per queue.
    pub rx_desc: u16,
    /// Mbufs per queue.
    pub mbufs: u32,
    /// RSS key bytes.
    pub rss_key: Vec<u8>,
    /// Extra EAL arguments.
    pub eal_args: Vec<String>,
    /// Self-test injection file (net_ring).
    pub inject: Option<PathBuf>,
    /// TSC stamps per frame or per burst.
    pub stamps: DpdkStamps,
}

/// Whether `s` is a PCI address (`0000:3b:00.0` or `3b:00.0`).
pub fn is_pci(s: &str) -> bool {
    let b = s.as_bytes();
    let short = |b: &[u8]| {
        b.len() == 7
            && b[2] == b':'
            && b[5] == b'.'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 2 || i == 5 || c.is_ascii_hexdigit())
    };
    short(b)
        || (b.len() == 12
            && b[4] == b':'
            && b[..4].iter().all(u8::is_ascii_hexdigit)
            && short(&b[5..]))
}

impl DpdkSpec {
    /// Parse the part after `dpdk:`.
    pub fn parse(device: &str) -> anyhow::Result<DpdkSpec> {
        let device = device.trim();
        anyhow::ensure!(
            !device.is_empty(),
            "dpdk: needs a device: a PCI address (0000:3b:00.0) or a vdev (net_pcap0,rx_pcap=FILE)"
        );
        anyhow::ensure!(
            !device.chars().any(|c| c.is_whitespace() || c == '\0'),
            "dpdk:{device}: a device string has no spaces"
        );
        if !is_pci(device) {
            let name = device.split(',').next().unwrap_or("");
            let ok = name.starts_with("net_")
                && name.len() > 4
                && name.len() < 32
                && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
                && name.as_bytes().last().is_some_and(u8::is_ascii_digit);
            anyhow::ensure!(
                ok,
                "dpdk:{device}: not a PCI address (0000:3b:00.0) nor a vdev string \
                 (net_<driver><N>[,key=value...], like net_pcap0,rx_pcap=FILE)"
            );
        }
        Ok(DpdkSpec {
            device: device.into(),
            queues: 1,
            rx_desc: 4096,
            mbufs: 16 * 1024,
            rss_key: symmetric_key(),
            eal_args: Vec::new(),
            inject: None,
            stamps: DpdkStamps::Frame,
        })
    }

    /// The ethdev name: the PCI address, or the vdev name before the first comma.
    pub fn port_name(&self) -> &str {
        self.device.split(',').next().unwrap_or(&self.device)
    }

    #[cfg_attr(not(feature = "dpdk"), allow(dead_code))] // used by the dpdk build
    /// The `iface=` a vdev is bound to (net_af_packet, net_af_xdp).
    pub fn iface(&self) -> Option<&str> {
        self.device
            .split(',')
            .skip(1)
            .find_map(|kv| kv.strip_prefix("iface="))
    }

    /// Apply the flags.
    pub fn apply(&mut self, a: &DpdkArgs) -> anyhow::Result<()> {
        if let Some(q) = a.dpdk_queues {
            anyhow::ensure!(
                (1..=256).contains(&q),
                "--dpdk-queues must be 1..=256, got {q}"
            );
            self.queues = q;
        }
        if let Some(d) = a.dpdk_rx_desc {
            anyhow::ensure!(d >= 64, "--dpdk-rx-desc must be at least 64, got {d}");
            self.rx_desc = d;
        }
        if let Some(m) = a.dpdk_mbufs {
            anyhow::ensure!(
                (1024..=(1 << 24)).contains(&m),
                "--dpdk-mbufs must be 1024..=16777216, got {m}"
            );
            self.mbufs = m;
        }
        if let Some(k) = &a.rss_key {
            let key =
                crate::values::parse_rss_key(k).map_err(|e| anyhow::anyhow!("--rss-key: {e}"))?;
            anyhow::ensure!(
                crate::values::rss_key_is_symmetric(&key),
                "--rss-key is not symmetric (it must repeat every 2 bytes, like 6d:5a:6d:5a:…): \
                 the two directions of a flow would land on different queues"
            );
            self.rss_key = key;
        }
        if let Some(s) = a.dpdk_timestamps {
            self.stamps = s;
        }
        if let Some(e) = &a.eal_args {
            self.eal_args = e.split_whitespace().map(String::from).collect();
        }
        // Only a net_ring vdev loops its transmit rings back to its receive
        // rings; elsewhere injected frames would leave the port.
        self.inject = if self.port_name().starts_with("net_ring") {
            a.dpdk_selftest_inject.clone()
        } else {
            None
        };
        Ok(())
    }
}

/// The symmetric Toeplitz key (0x6d5a repeated, 40 bytes).
pub fn symmetric_key() -> Vec<u8> {
    (0..40)
        .map(|i| if i % 2 == 0 { 0x6d } else { 0x5a })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(
            parse_source("file:/x.pcap").unwrap(),
            SourceSpec::File("/x.pcap".into())
        );
        assert_eq!(
            parse_source("synth:64:10:5").unwrap(),
            SourceSpec::Synthetic(SyntheticConfig {
                frame_len: 64,
                flows: 10,
                count: Some(5),
                pps: None,
            })
        );
        assert_eq!(
            parse_source("afxdp:veth0:0-2,5").unwrap(),
            SourceSpec::AfXdp {
                ifname: "veth0".into(),
                queues: Some(vec![0, 1, 2, 5])
            }
        );
        assert_eq!(
            parse_source("afxdp:eth1").unwrap(),
            SourceSpec::AfXdp {
                ifname: "eth1".into(),
                queues: None
            }
        );
        for bad in [
            "file:",
            "synth:",
            "synth:a",
            "synth:1:2:3:4:5",
            "eth0",
            "afxdp:",
            "afxdp:eth0:x",
            "afxdp:eth0:3-1",
            "afxdp:aaaaaaaaaaaaaaaaaaaa",
            "dpdk:",
            "dpdk:eth0",
        ] {
            assert!(parse_source(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tcpdump_interfaces() {
        assert_eq!(
            parse_interface("ens1f0").unwrap(),
            SourceSpec::AfXdp {
                ifname: "ens1f0".into(),
                queues: None
            }
        );
        assert_eq!(
            parse_interface("file:/x.pcap").unwrap(),
            SourceSpec::File("/x.pcap".into())
        );
        assert_eq!(
            parse_interface("afxdp:veth0:1").unwrap(),
            SourceSpec::AfXdp {
                ifname: "veth0".into(),
                queues: Some(vec![1])
            }
        );
        for bad in ["", "a/b", "aaaaaaaaaaaaaaaaaaaa", "x y", "dpdk:", "weird:x"] {
            assert!(parse_interface(bad).is_err(), "{bad}");
        }
    }
}
