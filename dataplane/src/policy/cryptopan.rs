//! Crypto-PAn prefix-preserving address anonymisation (Fan, Xu, Ammar, Moon,
//! "Prefix-preserving IP address anonymization", Computer Networks 46(2), 2004).
//!
//! # Algorithm
//!
//! The 32-byte key is an AES-128 key `k` followed by a pad secret `s`; the
//! pad is `P = AES_k(s)`. An address is taken as a left-aligned 128-bit
//! string `a` (IPv4 in the top 32 bits). Output bit `i` (0 = most
//! significant) is
//!
//! ```text
//! out[i] = a[i] XOR msb( AES_k( a[0..i] ‖ P[i..128] ) )
//! ```
//!
//! so output bit `i` depends only on input bits `0..=i`: two addresses that
//! share a `p`-bit prefix map to addresses that share exactly a `p`-bit
//! prefix. This is the published reference algorithm (the C++ sample and the
//! vectors in `shared/vectors`); libtrace's `traceanon` does not encrypt the
//! pad and gives other results.
//!
//! # Cost and the prefix cache
//!
//! Without a cache an IPv4 address costs 32 AES blocks and an IPv6 address
//! 128; the blocks of one address do not depend on each other, so they are
//! encrypted in one `encrypt_blocks` call (AES-NI pipelines them; the `aes`
//! crate picks AES-NI at run time and falls back to a constant-time software
//! implementation).
//!
//! [`CryptoPan::with_cache`] adds, allocated once at construction:
//!
//! * a **16-bit table**: the anonymised top 16 bits for every 16-bit prefix
//!   (65 536 × `u16` = 128 KiB, built eagerly with 65 535 AES blocks — the
//!   prefix tree — and shared by IPv4 and IPv6, whose first 16 pad blocks are
//!   the same). It removes 16 AES blocks from every address.
//! * a direct-mapped cache of recent **IPv4 /24s** (anonymised top 24 bits):
//!   a hit leaves 8 AES blocks for the last byte.
//! * a direct-mapped cache of recent **IPv6 /64s** (anonymised top 64 bits):
//!   a hit leaves 64 AES blocks for the interface identifier.
//! * direct-mapped caches of recent **whole addresses** (IPv4 and IPv6): the
//!   hosts of active flows repeat packet after packet, and a hit costs no
//!   AES at all.
//!
//! Lookups go host cache → prefix cache → 16-bit table → AES. Cached and
//! uncached results are identical (tested); the caches never grow.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes::Aes128;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};

/// Bytes of a Crypto-PAn key: AES-128 key ‖ pad secret.
pub const KEY_LEN: usize = 32;

/// Sizes of the caches of [`CryptoPan::with_cache`] (entries; each is
/// rounded up to a power of two, 0 disables that cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Slots of the IPv4 whole-address cache.
    pub v4_host_slots: usize,
    /// Slots of the IPv4 /24 cache.
    pub v4_slash24_slots: usize,
    /// Slots of the IPv6 whole-address cache.
    pub v6_host_slots: usize,
    /// Slots of the IPv6 /64 cache.
    pub v6_slash64_slots: usize,
}

impl CacheConfig {
    /// No host or prefix caches (the 16-bit table only).
    pub const TABLE_ONLY: CacheConfig = CacheConfig {
        v4_host_slots: 0,
        v4_slash24_slots: 0,
        v6_host_slots: 0,
        v6_slash64_slots: 0,
    };

    /// Memory of the caches and the table, in bytes.
    pub fn memory_bytes(&self) -> usize {
        let slots = |n: usize| {
            if n == 0 {
                0
            } else {
                n.clamp(2, CACHE_SLOTS_MAX).next_power_of_two()
            }
        };
        (slots(self.v4_host_slots)
            + slots(self.v4_slash24_slots)
            + slots(self.v6_host_slots)
            + slots(self.v6_slash64_slots))
            * std::mem::size_of::<Slot>()
            + (1 << 16) * 2
    }
}

