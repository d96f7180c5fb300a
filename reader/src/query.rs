//! Finding packets: time, then the per-file index, then the exact filter.
//!
//! The plan for `linecap query DIR... [--after T] [--before T] EXPR`:
//!
//! 1. **Files** come from [`crate::merge::plan`] (with the open `.part`
//!    files, so fresh data is found), one stream per queue.
//! 2. **Time, before any index is read**: for a file with an index, only its
//!    72-byte header is read first; its exact smallest and largest packet
//!    times (from the records, not the batch boundaries the manifest has)
//!    drop the file when they miss the window. Nothing else of a pruned
//!    file's index is read.
//! 3. **Index**: the `host`/`net`/`port`/`proto`/`vlan` terms the index can
//!    answer ([`crate::query_expr::prune_terms`]) choose blocks, and the
//!    block table's time range drops blocks outside the window. Files
//!    without a usable index (older files, the open one, a damaged or
//!    missing index, other formats) are scanned whole, and the answer says so.
//! 4. **Exact**: every record of a chosen block is matched against the time
//!    bounds (ns, `after <= ts < before`) and the caller's matcher (the
//!    compiled BPF program).
//! 5. **Merge**: streams are merged by time as `linecap read` merges them
//!    (ties to the earlier stream), so the answer is the full read-back
//!    filtered.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use linecap_wire::erf::Record;
use linecap_wire::index::{self as wix, FLAG_LZ4, Index, key_flags};
use linecap_writer::indexer;

use crate::merge;
use crate::query_expr::{Term, in_net};
use crate::read::{CaptureReader, Packet};

/// The time window, ns: `after <= ts < before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Inclusive lower bound.
    pub after: u64,
    /// Exclusive upper bound.
    pub before: u64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            after: 0,
            before: u64::MAX,
        }
    }
}

impl Window {
    /// Whether `ts` is inside.
    pub fn contains(&self, ts: u64) -> bool {
        ts >= self.after && ts < self.before
    }
    /// Whether `[lo, hi]` meets the window.
    pub fn meets(&self, lo: u64, hi: u64) -> bool {
        lo < self.before && hi >= self.after
    }
}

/// How one file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileMode {
    /// Dropped by its index header's time range.
    PrunedByTime,
    /// Read through its index: these blocks (numbers), of `total`.
    Indexed {
        /// Chosen block numbers, ascending.
        blocks: Vec<u32>,
        /// Blocks in the file.
        total: u32,
    },
    /// Scanned whole: why.
    Scan(String),
}

/// One file of the plan.
#[derive(Debug, Clone)]
pub struct FilePlan {
    /// The data file.
    pub path: PathBuf,
    /// How it is read.
    pub mode: FileMode,
    /// Bytes of its index read while planning.
    pub index_bytes_read: u64,
    /// The file's size.
    pub data_bytes: u64,
    /// The index, for an indexed file.
    pub index: Option<Box<Index>>,
}

/// The whole plan: streams (one per queue) of files.
#[derive(Debug, Clone)]
pub struct QueryPlan {
    /// Files per stream, in stream order.
    pub streams: Vec<Vec<FilePlan>>,
    /// The window.
    pub window: Window,
}

/// What executing a plan read and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// Files in the inputs.
    pub files_total: u64,
    /// Files dropped by time before their index was read.
    pub files_pruned_time: u64,
    /// Indexed files in the window where the index chose no block.
    pub files_pruned_index: u64,
    /// Files read through their index.
    pub files_indexed: u64,
    /// Files scanned whole.
    pub files_scanned: u64,
    /// Blocks in indexed files.
    pub blocks_total: u64,
    /// Blocks chosen and read.
    pub blocks_read: u64,
    /// Bytes read: index bytes plus data bytes (chosen blocks, whole scanned files).
    pub bytes_read: u64,
    /// Records examined by the exact match.
    pub records_examined: u64,
    /// Packets matched.
    pub matched: u64,
    /// Errors met (a file that could not be read), with the file.
    pub errors: Vec<String>,
}

fn read_header(path: &Path) -> Result<wix::Header, String> {
    let p = indexer::index_path(path);
    let f = File::open(&p).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            "no index".to_string()
        } else {
            format!("{}: {e}", p.display())
        }
    })?;
    // Version 1 headers are shorter: read what there is, up to the longest.
    let mut h = [0u8; wix::HEADER_LEN_MAX];
    let mut got = 0;
    while got < h.len() {
        match f.read_at(&mut h[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{}: {e}", p.display())),
        }
    }
    wix::decode_header(&h[..got]).map_err(|e| format!("{}: {e}", p.display()))
}

