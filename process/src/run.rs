//! The runner: series in parallel, files of a series in sequence order,
//! one commit per file.
//!
//! # Commit protocol (why `kill -9` and a re-run give one clean run's result)
//!
//! For file `seq` of series `ID` the runner
//!
//! 1. reads the file and feeds every record to every processor;
//! 2. writes each processor's rows to
//!    `OUT/TABLE/date=D/hour=H/ID-SEQ.parquet` (hidden name, sync, rename,
//!    directory sync);
//! 3. writes the series' state file `STATE/series/ID.json` (every
//!    processor's state and the cursor: `seq` and the CRC-32 of the file's
//!    manifest) under a hidden name, syncs it and renames it over the old
//!    one. **This rename is the commit point.**
//!
//! A crash before step 3 leaves the old state, so the re-run processes `seq`
//! again from the same state. Processors are deterministic, so it writes the
//! same rows under the same names, replacing what the crashed run left (a
//! half-written output only ever exists under a hidden name, removed at the
//! start of a run). The summary (`OUT/summary.json`) and the open rows
//! (`OUT/open/TABLE.parquet`) are a function of all state files, rewritten
//! (hidden, then renamed) at the end of every run.
//!
//! A file is processed once its manifest exists (the writer renames the
//! file into view, then its index thread writes the index and the
//! manifest). A series stops at its first file without one, and goes on
//! from there next run.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use linecap_reader::read::{CaptureReader, Packet};
use linecap_wire::flow::parse_frame;
use linecap_writer::names;
use linecap_writer::series::Manifest;
use serde::{Deserialize, Serialize};

use crate::output::{self, sync_dir};
use crate::{DynProcessor, FileInfo, Instance, Record, Row, SeriesInfo};

/// What to run.
pub struct Options {
    /// Capture directories (walked for queue series files).
    pub inputs: Vec<PathBuf>,
    /// State directory.
    pub state: PathBuf,
    /// Output directory.
    pub out: PathBuf,
    /// The processors, in order.
    pub processors: Vec<Box<dyn DynProcessor>>,
    /// Worker threads (series in parallel).
    pub threads: usize,
    /// Test hook: fail (as a crash would, leaving everything as it is) at
    /// the N-th write step of this run (each output file and each state file
    /// is a step).
    #[doc(hidden)]
    pub crash_at_step: Option<usize>,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Series found.
    pub series: usize,
    /// Files processed in this run.
    pub files: u64,
    /// Records read in this run.
    pub records: u64,
    /// Files skipped as already processed.
    pub already_done: u64,
    /// Files waiting for their manifest (and the files after them).
    pub waiting: u64,
    /// Errors (a series with an error stops at the file that failed).
    pub errors: Vec<String>,
}

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A file or directory problem (the message names the path).
    #[error("{0}")]
    Io(String),
    /// Inconsistent state or input.
    #[error("{0}")]
    State(String),
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> RunError {
    RunError::Io(format!("{}: {e}", path.display()))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    seq: u64,
    file: String,
    manifest_crc32: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedSeries {
    version: u32,
    id: String,
    dir: PathBuf,
    queue: u32,
    context: String,
    processors: Vec<String>,
    cursor: Option<Cursor>,
    files: u64,
    records: u64,
    read_errors: u64,
    states: BTreeMap<String, serde_json::Value>,
}

struct SeriesPlan {
    id: String,
    dir: PathBuf,
    queue: u32,
    files: Vec<(u64, PathBuf)>,
}

fn fnv64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), RunError> {
    let mut es: Vec<_> = fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| io_err(dir, e))?;
    es.sort_by_key(|e| e.file_name());
    for e in es {
        let ty = e.file_type().map_err(|x| io_err(&e.path(), x))?;
        let n = e.file_name().to_string_lossy().into_owned();
        if ty.is_dir() {
            walk(&e.path(), out)?;
        } else if ty.is_file()
            && !n.starts_with('.')
            && !n.ends_with(".json")
            && !n.ends_with(".idx")
        {
            out.push(e.path());
        }
    }
    Ok(())
}

