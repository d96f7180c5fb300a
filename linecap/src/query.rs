//! `linecap query` (find packets by time and filter through the per-file
//! indexes) and `linecap index` (build missing or damaged indexes).
//! The planner is `linecap_reader::query`; this file is the command line.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use linecap_dataplane::policy::bpf::Filter;
use linecap_reader::output::{OutFormat, PacketWriter};
use linecap_reader::query::{FileMode, QueryExec, QueryPlan, QueryStats, Window, plan};
use linecap_reader::query_expr::{Term, prune_terms};
use linecap_reader::read::Packet;
use linecap_wire::index as wix;
use linecap_writer::indexer::{self, IndexState};
use linecap_writer::names;

#[derive(Args, Debug)]
#[command(after_help = "\
TIME (T): RFC 3339 (2026-12-01T22:15:00.123456789Z, or with +01:00), epoch seconds (1764627300 or
  1764627300.5), or relative (90s ago, 15m ago, 2h ago, 1d ago). The window is AFTER <= ts < BEFORE,
  to the nanosecond.

EXPR: a tcpdump filter expression (one argument or several words), matched exactly with the compiled
  BPF program. host/net/port/portrange/proto/tcp/udp/icmp/vlan terms choose blocks through the index;
  the rest is matched by scanning the chosen blocks.

EXAMPLES:
  linecap query /data/cap --after '15m ago' 'host 10.1.2.3 and port 443' -w out.pcap
  linecap query /data/cap /mnt/probe2 --count 'udp port 53'
  linecap query /data/cap --explain -w - 'tcp port 22' | tshark -r -")]
pub struct QueryArgs {
    /// Capture directories (or files), then the filter expression.
    #[arg(required = true, value_name = "DIR... EXPR")]
    pub args: Vec<String>,
    /// Only packets at or after this time.
    #[arg(long, value_name = "T")]
    pub after: Option<String>,
    /// Only packets before this time.
    #[arg(long, value_name = "T")]
    pub before: Option<String>,
    /// Write the packets here (`-` = standard output).
    #[arg(short = 'w', long, value_name = "OUT")]
    pub write: Option<PathBuf>,
    /// Output format: pcap (nanosecond), pcapng (one interface per queue) or erf.
    #[arg(short = 'F', long, default_value = "pcap")]
    pub format: OutFormat,
    /// Print the number of matching packets.
    #[arg(long)]
    pub count: bool,
    /// Print the files the query has to read (after time and index pruning) and stop.
    #[arg(long)]
    pub list_files: bool,
    /// Print the plan and what was read to standard error: files and blocks
    /// considered of the total, bytes read.
    #[arg(long)]
    pub explain: bool,
}

#[derive(Args, Debug)]
pub struct IndexArgs {
    /// Capture directories (or data files) to index.
    #[arg(required = true, value_name = "DIR")]
    pub inputs: Vec<PathBuf>,
    /// Rebuild every index, also the intact ones.
    #[arg(long)]
    pub force: bool,
}

/// Split `args` into the inputs (the leading arguments that exist on disk)
/// and the expression (the rest, joined by spaces).
pub fn split_inputs(args: &[String]) -> (Vec<PathBuf>, String) {
    let n = args
        .iter()
        .take_while(|a| Path::new(a.as_str()).exists())
        .count();
    (
        args[..n].iter().map(PathBuf::from).collect(),
        args[n..].join(" "),
    )
}

/// Now, ns since the Unix epoch (relative times count back from it).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds and a decimal fraction → ns.
fn secs_frac_ns(secs: i64, frac: &str) -> Option<u64> {
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let f: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u64>().ok()? * 10u64.pow(9 - frac.len() as u32)
    };
    u64::try_from(secs)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(f)
}