/// Choose blocks of `ix` for `term`: a superset of the blocks holding a
/// packet the term's expression can match.
pub fn choose_blocks(ix: &Index, term: &Term) -> Vec<bool> {
    let n = ix.blocks.len();
    let mut wild = vec![false; n];
    let mut l4wild = vec![false; n];
    for f in &ix.flows {
        if f.key.is_wild() {
            for &b in &f.blocks {
                wild[b as usize] = true;
                l4wild[b as usize] = true;
            }
        } else if f.key.flags & key_flags::L4_WILD != 0 {
            for &b in &f.blocks {
                l4wild[b as usize] = true;
            }
        }
    }
    eval(ix, term, &wild, &l4wild)
}

fn mark_flows(ix: &Index, flows: impl Iterator<Item = u32>, base: &[bool]) -> Vec<bool> {
    let mut v = base.to_vec();
    for f in flows {
        if let Some(f) = ix.flows.get(f as usize) {
            for &b in &f.blocks {
                v[b as usize] = true;
            }
        }
    }
    v
}

/// `base` with the blocks of posting lists (block numbers) added.
fn mark_blocks(blocks: impl Iterator<Item = u32>, base: &[bool]) -> Vec<bool> {
    let mut v = base.to_vec();
    for b in blocks {
        if let Some(x) = v.get_mut(b as usize) {
            *x = true;
        }
    }
    v
}

fn eval(ix: &Index, t: &Term, wild: &[bool], l4wild: &[bool]) -> Vec<bool> {
    let n = ix.blocks.len();
    match t {
        Term::All => vec![true; n],
        Term::Host(a) => {
            let blocks = ix
                .addrs
                .binary_search_by(|(x, _)| x.cmp(a))
                .map(|i| ix.addrs[i].1.as_slice())
                .unwrap_or_default();
            mark_blocks(blocks.iter().copied(), wild)
        }
        Term::Net(a, bits) => {
            let mask = match *bits {
                0 => 0,
                b => u128::MAX << (128 - u32::from(b.min(128))),
            };
            let base = (u128::from_be_bytes(*a) & mask).to_be_bytes();
            let start = ix.addrs.partition_point(|(x, _)| *x < base);
            let blocks = ix.addrs[start..]
                .iter()
                .take_while(|(x, _)| in_net(x, a, *bits))
                .flat_map(|(_, l)| l.iter().copied());
            mark_blocks(blocks, wild)
        }
        Term::Port(lo, hi) => {
            let start = ix.ports.partition_point(|(p, _)| p < lo);
            let blocks = ix.ports[start..]
                .iter()
                .take_while(|(p, _)| p <= hi)
                .flat_map(|(_, l)| l.iter().copied());
            mark_blocks(blocks, l4wild)
        }
        Term::Proto(p) => {
            let flows = ix
                .flows
                .iter()
                .enumerate()
                .filter(|(_, f)| !f.key.is_wild() && f.key.proto == *p)
                .map(|(i, _)| i as u32);
            mark_flows(ix, flows, l4wild)
        }
        Term::Vlan(v) => {
            let flows = ix
                .flows
                .iter()
                .enumerate()
                .filter(|(_, f)| {
                    let k = &f.key;
                    !k.is_wild()
                        && k.nvlan > 0
                        && v.is_none_or(|v| k.vlans[..k.nvlan as usize].contains(&v))
                })
                .map(|(i, _)| i as u32);
            mark_flows(ix, flows, wild)
        }
        Term::And(a, b) => {
            let (a, b) = (eval(ix, a, wild, l4wild), eval(ix, b, wild, l4wild));
            a.iter().zip(&b).map(|(x, y)| *x && *y).collect()
        }
        Term::Or(a, b) => {
            let (a, b) = (eval(ix, a, wild, l4wild), eval(ix, b, wild, l4wild));
            a.iter().zip(&b).map(|(x, y)| *x || *y).collect()
        }
    }
}

/// Whether evaluating `t` walks the flow table (proto and VLAN terms).
fn needs_flows(t: &Term) -> bool {
    match t {
        Term::Proto(_) | Term::Vlan(_) => true,
        Term::And(a, b) | Term::Or(a, b) => needs_flows(a) || needs_flows(b),
        _ => false,
    }
}

