//! Writing the per-file index (`NAME.idx`, layout in `linecap_wire::index`
//! and `docs/index-format.md`).
//!
//! Two ways in:
//!
//! * **At rotation, off the writer's path**: a [`FileSeries`](crate::series::FileSeries)
//!   with `SeriesConfig::index` set owns an [`IndexFeed`], an index thread fed
//!   with every batch it writes (the batch's file offset and length and its
//!   ERF records): a copy, whose buffers go back and forth through a bounded
//!   pool so steady state allocates nothing; with `--direct-io` and plain
//!   files the staging buffer being written, or the ring slot itself
//!   ([`Lent`]), sent before the write and read during it. When the data file
//!   is complete and renamed, the thread sorts the flows, writes
//!   `.NAME.idx.tmp` and renames it to `NAME.idx`. The channel is bounded: if
//!   the index thread falls behind, the writer does not wait for it; that
//!   file's index is given up and counted (`skipped`), and `linecap index
//!   DIR` builds it later. (A lent slot goes back to its ring when the thread
//!   is done with it; the writer lends none while the thread still has
//!   earlier work, [`IndexFeed::would_wait`].)
//! * **After the fact**: [`build_for_file`] reads a data file block by block
//!   (files from before this feature, a crash between data and index, a
//!   damaged index), for `linecap index`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use linecap_wire::erf::Record;
use linecap_wire::index::{BlockEntry, FLAG_LZ4, FlowEntry, FlowKey, Index, index_key, key_flags};

use crate::lz4frame;

/// `NAME.idx` next to the data file `NAME`.
pub fn index_path(data: &Path) -> PathBuf {
    let mut name = data.file_name().unwrap_or_default().to_os_string();
    name.push(".idx");
    data.with_file_name(name)
}

#[derive(Default)]
struct Agg {
    first_ns: u64,
    last_ns: u64,
    packets: u64,
    bytes: u64,
    blocks: Vec<u32>,
}

/// Accumulates blocks of one data file into an [`Index`].
#[derive(Default)]
pub struct IndexBuilder {
    /// foldhash, not SipHash: the table takes every record of the capture
    /// (the builder ran 1.8x faster with it, `bench writer`); its seed is random
    /// per table, and the index is the same whatever the hasher (flows are
    /// sorted at the end).
    flows: HashMap<FlowKey, Agg, foldhash::fast::RandomState>,
    blocks: Vec<BlockEntry>,
}

impl IndexBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Blocks added so far.
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Add one block: `len` bytes at `offset` in the data file that decode
    /// to `records` (whole ERF records). Returns the records counted; a
    /// record that does not parse ends the block (the rest is not indexed,
    /// and a reader of that block meets the same error).
    pub fn add_block(&mut self, offset: u64, len: u32, records: &[u8]) -> u32 {
        let no = self.blocks.len() as u32;
        let mut b = BlockEntry {
            offset,
            len,
            erf_len: records.len() as u32,
            ts_min: u64::MAX,
            ts_max: 0,
            records: 0,
        };
        let mut rest = records;
        while !rest.is_empty() {
            let Ok(rec) = Record::new_checked(rest) else {
                break;
            };
            rest = &rest[rec.header().rlen as usize..];
            let Some(frame) = rec.eth_frame() else {
                continue;
            };
            let ts = rec.header().ts_ns();
            b.ts_min = b.ts_min.min(ts);
            b.ts_max = b.ts_max.max(ts);
            b.records += 1;
            let a = self.flows.entry(index_key(frame)).or_insert_with(|| Agg {
                first_ns: ts,
                last_ns: ts,
                ..Agg::default()
            });
            a.first_ns = a.first_ns.min(ts);
            a.last_ns = a.last_ns.max(ts);
            a.packets += 1;
            a.bytes += rec.wire_len() as u64;
            if a.blocks.last() != Some(&no) {
                a.blocks.push(no);
            }
        }
        if b.records == 0 {
            b.ts_min = 0;
        }
        self.blocks.push(b);
        b.records
    }

    /// The finished index (flows sorted, posting lists built); the builder
    /// is empty afterwards.
    pub fn finish(&mut self, flags: u32, data_bytes: u64) -> Index {
        let mut flows: Vec<FlowEntry> = self
            .flows
            .drain()
            .map(|(key, a)| FlowEntry {
                key,
                first_ns: a.first_ns,
                last_ns: a.last_ns,
                packets: a.packets,
                bytes: a.bytes,
                blocks: a.blocks,
            })
            .collect();
        flows.sort_unstable_by_key(|f| f.key);
        // Posting lists hold block numbers: `host X` and `port N` pick
        // blocks without going through the flows.
        let mut addrs: HashMap<[u8; 16], Vec<u32>> = HashMap::new();
        let mut ports: HashMap<u16, Vec<u32>> = HashMap::new();
        for f in &flows {
            let k = &f.key;
            if k.is_wild() {
                continue;
            }
            addrs
                .entry(k.addr_a)
                .or_default()
                .extend_from_slice(&f.blocks);
            if k.addr_b != k.addr_a {
                addrs
                    .entry(k.addr_b)
                    .or_default()
                    .extend_from_slice(&f.blocks);
            }
            if k.flags & key_flags::PORTS != 0 {
                ports
                    .entry(k.port_a)
                    .or_default()
                    .extend_from_slice(&f.blocks);
                if k.port_b != k.port_a {
                    ports
                        .entry(k.port_b)
                        .or_default()
                        .extend_from_slice(&f.blocks);
                }
            }
        }
        for l in addrs.values_mut().chain(ports.values_mut()) {
            l.sort_unstable();
            l.dedup();
        }
        let mut addrs: Vec<_> = addrs.into_iter().collect();
        addrs.sort_unstable();
        let mut ports: Vec<_> = ports.into_iter().collect();
        ports.sort_unstable();
        Index {
            flags,
            data_bytes,
            blocks: std::mem::take(&mut self.blocks),
            flows,
            addrs,
            ports,
        }
    }
}

