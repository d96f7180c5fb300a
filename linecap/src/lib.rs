//! The `linecap` binary's modules as a library, so that the fuzz targets
//! (`fuzz/`) can reach the profile parser (the IPFIX encoder is in
//! `linecap-flowexport`). `main.rs`
//! is the command line on top of it.
#![forbid(unsafe_code)]

pub mod checkhost;
pub mod cli;
pub mod demo;
mod dpdksource;
mod droplog;
mod filesource;
pub mod flows;
pub mod logging;
mod metrics;
mod outdirs;
mod pipeline;
mod privileges;
pub mod profile;
pub mod readback;
mod summary;