/// `t` without the flow-table terms that an `and` with a posting-list term
/// makes unnecessary (`tcp and host X` picks the blocks of `host X`): the
/// blocks chosen stay a superset, the exact filter does the rest.
fn cheap_term(t: &Term) -> Term {
    match t {
        Term::And(a, b) => {
            let (a, b) = (cheap_term(a), cheap_term(b));
            match (needs_flows(&a), needs_flows(&b)) {
                (true, false) => b,
                (false, true) => a,
                _ => Term::And(Box::new(a), Box::new(b)),
            }
        }
        Term::Or(a, b) => Term::Or(Box::new(cheap_term(a)), Box::new(cheap_term(b))),
        t => t.clone(),
    }
}

/// [`choose_blocks`] through an [`wix::IndexView`], for terms that need no
/// flow table. A section that does not walk (not possible once the
/// checksums held, short of a bug) chooses every block.
fn choose_blocks_view(v: &wix::IndexView<'_>, t: &Term) -> Vec<bool> {
    let n = v.blocks.len();
    let Ok((w, l4)) = v.wild_blocks() else {
        return vec![true; n];
    };
    let mark = |list: Vec<u32>| -> Vec<bool> {
        let mut m = vec![false; n];
        for b in list {
            if let Some(x) = m.get_mut(b as usize) {
                *x = true;
            }
        }
        m
    };
    let (wild, l4wild) = (mark(w), mark(l4));
    eval_view(v, t, &wild, &l4wild).unwrap_or_else(|_| vec![true; n])
}

fn eval_view(
    v: &wix::IndexView<'_>,
    t: &Term,
    wild: &[bool],
    l4wild: &[bool],
) -> Result<Vec<bool>, wix::IndexError> {
    let n = v.blocks.len();
    Ok(match t {
        Term::Host(a) => mark_blocks(v.addr_blocks(|x| x == a, |x| x > a)?.into_iter(), wild),
        Term::Net(a, bits) => {
            let bits = *bits;
            let mask = match bits {
                0 => 0,
                b => u128::MAX << (128 - u32::from(b.min(128))),
            };
            let last = (u128::from_be_bytes(*a) | !mask).to_be_bytes();
            mark_blocks(
                v.addr_blocks(|x| in_net(x, a, bits), |x| *x > last)?
                    .into_iter(),
                wild,
            )
        }
        Term::Port(lo, hi) => mark_blocks(v.port_blocks(*lo, *hi)?.into_iter(), l4wild),
        Term::And(a, b) => {
            let (a, b) = (
                eval_view(v, a, wild, l4wild)?,
                eval_view(v, b, wild, l4wild)?,
            );
            a.iter().zip(&b).map(|(x, y)| *x && *y).collect()
        }
        Term::Or(a, b) => {
            let (a, b) = (
                eval_view(v, a, wild, l4wild)?,
                eval_view(v, b, wild, l4wild)?,
            );
            a.iter().zip(&b).map(|(x, y)| *x || *y).collect()
        }
        // All, and (not reached: `needs_flows` sent them to the whole
        // index) proto/vlan terms: every block.
        _ => vec![true; n],
    })
}

/// Plan a query over `inputs` (directories or files).
pub fn plan(inputs: &[PathBuf], window: Window, term: &Term) -> io::Result<QueryPlan> {
    let streams = merge::plan(inputs, true)?;
    let mut out = Vec::with_capacity(streams.len());
    for files in streams {
        let mut s = Vec::with_capacity(files.len());
        for path in files {
            s.push(plan_file(path, window, term));
        }
        out.push(s);
    }
    Ok(QueryPlan {
        streams: out,
        window,
    })
}