/// Decode one indexed block (`bytes`, read at its offset): plain ERF is
/// returned as it is, LZ4 blocks (one or more, each with its checksum, as
/// linecap writes them) are verified and decompressed into `out`.
pub fn decode_region(bytes: &[u8], lz4: bool, out: &mut Vec<u8>) -> io::Result<()> {
    out.clear();
    if !lz4 {
        out.extend_from_slice(bytes);
        return Ok(());
    }
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut pos = 0;
    while pos < bytes.len() {
        let word = u32::from_le_bytes(
            bytes
                .get(pos..pos + 4)
                .ok_or_else(|| bad("LZ4 block cut short"))?
                .try_into()
                .map_err(|_| bad("LZ4 block cut short"))?,
        );
        if word == 0 {
            break; // end mark
        }
        let raw = word & 0x8000_0000 != 0;
        let n = (word & 0x7fff_ffff) as usize;
        if n > lz4frame::BLOCK_MAX {
            return Err(bad("LZ4 block larger than 4 MiB"));
        }
        let body = bytes
            .get(pos + 4..pos + 4 + n)
            .ok_or_else(|| bad("LZ4 block cut short"))?;
        let sum = bytes
            .get(pos + 4 + n..pos + 8 + n)
            .ok_or_else(|| bad("LZ4 block checksum cut short"))?;
        if twox_hash::XxHash32::oneshot(0, body).to_le_bytes() != sum {
            return Err(bad("LZ4 block checksum mismatch"));
        }
        if raw {
            out.extend_from_slice(body);
        } else {
            let start = out.len();
            out.resize(start + lz4frame::BLOCK_MAX, 0);
            let got = lz4_flex::block::decompress_into(body, &mut out[start..])
                .map_err(|e| bad(&format!("LZ4 block does not decode: {e}")))?;
            out.truncate(start + got);
        }
        pos += n + 8;
    }
    Ok(())
}

/// Length of the whole ERF records at the start of `b`.
fn whole_records(b: &[u8]) -> usize {
    let mut pos = 0;
    while let Ok(h) = Record::parse_header(&b[pos..]) {
        let r = h.rlen as usize;
        if pos + r > b.len() {
            break;
        }
        pos += r;
    }
    pos
}

/// Plain ERF files are indexed in blocks of about this many bytes.
const PLAIN_BLOCK_BYTES: usize = 1 << 20;