fn plan(inputs: &[PathBuf]) -> Result<Vec<SeriesPlan>, RunError> {
    let mut files = Vec::new();
    for i in inputs {
        let m = fs::metadata(i).map_err(|e| io_err(i, e))?;
        if !m.is_dir() {
            return Err(RunError::State(format!(
                "{}: not a directory (linecap process reads capture directories)",
                i.display()
            )));
        }
        walk(i, &mut files)?;
    }
    let mut series: BTreeMap<(PathBuf, u32), Vec<(u64, PathBuf)>> = BTreeMap::new();
    for f in files {
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if let Some((q, seq)) = names::parse(&name) {
            let dir = f.parent().unwrap_or(Path::new(".")).to_path_buf();
            let dir = fs::canonicalize(&dir).map_err(|e| io_err(&dir, e))?;
            series.entry((dir, q)).or_default().push((seq, f));
        }
    }
    Ok(series
        .into_iter()
        .map(|((dir, queue), mut files)| {
            files.sort();
            files.dedup_by_key(|f| f.0);
            SeriesPlan {
                id: format!("q{queue:02}-{:016x}", fnv64(&dir.to_string_lossy())),
                dir,
                queue,
                files,
            }
        })
        .collect())
}

/// Write `bytes` to `path` atomically (hidden name, sync, rename, dir sync).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    let r = (|| {
        use std::io::Write;
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r.map_err(|e| io_err(path, e))
}