/// Parse a time for `--after/--before` (see the help), relative to `now_ns`.
pub fn parse_time(s: &str, now_ns: u64) -> Result<u64, String> {
    let t = s.trim();
    let bad = || {
        format!(
            "{s:?} is not a time: expected RFC 3339 (2026-12-01T22:15:00Z), epoch seconds or \
             'N{{s,m,h,d}} ago'"
        )
    };
    if let Some(rel) = t.strip_suffix("ago") {
        let rel = rel.trim();
        let (num, unit) = rel.split_at(rel.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult = match unit.trim() {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            _ => return Err(bad()),
        };
        return Ok(now_ns.saturating_sub(n.saturating_mul(mult).saturating_mul(1_000_000_000)));
    }
    if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
        let secs: i64 = secs.parse().map_err(|_| bad())?;
        return secs_frac_ns(secs, frac).ok_or_else(bad);
    }
    // RFC 3339: YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        t.get(r).and_then(|x| x.parse().ok()).ok_or_else(bad)
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    if h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let mut rest = &t[19..];
    let mut frac = "";
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
        frac = &r[..n];
        rest = &r[n..];
    }
    let offset_s: i64 = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let oh: i64 = o[1..3].parse().map_err(|_| bad())?;
            let om: i64 = o[4..6].parse().map_err(|_| bad())?;
            let v = oh * 3600 + om * 60;
            if o.starts_with('-') { -v } else { v }
        }
        _ => return Err(bad()),
    };
    let secs =
        days_from_civil(y, mo as u32, d as u32) * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    secs_frac_ns(secs, frac).ok_or_else(bad)
}

/// The window from `--after/--before`; flag names in errors.
pub fn window(after: &Option<String>, before: &Option<String>) -> anyhow::Result<Window> {
    let now = now_ns();
    let mut w = Window::default();
    if let Some(a) = after {
        w.after = parse_time(a, now).map_err(|e| anyhow::anyhow!("--after: {e}"))?;
    }
    if let Some(b) = before {
        w.before = parse_time(b, now).map_err(|e| anyhow::anyhow!("--before: {e}"))?;
    }
    Ok(w)
}

/// A compiled query expression.
pub enum Matcher {
    /// No expression: every packet.
    All,
    /// libpcap proved that nothing matches (`host a and not host a`).
    Nothing,
    /// The BPF program.
    Bpf(Filter),
}

impl Matcher {
    /// Whether the packet matches.
    pub fn matches(&self, data: &[u8], wire_len: u32) -> bool {
        match self {
            Matcher::All => true,
            Matcher::Nothing => false,
            Matcher::Bpf(f) => f.matches(data, wire_len),
        }
    }
}

/// Compile `expr` (empty: every packet); the error names the expression.
pub fn compile(expr: &str) -> anyhow::Result<Matcher> {
    compile_expr(expr).map_err(|e| anyhow::anyhow!("filter expression: {e}"))
}

/// [`compile`], the error as libpcap says it.
fn compile_expr(expr: &str) -> Result<Matcher, String> {
    if expr.trim().is_empty() {
        return Ok(Matcher::All);
    }
    match Filter::compile(expr) {
        Ok(f) => Ok(Matcher::Bpf(f)),
        // libpcap's optimiser refuses an expression that can match nothing;
        // for a query that is a valid question with an empty answer.
        Err(e) if e.to_string().contains("rejects all packets") => Ok(Matcher::Nothing),
        Err(e) => Err(e.to_string()),
    }
}

/// An output file, or standard output for `-`.
pub fn open_output(path: &Path) -> anyhow::Result<Box<dyn Write>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(BufWriter::with_capacity(
            1 << 20,
            std::io::stdout().lock(),
        )));
    }
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(Box::new(BufWriter::with_capacity(1 << 20, f)))
}

/// A bad query argument: the parameter at fault (`expr`, `after`,
/// `before`), or no capture file to read. Said before any output byte is
/// written; the CLI names the flag, the API the query parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// An argument that does not parse or compile.
    Param {
        /// `expr`, `after` or `before`.
        param: &'static str,
        /// Why.
        message: String,
    },
    /// The inputs hold no capture file.
    NoFiles(String),
    /// An input could not be listed.
    Inputs(String),
}

impl QueryError {
    /// The message as the command line says it (flags by their names).
    pub fn cli_message(&self) -> String {
        match self {
            QueryError::Param {
                param: "expr",
                message,
            } => format!("filter expression: {message}"),
            QueryError::Param { param, message } => format!("--{param}: {message}"),
            QueryError::NoFiles(m) | QueryError::Inputs(m) => m.clone(),
        }
    }
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.cli_message())
    }
}

impl std::error::Error for QueryError {}