fn plan_file(path: PathBuf, window: Window, term: &Term) -> FilePlan {
    let data_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mk = |mode, index_bytes_read| FilePlan {
        path: path.clone(),
        mode,
        index_bytes_read,
        data_bytes,
        index: None,
    };
    if name.starts_with('.') {
        return mk(FileMode::Scan("open file (being written)".into()), 0);
    }
    let h = match read_header(&path) {
        Ok(h) => h,
        Err(e) => return mk(FileMode::Scan(e), 0),
    };
    if h.data_bytes != data_bytes {
        return mk(
            FileMode::Scan(format!(
                "index describes {} bytes of data, the file has {data_bytes}",
                h.data_bytes
            )),
            wix::HEADER_LEN as u64,
        );
    }
    if h.packets == 0 || !window.meets(h.ts_min, h.ts_max) {
        return mk(FileMode::PrunedByTime, wix::HEADER_LEN as u64);
    }
    let read = h.file_len() + wix::HEADER_LEN as u64;
    // Version 2: the block table and the posting lists the term needs,
    // without decoding the flows (unless a proto/vlan term needs them).
    let ipath = indexer::index_path(&path);
    let bytes = match std::fs::read(&ipath) {
        Ok(b) => b,
        Err(e) => {
            return mk(
                FileMode::Scan(format!("{}: {e}", ipath.display())),
                wix::HEADER_LEN as u64,
            );
        }
    };
    let cheap = cheap_term(term);
    let (ix, chosen) = match wix::IndexView::open(&bytes) {
        Ok(view) if !needs_flows(&cheap) => {
            let chosen = choose_blocks_view(&view, &cheap);
            let ix = Box::new(Index {
                flags: view.header().flags,
                data_bytes: view.header().data_bytes,
                blocks: view.blocks,
                ..Index::default()
            });
            (ix, chosen)
        }
        Ok(_) | Err(wix::IndexError::Version(1)) => match Index::decode(&bytes) {
            Ok(ix) => {
                let chosen = choose_blocks(&ix, term);
                (Box::new(ix), chosen)
            }
            Err(e) => {
                return mk(
                    FileMode::Scan(format!("{}: {e}", ipath.display())),
                    wix::HEADER_LEN as u64,
                );
            }
        },
        Err(e) => {
            return mk(
                FileMode::Scan(format!("{}: {e}", ipath.display())),
                wix::HEADER_LEN as u64,
            );
        }
    };
    let blocks = ix
        .blocks
        .iter()
        .zip(&chosen)
        .enumerate()
        .filter(|(_, (b, c))| **c && b.records > 0 && window.meets(b.ts_min, b.ts_max))
        .map(|(i, _)| i as u32)
        .collect();
    let mut fp = mk(
        FileMode::Indexed {
            blocks,
            total: ix.blocks.len() as u32,
        },
        read,
    );
    fp.index = Some(ix);
    fp
}

/// Reads one stream's packets that pass the window and the matcher.
struct StreamReader {
    files: std::vec::IntoIter<FilePlan>,
    cur: Option<Cursor>,
}

enum Cursor {
    Blocks {
        path: PathBuf,
        file: File,
        lz4: bool,
        index: Box<Index>,
        blocks: std::vec::IntoIter<u32>,
        region: Vec<u8>,
        records: Vec<u8>,
        pos: usize,
    },
    Scan(Box<CaptureReader>),
}

/// Executes a plan, yielding matching packets in merged time order.
pub struct QueryExec<'m> {
    streams: Vec<StreamReader>,
    heads: Vec<Option<Packet>>,
    started: bool,
    window: Window,
    matcher: Matcher<'m>,
    stats: QueryStats,
}

impl<'m> QueryExec<'m> {
    /// Execute `plan` with `matcher` (data, wire length → keep).
    pub fn new(plan: QueryPlan, matcher: impl FnMut(&[u8], u32) -> bool + 'm) -> Self {
        let mut stats = QueryStats::default();
        for f in plan.streams.iter().flatten() {
            stats.files_total += 1;
            stats.bytes_read += f.index_bytes_read;
            match &f.mode {
                FileMode::PrunedByTime => stats.files_pruned_time += 1,
                FileMode::Indexed { blocks, total } => {
                    if blocks.is_empty() {
                        stats.files_pruned_index += 1;
                    } else {
                        stats.files_indexed += 1;
                    }
                    stats.blocks_total += *total as u64;
                    stats.blocks_read += blocks.len() as u64;
                }
                FileMode::Scan(_) => stats.files_scanned += 1,
            }
        }
        let n = plan.streams.len();
        QueryExec {
            streams: plan
                .streams
                .into_iter()
                .map(|files| StreamReader {
                    files: files.into_iter(),
                    cur: None,
                })
                .collect(),
            heads: vec![None; n],
            started: false,
            window: plan.window,
            matcher: Box::new(matcher),
            stats,
        }
    }

    /// Counts so far (complete after `next` returned false).
    pub fn stats(&self) -> &QueryStats {
        &self.stats
    }