/// Build the index of a complete data file by reading it (linecap's
/// `.erf.lz4`: one LZ4 frame with independent checksummed blocks; or plain
/// `.erf`). A file cut short is indexed up to its last complete block.
pub fn build_for_file(path: &Path) -> io::Result<Index> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let file = File::open(path).map_err(ctx)?;
    let data_bytes = file.metadata().map_err(ctx)?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut b = IndexBuilder::new();
    let mut head = [0u8; 7];
    let got = read_full(&mut r, &mut head).map_err(ctx)?;
    let lz4 = lz4frame::is_lz4(&head[..got]);
    if !lz4 {
        // Plain ERF: cut into blocks at record boundaries.
        let mut buf = head[..got].to_vec();
        let mut offset = 0u64;
        let mut chunk = vec![0u8; PLAIN_BLOCK_BYTES];
        loop {
            let n = read_full(&mut r, &mut chunk).map_err(ctx)?;
            buf.extend_from_slice(&chunk[..n]);
            let whole = whole_records(&buf);
            if whole > 0 && (whole >= PLAIN_BLOCK_BYTES || n == 0) {
                b.add_block(offset, whole as u32, &buf[..whole]);
                offset += whole as u64;
                buf.drain(..whole);
            }
            if n == 0 {
                break;
            }
        }
        return Ok(b.finish(0, data_bytes));
    }
    // linecap's frame header: independent blocks with checksums, no content
    // size, no dictionary (7 bytes). Anything else is not ours to index.
    if got < 7 || head[4] & 0x3B != 0x30 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: not a linecap LZ4 file (frame flags {:#04x})",
                path.display(),
                head[4]
            ),
        ));
    }
    let mut offset = 7u64;
    let mut region_start = offset;
    let mut region: Vec<u8> = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut decoded = Vec::new();
    loop {
        let mut word = [0u8; 4];
        if read_full(&mut r, &mut word).map_err(ctx)? < 4 {
            break;
        }
        let w = u32::from_le_bytes(word);
        if w == 0 {
            break;
        }
        let n = (w & 0x7fff_ffff) as usize;
        if n > lz4frame::BLOCK_MAX {
            break;
        }
        let mut block = vec![0u8; n + 8];
        block[..4].copy_from_slice(&word);
        if read_full(&mut r, &mut block[4..]).map_err(ctx)? < n + 4 {
            break; // cut short: index what is complete
        }
        if decode_region(&block, true, &mut decoded).is_err() {
            break;
        }
        offset += block.len() as u64;
        region.extend_from_slice(&block);
        pending.extend_from_slice(&decoded);
        // A batch over 4 MiB spans several LZ4 blocks: one index block ends
        // where the decoded bytes end on a record boundary.
        if whole_records(&pending) == pending.len() {
            b.add_block(region_start, region.len() as u32, &pending);
            region.clear();
            pending.clear();
            region_start = offset;
        }
    }
    Ok(b.finish(FLAG_LZ4, data_bytes))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Write `index` for the data file `data`: `.NAME.idx.tmp`, then renamed
/// to `NAME.idx`. Returns the index's size.
pub fn write_index(data: &Path, index: &Index, mode: u32, sync: bool) -> io::Result<u64> {
    write_index_bytes(data, &index.encode(), mode, sync)
}

/// Write encoded index `bytes` for `data` (hidden, then renamed).
fn write_index_bytes(data: &Path, bytes: &[u8], mode: u32, sync: bool) -> io::Result<u64> {
    let visible = index_path(data);
    // `.NAME.idx.tmp`, not `.part`: readers take hidden `.part` files for
    // open capture files.
    let hidden = visible.with_file_name(format!(
        ".{}.tmp",
        visible.file_name().unwrap_or_default().to_string_lossy()
    ));
    let res = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&hidden)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_data()?;
        }
        drop(f);
        fs::rename(&hidden, &visible)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&hidden);
        return Err(io::Error::new(
            e.kind(),
            format!("{}: {e}", visible.display()),
        ));
    }
    Ok(bytes.len() as u64)
}

/// Whether `name` is a hidden index that was never renamed into view
/// (`.NAME.idx.tmp`: a crash between writing and renaming).
pub fn is_stray_tmp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".idx.tmp")
}

/// Remove the stray `.NAME.idx.tmp` files directly in `dir` (a crash
/// between writing an index and renaming it). The data file's index is then
/// missing, which `linecap index` repairs and queries scan around. Returns
/// the files removed. With `queue`, only that queue's (a directory may be
/// shared by several queues' series, whose index threads may be writing).
pub fn remove_stray_tmp(dir: &Path, queue: Option<u32>) -> io::Result<Vec<PathBuf>> {
    let mut gone = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = queue.is_none_or(|q| crate::names::parse(&name).is_some_and(|(nq, _)| nq == q));
        if is_stray_tmp(&name) && ours {
            let p = e.path();
            match fs::remove_file(&p) {
                Ok(()) => gone.push(p),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(io::Error::new(
                        err.kind(),
                        format!("{}: {err}", p.display()),
                    ));
                }
            }
        }
    }
    Ok(gone)
}