/// A query planned and ready to write: everything that can be refused has
/// been checked (the time bounds, the expression, the inputs' files).
/// `linecap query` and the API's `GET /v1/query` both make one with
/// [`prepare`] and write it with [`write_answer`], so they give the same bytes.
pub struct Prepared {
    /// The plan (files per stream, what each file's index gave).
    pub plan: QueryPlan,
    /// The window, ns.
    pub window: Window,
    /// The index terms of the expression (for `--explain`).
    pub term: Term,
    /// The compiled expression.
    pub filter: Matcher,
    /// pcapng interface names, one per stream (`DIR/qNN`).
    pub iface_names: Vec<String>,
}

/// Plan a query over `inputs`: `after`/`before` as `--after/--before`
/// (relative times against `now_ns`), `expr` a tcpdump expression (empty:
/// every packet).
pub fn prepare(
    inputs: &[PathBuf],
    expr: &str,
    after: Option<&str>,
    before: Option<&str>,
    now_ns: u64,
) -> Result<Prepared, QueryError> {
    let mut w = Window::default();
    if let Some(a) = after {
        w.after = parse_time(a, now_ns).map_err(|message| QueryError::Param {
            param: "after",
            message,
        })?;
    }
    if let Some(b) = before {
        w.before = parse_time(b, now_ns).map_err(|message| QueryError::Param {
            param: "before",
            message,
        })?;
    }
    let filter = compile_expr(expr).map_err(|message| QueryError::Param {
        param: "expr",
        message,
    })?;
    let term = prune_terms(expr);
    let plan = plan(inputs, w, &term).map_err(|e| QueryError::Inputs(e.to_string()))?;
    if plan.streams.iter().all(Vec::is_empty) {
        return Err(QueryError::NoFiles(format!(
            "no capture files found in {inputs:?}"
        )));
    }
    let iface_names = plan
        .streams
        .iter()
        .map(|s| {
            s.first().map_or(String::new(), |f| {
                let name = f.path.file_name().unwrap_or_default().to_string_lossy();
                match names::parse(&name) {
                    Some((q, _)) => format!(
                        "{}/q{q:02}",
                        f.path.parent().unwrap_or(Path::new("")).display()
                    ),
                    None => f.path.display().to_string(),
                }
            })
        })
        .collect();
    Ok(Prepared {
        plan,
        window: w,
        term,
        filter,
        iface_names,
    })
}

/// What writing an answer found.
pub struct Written<W> {
    /// Packets written.
    pub matched: u64,
    /// What the plan's execution read (its `errors` are files it could not read).
    pub stats: QueryStats,
    /// The output, flushed.
    pub out: W,
}

/// Write the answer of `p` to `out` in `format`, packet by packet (nothing
/// is held but the block being read): the one writer of `linecap query -w`
/// and `GET /v1/query`.
pub fn write_answer<W: Write>(
    p: Prepared,
    out: W,
    format: OutFormat,
) -> std::io::Result<Written<W>> {
    let mut writer = PacketWriter::with_interfaces(out, format, &p.iface_names)?;
    let filter = p.filter;
    let mut exec = QueryExec::new(p.plan, |data: &[u8], wire: u32| filter.matches(data, wire));
    let mut pkt = Packet::default();
    let mut n = 0u64;
    while let Some(stream) = exec.next(&mut pkt) {
        n += 1;
        writer.write_on(&pkt, stream as u32)?;
    }
    let mut out = writer.finish()?;
    out.flush()?;
    Ok(Written {
        matched: n,
        stats: exec.stats().clone(),
        out,
    })
}