impl Default for CacheConfig {
    /// 2048 IPv4 hosts, 2048 IPv4 /24s, 2048 IPv6 hosts, 1024 IPv6 /64s:
    /// 336 KiB of slots plus the 128 KiB table.
    fn default() -> Self {
        CacheConfig {
            v4_host_slots: 2048,
            v4_slash24_slots: 2048,
            v6_host_slots: 2048,
            v6_slash64_slots: 1024,
        }
    }
}

/// Hits and misses of the prefix caches (the 16-bit table always hits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// IPv4 lookups served from the host cache.
    pub v4_host_hits: u64,
    /// IPv4 lookups served from the /24 cache.
    pub v4_prefix_hits: u64,
    /// IPv4 lookups that missed both.
    pub v4_misses: u64,
    /// IPv6 lookups served from the host cache.
    pub v6_host_hits: u64,
    /// IPv6 lookups served from the /64 cache.
    pub v6_prefix_hits: u64,
    /// IPv6 lookups that missed both.
    pub v6_misses: u64,
}

impl CacheStats {
    /// Fraction of lookups that hit a host or prefix cache (0 when none).
    pub fn hit_ratio(&self) -> f64 {
        let hits =
            self.v4_host_hits + self.v4_prefix_hits + self.v6_host_hits + self.v6_prefix_hits;
        let all = hits + self.v4_misses + self.v6_misses;
        if all == 0 {
            0.0
        } else {
            hits as f64 / all as f64
        }
    }
}

/// Slots of the largest cache accepted (2^24).
pub const CACHE_SLOTS_MAX: usize = 1 << 24;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    used: bool,
    tag: u128,
    val: u128,
}

/// A 2-way set-associative prefix (or address) → anonymised prefix cache:
/// slots `2j` (most recent) and `2j + 1` form set `j`; a miss moves the
/// set's recent entry to the second slot and puts the new one first.
#[derive(Debug, Clone)]
struct PrefixCache {
    slots: Box<[Slot]>,
    shift: u32,
}

impl PrefixCache {
    fn new(slots: usize) -> Option<PrefixCache> {
        if slots == 0 {
            return None;
        }
        let n = slots.clamp(2, CACHE_SLOTS_MAX).next_power_of_two();
        Some(PrefixCache {
            slots: vec![Slot::default(); n].into_boxed_slice(),
            shift: 64 - n.trailing_zeros(),
        })
    }

    /// First slot of the tag's set.
    #[inline(always)]
    fn index(&self, tag: u128) -> usize {
        let folded = (tag as u64) ^ ((tag >> 64) as u64).rotate_left(29);
        ((folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize) & !1
    }

    #[inline(always)]
    fn get(&self, tag: u128) -> Option<u128> {
        let i = self.index(tag);
        match self.slots.get(i..i + 2) {
            Some([a, _]) if a.used && a.tag == tag => Some(a.val),
            Some([_, b]) if b.used && b.tag == tag => Some(b.val),
            _ => None,
        }
    }

    #[inline(always)]
    fn put(&mut self, tag: u128, val: u128) {
        let i = self.index(tag);
        if let Some([a, b]) = self.slots.get_mut(i..i + 2) {
            *b = *a;
            *a = Slot {
                used: true,
                tag,
                val,
            };
        }
    }
}

/// A Crypto-PAn anonymiser (one per worker: the caches are not shared and
/// make the calls `&mut self`).
#[derive(Clone)]
pub struct CryptoPan {
    cipher: Aes128,
    /// `AES_k(pad secret)` as a big-endian 128-bit string.
    pad: u128,
    /// Anonymised top 16 bits per 16-bit prefix (with the cache).
    top16: Option<Arc<[u16]>>,
    v4: Option<PrefixCache>,
    v6: Option<PrefixCache>,
    v4_hosts: Option<PrefixCache>,
    v6_hosts: Option<PrefixCache>,
    stats: CacheStats,
}

impl fmt::Debug for CryptoPan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("CryptoPan")
            .field("top16_table", &self.top16.is_some())
            .field("v4_slots", &self.v4.as_ref().map(|c| c.slots.len()))
            .field("v6_slots", &self.v6.as_ref().map(|c| c.slots.len()))
            .field(
                "v4_host_slots",
                &self.v4_hosts.as_ref().map(|c| c.slots.len()),
            )
            .field(
                "v6_host_slots",
                &self.v6_hosts.as_ref().map(|c| c.slots.len()),
            )
            .finish_non_exhaustive()
    }
}