/// Counts of one index thread.
#[derive(Debug, Default)]
pub struct IndexStats {
    /// Indexes written.
    pub written: AtomicU64,
    /// Bytes of the indexes written.
    pub bytes: AtomicU64,
    /// Files whose index was given up because the index thread fell behind
    /// (rebuild with `linecap index`).
    pub skipped: AtomicU64,
    /// Indexes that could not be written.
    pub errors: AtomicU64,
    /// Indexes larger than the room a byte budget kept for them (not
    /// written; the file is scanned).
    pub over_budget: AtomicU64,
    /// Manifests (written by the thread after the index) that could not be
    /// written: the file is complete, but readers and the shipper that wait
    /// for its manifest do not see it as such.
    pub manifest_errors: AtomicU64,
    /// The last error's message.
    pub last_error: Mutex<Option<String>>,
}

/// Bytes their owner (a ring slot) lends for as long as an `Arc` of them
/// lives: the owner waits for the last one before it reuses them.
pub type Lent = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A batch's bytes as the index thread holds them.
enum Held {
    /// A buffer of the pool (shared with the writer while it writes it).
    Own(Arc<Vec<u8>>),
    /// Lent by a ring slot.
    Lent(Lent),
}

impl Held {
    fn bytes(&self) -> &[u8] {
        match self {
            Held::Own(v) => v,
            Held::Lent(l) => (**l).as_ref(),
        }
    }
}

enum Msg {
    Begin,
    /// Answer once everything sent before is done.
    Settle(SyncSender<()>),
    Batch {
        offset: u64,
        len: u32,
        /// The batch's ERF records are `records[at..at + erf]`. Shared:
        /// a plain direct write's staging buffer, or the ring slot it is
        /// written from, is sent before its write and read by both (see
        /// [`IndexFeed::batch_shared`], [`IndexFeed::batch_lent`]).
        records: Held,
        at: usize,
        erf: usize,
    },
    Complete {
        data: PathBuf,
        data_bytes: u64,
        flags: u32,
        /// Largest index allowed (the room a byte budget kept for it).
        max_bytes: Option<u64>,
        /// The data file's manifest, written once the index is settled.
        manifest: Vec<u8>,
    },
}

/// Batches queued to the index thread at most (with the default 1 MiB
/// batches, up to about 66 MiB of copies per queue, pool included; the
/// index thread parses a batch much faster than the writer compresses one,
/// so the queue is nearly always empty).
const FEED_DEPTH: usize = 64;

/// How much nicer the index thread makes itself than the thread that
/// creates the series (in `linecap capture` the main thread, whose
/// niceness the writer threads inherit): at nice 5 against 0 its
/// scheduling weight is 335 against 1024.
pub const INDEX_NICE: i32 = 5;

/// The writer's end of its index thread.
pub struct IndexFeed {
    tx: Option<SyncSender<Msg>>,
    pool: Receiver<Vec<u8>>,
    /// A shared buffer the writer held last, for the next [`IndexFeed::lend`].
    spare: Option<Vec<u8>>,
    /// Batches and completions sent and not yet done by the thread.
    busy: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
    /// The open file's index is given up (the thread fell behind).
    lost: bool,
    stats: Arc<IndexStats>,
    /// Held by the thread from "is the data file still there?" until its
    /// index is in place, and by the series while it deletes a file and its
    /// index: an index is never written for a file just deleted (which
    /// would briefly put bytes on disk that no budget counts).
    files: Arc<Mutex<()>>,
}

