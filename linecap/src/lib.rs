//! The `linecap` binary's modules as a library, so that the fuzz targets
//! (`fuzz/`) can reach the profile parser and the IPFIX encoder. `main.rs`
//! is the command line on top of it.
#![forbid(unsafe_code)]

pub mod api;
pub mod checkhost;
pub mod cli;
pub mod ctl;
pub mod demo;
mod dpdksource;
mod export;
mod filesource;
#[cfg(feature = "parquet")]
mod flowlog;
pub mod flows;
pub mod ipfix;
mod jobs;
mod metrics;
mod pipeline;
mod privileges;
pub mod profile;
pub mod readback;
mod summary;