/// The top `i` bits set (`i` in 0..=128).
#[inline(always)]
fn top_mask(i: u32) -> u128 {
    if i == 0 {
        0
    } else {
        u128::MAX << (128 - i.min(128))
    }
}

impl CryptoPan {
    /// An anonymiser without caches (32 AES blocks per IPv4 address, 128 per
    /// IPv6 address).
    pub fn new(key: &[u8; KEY_LEN]) -> CryptoPan {
        let mut k = [0u8; 16];
        let mut s = [0u8; 16];
        k.copy_from_slice(&key[..16]);
        s.copy_from_slice(&key[16..]);
        let cipher = Aes128::new(&Array::from(k));
        let mut pad = Array::from(s);
        cipher.encrypt_block(&mut pad);
        let mut p = [0u8; 16];
        p.copy_from_slice(&pad);
        CryptoPan {
            cipher,
            pad: u128::from_be_bytes(p),
            top16: None,
            v4: None,
            v6: None,
            v4_hosts: None,
            v6_hosts: None,
            stats: CacheStats::default(),
        }
    }

    /// An anonymiser with the 16-bit table and the /24 and /64 caches (see
    /// the module documentation). All memory is allocated here.
    pub fn with_cache(key: &[u8; KEY_LEN], cache: CacheConfig) -> CryptoPan {
        let mut c = CryptoPan::new(key);
        c.top16 = Some(c.build_top16());
        c.v4 = PrefixCache::new(cache.v4_slash24_slots);
        c.v6 = PrefixCache::new(cache.v6_slash64_slots);
        c.v4_hosts = PrefixCache::new(cache.v4_host_slots);
        c.v6_hosts = PrefixCache::new(cache.v6_host_slots);
        c
    }

    /// Cache hits and misses so far.
    pub fn cache_stats(&self) -> CacheStats {
        self.stats
    }

    /// The one-time-pad bits of positions `from..from + N` of `addr`
    /// (left-aligned), in place in a 128-bit string.
    #[inline(always)]
    fn otp<const N: usize>(&self, addr: u128, from: u32) -> u128 {
        let mut blocks = [aes::Block::default(); N];
        for (i, b) in (from..).zip(blocks.iter_mut()) {
            let m = top_mask(i);
            *b = Array::from(((addr & m) | (self.pad & !m)).to_be_bytes());
        }
        self.cipher.encrypt_blocks(&mut blocks);
        let mut out = 0u128;
        for (i, b) in (from..).zip(blocks.iter()) {
            out |= u128::from(b[0] >> 7) << (127 - i);
        }
        out
    }

    /// The anonymised top 16 bits of every 16-bit prefix, from the prefix
    /// tree (2^16 - 1 AES blocks).
    fn build_top16(&self) -> Arc<[u16]> {
        // bits[level][v]: the pad bit of position `level` for the prefix `v`
        // of length `level`; levels 0..16 stored one after the other.
        let mut bits = vec![0u8; (1 << 16) - 1];
        let mut blocks = vec![aes::Block::default(); 1 << 15];
        for level in 0..16u32 {
            let n = 1usize << level;
            let m = top_mask(level);
            for (v, b) in blocks.iter_mut().take(n).enumerate() {
                let prefix = if level == 0 {
                    0
                } else {
                    (v as u128) << (128 - level)
                };
                *b = Array::from((prefix | (self.pad & !m)).to_be_bytes());
            }
            self.cipher.encrypt_blocks(&mut blocks[..n]);
            let base = n - 1;
            for (v, b) in blocks.iter().take(n).enumerate() {
                bits[base + v] = b[0] >> 7;
            }
        }
        let mut table = vec![0u16; 1 << 16];
        for (p, out) in table.iter_mut().enumerate() {
            let mut otp = 0u16;
            for level in 0..16u32 {
                let v = p >> (16 - level);
                let base = (1usize << level) - 1;
                otp |= u16::from(bits[base + v]) << (15 - level);
            }
            *out = (p as u16) ^ otp;
        }
        table.into()
    }