impl IndexFeed {
    /// Start an index thread writing files with permission bits `mode`.
    pub fn spawn(name: String, mode: u32, sync: bool) -> io::Result<IndexFeed> {
        let (tx, rx) = mpsc::sync_channel::<Msg>(FEED_DEPTH);
        let (pool_tx, pool) = mpsc::sync_channel::<Vec<u8>>(FEED_DEPTH + 2);
        let stats = Arc::new(IndexStats::default());
        let st = stats.clone();
        let files = Arc::new(Mutex::new(()));
        let files_t = files.clone();
        let busy = Arc::new(AtomicU64::new(0));
        let busy_t = busy.clone();
        let handle = std::thread::Builder::new().name(name).spawn(move || {
            // Below its writer (issue 19 item 5): woken with a batch, a thread
            // of equal priority was run at once on the writer's core and
            // held the writer off its next write for the whole batch's
            // indexing (~150 µs a MiB measured in `bench writer`). Niced, it
            // runs while the writer waits on the disk or on another core. An
            // increment is always allowed, so this cannot fail in a way that
            // matters; on a core it shares with one busy normal-priority
            // thread it still gets about a quarter of it, and if it falls
            // behind, the file's index is given up and counted (`skipped`).
            let _ = rustix::process::nice(INDEX_NICE);
            let mut b = IndexBuilder::new();
            // Counts a batch or completion as done however its arm ends.
            struct Done<'a>(&'a AtomicU64);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::Release);
                }
            }
            while let Ok(m) = rx.recv() {
                match m {
                    Msg::Begin => b = IndexBuilder::new(),
                    Msg::Settle(done) => {
                        let _ = done.send(());
                    }
                    Msg::Batch {
                        offset,
                        len,
                        records,
                        at,
                        erf,
                    } => {
                        let _done = Done(&busy_t);
                        b.add_block(offset, len, &records.bytes()[at..at + erf]);
                        // The last holder recycles a buffer of the pool (else
                        // the writer does); a lent slot goes back by the drop.
                        match records {
                            Held::Own(v) => {
                                if let Ok(v) = Arc::try_unwrap(v) {
                                    let _ = pool_tx.try_send(v);
                                }
                            }
                            Held::Lent(l) => drop(l),
                        }
                    }
                    Msg::Complete {
                        data,
                        data_bytes,
                        flags,
                        max_bytes,
                        manifest,
                    } => {
                        let _done = Done(&busy_t);
                        let ix = b.finish(flags, data_bytes);
                        let bytes = ix.encode();
                        let _held = files_t.lock().unwrap_or_else(|e| e.into_inner());
                        // The file-count ring or the budget may have deleted
                        // the file already: leave no index of a file that is gone.
                        if !data.exists() {
                            continue;
                        }
                        if max_bytes.is_some_and(|max| bytes.len() as u64 > max) {
                            // Larger than the room the budget kept: given
                            // up, the file is scanned.
                            st.over_budget.fetch_add(1, Ordering::Relaxed);
                        } else {
                            match write_index_bytes(&data, &bytes, mode, sync) {
                                Ok(n) => {
                                    st.written.fetch_add(1, Ordering::Relaxed);
                                    st.bytes.fetch_add(n, Ordering::Relaxed);
                                }
                                Err(e) => {
                                    st.errors.fetch_add(1, Ordering::Relaxed);
                                    *st.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                                        Some(e.to_string());
                                }
                            }
                        }
                        // The manifest last, whatever became of the index.
                        if let Err(e) =
                            crate::series::write_manifest_json(&data, &manifest, mode, sync)
                        {
                            st.manifest_errors.fetch_add(1, Ordering::Relaxed);
                            *st.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(
                                format!("{}: {e}", crate::names::manifest_path(&data).display()),
                            );
                            // The data file's rename still needs its directory
                            // synced (the manifest's would have done it), as
                            // when the series writes the manifest itself.
                            if sync && let Some(dir) = data.parent() {
                                let _ = crate::recover::sync_dir(dir);
                            }
                        }
                    }
                }
            }
        })?;
        Ok(IndexFeed {
            tx: Some(tx),
            pool,
            spare: None,
            busy,
            handle: Some(handle),
            lost: false,
            stats,
            files,
        })
    }

    /// Hold this while deleting a data file and its index (see the field).
    pub fn lock_files(&self) -> std::sync::MutexGuard<'_, ()> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The thread's counts.
    pub fn stats(&self) -> &Arc<IndexStats> {
        &self.stats
    }

    /// A new data file opens: whatever was fed for an earlier file that was
    /// never completed (a failed close) is forgotten.
    pub fn begin(&mut self) {
        self.lost = false;
        if let Some(tx) = &self.tx
            && tx.send(Msg::Begin).is_err()
        {
            self.lost = true;
        }
    }

    /// Wait until the thread has written the indexes and manifests of the
    /// files completed so far.
    pub fn settle(&self) {
        let Some(tx) = &self.tx else { return };
        let (done_tx, done) = mpsc::sync_channel(1);
        if tx.send(Msg::Settle(done_tx)).is_ok() {
            let _ = done.recv();
        }
    }

    /// One batch was written at `offset` as `len` bytes of the data file.
    /// Never waits: a full queue gives up this file's index.
    pub fn batch(&mut self, offset: u64, len: usize, records: &[u8]) {
        if self.lost {
            return;
        }
        if self.tx.is_none() {
            return;
        }
        let mut buf = self.take_buffer();
        buf.clear();
        buf.extend_from_slice(records);
        self.send(Msg::Batch {
            offset,
            len: len as u32,
            records: Held::Own(Arc::new(buf)),
            at: 0,
            erf: records.len(),
        });
    }

    /// A buffer of the pool for the caller to lay a batch out in (and then
    /// give to [`IndexFeed::batch_shared`]), unless this file's index is
    /// given up or the thread is gone.
    pub fn lend(&mut self) -> Option<Vec<u8>> {
        (!self.lost && self.tx.is_some()).then(|| self.take_buffer())
    }

    fn take_buffer(&mut self) -> Vec<u8> {
        self.spare
            .take()
            .or_else(|| self.pool.try_recv().ok())
            .unwrap_or_default()
    }

    /// A plain batch laid out at `buf[at.at..][..at.len]` (a buffer from
    /// [`IndexFeed::lend`]) is about to be written at `offset`: the thread
    /// indexes it from the same buffer while the writer waits on the disk
    /// (issue 19 item 5: sent after the write, the thread's work on it
    /// overlapped the writer's copy of the next batch, and the two shared
    /// a core). If the write then fails, [`IndexFeed::give_up_file`].
    pub fn batch_shared(&mut self, offset: u64, buf: &Arc<Vec<u8>>, at: crate::direct::Staged) {
        self.send_held(offset, Held::Own(buf.clone()), at);
    }

    /// A plain batch at `lent[at.at..][..at.len]` (a ring slot lent by its
    /// ring) is about to be written at `offset`: the thread indexes it from
    /// the slot itself while the writer waits on the disk, and drops its
    /// `Arc`, which gives the slot back. If the write then fails,
    /// [`IndexFeed::give_up_file`].
    pub fn batch_lent(&mut self, offset: u64, lent: &Lent, at: crate::direct::Staged) {
        self.send_held(offset, Held::Lent(lent.clone()), at);
    }

    /// Queue the batch at `records[at.at..][..at.len]`, written at `offset`.
    fn send_held(&mut self, offset: u64, records: Held, at: crate::direct::Staged) {
        if self.lost {
            return;
        }
        self.send(Msg::Batch {
            offset,
            len: at.len as u32,
            records,
            at: at.at,
            erf: at.len,
        });
    }

    /// The writer's end of a buffer given to [`IndexFeed::batch_shared`]:
    /// kept for the next batch if the thread is done with it.
    pub fn give_back(&mut self, buf: Arc<Vec<u8>>) {
        if let Ok(v) = Arc::try_unwrap(buf) {
            self.spare = Some(v);
        }
    }

    /// A batch already sent was not written after all: the open file's
    /// index would list it, so it is given up (counted as skipped when the
    /// file completes; `linecap index` builds it from the file).
    pub fn give_up_file(&mut self) {
        self.lost = true;
    }

    /// Queue a batch; a full queue gives up this file's index.
    fn send(&mut self, m: Msg) {
        let Some(tx) = &self.tx else { return };
        self.busy.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(m) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.busy.fetch_sub(1, Ordering::Relaxed);
                self.lost = true;
            }
        }
    }

    /// Whether a batch lent now ([`IndexFeed::batch_lent`]) would keep its
    /// owner waiting past its write: the thread still has batches or a
    /// file's completion (sorting, writing and syncing its index) before
    /// it. The writer copies such a batch instead, so that a slot is never
    /// held behind a file's completion.
    pub fn would_wait(&self) -> bool {
        !self.lost && self.tx.is_some() && self.busy.load(Ordering::Acquire) > 0
    }

    /// The data file is complete under its visible name `data` (`data_bytes`
    /// long): write its index, unless it was given up, then its `manifest`
    /// (encoded), so that a manifest in view means the index is settled.
    /// With `max_bytes`, an index larger than that is not written (a byte
    /// budget kept that much room for it). Returns the manifest when the
    /// thread does not take the file (its index was given up, or the thread
    /// is gone): the caller writes it.
    pub fn complete(
        &mut self,
        data: &Path,
        data_bytes: u64,
        lz4: bool,
        max_bytes: Option<u64>,
        manifest: Vec<u8>,
    ) -> Option<Vec<u8>> {
        if self.lost {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            self.lost = false;
            return Some(manifest);
        }
        let Some(tx) = &self.tx else {
            return Some(manifest);
        };
        self.busy.fetch_add(1, Ordering::Relaxed);
        match tx.send(Msg::Complete {
            data: data.to_path_buf(),
            data_bytes,
            flags: if lz4 { FLAG_LZ4 } else { 0 },
            max_bytes,
            manifest,
        }) {
            Ok(()) => None,
            Err(mpsc::SendError(m)) => {
                self.busy.fetch_sub(1, Ordering::Relaxed);
                match m {
                    Msg::Complete { manifest, .. } => Some(manifest),
                    _ => None,
                }
            }
        }
    }
}

