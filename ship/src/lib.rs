//! Shipping completed linecap captures off the box: to S3-compatible object
//! storage (multipart with resume, server-checked SHA-256, retries with
//! backoff, a bandwidth cap) and/or to a post-rotate command (`-z`), with a
//! durable journal so that a restart finishes what was pending and never
//! makes a second visible copy. See `docs/operations.md`, "Shipping".
#![forbid(unsafe_code)]

pub mod config;
pub mod journal;
pub mod s3;
pub mod shipper;
pub mod throttle;

pub use config::{S3Target, SeriesDir, ShipConfig};
pub use shipper::{RetentionHook, ShipReport, Shipper};