/// Run `linecap query`; exit code 1 when a file could not be read.
pub fn run_query(a: QueryArgs) -> anyhow::Result<i32> {
    let (inputs, expr) = split_inputs(&a.args);
    if inputs.is_empty() {
        bail!(
            "no capture directory or file: {:?} does not exist",
            a.args.first().map_or("", String::as_str)
        );
    }
    if a.write.is_none() && !a.count && !a.list_files && !a.explain {
        bail!("nothing to do: give -w OUT (or -w -), --count, --list-files or --explain");
    }
    let p = prepare(
        &inputs,
        &expr,
        a.after.as_deref(),
        a.before.as_deref(),
        now_ns(),
    )
    .map_err(|e| anyhow::anyhow!(e.cli_message()))?;
    let (w, term) = (p.window, &p.term);
    for f in p.plan.streams.iter().flatten() {
        if let FileMode::Scan(why) = &f.mode {
            let open = f
                .path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            let linecap_file = f
                .path
                .file_name()
                .is_some_and(|n| names::parse(&n.to_string_lossy()).is_some());
            if linecap_file && !open {
                eprintln!(
                    "linecap: {}: {why}: scanning the whole file (run linecap index to repair)",
                    f.path.display()
                );
            }
        }
    }
    if a.explain {
        eprintln!(
            "plan: window [{}, {}) ns; index terms: {term:?}",
            w.after, w.before
        );
        for f in p.plan.streams.iter().flatten() {
            let what = match &f.mode {
                FileMode::PrunedByTime => "pruned by time (index header only)".to_string(),
                FileMode::Indexed { blocks, total } => {
                    format!("index: {} of {total} blocks", blocks.len())
                }
                FileMode::Scan(why) => format!("scan ({why})"),
            };
            eprintln!("  {}: {what}", f.path.display());
        }
    }
    if a.list_files {
        let mut out = std::io::stdout().lock();
        for f in p.plan.streams.iter().flatten() {
            let read = match &f.mode {
                FileMode::PrunedByTime => false,
                FileMode::Indexed { blocks, .. } => !blocks.is_empty(),
                FileMode::Scan(_) => true,
            };
            if read {
                writeln!(out, "{}", f.path.display())?;
            }
        }
        if a.write.is_none() && !a.count && !a.explain {
            return Ok(0);
        }
    }
    let started = std::time::Instant::now();
    // Without -w the packets are counted, not written (a sink).
    let out: Box<dyn Write> = match &a.write {
        Some(path) => open_output(path)?,
        None => Box::new(std::io::sink()),
    };
    let done = write_answer(p, out, a.format).context("writing the output")?;
    let (n, st) = (done.matched, done.stats);
    if a.count {
        println!("{n}");
    }
    if a.explain {
        eprintln!(
            "read: files {} of {} ({} pruned by time, {} pruned by the index, {} through the \
             index, {} scanned); blocks {} of {} in indexed files; {} bytes read; {} records \
             examined; {} packets matched; {:.3} s",
            st.files_indexed + st.files_scanned,
            st.files_total,
            st.files_pruned_time,
            st.files_pruned_index,
            st.files_indexed,
            st.files_scanned,
            st.blocks_read,
            st.blocks_total,
            st.bytes_read,
            st.records_examined,
            st.matched,
            started.elapsed().as_secs_f64()
        );
    }
    for e in &st.errors {
        eprintln!("linecap: error: {e}");
    }
    Ok(i32::from(!st.errors.is_empty()))
}