    /// The anonymised top 16 bits of `addr` from the table, if there is one.
    #[inline(always)]
    fn table16(&self, addr: u128) -> Option<u128> {
        let t = self.top16.as_ref()?;
        let v = t.get((addr >> 112) as usize).copied()?;
        Some(u128::from(v) << 112)
    }

    /// Anonymise an IPv4 address (network byte order).
    #[inline]
    pub fn anonymize_v4(&mut self, addr: [u8; 4]) -> [u8; 4] {
        let host = u128::from(u32::from_be_bytes(addr));
        if let Some(v) = self.v4_hosts.as_ref().and_then(|c| c.get(host)) {
            self.stats.v4_host_hits += 1;
            return (v as u32).to_be_bytes();
        }
        let a = host << 96;
        let out = match self.table16(a) {
            None => a ^ self.otp::<32>(a, 0),
            Some(top16) => {
                let p24 = a >> 104;
                let top24 = match self.v4.as_ref().and_then(|c| c.get(p24)) {
                    Some(v) => {
                        self.stats.v4_prefix_hits += 1;
                        v << 104
                    }
                    None => {
                        let mid = (a ^ self.otp::<8>(a, 16)) & top_mask(24) & !top_mask(16);
                        let top24 = top16 | mid;
                        self.stats.v4_misses += 1;
                        if let Some(c) = self.v4.as_mut() {
                            c.put(p24, top24 >> 104);
                        }
                        top24
                    }
                };
                top24 | ((a ^ self.otp::<8>(a, 24)) & !top_mask(24) & top_mask(32))
            }
        };
        let out = out >> 96;
        if let Some(c) = self.v4_hosts.as_mut() {
            c.put(host, out);
        }
        (out as u32).to_be_bytes()
    }

    /// Anonymise an IPv6 address (network byte order).
    #[inline]
    pub fn anonymize_v6(&mut self, addr: [u8; 16]) -> [u8; 16] {
        let a = u128::from_be_bytes(addr);
        if let Some(v) = self.v6_hosts.as_ref().and_then(|c| c.get(a)) {
            self.stats.v6_host_hits += 1;
            return v.to_be_bytes();
        }
        let out = match self.table16(a) {
            None => a ^ self.otp::<128>(a, 0),
            Some(top16) => {
                let p64 = a >> 64;
                match self.v6.as_ref().and_then(|c| c.get(p64)) {
                    Some(v) => {
                        self.stats.v6_prefix_hits += 1;
                        (v << 64) | ((a ^ self.otp::<64>(a, 64)) & !top_mask(64))
                    }
                    None => {
                        let out = top16 | ((a ^ self.otp::<112>(a, 16)) & !top_mask(16));
                        self.stats.v6_misses += 1;
                        if let Some(c) = self.v6.as_mut() {
                            c.put(p64, out >> 64);
                        }
                        out
                    }
                }
            }
        };
        if let Some(c) = self.v6_hosts.as_mut() {
            c.put(a, out);
        }
        out.to_be_bytes()
    }

    /// Anonymise either kind of address (for tools; the packet path uses the
    /// byte-array forms).
    pub fn anonymize_ip(&mut self, addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(a) => IpAddr::V4(self.anonymize_v4(a.octets()).into()),
            IpAddr::V6(a) => IpAddr::V6(self.anonymize_v6(a.octets()).into()),
        }
    }
}