impl Drop for IndexFeed {
    /// Let the thread finish the indexes already asked for.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A stored index's state, for `linecap index` and the planner.
#[derive(Debug)]
pub enum IndexState {
    /// Present, intact and for this data file (its size matches).
    Good(Box<Index>),
    /// No `NAME.idx`.
    Missing,
    /// Present but unusable: why.
    Damaged(String),
}

/// Read and check the index of `data`.
pub fn load_index(data: &Path) -> IndexState {
    let p = index_path(data);
    let bytes = match fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return IndexState::Missing,
        Err(e) => return IndexState::Damaged(format!("{}: {e}", p.display())),
    };
    match Index::decode(&bytes) {
        Ok(ix) => {
            let len = fs::metadata(data).map_or(0, |m| m.len());
            if ix.data_bytes != len {
                return IndexState::Damaged(format!(
                    "{}: describes {} bytes of data, the file has {len}",
                    p.display(),
                    ix.data_bytes
                ));
            }
            IndexState::Good(Box::new(ix))
        }
        Err(e) => IndexState::Damaged(format!("{}: {e}", p.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::{FileSeries, SeriesConfig};
    use linecap_wire::batch::BatchMeta;
    use linecap_wire::erf;

    fn udp_record(ts: u64, src: u8, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[10, 0, 0, src, 10, 0, 0, 200]);
        f.extend_from_slice(&1234u16.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0, 8, 0, 0]);
        f.resize(60, 0);
        let mut r = vec![0u8; erf::ETH_RECORD_OVERHEAD + 60];
        erf::write_eth_header(&mut r, ts, 0, 0, 60, 60, 0);
        r[erf::ETH_RECORD_OVERHEAD..].copy_from_slice(&f);
        r
    }

    fn batch(seq: u64, t0: u64) -> (BatchMeta, Vec<u8>) {
        let mut recs = Vec::new();
        for i in 0..10u64 {
            recs.extend(udp_record(t0 + i, (seq % 5) as u8, 53 + (i % 2) as u16));
        }
        let meta = BatchMeta {
            seq,
            packets: 10,
            bytes_wire: 600,
            bytes_captured: 600,
            first_ts_ns: t0,
            last_ts_ns: t0 + 9,
            records_len: recs.len() as u64,
            ..BatchMeta::default()
        };
        (meta, recs)
    }

    /// The niceness of this process's thread named `comm`, from
    /// `/proc/self/task/*/stat` (field 19, after the parenthesised name).
    fn nice_of_thread(comm: &str) -> Option<i32> {
        for t in fs::read_dir("/proc/self/task").ok()?.flatten() {
            let name = fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if name.trim_end() == comm {
                let stat = fs::read_to_string(t.path().join("stat")).ok()?;
                let rest = &stat[stat.rfind(')')? + 2..];
                return rest.split(' ').nth(16)?.parse().ok();
            }
        }
        None
    }

    /// While the thread completes a file (here held at the lock it takes to
    /// put the index in place), a batch lent to it would wait: the writer
    /// is told so, and copies instead. A lent batch is indexed from the
    /// lender's bytes, and its `Arc` dropped once done.
    #[test]
    fn a_busy_index_thread_is_not_lent_a_slot() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("f.erf");
        let mut feed = IndexFeed::spawn("ixbusy-test".into(), 0o644, false).unwrap();
        feed.begin();
        feed.settle();
        assert!(!feed.would_wait());
        let (_, r) = batch(0, 1_000);
        let lent: Lent = Arc::new(r.clone());
        let at = crate::direct::Staged {
            at: 0,
            len: r.len(),
        };
        feed.batch_lent(0, &lent, at);
        fs::write(&data, &r).unwrap();
        let files = feed.files.clone();
        let held = files.lock().unwrap();
        assert!(
            feed.complete(&data, r.len() as u64, false, None, b"{}".to_vec())
                .is_none()
        );
        // The completion waits at the lock: the thread is busy.
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(feed.would_wait());
        assert_eq!(
            Arc::strong_count(&lent),
            1,
            "the lent batch was dropped once indexed"
        );
        drop(held);
        feed.settle();
        assert!(!feed.would_wait());
        let ix = match load_index(&data) {
            IndexState::Good(ix) => ix,
            other => panic!("{other:?}"),
        };
        assert_eq!(ix.blocks.iter().map(|b| b.records).sum::<u32>(), 10);
    }

