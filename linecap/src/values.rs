//! The syntax of flag and profile values: sizes, core lists, modes, RSS
//! keys and `--job` specs. A leaf module: the command line (`cli`), the
//! profile (`config::profile`), `check-host` and the DPDK source all parse
//! their values here, and it imports none of them.

use std::path::PathBuf;

use linecap_dataplane::afxdp::{AttachMode, XdpTimestamps, ZeroCopy};
use linecap_dataplane::ring::HugePages;

/// `123`, `64K`, `100M`, `2G` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix {c:?} (use K, M, G or T)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 4096, 64K, 100M, 2G)"))?;
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("size {s:?} must be above 0 and fit in 64 bits"))
}

pub fn parse_xdp_mode(s: &str) -> Result<AttachMode, String> {
    match s {
        "auto" => Ok(AttachMode::Auto),
        "native" | "drv" => Ok(AttachMode::Native),
        "generic" | "skb" => Ok(AttachMode::Generic),
        _ => Err(format!("{s:?}: expected auto, native or generic")),
    }
}

pub fn parse_xdp_timestamps(s: &str) -> Result<XdpTimestamps, String> {
    match s {
        "auto" => Ok(XdpTimestamps::Auto),
        "hardware" | "hw" => Ok(XdpTimestamps::Hardware),
        "ktime" => Ok(XdpTimestamps::Ktime),
        _ => Err(format!("{s:?}: expected auto, hardware or ktime")),
    }
}

pub fn parse_zero_copy(s: &str) -> Result<ZeroCopy, String> {
    match s {
        "auto" => Ok(ZeroCopy::Auto),
        "require" => Ok(ZeroCopy::Require),
        "off" => Ok(ZeroCopy::Off),
        _ => Err(format!("{s:?}: expected auto, require or off")),
    }
}

/// A list of ids given as one flag value (clap would read a bare `Vec` as repeated flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdList(pub Vec<u32>);

pub fn parse_id_list(s: &str) -> Result<IdList, String> {
    parse_list(s).map(IdList)
}

/// `3`, `0-3`, `0,2,5-7` → sorted, deduplicated numbers.
pub fn parse_list(s: &str) -> Result<Vec<u32>, String> {
    let mut v = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let bad = || format!("{part:?} in {s:?}: expected N or N-M (like 0-3 or 0,2,5)");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: u32 = a.parse().map_err(|_| bad())?;
                let b: u32 = b.parse().map_err(|_| bad())?;
                if a > b || b - a > 4096 {
                    return Err(bad());
                }
                v.extend(a..=b);
            }
            None => v.push(part.parse().map_err(|_| bad())?),
        }
    }
    v.sort();
    v.dedup();
    Ok(v)
}

/// Indices in the order given, like `0,1,0,1` (a queue → directory map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexList(pub Vec<usize>);

/// Parse an [`IndexList`].
pub fn parse_index_list(s: &str) -> Result<IndexList, String> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<usize>()
                .map_err(|_| format!("{p:?} in {s:?}: expected indices like 0,1,0,1"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(IndexList)
}

pub fn parse_hugepages(s: &str) -> Result<HugePages, String> {
    match s {
        "try" => Ok(HugePages::Try),
        "require" => Ok(HugePages::Require),
        "never" => Ok(HugePages::Never),
        _ => Err(format!("{s:?}: expected try, require or never")),
    }
}

/// tcpdump's `-C`: millions of bytes (`100` = 100,000,000 bytes), or a size
/// with a suffix (`64K`, `100M`, `1G`: powers of 1024, as `--batch-bytes`).
pub fn parse_file_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = t
            .parse()
            .map_err(|_| format!("{t:?} is not a number of millions of bytes"))?;
        return n
            .checked_mul(1_000_000)
            .filter(|&v| v > 0)
            .ok_or_else(|| format!("-C {t}: must be above 0 and fit in 64 bits"));
    }
    parse_size(t)
}

/// tcpdump's `-B`: the ring buffer in KiB (`-B 65536` = 64 MiB), or a size
/// with a suffix (`64M`).
pub fn parse_buffer_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = t
            .parse()
            .map_err(|_| format!("{t:?} is not a number of KiB"))?;
        return n
            .checked_mul(1024)
            .filter(|&v| v > 0)
            .ok_or_else(|| format!("-B {t}: must be above 0 and fit in 64 bits"));
    }
    parse_size(t)
}