/// Why a key could not be loaded.
#[derive(Debug)]
pub enum KeyError {
    /// The file could not be read.
    Io {
        /// The key file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Others may read the file (mode & 0o004).
    WorldReadable {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Neither 32 raw bytes nor 64 hex digits.
    BadLength {
        /// The key file.
        path: PathBuf,
        /// Bytes read.
        len: usize,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Io { path, source } => {
                write!(f, "anonymisation key {}: {source}", path.display())
            }
            KeyError::WorldReadable { path, mode } => write!(
                f,
                "anonymisation key {} is world-readable (mode {:04o}); run `chmod o-rwx` on it",
                path.display(),
                mode & 0o7777
            ),
            KeyError::BadLength { path, len } => write!(
                f,
                "anonymisation key {} must hold exactly 32 bytes or 64 hex digits \
                 (AES-128 key then pad secret), found {len} bytes",
                path.display()
            ),
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Decode key material: exactly 32 raw bytes, or 64 hex digits (surrounding
/// whitespace allowed, split over lines if need be, `#` comment lines and
/// blank lines skipped).
pub fn parse_key(bytes: &[u8]) -> Option<[u8; KEY_LEN]> {
    if let Ok(k) = <[u8; KEY_LEN]>::try_from(bytes) {
        return Some(k);
    }
    // Text: 64 hex digits, on one line or split over several; lines whose
    // first non-blank character is `#` are comments, blank lines are skipped.
    let hex: Vec<u8> = bytes
        .split(|&b| b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
        .flatten()
        .copied()
        .collect();
    if hex.len() != 2 * KEY_LEN {
        return None;
    }
    let digit = |c: u8| -> Option<u8> { (c as char).to_digit(16).map(|d| d as u8) };
    let mut key = [0u8; KEY_LEN];
    for (k, pair) in key.iter_mut().zip(hex.chunks_exact(2)) {
        *k = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(key)
}

/// Load a key file: refused if others can read it (mode & 0o004) or if it
/// holds neither 32 raw bytes nor 64 hex digits.
pub fn load_key(path: &Path) -> Result<[u8; KEY_LEN], KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let mode = meta.permissions().mode();
    if mode & 0o004 != 0 {
        return Err(KeyError::WorldReadable {
            path: path.to_path_buf(),
            mode,
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    parse_key(&bytes).ok_or(KeyError::BadLength {
        path: path.to_path_buf(),
        len: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn key_files_may_carry_comment_lines() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let plain = parse_key(hex.as_bytes()).unwrap();
        let commented =
            format!("# Crypto-PAn key for probe 3, made 2026-12-01\n\n  # rotate yearly\n{hex}\n");
        assert_eq!(parse_key(commented.as_bytes()), Some(plain));
        let split = format!("# two halves\n{}\n{}\n", &hex[..32], &hex[32..]);
        assert_eq!(parse_key(split.as_bytes()), Some(plain));
        // A comment is not key material: one digit short stays refused.
        assert_eq!(parse_key(format!("# x\n{}", &hex[1..]).as_bytes()), None);
        assert_eq!(parse_key(b"# only a comment\n"), None);
    }

    const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/");

    fn vector_file(name: &str) -> String {
        std::fs::read_to_string(format!("{VECTORS}{name}"))
            .unwrap_or_else(|e| panic!("{VECTORS}{name}: {e}"))
    }

    /// The reference key (the non-comment line of the .hex file).
    pub(crate) fn reference_key() -> [u8; KEY_LEN] {
        let text = vector_file("cryptopan_reference_key.hex");
        let line = text
            .lines()
            .find(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap();
        parse_key(line.as_bytes()).unwrap()
    }

    fn third_column(text: &str) -> Vec<Ipv4Addr> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split_whitespace().nth(2).unwrap().parse().unwrap())
            .collect()
    }

    fn ipv4_pairs() -> Vec<(Ipv4Addr, Ipv4Addr)> {
        let raw = third_column(&vector_file("cryptopan_reference_sample_trace_raw.dat"));
        let san = third_column(&vector_file(
            "cryptopan_reference_sample_trace_sanitized.dat",
        ));
        assert_eq!(raw.len(), 100);
        assert_eq!(san.len(), 100);
        raw.into_iter().zip(san).collect()
    }

    fn ipv6_pairs() -> Vec<(Ipv6Addr, Ipv6Addr)> {
        let v: Vec<_> = vector_file("cryptopan_ipv6_setA.tsv")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                assert_eq!(f[2], "ipv6");
                assert_eq!(parse_key(f[1].as_bytes()), Some(reference_key()));
                (f[3].parse().unwrap(), f[4].parse().unwrap())
            })
            .collect();
        assert_eq!(v.len(), 5);
        v
    }

    fn all_variants() -> Vec<(&'static str, CryptoPan)> {
        let k = reference_key();
        vec![
            ("uncached", CryptoPan::new(&k)),
            ("cached", CryptoPan::with_cache(&k, CacheConfig::default())),
            (
                "table only",
                CryptoPan::with_cache(&k, CacheConfig::TABLE_ONLY),
            ),
            (
                "prefix caches, no host caches",
                CryptoPan::with_cache(
                    &k,
                    CacheConfig {
                        v4_host_slots: 0,
                        v6_host_slots: 0,
                        ..CacheConfig::default()
                    },
                ),
            ),
            (
                "tiny caches",
                CryptoPan::with_cache(
                    &k,
                    CacheConfig {
                        v4_host_slots: 2,
                        v4_slash24_slots: 2,
                        v6_host_slots: 2,
                        v6_slash64_slots: 2,
                    },
                ),
            ),
        ]
    }

    #[test]
    fn reference_ipv4_sample_all_100_lines() {
        for (name, mut c) in all_variants() {
            // Twice: the second pass is served by the caches.
            for _ in 0..2 {
                for (i, (raw, want)) in ipv4_pairs().into_iter().enumerate() {
                    let got = Ipv4Addr::from(c.anonymize_v4(raw.octets()));
                    assert_eq!(got, want, "{name}: line {}: {raw}", i + 1);
                }
            }
        }
        let mut c = CryptoPan::with_cache(&reference_key(), CacheConfig::default());
        for (raw, _) in ipv4_pairs() {
            c.anonymize_v4(raw.octets());
        }
        let s = c.cache_stats();
        assert_eq!(s.v4_host_hits + s.v4_prefix_hits + s.v4_misses, 100);
        assert!(s.v4_host_hits > 0, "the sample repeats hosts: {s:?}");
        // A second pass is served by the host cache.
        for (raw, _) in ipv4_pairs() {
            c.anonymize_v4(raw.octets());
        }
        assert_eq!(c.cache_stats().v4_host_hits - s.v4_host_hits, 100);
        // Without the host cache the repeats are /24 hits.
        let mut p = CryptoPan::with_cache(
            &reference_key(),
            CacheConfig {
                v4_host_slots: 0,
                ..CacheConfig::default()
            },
        );
        for (raw, _) in ipv4_pairs() {
            p.anonymize_v4(raw.octets());
        }
        let s = p.cache_stats();
        assert!(s.v4_prefix_hits >= 30, "{s:?}");
        assert_eq!(s.v4_host_hits, 0);
    }

    #[test]
    fn reference_ipv6_pairs() {
        for (name, mut c) in all_variants() {
            for _ in 0..2 {
                for (raw, want) in ipv6_pairs() {
                    let got = Ipv6Addr::from(c.anonymize_v6(raw.octets()));
                    assert_eq!(got, want, "{name}: {raw}");
                    assert_eq!(c.anonymize_ip(IpAddr::V6(raw)), IpAddr::V6(want));
                }
            }
        }
    }

    fn cpl(a: &[u8], b: &[u8]) -> u32 {
        let mut n = 0;
        for (x, y) in a.iter().zip(b) {
            let d = (x ^ y).leading_zeros();
            n += d;
            if d < 8 {
                break;
            }
        }
        n
    }

    /// `a` with the bits from `keep` on replaced by those of `noise`.
    fn share_prefix<const N: usize>(a: [u8; N], noise: [u8; N], keep: u32) -> [u8; N] {
        let mut b = a;
        for i in (keep as usize)..(8 * N) {
            let bit = 0x80u8 >> (i % 8);
            b[i / 8] = (b[i / 8] & !bit) | (noise[i / 8] & bit);
        }
        b
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

        #[test]
        fn prefix_relations_are_preserved_v4(a: [u8; 4], noise: [u8; 4], keep in 0u32..=32) {
            let k = reference_key();
            let mut plain = CryptoPan::new(&k);
            let mut cached = CryptoPan::with_cache(&k, CacheConfig { v4_host_slots: 4, v4_slash24_slots: 4, v6_host_slots: 4, v6_slash64_slots: 4 });
            let b = share_prefix(a, noise, keep);
            let (x, y) = (plain.anonymize_v4(a), plain.anonymize_v4(b));
            proptest::prop_assert_eq!(cpl(&a, &b), cpl(&x, &y));
            proptest::prop_assert_eq!(cached.anonymize_v4(a), x);
            proptest::prop_assert_eq!(cached.anonymize_v4(b), y);
        }

        #[test]
        fn prefix_relations_are_preserved_v6(a: [u8; 16], noise: [u8; 16], keep in 0u32..=128) {
            let k = reference_key();
            let mut plain = CryptoPan::new(&k);
            let mut cached = CryptoPan::with_cache(&k, CacheConfig { v4_host_slots: 4, v4_slash24_slots: 4, v6_host_slots: 4, v6_slash64_slots: 4 });
            let b = share_prefix(a, noise, keep);
            let (x, y) = (plain.anonymize_v6(a), plain.anonymize_v6(b));
            proptest::prop_assert_eq!(cpl(&a, &b), cpl(&x, &y));
            proptest::prop_assert_eq!(cached.anonymize_v6(a), x);
            proptest::prop_assert_eq!(cached.anonymize_v6(b), y);
        }
    }

    #[test]
    fn key_parsing() {
        let k = reference_key();
        assert_eq!(parse_key(&k), Some(k));
        let hex: String = k.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(parse_key(format!("  {hex}\n").as_bytes()), Some(k));
        assert_eq!(parse_key(&hex.as_bytes()[..62]), None);
        assert_eq!(parse_key(&[0u8; 31]), None);
        let mut bad = hex.into_bytes();
        bad[5] = b'g';
        assert_eq!(parse_key(&bad), None);
    }

    #[test]
    fn key_files_must_be_private_and_well_formed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("linecap-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        let set_mode = |m| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m));

        std::fs::write(&path, reference_key()).unwrap();
        set_mode(0o600).unwrap();
        assert_eq!(load_key(&path).unwrap(), reference_key());
        set_mode(0o640).unwrap();
        assert_eq!(load_key(&path).unwrap(), reference_key());

        set_mode(0o644).unwrap();
        let e = load_key(&path).unwrap_err();
        assert!(matches!(e, KeyError::WorldReadable { .. }), "{e}");
        assert!(e.to_string().contains("world-readable (mode 0644)"), "{e}");

        std::fs::write(
            &path,
            "1522178d33a4cf80130a5b1649907d10d8988f837979652762574c2d2a842202\n",
        )
        .unwrap();
        set_mode(0o400).unwrap();
        assert_eq!(load_key(&path).unwrap(), reference_key());

        set_mode(0o600).unwrap();
        std::fs::write(&path, [7u8; 33]).unwrap();
        let e = load_key(&path).unwrap_err();
        assert!(e.to_string().contains("found 33 bytes"), "{e}");

        let e = load_key(&dir.join("missing")).unwrap_err();
        assert!(matches!(e, KeyError::Io { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_does_not_print_key_material() {
        let c = CryptoPan::new(&reference_key());
        let s = format!("{c:?}");
        assert!(!s.contains("pad") && !s.contains("cipher"), "{s}");
    }
}
