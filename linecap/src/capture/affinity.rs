//! `cores.housekeeping` / `--housekeeping-cores`: the writer, flow exporter
//! and metrics threads run on the housekeeping cores, the workers on theirs.
//!
//! The main thread (which supervises) moves onto the housekeeping cores
//! before it starts the exporters, the metrics server and the writers, so
//! every thread it starts inherits that set; each worker thread sets its own
//! affinity first thing: its `--cores` core, or else the set the process
//! started with (a worker never lands on the housekeeping cores by
//! inheritance).

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// The main thread's affinity while the capture runs; restored on drop.
pub(super) struct Housekeeping {
    /// What the process started with (workers without `--cores` get it).
    original: Option<CpuSet>,
    pinned: bool,
}

impl Housekeeping {
    /// Pin the calling (main) thread to `cores` (empty: leave it alone).
    pub(super) fn enter(cores: &[usize]) -> anyhow::Result<Housekeeping> {
        let original = sched_getaffinity(Pid::from_raw(0)).ok();
        if cores.is_empty() {
            return Ok(Housekeeping {
                original,
                pinned: false,
            });
        }
        let set =
            cpu_set(cores).map_err(|e| anyhow::anyhow!("--housekeeping-cores {cores:?}: {e}"))?;
        sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| {
            anyhow::anyhow!("--housekeeping-cores {cores:?}: cannot run there: {e}")
        })?;
        Ok(Housekeeping {
            original,
            pinned: true,
        })
    }

    /// For a worker thread without a core of its own: back to the set the
    /// process started with. Returns an error text when that fails.
    pub(super) fn release_worker(&self) -> Option<String> {
        if !self.pinned {
            return None;
        }
        let set = self.original?;
        sched_setaffinity(Pid::from_raw(0), &set)
            .err()
            .map(|e| format!("could not move the worker off the housekeeping cores: {e}"))
    }
}

impl Drop for Housekeeping {
    fn drop(&mut self) {
        if self.pinned
            && let Some(set) = self.original
        {
            let _ = sched_setaffinity(Pid::from_raw(0), &set);
        }
    }
}

fn cpu_set(cores: &[usize]) -> nix::Result<CpuSet> {
    let mut set = CpuSet::new();
    for &c in cores {
        set.set(c)?;
    }
    Ok(set)
}
