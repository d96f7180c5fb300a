//! Panic-free big-endian reads shared by the views.
//!
//! Every read returns 0 (or an empty slice) when the bytes are not there, so
//! accessors never panic, whatever buffer a view was built over.

use core::ops::Range;

/// Byte at `at`, or 0.
#[inline(always)]
pub(crate) fn u8_at(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

/// Big-endian u16 at `at`, or 0.
#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at.wrapping_add(2)) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

/// Big-endian u32 at `at`, or 0.
#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at.wrapping_add(4)) {
        Some(&[w, x, y, z]) => u32::from_be_bytes([w, x, y, z]),
        _ => 0,
    }
}

/// The bytes in `r`, or an empty slice.
#[inline(always)]
pub(crate) fn slice(b: &[u8], r: Range<usize>) -> &[u8] {
    b.get(r).unwrap_or(&[])
}

/// The bytes from `start` on, or an empty slice.
#[inline(always)]
pub(crate) fn tail(b: &[u8], start: usize) -> &[u8] {
    b.get(start..).unwrap_or(&[])
}

/// `N` bytes at `at` as an array, or zeros.
#[inline(always)]
pub(crate) fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(s) = b.get(at..at.wrapping_add(N)) {
        out.copy_from_slice(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded() {
        let b = [1u8, 2, 3];
        assert_eq!(u8_at(&b, 2), 3);
        assert_eq!(u8_at(&b, 3), 0);
        assert_eq!(be16(&b, 1), 0x0203);
        assert_eq!(be16(&b, 2), 0);
        assert_eq!(be16(&b, usize::MAX), 0);
        assert_eq!(be32(&b, 0), 0);
        assert_eq!(slice(&b, 1..5), &[] as &[u8]);
        assert_eq!(tail(&b, 4), &[] as &[u8]);
        assert_eq!(array::<2>(&b, 1), [2, 3]);
        assert_eq!(array::<2>(&b, usize::MAX), [0, 0]);
    }
}