    /// Number of streams (pcapng interfaces).
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    fn refill(&mut self, i: usize, mut pkt: Packet) {
        let window = self.window;
        let s = &mut self.streams[i];
        let st = &mut self.stats;
        let m = &mut self.matcher;
        loop {
            if s.cur.is_none() {
                let Some(f) = s.files.next() else {
                    self.heads[i] = None;
                    return;
                };
                match open_cursor(f, st) {
                    Some(c) => s.cur = Some(c),
                    None => continue,
                }
            }
            let Some(c) = s.cur.as_mut() else { continue };
            match next_in(c, &window, m, &mut pkt, st) {
                Ok(true) => {
                    st.matched += 1;
                    self.heads[i] = Some(pkt);
                    return;
                }
                Ok(false) => s.cur = None,
                Err(e) => {
                    st.errors.push(e);
                    s.cur = None;
                }
            }
        }
    }

    /// The next matching packet in time order into `out`; false at the end.
    pub fn next(&mut self, out: &mut Packet) -> Option<usize> {
        if !self.started {
            self.started = true;
            for i in 0..self.streams.len() {
                self.refill(i, Packet::default());
            }
        }
        let mut best: Option<usize> = None;
        for (i, h) in self.heads.iter().enumerate() {
            if let Some(h) = h
                && best.is_none_or(|b| self.heads[b].as_ref().is_some_and(|bh| h.ts_ns < bh.ts_ns))
            {
                best = Some(i);
            }
        }
        let b = best?;
        let mut h = self.heads[b].take()?;
        std::mem::swap(out, &mut h);
        self.refill(b, h);
        Some(b)
    }
}

fn open_cursor(f: FilePlan, st: &mut QueryStats) -> Option<Cursor> {
    match f.mode {
        FileMode::PrunedByTime => None,
        FileMode::Indexed { blocks, .. } => {
            let index = f.index?;
            if blocks.is_empty() {
                return None;
            }
            match File::open(&f.path) {
                Ok(file) => Some(Cursor::Blocks {
                    lz4: index.flags & FLAG_LZ4 != 0,
                    path: f.path,
                    file,
                    index,
                    blocks: blocks.into_iter(),
                    region: Vec::new(),
                    records: Vec::new(),
                    pos: 0,
                }),
                Err(e) => {
                    st.errors.push(format!("{}: {e}", f.path.display()));
                    None
                }
            }
        }
        FileMode::Scan(_) => match CaptureReader::open(&f.path) {
            Ok(r) => {
                st.bytes_read += f.data_bytes;
                Some(Cursor::Scan(Box::new(r)))
            }
            Err(e) => {
                st.errors.push(e.to_string());
                None
            }
        },
    }
}

type Matcher<'m> = Box<dyn FnMut(&[u8], u32) -> bool + 'm>;

fn next_in(
    c: &mut Cursor,
    window: &Window,
    m: &mut Matcher<'_>,
    pkt: &mut Packet,
    st: &mut QueryStats,
) -> Result<bool, String> {
    match c {
        Cursor::Scan(r) => loop {
            if !r.next(pkt).map_err(|e| e.to_string())? {
                return Ok(false);
            }
            st.records_examined += 1;
            if window.contains(pkt.ts_ns) && m(&pkt.data, pkt.wire_len) {
                return Ok(true);
            }
        },
        Cursor::Blocks {
            path,
            file,
            lz4,
            index,
            blocks,
            region,
            records,
            pos,
        } => loop {
            while *pos < records.len() {
                let rec = Record::new_checked(&records[*pos..]).map_err(|e| {
                    format!(
                        "{}: corrupt record in an indexed block: {e}",
                        path.display()
                    )
                })?;
                *pos += rec.header().rlen as usize;
                let Some(frame) = rec.eth_frame() else {
                    continue;
                };
                st.records_examined += 1;
                let h = rec.header();
                let ts = h.ts_ns();
                if window.contains(ts) && m(frame, rec.wire_len()) {
                    pkt.ts_ns = ts;
                    pkt.wire_len = rec.wire_len();
                    pkt.data.clear();
                    pkt.data.extend_from_slice(frame);
                    pkt.iface = h.flags & linecap_wire::erf::flags::IFACE_MASK;
                    pkt.lctr = h.lctr;
                    return Ok(true);
                }
            }
            let Some(b) = blocks.next() else {
                return Ok(false);
            };
            let e = index.blocks[b as usize];
            region.resize(e.len as usize, 0);
            file.read_exact_at(region, e.offset)
                .map_err(|err| format!("{}: block {b}: {err}", path.display()))?;
            st.bytes_read += e.len as u64;
            indexer::decode_region(region, *lz4, records)
                .map_err(|err| format!("{}: block {b}: {err}", path.display()))?;
            *pos = 0;
        },
    }
}