    /// The index thread runs below the thread that starts it, so that
    /// waking it with a batch does not pre-empt the writer (issue 19).
    #[test]
    fn the_index_thread_runs_nicer_than_its_writer() {
        // nice(0) changes nothing and returns the calling thread's niceness.
        let ours = rustix::process::nice(0).expect("our own niceness");
        let feed = IndexFeed::spawn("ixnice-test".into(), 0o644, false).unwrap();
        // The thread sets its niceness first thing; give it a moment.
        let mut seen = None;
        for _ in 0..200 {
            seen = nice_of_thread("ixnice-test");
            if seen == Some((ours + INDEX_NICE).min(19)) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Only the index thread: the niceness is per thread on Linux.
        let after = rustix::process::nice(0).expect("our own niceness");
        drop(feed);
        assert_eq!(seen, Some((ours + INDEX_NICE).min(19)));
        assert_eq!(after, ours, "the whole process was niced");
    }

    #[test]
    fn a_stray_index_tmp_is_removed_at_start_for_its_queue_only() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir
            .path()
            .join(".q00-00000003-20261202T000000.000000000Z.erf.lz4.idx.tmp");
        let theirs = dir
            .path()
            .join(".q01-00000003-20261202T000000.000000000Z.erf.lz4.idx.tmp");
        let other = dir.path().join(".something.tmp");
        for p in [&ours, &theirs, &other] {
            fs::write(p, b"half an index").unwrap();
        }
        let s = FileSeries::new(SeriesConfig::new(dir.path().into(), 0)).unwrap();
        assert_eq!(s.counters().index_tmp_removed, 1);
        assert!(!ours.exists(), "queue 0's stray index is removed");
        assert!(theirs.exists(), "queue 1's is not queue 0's to remove");
        assert!(other.exists());
        drop(s);
        // `linecap index` removes every stray in the directory.
        let gone = remove_stray_tmp(dir.path(), None).unwrap();
        assert_eq!(gone, vec![theirs.clone()]);
        assert!(!theirs.exists() && other.exists());
    }

