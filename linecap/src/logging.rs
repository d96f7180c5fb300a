//! Logging with `tracing`: human lines on stderr (coloured on a terminal),
//! or one JSON object per line (`--log-format json`) for journald / Loki.
//! The level is `--log-level`, else `RUST_LOG`, else `info`.
//!
//! What is logged: operational events, when they happen and rate-limited
//! where they can repeat — a writer that starts failing (naming the file or
//! directory), drops beginning at a stage, a file deleted by `-W` or the
//! disk budget, the exporter failing. Never per packet: the capture workers
//! count, and the supervisor (`droplog`) logs when a counter starts moving.
//! Start-up facts (XDP mode, DPDK ports, where the API and metrics listen,
//! the user the capture runs as) and warnings about the configuration are
//! logged too. Not logs: a command's own answer (the final summary table on
//! stdout, the counts `read`, `query`, `flows` and `process` print at the end
//! and their `linecap: error: …` lines) stays plain text, as tcpdump's do.

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// One human line per event (`2026-12-01T22:00:00Z  WARN linecap: …`).
    #[default]
    Text,
    /// One JSON object per event (timestamp, level, target, fields, message).
    Json,
}

/// The global logging flags (before or after the subcommand).
#[derive(Args, Debug, Clone, Default)]
pub struct LogArgs {
    /// Log line format on stderr: text (human) or json (journald, Loki).
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,
    /// Log level or filter (error, warn, info, debug, trace, or a RUST_LOG
    /// style filter such as `linecap=debug`); default: RUST_LOG, else info.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// Install the subscriber. Fails with a message naming the flag on a bad
/// `--log-level`; a bad `RUST_LOG` falls back to `info` with a warning.
pub fn init(a: &LogArgs) -> anyhow::Result<()> {
    let (filter, bad_env) = match &a.log_level {
        Some(l) => (
            EnvFilter::try_new(l).map_err(|e| anyhow::anyhow!("--log-level {l:?}: {e}"))?,
            None,
        ),
        None => match std::env::var("RUST_LOG") {
            Ok(v) if !v.trim().is_empty() => match EnvFilter::try_new(&v) {
                Ok(f) => (f, None),
                Err(e) => (EnvFilter::new("info"), Some(format!("RUST_LOG {v:?}: {e}"))),
            },
            _ => (EnvFilter::new("info"), None),
        },
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let res = match a.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests calling `init` twice) keeps the first subscriber.
    drop(res);
    if let Some(w) = bad_env {
        tracing::warn!("{w}; logging at info");
    }
    Ok(())
}