/// Parse an RSS key: 40 bytes as hex, with or without `:` separators.
pub fn parse_rss_key(s: &str) -> Result<Vec<u8>, String> {
    let hex: String = s.chars().filter(|c| *c != ':' && *c != ' ').collect();
    if !hex.len().is_multiple_of(2) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{s:?} is not hex bytes (like 6d:5a:6d:5a:…)"));
    }
    let key: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("checked hex"))
        .collect();
    if key.len() != 40 {
        return Err(format!("needs 40 bytes, got {}", key.len()));
    }
    Ok(key)
}

/// Whether a Toeplitz key hashes both directions of a flow alike: it must
/// repeat every 16 bits (the distance between swapped ports, and a divisor of
/// the distance between swapped addresses), like `6d5a` repeated.
pub fn rss_key_is_symmetric(key: &[u8]) -> bool {
    key.len() >= 2 && key.chunks(2).all(|c| c == &key[..c.len()])
}

/// One `--job` (or `[[job]]` of a profile) as given: the policies are
/// checked and loaded by [`JobSpec::config`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobSpec {
    /// Job name.
    pub name: String,
    /// Output directory.
    pub out: PathBuf,
    /// tcpdump-syntax filter.
    pub filter: Option<String>,
    /// Sampling policy.
    pub sample: Option<linecap_dataplane::policy::sample::SamplePolicy>,
    /// Bytes kept per frame.
    pub snaplen: Option<u32>,
    /// Crypto-PAn key file.
    pub anonymize_key: Option<PathBuf>,
    /// Which addresses to anonymise (default both).
    pub anonymize: Option<linecap_dataplane::policy::anon::AnonMode>,
    /// MAC pseudonym key file.
    pub mac_key: Option<PathBuf>,
}

impl std::str::FromStr for JobSpec {
    type Err = String;
    /// `NAME:DIR[;KEY=VALUE]...` with keys filter, sample, snaplen,
    /// anonymize-key, anonymize, mac-key (`;` separates: filter expressions
    /// hold spaces, never `;`).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(';');
        let head = parts.next().unwrap_or_default().trim();
        let (name, out) = head
            .split_once(':')
            .filter(|(n, o)| !n.trim().is_empty() && !o.trim().is_empty())
            .ok_or_else(|| {
                format!("{s:?}: expected NAME:DIR[;KEY=VALUE]... (like 'dns:/data/dns;filter=udp port 53')")
            })?;
        let mut j = JobSpec {
            name: name.trim().into(),
            out: PathBuf::from(out.trim()),
            ..JobSpec::default()
        };
        for kv in parts.map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| format!("{kv:?}: expected KEY=VALUE"))?;
            let dup = |set: bool| {
                if set {
                    Err(format!("{k} given twice"))
                } else {
                    Ok(())
                }
            };
            match k {
                "filter" => {
                    dup(j.filter.is_some())?;
                    j.filter = Some(v.into());
                }
                "sample" => {
                    dup(j.sample.is_some())?;
                    j.sample = Some(v.parse().map_err(|e| format!("sample={v}: {e}"))?);
                }
                "snaplen" => {
                    dup(j.snaplen.is_some())?;
                    j.snaplen = Some(
                        v.parse()
                            .map_err(|_| format!("snaplen={v}: not a number of bytes"))?,
                    );
                }
                "anonymize-key" => {
                    dup(j.anonymize_key.is_some())?;
                    j.anonymize_key = Some(v.into());
                }
                "anonymize" => {
                    dup(j.anonymize.is_some())?;
                    j.anonymize = Some(v.parse()?);
                }
                "mac-key" => {
                    dup(j.mac_key.is_some())?;
                    j.mac_key = Some(v.into());
                }
                _ => {
                    return Err(format!(
                        "unknown job key {k:?}: expected filter, sample, snaplen, anonymize-key, \
                         anonymize or mac-key"
                    ));
                }
            }
        }
        if j.anonymize.is_some() && j.anonymize_key.is_none() {
            return Err("anonymize=MODE needs anonymize-key=FILE".into());
        }
        Ok(j)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("100m"), Ok(100 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn tcpdump_units() {
        // -C: millions of bytes, as tcpdump; suffixes are powers of 1024.
        assert_eq!(parse_file_size("100"), Ok(100_000_000));
        assert_eq!(parse_file_size("1"), Ok(1_000_000));
        assert_eq!(parse_file_size("64K"), Ok(64 << 10));
        assert_eq!(parse_file_size("1G"), Ok(1 << 30));
        assert!(parse_file_size("0").is_err());
        assert!(parse_file_size("-1").is_err());
        assert!(parse_file_size("99999999999999999").is_err());
        // -B: KiB, as tcpdump.
        assert_eq!(parse_buffer_size("65536"), Ok(64 << 20));
        assert_eq!(parse_buffer_size("16M"), Ok(16 << 20));
        assert!(parse_buffer_size("0").is_err());
    }
}
