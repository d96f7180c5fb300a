//! Capture policies (issue 8): what a capture job keeps of each frame and how.
//!
//! Standalone components, run by the worker in this order on every frame
//! (see "Capture policies" in `docs/architecture.md`):
//!
//! 1. [`bpf`] — a tcpdump-syntax filter, compiled by libpcap to classic BPF at
//!    start-up and run by a small user-space interpreter;
//! 2. [`sample`] — 1-in-N, probabilistic or flow-consistent sampling;
//! 3. (the worker's parse and flow table);
//! 4. [`anon`] / [`cryptopan`] — prefix-preserving address anonymisation,
//!    with checksums updated;
//! 5. [`snaplen`] — how many bytes of the frame go into the ERF record;
//! 6. [`macpseudo`] — keyed per-deployment MAC pseudonyms.
//!
//! Every per-packet function here is allocation-free, never formats, logs or
//! returns a `Result`, and never panics; everything that can fail (compiling
//! a filter, reading a key, checking a rate) fails at start-up.

pub mod anon;
pub mod bpf;
pub mod cryptopan;
pub mod macpseudo;
pub mod sample;
pub mod snaplen;
