//! The configuration layer: one typed configuration in which every key
//! takes effect.
//!
//! - [`profile`]: the TOML schema of `hw-profiles/*.toml` (serde,
//!   `deny_unknown_fields`: an unknown key is an error naming it);
//! - [`layer`]: defaults < profile < flags given, by clap's own value
//!   sources (no second parse of argv);
//! - [`validate`]: the one validation, into the one [`CaptureConfig`];
//! - [`types`]: that configuration, which is all the capture reads.
//!
//! Limits are named once in `crate::limits`; sources are typed
//! (`crate::source::SourceSpec`).

pub mod layer;
pub mod profile;
pub mod types;
pub mod validate;

pub use layer::layer;
pub use types::{
    CaptureConfig, FlowConfig, JobConfig, MetricsConfig, PolicyConfig, XdpOptions, validate_jobs,
};
pub use validate::capture_config;