/// Remove hidden `.NAME.tmp` files a crashed run left under `dir`.
fn clean_tmp(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for e in fs::read_dir(dir)? {
        let e = e?;
        let n = e.file_name().to_string_lossy().into_owned();
        if e.file_type()?.is_dir() {
            clean_tmp(&e.path())?;
        } else if n.starts_with('.') && n.ends_with(".tmp") {
            fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

fn context_of(m: &Manifest) -> String {
    let job = m
        .capture
        .as_ref()
        .and_then(|c| c.get("job"))
        .and_then(|j| j.as_str())
        .unwrap_or("-");
    let anon = m
        .capture
        .as_ref()
        .and_then(|c| c.get("anonymized"))
        .and_then(|j| j.as_str())
        .unwrap_or("none");
    format!("job={job};anon={anon}")
}

struct Steps {
    crash_at: Option<usize>,
    done: AtomicUsize,
}

impl Steps {
    fn step(&self) -> Result<(), RunError> {
        let n = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        if self.crash_at.is_some_and(|c| n >= c) {
            return Err(RunError::State(format!("crash hook at step {n}")));
        }
        Ok(())
    }
}

struct Ctx<'a> {
    o: &'a Options,
    names: Vec<String>,
    steps: Steps,
}

fn state_path(o: &Options, id: &str) -> PathBuf {
    o.state.join("series").join(format!("{id}.json"))
}

/// Counts of one series' run.
#[derive(Default)]
struct SeriesRun {
    files: u64,
    records: u64,
    already: u64,
    waiting: u64,
}

fn run_series(c: &Ctx<'_>, s: &SeriesPlan) -> Result<SeriesRun, RunError> {
    let sp = state_path(c.o, &s.id);
    let mut saved: Option<SavedSeries> = match fs::read(&sp) {
        Ok(b) => Some(serde_json::from_slice(&b).map_err(|e| io_err(&sp, e))?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(&sp, e)),
    };
    if let Some(sv) = &saved
        && sv.processors != c.names
    {
        return Err(RunError::State(format!(
            "{}: made with --processors {}, not {}; use another --state (and --out) for a different list",
            sp.display(),
            sv.processors.join(","),
            c.names.join(",")
        )));
    }
    let mut r = SeriesRun::default();
    let mut instances: Option<Vec<Box<dyn Instance>>> = None;
    let mut rows: Vec<Vec<Row>> = c.names.iter().map(|_| Vec::new()).collect();
    let mut pkt = Packet::default();
    for (seq, path) in &s.files {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mp = names::manifest_path(path);
        if let Some(cur) = saved.as_ref().and_then(|sv| sv.cursor.as_ref())
            && *seq <= cur.seq
        {
            if *seq == cur.seq {
                let crc = fs::read(&mp).ok().map(|b| crc32fast::hash(&b));
                if crc.is_some_and(|x| x != cur.manifest_crc32) {
                    return Err(RunError::State(format!(
                        "{}: its manifest changed since it was processed (CRC-32 {:08x}, state {:08x}); \
                         the series was rewritten: use a new --state and --out",
                        mp.display(),
                        crc.unwrap_or(0),
                        cur.manifest_crc32
                    )));
                }
            }
            r.already += 1;
            continue;
        }
        let mbytes = match fs::read(&mp) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                r.waiting = s.files.iter().filter(|f| f.0 >= *seq).count() as u64;
                break;
            }
            Err(e) => return Err(io_err(&mp, e)),
        };
        let manifest: Manifest = serde_json::from_slice(&mbytes).map_err(|e| io_err(&mp, e))?;
        let sv = saved.get_or_insert_with(|| SavedSeries {
            version: 1,
            id: s.id.clone(),
            dir: s.dir.clone(),
            queue: s.queue,
            context: context_of(&manifest),
            processors: c.names.clone(),
            cursor: None,
            files: 0,
            records: 0,
            read_errors: 0,
            states: BTreeMap::new(),
        });
        let insts = match &mut instances {
            Some(i) => i,
            None => {
                let info = SeriesInfo {
                    id: s.id.clone(),
                    context: sv.context.clone(),
                };
                let mut v = Vec::new();
                for p in &c.o.processors {
                    v.push(match sv.states.remove(p.name()) {
                        Some(st) => p
                            .load(st)
                            .map_err(|e| RunError::State(format!("{}: {e}", sp.display())))?,
                        None => p.start(&info),
                    });
                }
                instances.insert(v)
            }
        };
        let mut reader = CaptureReader::open(path).map_err(|e| RunError::Io(e.to_string()))?;
        let mut n = 0u64;
        loop {
            match reader.next(&mut pkt) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    // Counted and reported; the records before it stand.
                    sv.read_errors += 1;
                    eprintln!("linecap process: {e}");
                    break;
                }
            }
            n += 1;
            let parsed = parse_frame(&pkt.data);
            let rec = Record {
                ts_ns: pkt.ts_ns,
                wire_len: pkt.wire_len,
                data: &pkt.data,
                parsed: &parsed,
            };
            for (i, inst) in insts.iter_mut().enumerate() {
                inst.record(&rec, &mut rows[i]);
            }
        }
        let fi = FileInfo {
            seq: *seq,
            name: name.clone(),
        };
        for (i, inst) in insts.iter_mut().enumerate() {
            inst.end_of_file(&fi, &mut rows[i]);
        }
        // Outputs first ...
        let stem = format!("{}-{seq:08}", s.id);
        for (i, p) in c.o.processors.iter().enumerate() {
            if rows[i].is_empty() {
                continue;
            }
            c.steps.step()?;
            let dirs = output::write_partitioned(&c.o.out, p.name(), &stem, p.columns(), &rows[i])
                .map_err(|e| RunError::Io(e.to_string()))?;
            for d in dirs {
                sync_dir(&d).map_err(|e| io_err(&d, e))?;
            }
            rows[i].clear();
        }
        // ... then the state: the commit point.
        sv.cursor = Some(Cursor {
            seq: *seq,
            file: name,
            manifest_crc32: crc32fast::hash(&mbytes),
        });
        sv.files += 1;
        sv.records += n;
        sv.states = c
            .names
            .iter()
            .cloned()
            .zip(insts.iter().map(|i| i.save()))
            .collect();
        let bytes = serde_json::to_vec(&sv).map_err(|e| io_err(&sp, e))?;
        sv.states.clear();
        c.steps.step()?;
        write_atomic(&sp, &bytes)?;
        r.files += 1;
        r.records += n;
    }
    Ok(r)
}