    #[test]
    fn the_series_writes_an_index_equal_to_one_built_from_the_file() {
        for compress in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let cfg = SeriesConfig {
                compress,
                ..SeriesConfig::new(dir.path().into(), 0)
            };
            let mut s = FileSeries::new(cfg).unwrap();
            // 20 batches: fewer than the feed queue holds, so the index
            // cannot be given up however slow the thread is to start.
            for seq in 0..20 {
                let (m, r) = batch(seq, 1_000_000 * (seq + 1));
                s.write_batch(&m, &r).unwrap();
            }
            s.close_current().unwrap();
            drop(s); // joins the index thread
            let data: Vec<PathBuf> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    let n = p.file_name().unwrap().to_string_lossy().into_owned();
                    n.ends_with(".erf") || n.ends_with(".lz4")
                })
                .collect();
            assert_eq!(data.len(), 1);
            let IndexState::Good(ix) = load_index(&data[0]) else {
                panic!("no good index next to {}", data[0].display());
            };
            assert_eq!(ix.blocks.len(), 20);
            assert_eq!(ix.blocks.iter().map(|b| b.records).sum::<u32>(), 200);
            // 5 sources × 2 ports; port 53's flows are in all 20 blocks.
            assert_eq!(ix.flows.len(), 10);
            assert_eq!(ix.ports.iter().find(|(p, _)| *p == 53).unwrap().1.len(), 20);
            // Source 10.0.0.0 sends batches 0, 5, 10 and 15.
            let a = ix.addrs.iter().find(|(a, _)| a[15] == 0).unwrap();
            assert_eq!(a.1, vec![0, 5, 10, 15]);
            let rebuilt = build_for_file(&data[0]).unwrap();
            if compress {
                assert_eq!(&rebuilt, ix.as_ref());
            } else {
                // Plain files are cut into 1 MiB blocks when rebuilt.
                assert_eq!(rebuilt.flows.len(), 10);
                assert_eq!(rebuilt.blocks.iter().map(|b| b.records).sum::<u32>(), 200);
            }
            // Every block decodes from its offset alone to its records.
            let bytes = fs::read(&data[0]).unwrap();
            let mut out = Vec::new();
            for b in &ix.blocks {
                let region = &bytes[b.offset as usize..(b.offset + b.len as u64) as usize];
                decode_region(region, compress, &mut out).unwrap();
                assert_eq!(out.len(), b.erf_len as usize);
                assert_eq!(
                    Record::new_checked(&out).unwrap().header().ts_ns(),
                    b.ts_min
                );
            }
        }
    }
}