/// Run `linecap index`: remove stray `.NAME.idx.tmp` files, build every
/// missing, damaged or older-version index; print the sizes (the breakdown
/// by section, against the data bytes); exit 1 when one could not be built.
pub fn run_index(a: IndexArgs) -> anyhow::Result<i32> {
    let streams = linecap_reader::merge::plan(&a.inputs, false)?;
    let (mut ok, mut built, mut failed) = (0u64, 0u64, 0u64);
    // Directories seen: the inputs and every data file's.
    let mut dirs: Vec<PathBuf> = a.inputs.iter().filter(|p| p.is_dir()).cloned().collect();
    let mut sizes = wix::Sections::default();
    let (mut index_bytes, mut data_bytes, mut indexed) = (0u64, 0u64, 0u64);
    let files: Vec<PathBuf> = streams.into_iter().flatten().collect();
    for path in &files {
        if let Some(d) = path.parent()
            && !dirs.iter().any(|x| x == d)
        {
            dirs.push(d.to_path_buf());
        }
    }
    // Strays first: a rebuilt index is written under the same hidden name.
    let mut strays = 0u64;
    for d in &dirs {
        match indexer::remove_stray_tmp(d, None) {
            Ok(gone) => {
                for g in &gone {
                    eprintln!("{}: stray index file removed", g.display());
                }
                strays += gone.len() as u64;
            }
            Err(e) => {
                failed += 1;
                eprintln!("linecap: error: {e}");
            }
        }
    }
    for path in files {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        // Only linecap's complete ERF files carry an index.
        if names::parse(&name).is_none() || name.starts_with('.') {
            continue;
        }
        let why = match indexer::load_index(&path) {
            IndexState::Good(_) if a.force => "rebuilt (--force)".to_string(),
            IndexState::Good(_) => match index_header(&path) {
                Some(h) if h.version < wix::VERSION => format!("was version {}", h.version),
                _ => {
                    ok += 1;
                    if let Some(h) = index_header(&path) {
                        add_sizes(&mut sizes, &h);
                        index_bytes += h.file_len();
                        data_bytes += h.data_bytes;
                        indexed += 1;
                    }
                    continue;
                }
            },
            IndexState::Missing => "was missing".to_string(),
            IndexState::Damaged(e) => format!("was damaged ({e})"),
        };
        let mode = std::fs::metadata(&path).map_or(0o640, |m| {
            std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777
        });
        match indexer::build_for_file(&path)
            .and_then(|ix| indexer::write_index(&path, &ix, mode, true))
        {
            Ok(bytes) => {
                built += 1;
                eprintln!(
                    "{}: index built, {bytes} bytes: {why}",
                    indexer::index_path(&path).display()
                );
                if let Some(h) = index_header(&path) {
                    add_sizes(&mut sizes, &h);
                    index_bytes += h.file_len();
                    data_bytes += h.data_bytes;
                    indexed += 1;
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("linecap: error: {e}");
            }
        }
    }
    println!(
        "indexes: {ok} intact, {built} built, {failed} failed, {strays} stray .idx.tmp removed"
    );
    let pct = |x: u64| {
        if data_bytes == 0 {
            0.0
        } else {
            100.0 * x as f64 / data_bytes as f64
        }
    };
    println!(
        "index bytes: {index_bytes} for {data_bytes} data bytes in {indexed} files ({:.3} %): \
         blocks {} ({:.3} %), flows {} ({:.3} %), addresses {} ({:.3} %), ports {} ({:.3} %), \
         wild {}, v1 lists {}, headers and trailers {}",
        pct(index_bytes),
        sizes.blocks,
        pct(sizes.blocks),
        sizes.flows,
        pct(sizes.flows),
        sizes.addrs,
        pct(sizes.addrs),
        sizes.ports,
        pct(sizes.ports),
        sizes.wild,
        sizes.lists,
        index_bytes.saturating_sub(sizes.total()),
    );
    Ok(i32::from(failed > 0))
}

/// The header of `data`'s index, if it reads.
fn index_header(data: &Path) -> Option<wix::Header> {
    let b = std::fs::read(indexer::index_path(data)).ok()?;
    wix::decode_header(&b).ok()
}

fn add_sizes(s: &mut wix::Sections, h: &wix::Header) {
    s.blocks += h.sections.blocks;
    s.flows += h.sections.flows;
    s.addrs += h.sections.addrs;
    s.ports += h.sections.ports;
    s.lists += h.sections.lists;
    s.wild += h.sections.wild;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_to_the_nanosecond() {
        let now = 2_000_000_000_000_000_000;
        assert_eq!(
            parse_time("2010-07-10T04:56:19.466743001Z", now),
            Ok(1_278_737_779_466_743_001)
        );
        assert_eq!(
            parse_time("2010-07-10T06:56:19.466743001+02:00", now),
            Ok(1_278_737_779_466_743_001)
        );
        assert_eq!(parse_time("1278737779", now), Ok(1_278_737_779_000_000_000));
        assert_eq!(
            parse_time("1278737779.5", now),
            Ok(1_278_737_779_500_000_000)
        );
        assert_eq!(parse_time("15m ago", now), Ok(now - 900_000_000_000));
        assert_eq!(parse_time("2 h ago", now), Ok(now - 7_200_000_000_000));
        for bad in [
            "",
            "yesterday",
            "2010-13-01T00:00:00Z",
            "5x ago",
            "2010-07-10T04:56:19",
        ] {
            assert!(parse_time(bad, now).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn inputs_end_where_the_expression_starts() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().display().to_string();
        let (i, e) = split_inputs(&[p.clone(), "host".into(), "1.2.3.4".into()]);
        assert_eq!((i, e.as_str()), (vec![PathBuf::from(&p)], "host 1.2.3.4"));
        let (i, e) = split_inputs(&[p.clone(), p.clone()]);
        assert_eq!((i.len(), e.as_str()), (2, ""));
    }
}
