//! A cache prefetch hint, for the flow table's staged bursts (issue 19).
//!
//! The flow table of a queue with 10^5–10^6 flows lives in DRAM: a packet
//! needs its bucket's tags (in cache, mostly) and its slot's hot line (a
//! miss of ~200 ns on the project's VM). Plain loads issued ahead ("touch"
//! loads) hold their place in the reorder buffer until the line arrives, so
//! the frames' other work stalls behind them; a prefetch instruction does
//! not. The worker therefore prefetches a frame's bucket line when it
//! queues the frame for the table, and the slot lines one burst before it
//! updates them (`docs/architecture.md`, "Flow table").
//!
//! It also holds the table's one SIMD step, [`lanes_equal`] (a bucket's
//! eight tags compared at once). This module's three `unsafe` blocks are
//! the crate's only ones outside the ring and driver modules: each
//! intrinsic is `unsafe` only because it is a `#[target_feature]` function.

/// Ask the CPU to bring the cache line holding `r` into L1 (a hint: no
/// effect on the program's state).
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache: it never faults, reads
    // nothing into the program and writes nothing; SSE is in the x86_64
    // baseline, and the address comes from a live reference anyway.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            (r as *const T).cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// [`prefetch`] of the cache line at address `addr`, for a caller that
/// computes the address of an array element without taking the array as a
/// slice per call (the flow table's per-frame bucket prefetch). Any address
/// is fine: a prefetch of an unmapped address is dropped.
#[inline(always)]
pub fn prefetch_addr(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `prefetch`: the intrinsic only hints the cache, never
    // faults (not even on an unmapped address), and reads and writes
    // nothing the program sees; SSE is in the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// A mask of the eight 16-bit `tags` equal to `v`: bits `2w` and `2w + 1`
/// set when tag `w` equals `v` (one SSE2 compare of all eight).
#[inline(always)]
pub fn lanes_equal(tags: &[u16; 8], v: u16) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{
            _mm_cmpeq_epi16, _mm_movemask_epi8, _mm_set_epi64x, _mm_set1_epi16,
        };
        let [lo, hi] = bytemuck::cast::<[u16; 8], [i64; 2]>(*tags);
        // SAFETY: SSE2 register arithmetic on values (no memory access);
        // SSE2 is in the x86_64 baseline.
        unsafe {
            let x = _mm_set_epi64x(hi, lo);
            _mm_movemask_epi8(_mm_cmpeq_epi16(x, _mm_set1_epi16(v as i16))) as u32
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut m = 0u32;
        for (w, t) in tags.iter().enumerate() {
            m |= u32::from(*t == v) * 3 << (2 * w);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::lanes_equal;

    /// The SSE2 compare gives the mask a plain loop gives, for lanes that
    /// are equal, different, zero, negative as i16 and all ones.
    #[test]
    fn lanes_equal_is_the_plain_compare() {
        let vals = [0u16, 1, 0x7fff, 0x8000, 0x8001, 0xffff, 0x1234];
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut tags = [0u16; 8];
            for t in &mut tags {
                rng = rng
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                *t = vals[(rng >> 33) as usize % vals.len()];
            }
            for v in vals {
                let mut want = 0u32;
                for (w, t) in tags.iter().enumerate() {
                    if *t == v {
                        want |= 3 << (2 * w);
                    }
                }
                assert_eq!(lanes_equal(&tags, v), want, "{tags:?} {v}");
            }
        }
    }
}
