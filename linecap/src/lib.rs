//! The `linecap` binary's modules as a library, so that the fuzz targets
//! (`fuzz/`) can reach the profile parser (the IPFIX encoder is in
//! `linecap-flowexport`). `main.rs`
//! is the command line on top of it.
//!
//! Layout by stage (docs/architecture.md has the picture): `cli` (clap
//! definitions) → `config` (profile, layering, validation → `CaptureConfig`)
//! → `capture` (open, wire, run, account) → `summary` (report). Leaf
//! modules: `values` (value syntax), `limits`, `source` (typed sources).
//! `tests/module_graph.rs` checks that no module imports one that imports
//! it back.
#![forbid(unsafe_code)]

pub mod api;
pub mod apiconfig;
pub mod capture;
pub mod checkhost;
pub mod cli;
pub mod commands;
pub mod config;
pub mod ctl;
pub mod demo;
mod dpdksource;
mod droplog;
mod filesource;
pub mod flows;
pub mod limits;
pub mod logging;
mod metrics;
mod outdirs;
mod privileges;
pub mod process;
pub mod query;
pub mod readback;
pub mod ship;
pub mod source;
mod summary;
pub mod values;

/// The hardware-profile schema (kept at its old path for the fuzz targets).
pub use config::profile;