/// The global summary and open rows from every state file in `STATE`.
fn summarize(o: &Options, names: &[String]) -> Result<(), RunError> {
    let dir = o.state.join("series");
    let mut files: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(es) => es
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(&dir, e)),
    };
    files.sort();
    let info = SeriesInfo {
        id: "global".into(),
        context: String::new(),
    };
    let mut merged: Vec<Box<dyn Instance>> = o.processors.iter().map(|p| p.start(&info)).collect();
    let (mut nfiles, mut records, mut read_errors) = (0u64, 0u64, 0u64);
    let mut contexts = std::collections::BTreeSet::new();
    for f in &files {
        let b = fs::read(f).map_err(|e| io_err(f, e))?;
        let mut sv: SavedSeries = serde_json::from_slice(&b).map_err(|e| io_err(f, e))?;
        if sv.processors != names {
            return Err(RunError::State(format!(
                "{}: made with --processors {}",
                f.display(),
                sv.processors.join(",")
            )));
        }
        nfiles += sv.files;
        records += sv.records;
        read_errors += sv.read_errors;
        contexts.insert(sv.context.clone());
        for (i, n) in names.iter().enumerate() {
            if let Some(st) = sv.states.remove(n) {
                merged[i]
                    .merge_saved(st)
                    .map_err(|e| RunError::State(format!("{}: {e}", f.display())))?;
            }
        }
    }
    let mut procs = serde_json::Map::new();
    for (i, n) in names.iter().enumerate() {
        procs.insert(n.clone(), merged[i].summary());
        let mut open = Vec::new();
        merged[i].open_rows(&mut open);
        let path = o.out.join("open").join(format!("{n}.parquet"));
        let refs: Vec<&Row> = open.iter().collect();
        output::write_file(&path, o.processors[i].columns(), &refs)
            .map_err(|e| RunError::Io(e.to_string()))?;
    }
    let summary = serde_json::json!({
        "series": files.len(),
        "files": nfiles,
        "records": records,
        "read_errors": read_errors,
        "contexts": contexts,
        "processors": procs,
    });
    let bytes = serde_json::to_vec_pretty(&summary).map_err(|e| io_err(&o.out, e))?;
    write_atomic(&o.out.join("summary.json"), &bytes)
}

/// Run the processors over the new files of every series.
pub fn run(o: &Options) -> Result<Report, RunError> {
    if o.processors.is_empty() {
        return Err(RunError::State("no processors given".into()));
    }
    let names: Vec<String> = o.processors.iter().map(|p| p.name().to_string()).collect();
    for d in [&o.state, &o.out, &o.state.join("series")] {
        fs::create_dir_all(d).map_err(|e| io_err(d, e))?;
    }
    let lock_path = o.state.join("lock");
    let lock = File::create(&lock_path).map_err(|e| io_err(&lock_path, e))?;
    lock.try_lock().map_err(|e| {
        io_err(
            &lock_path,
            format!("{e} (another `linecap process` is using this --state)"),
        )
    })?;
    clean_tmp(&o.state).map_err(|e| io_err(&o.state, e))?;
    clean_tmp(&o.out).map_err(|e| io_err(&o.out, e))?;
    let plans = plan(&o.inputs)?;
    if plans.is_empty() {
        return Err(RunError::State(format!(
            "no capture series files (qQQ-SEQ-TIME.erf[.lz4]) found in {}",
            o.inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let c = Ctx {
        o,
        names: names.clone(),
        steps: Steps {
            crash_at: o.crash_at_step,
            done: AtomicUsize::new(0),
        },
    };
    let next = AtomicUsize::new(0);
    let report = Mutex::new(Report {
        series: plans.len(),
        ..Report::default()
    });
    let threads = o.threads.clamp(1, plans.len());
    std::thread::scope(|sc| {
        for _ in 0..threads {
            sc.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(s) = plans.get(i) else { break };
                    let res = run_series(&c, s);
                    let mut rep = report.lock().unwrap_or_else(|p| p.into_inner());
                    match res {
                        Ok(r) => {
                            rep.files += r.files;
                            rep.records += r.records;
                            rep.already_done += r.already;
                            rep.waiting += r.waiting;
                        }
                        Err(e) => rep.errors.push(format!(
                            "series {} queue {}: {e}",
                            s.dir.display(),
                            s.queue
                        )),
                    }
                }
            });
        }
    });
    let mut rep = report.into_inner().unwrap_or_else(|p| p.into_inner());
    if rep.errors.iter().any(|e| e.contains("crash hook")) {
        // A simulated crash writes nothing more.
        return Err(RunError::State(rep.errors.join("; ")));
    }
    rep.errors.sort();
    summarize(o, &names)?;
    Ok(rep)
}
