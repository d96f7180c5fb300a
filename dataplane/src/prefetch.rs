//! A cache prefetch hint, for the flow table's staged bursts (issue 19).
//!
//! The flow table of a queue with 10^5–10^6 flows lives in DRAM: a packet
//! needs its bucket's tag line and its slot's key and counter lines, each a
//! miss of ~300 ns on the project's VM. Plain loads issued ahead ("touch"
//! loads) hold their place in the reorder buffer until the line arrives, so
//! the frames' other work stalls behind them; a prefetch instruction does
//! not. The worker therefore prefetches a frame's bucket line when it
//! queues the frame for the table, and the slot lines one burst before it
//! updates them (`docs/architecture.md`, "Flow table").
//!
//! This module's two `unsafe` blocks (one per entry point, by reference
//! and by address) are the crate's only ones outside the ring and driver
//! modules: the intrinsic is `unsafe` only because it is a
//! `#[target_feature]` function.

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
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            addr as *const i8,
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}
