//! `linecap read`: merge captures by time into one output, and/or count.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use linecap_reader::merge::{Merger, plan};
use linecap_reader::output::PacketWriter;
use linecap_reader::read::Packet;
use linecap_writer::names::utc_rfc3339;

use crate::cli::ReadArgs;

/// The output file, written under a hidden temporary name beside it and
/// renamed into place once the read is over; removed if the read fails
/// before a packet was written (no header-only file is left behind).
/// A path that exists and is not a regular file (`/dev/stdout`, a FIFO) is
/// written directly.
struct Output {
    tmp: Option<PathBuf>,
    fin: PathBuf,
}

impl Output {
    fn new(fin: &Path) -> Output {
        let special = std::fs::metadata(fin).is_ok_and(|m| !m.is_file());
        let tmp = (!special).then(|| {
            let name = fin
                .file_name()
                .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
            fin.with_file_name(format!(".{name}.linecap-partial"))
        });
        Output {
            tmp,
            fin: fin.to_path_buf(),
        }
    }

    /// Where to write now.
    fn path(&self) -> &Path {
        self.tmp.as_deref().unwrap_or(&self.fin)
    }

    /// Put the file in place.
    fn commit(mut self) -> anyhow::Result<()> {
        if let Some(tmp) = self.tmp.take() {
            std::fs::rename(&tmp, &self.fin)
                .with_context(|| format!("renaming {} to {}", tmp.display(), self.fin.display()))?;
        }
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Run `linecap read`; exit code 1 when a file could not be read. Truncated
/// tails (an incomplete last record, as a crash, a full disk or a file still
/// being written leaves) are reported on stderr but exit 0: see
/// docs/operations.md, "Reading captures back".
pub fn run(a: ReadArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        a.write.is_some() || a.stats,
        "nothing to do: give -w OUT to write the packets and/or --stats to count them"
    );
    // Trailing words that are not files: the filter expression.
    let args: Vec<String> = a
        .inputs
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let (inputs, expr) = crate::query::split_inputs(&args);
    anyhow::ensure!(
        !inputs.is_empty(),
        "no capture file or directory: {:?} does not exist",
        args[0]
    );
    let window = crate::query::window(&a.after, &a.before)?;
    let filter = crate::query::compile(&expr)?;
    let streams = plan(&inputs, a.include_partial)?;
    let files: usize = streams.iter().map(Vec::len).sum();
    anyhow::ensure!(files > 0, "no capture files found in {:?}", inputs);
    // `-w -` is standard output; a file is written under a hidden name and
    // renamed at the end (nothing is left behind when the read fails).
    let output = a
        .write
        .as_deref()
        .filter(|p| p.as_os_str() != "-")
        .map(Output::new);
    let mut writer = match (&a.write, &output) {
        (Some(_), Some(o)) => Some(
            PacketWriter::new(crate::query::open_output(o.path())?, a.format)
                .with_context(|| format!("creating {}", o.fin.display()))?,
        ),
        (Some(p), None) => Some(
            PacketWriter::new(crate::query::open_output(p)?, a.format)
                .with_context(|| format!("creating {}", p.display()))?,
        ),
        (None, _) => None,
    };
    // issue 14: loss per queue from the files alone (the lctr of each stream).
    let labels: Vec<String> = streams
        .iter()
        .map(|files| {
            files.first().map_or_else(String::new, |f| {
                let name = f.file_name().unwrap_or_default().to_string_lossy();
                let dir = f
                    .parent()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default();
                match linecap_writer::names::parse(&name) {
                    Some((q, _)) => format!("{dir} queue {q}"),
                    None => f.display().to_string(),
                }
            })
        })
        .collect();
    let mut lost_per_stream = vec![0u64; streams.len()];
    let mut merger = Merger::new(streams);
    let mut pkt = Packet::default();
    let (mut packets, mut bytes_wire, mut bytes_cap) = (0u64, 0u64, 0u64);
    let (mut first, mut last) = (u64::MAX, 0u64);
    let mut lost = 0u64;
    let mut ifaces = BTreeSet::new();
    while merger.next(&mut pkt) {
        if !window.contains(pkt.ts_ns) || !filter.matches(&pkt.data, pkt.wire_len) {
            continue;
        }
        packets += 1;
        bytes_wire += pkt.wire_len as u64;
        bytes_cap += pkt.data.len() as u64;
        first = first.min(pkt.ts_ns);
        last = last.max(pkt.ts_ns);
        lost += pkt.lctr as u64;
        if let Some(l) = lost_per_stream.get_mut(merger.last_stream()) {
            *l += pkt.lctr as u64;
        }
        ifaces.insert(pkt.iface);
        if let Some(w) = writer.as_mut() {
            w.write(&pkt).with_context(|| {
                format!(
                    "writing {}",
                    a.write.as_deref().unwrap_or(Path::new("")).display()
                )
            })?;
        }
    }
    if let Some(w) = writer {
        w.finish().with_context(|| {
            format!(
                "writing {}",
                a.write.as_deref().unwrap_or(Path::new("")).display()
            )
        })?;
    }
    let reports = merger.reports();
    // With -w -, standard output carries the packets: counts go to stderr.
    let to_stdout = a.write.as_deref().is_some_and(|p| p.as_os_str() == "-");
    let say = |line: String| {
        if to_stdout {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let mut failed = 0;
    for r in reports {
        if a.stats {
            say(format!(
                "{}: {} packets{}{}",
                r.path.display(),
                r.stats.packets,
                if r.stats.lz4_blocks > 0 {
                    format!(
                        ", {} LZ4 blocks in {} complete frames",
                        r.stats.lz4_blocks, r.stats.lz4_frames
                    )
                } else {
                    String::new()
                },
                if r.stats.skipped_non_ethernet > 0 {
                    format!(
                        ", {} non-Ethernet records skipped",
                        r.stats.skipped_non_ethernet
                    )
                } else {
                    String::new()
                }
            ));
        }
        if r.stats.truncated_bytes > 0 {
            eprintln!(
                "{}: last frame incomplete: {} bytes after the last complete record skipped",
                r.path.display(),
                r.stats.truncated_bytes
            );
        }
        if let Some(e) = &r.error {
            eprintln!("linecap: error: {e}");
            failed += 1;
        }
    }
    if a.stats {
        say(format!(
            "files: {}  packets: {packets}  wire bytes: {bytes_wire}  captured bytes: {bytes_cap}",
            reports.len()
        ));
        if packets > 0 {
            say(format!(
                "first: {}  last: {}",
                utc_rfc3339(first),
                utc_rfc3339(last)
            ));
        }
        say(format!("loss recorded in ERF lctr: {lost} packets"));
        for (label, l) in labels.iter().zip(&lost_per_stream) {
            say(format!("  {label}: {l} packets lost (lctr)"));
        }
    }
    if let Some(o) = output {
        if failed > 0 && packets == 0 {
            eprintln!(
                "linecap: no output written: nothing could be read ({} left as it was)",
                o.fin.display()
            );
            drop(o);
        } else {
            let p = o.fin.clone();
            o.commit()?;
            eprintln!(
                "wrote {packets} packets to {} ({:?})",
                p.display(),
                a.format
            );
        }
    }
    Ok(i32::from(failed > 0))
}
