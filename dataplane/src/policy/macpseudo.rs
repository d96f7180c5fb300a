//! Per-deployment opaque MAC identifiers (bismark-passive's "anonymisation
//! context"): every unicast MAC address in a frame's Ethernet header is
//! replaced by a keyed pseudonym that is stable for one deployment key and
//! unlinkable across keys.
//!
//! The pseudonym of a unicast address `m` under a 32-byte key `K = k ‖ t` is
//! the first 6 bytes of `AES-128_k(m ‖ t[..10])`, with the
//! locally-administered bit set and the group bit clear, so it still reads
//! as a unicast address and can never be mistaken for a real vendor address.
//! Group addresses (broadcast, IPv4/IPv6 multicast, STP…: the I/G bit set)
//! name no host and are kept as they are, so protocol analysis still works.
//! The same key format as Crypto-PAn's is used (`cryptopan::load_key`: 32
//! raw bytes or 64 hex digits, not world-readable); use a different key for
//! each purpose.
//!
//! A 256-entry direct-mapped cache in front of AES makes the common case (a
//! link carries a handful of router and host addresses) a table lookup. No
//! allocation, no panic, no `Result` per frame.

use aes::Aes128;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};

const CACHE: usize = 256;

/// The MAC pseudonymiser of one worker (each worker owns its own).
pub struct MacPseudonyms {
    cipher: Aes128,
    tweak: [u8; 10],
    /// (address + 1 as a 48-bit number; 0 = empty, pseudonym).
    cache: Box<[(u64, [u8; 6]); CACHE]>,
    hits: u64,
    misses: u64,
}

impl std::fmt::Debug for MacPseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MacPseudonyms").finish_non_exhaustive()
    }
}

impl MacPseudonyms {
    /// A pseudonymiser for the 32-byte deployment key.
    pub fn new(key: &[u8; 32]) -> Self {
        let mut k = [0u8; 16];
        k.copy_from_slice(&key[..16]);
        let mut tweak = [0u8; 10];
        tweak.copy_from_slice(&key[16..26]);
        MacPseudonyms {
            cipher: Aes128::new(&Array::from(k)),
            tweak,
            cache: Box::new([(0, [0; 6]); CACHE]),
            hits: 0,
            misses: 0,
        }
    }

    /// The pseudonym of `mac` (group addresses are returned unchanged).
    #[inline]
    pub fn pseudonym(&mut self, mac: [u8; 6]) -> [u8; 6] {
        if mac[0] & 0x01 != 0 {
            return mac;
        }
        let n = u64::from_be_bytes([0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]) + 1;
        let slot = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % CACHE;
        if self.cache[slot].0 == n {
            self.hits += 1;
            return self.cache[slot].1;
        }
        self.misses += 1;
        let mut block = [0u8; 16];
        block[..6].copy_from_slice(&mac);
        block[6..].copy_from_slice(&self.tweak);
        let mut b = Array::from(block);
        self.cipher.encrypt_block(&mut b);
        let mut out = [0u8; 6];
        out.copy_from_slice(&b[..6]);
        out[0] = (out[0] | 0x02) & !0x01;
        self.cache[slot] = (n, out);
        out
    }

    /// Rewrite the destination and source addresses of an Ethernet frame in
    /// place (frames shorter than 12 bytes are left alone).
    #[inline]
    pub fn rewrite_frame(&mut self, frame: &mut [u8]) {
        if frame.len() < 12 {
            return;
        }
        for at in [0usize, 6] {
            let mut m = [0u8; 6];
            m.copy_from_slice(&frame[at..at + 6]);
            let p = self.pseudonym(m);
            frame[at..at + 6].copy_from_slice(&p);
        }
    }

    /// (cache hits, AES computations) so far.
    pub fn cache_stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> [u8; 32] {
        let mut k = [0u8; 32];
        for (i, x) in k.iter_mut().enumerate() {
            *x = b.wrapping_add(i as u8);
        }
        k
    }

    #[test]
    fn stable_within_a_key_unlinkable_across_keys() {
        let macs: Vec<[u8; 6]> = (0..2000u32)
            .map(|i| {
                let b = i.to_be_bytes();
                [0x00, 0x1b, 0x21, b[1], b[2], b[3]]
            })
            .collect();
        let mut a = MacPseudonyms::new(&key(1));
        let mut a2 = MacPseudonyms::new(&key(1));
        let mut b = MacPseudonyms::new(&key(2));
        let pa: Vec<_> = macs.iter().map(|m| a.pseudonym(*m)).collect();
        // Same key, fresh instance, reverse order (cache state must not matter).
        let mut pa2: Vec<_> = macs.iter().rev().map(|m| a2.pseudonym(*m)).collect();
        pa2.reverse();
        assert_eq!(pa, pa2);
        // Cached lookups give the same answer as computed ones.
        let again: Vec<_> = macs.iter().map(|m| a.pseudonym(*m)).collect();
        assert_eq!(pa, again);
        let pb: Vec<_> = macs.iter().map(|m| b.pseudonym(*m)).collect();
        let same = pa.iter().zip(&pb).filter(|(x, y)| x == y).count();
        assert_eq!(same, 0, "two keys gave the same pseudonym");
        // Injective in practice over 2000 addresses, never the original,
        // always unicast and locally administered.
        let mut sorted = pa.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), macs.len());
        for (m, p) in macs.iter().zip(&pa) {
            assert_ne!(m, p);
            assert_eq!(p[0] & 0x03, 0x02, "{p:02x?}");
        }
        // The vendor prefix is not preserved (unlike Crypto-PAn's prefixes).
        let vendors: std::collections::HashSet<_> = pa.iter().map(|p| [p[0], p[1], p[2]]).collect();
        assert!(vendors.len() > 1000);
    }

    #[test]
    fn group_addresses_are_kept() {
        let mut a = MacPseudonyms::new(&key(7));
        for m in [
            [0xff; 6],
            [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb],
            [0x33, 0x33, 0x00, 0x00, 0x00, 0x01],
            [0x01, 0x80, 0xc2, 0x00, 0x00, 0x00],
        ] {
            assert_eq!(a.pseudonym(m), m);
        }
    }

    #[test]
    fn rewrites_both_addresses_and_nothing_else() {
        let mut a = MacPseudonyms::new(&key(3));
        let mut f: Vec<u8> = (0..60).collect();
        f[0] = 0xff; // broadcast destination stays
        f[1..6].fill(0xff);
        let orig = f.clone();
        a.rewrite_frame(&mut f);
        assert_eq!(f[..6], orig[..6]);
        assert_ne!(f[6..12], orig[6..12]);
        assert_eq!(f[12..], orig[12..]);
        let mut short = vec![1u8; 11];
        a.rewrite_frame(&mut short);
        assert_eq!(short, vec![1u8; 11]);
        let (hits, misses) = a.cache_stats();
        assert_eq!((hits, misses), (0, 1));
    }
}
