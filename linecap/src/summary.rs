//! The accounting printed when a capture ends.

use crate::capture::{CaptureReport, QueueReport};

/// How a (job, queue) line is named: `q0`, or `dns/q0` when the capture
/// has several jobs.
fn line_name(r: &CaptureReport, q: &QueueReport) -> String {
    if r.jobs.len() > 1 {
        format!("{}/q{}", q.job, q.queue)
    } else {
        format!("q{}", q.queue)
    }
}

/// Print the per-queue, per-stage accounting to stdout.
pub fn print(r: &CaptureReport) {
    let w = r
        .queues
        .iter()
        .map(|q| line_name(r, q).len())
        .max()
        .unwrap_or(0)
        .max(6);
    println!(
        "{:<w$} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10} {:>6} {:>12} {:>12}  source",
        "queue",
        "seen",
        "written",
        "drop:pol",
        "drop:src",
        "drop:ring",
        "drop:wrtr",
        "files",
        "erf_bytes",
        "file_bytes"
    );
    let mut t = [0u64; 9];
    for q in &r.queues {
        let row = [
            q.seen(),
            q.writer.packets,
            q.worker.filter_packets + q.worker.sample_packets + q.after_count,
            q.worker.source_unsupported
                + q.worker.source_nic
                + q.xdp_not_redirected()
                + q.iface_drops,
            q.worker.ring_full_packets,
            q.writer.drop_packets,
            q.writer.files_closed,
            q.writer.bytes_erf,
            q.writer.bytes_file,
        ];
        for (a, b) in t.iter_mut().zip(row) {
            *a += b;
        }
        println!(
            "{:<w$} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10} {:>6} {:>12} {:>12}  {}",
            line_name(r, q),
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            row[7],
            row[8],
            q.source
        );
    }
    println!(
        "{:<w$} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10} {:>6} {:>12} {:>12}",
        "total", t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8]
    );
    if t[7] > 0 && t[8] > 0 && t[8] != t[7] {
        println!(
            "compression: {:.2}x ({} ERF bytes -> {} bytes on disk)",
            t[7] as f64 / t[8] as f64,
            t[7],
            t[8]
        );
    }
    let (in_place, copied) = r.queues.iter().fold((0, 0), |a, q| {
        (a.0 + q.writer.direct_in_place, a.1 + q.writer.direct_copied)
    });
    if in_place + copied > 0 {
        println!(
            "direct I/O: {in_place} batches written from their ring slot, {copied} copied first \
             (placed at another phase than the file's, carrying a loss, or the index thread busy)"
        );
    }
    let ix: [u64; 5] = r.queues.iter().fold([0; 5], |a, q| {
        [
            a[0] + q.writer.index_written,
            a[1] + q.writer.index_bytes,
            a[2] + q.writer.index_errors,
            a[3] + q.writer.index_skipped + q.writer.index_over_budget,
            a[4] + q.writer.index_tmp_removed,
        ]
    });
    if ix.iter().sum::<u64>() > 0 {
        println!(
            "indexes: {} written ({} bytes{}), {} write errors, {} given up (behind or over the budget's room), {} stray .idx.tmp removed",
            ix[0],
            ix[1],
            if t[8] > 0 {
                format!(
                    ", {:.3} % of the file bytes",
                    100.0 * ix[1] as f64 / t[8] as f64
                )
            } else {
                String::new()
            },
            ix[2],
            ix[3],
            ix[4]
        );
    }
    let parse: [u64; 4] = r.queues.iter().fold([0; 4], |a, q| {
        [
            a[0] + q.worker.parsed_ip,
            a[1] + q.worker.parsed_non_ip,
            a[2] + q.worker.parsed_truncated,
            a[3] + q.worker.parsed_malformed,
        ]
    });
    if parse.iter().sum::<u64>() == 0 {
        println!("frames: not parsed (no flow table, flow sampling or anonymisation needed it)");
    } else {
        println!(
            "frames: {} IP, {} non-IP, {} with headers cut by the capture length, {} malformed (all kept)",
            parse[0], parse[1], parse[2], parse[3]
        );
    }
    let (filtered, sampled): (u64, u64) = r.queues.iter().fold((0, 0), |a, q| {
        (a.0 + q.worker.filter_packets, a.1 + q.worker.sample_packets)
    });
    if filtered + sampled > 0 {
        println!(
            "policies: {filtered} frames rejected by the filter, {sampled} left out by sampling (drop:pol)"
        );
    }
    let cut: u64 = r.queues.iter().map(|q| q.worker.frames_cut).sum();
    if cut > 0 {
        println!(
            "{cut} frames longer than an ERF record were kept cut to 65517 bytes (flag TRUNC)"
        );
    }
    let (ring_full, pending): (u64, u64) = r.queues.iter().fold((0, 0), |a, q| {
        (
            a.0 + q.worker.ring_full_packets,
            a.1 + q.worker.lctr_pending
                + (q.iface_drops + q.xdp_not_redirected()).saturating_sub(q.worker.lctr_outside)
                + q.writer.lctr_pending,
        )
    });
    if ring_full > 0 {
        println!(
            "ring full: {ring_full} frames dropped because the writer fell behind (drop:ring)"
        );
    }
    // issue 14: lctr carries every loss of the queue (nic, xdp, ring full,
    // writer), except what came after the queue's last record.
    if pending > 0 {
        println!(
            "lctr: {pending} frames lost after the last record of their queue are only in this report \
             (no later record's lctr carries them)"
        );
    }
    // Queue-level facts are the same in every job's lines: print them once.
    let first_job = |q: &&QueueReport| r.jobs.first().is_none_or(|j| j.0 == q.job);
    for q in &r.queues {
        if q.input_truncated_bytes > 0 && first_job(&q) {
            println!(
                "q{}: input ends with {} bytes that form no complete record (file cut short?)",
                q.queue, q.input_truncated_bytes
            );
        }
        for e in &q.errors {
            println!("{}: error: {e}", line_name(r, q));
        }
    }
    for q in r.queues.iter().filter(first_job) {
        if let Some(x) = q.xdp {
            println!(
                "q{}: XDP saw {}, passed {} to the stack (no socket yet/any more); socket dropped {} (kernel counters){}",
                q.queue,
                x.seen,
                x.not_redirected,
                q.worker.source_nic,
                if q.xdp_consistent() {
                    ""
                } else {
                    "  [XDP count and socket count disagree]"
                }
            );
            // issue 14: the device-bound program counts every frame it stamped in one of these.
            if x.hw_stamped + x.hw_missing > 0 {
                println!(
                    "q{}: RX hardware timestamps: {} frames had one, {} had none (stamped with bpf_ktime_get_ns())",
                    q.queue, x.hw_stamped, x.hw_missing
                );
            }
        }
        if q.iface_drops > 0 {
            println!(
                "q{}: the interface itself dropped {} frames before XDP",
                q.queue, q.iface_drops
            );
        }
        let w = &q.worker;
        if q.source.starts_with("dpdk:") && w.nic_port_rx_packets + w.source_nic > 0 {
            println!(
                "q{}: DPDK port: delivered {} (all queues), imissed {}, ierrors {}, rx_nombuf {}{}",
                q.queue,
                w.nic_port_rx_packets,
                w.nic_imissed,
                w.nic_ierrors,
                w.nic_rx_nombuf,
                if w.nic_iface_rx_packets + w.nic_iface_dropped > 0 {
                    format!(
                        "; kernel interface received {}, dropped {}",
                        w.nic_iface_rx_packets, w.nic_iface_dropped
                    )
                } else {
                    String::new()
                }
            );
        }
        if q.source.starts_with("dpdk:") && w.nic_socket_packets + w.nic_queue_dropped > 0 {
            println!(
                "q{}: DPDK queue: own drops {} (per-queue xstats); packet socket reached by {}, dropped {} (ring full)",
                q.queue, w.nic_queue_dropped, w.nic_socket_packets, w.nic_socket_dropped
            );
        }
    }
    let flows: Vec<_> = r.queues.iter().filter_map(|q| q.flows).collect();
    if !flows.is_empty() {
        let sum = |f: fn(&linecap_dataplane::flowtable::FlowCounters) -> u64| -> u64 {
            flows.iter().map(f).sum()
        };
        println!(
            "flows: {} created; ended: {} idle, {} active-timeout exports, {} TCP end, {} evicted (table full), {} at stop; {} packets not tracked (non-IP/cut/malformed)",
            sum(|c| c.created),
            sum(|c| c.expired_idle),
            sum(|c| c.expired_active),
            sum(|c| c.expired_end),
            sum(|c| c.evicted),
            sum(|c| c.expired_input_end),
            sum(|c| c.non_ip + c.truncated + c.malformed),
        );
    }
    if let Some((reports, dropped)) = &r.exports {
        for e in reports {
            println!(
                "export {}: {} records in {} messages/files, {} errors",
                e.name, e.records, e.units, e.errors
            );
        }
        let table_drops: u64 = flows.iter().map(|c| c.export_drops).sum();
        if dropped + table_drops > 0 {
            println!(
                "export: {} flow records dropped on full export queues",
                dropped + table_drops
            );
        }
    }
    if r.jobs.len() > 1 {
        for (name, out, info) in &r.jobs {
            let mine = r.queues.iter().filter(|q| &q.job == name);
            let (seen, written, policy): (u64, u64, u64) = mine.fold((0, 0, 0), |a, q| {
                (
                    a.0 + q.seen(),
                    a.1 + q.writer.packets,
                    a.2 + q.worker.filter_packets + q.worker.sample_packets,
                )
            });
            println!(
                "job {name}: {written} of {seen} frames written ({policy} left out by its filter/sampling) into {} [{}]",
                out.display(),
                policy_text(info)
            );
        }
        println!("(the total line counts each frame once per job)");
    }
    if r.balanced() {
        println!("accounting: exact on every queue (seen = written + dropped)");
    } else {
        println!("accounting: MISMATCH (this is a bug, please report it):");
        for q in r.queues.iter().filter(|q| !q.balanced()) {
            println!(
                "  {}: worker {:?} writer {:?}",
                line_name(r, q),
                q.worker,
                q.writer
            );
        }
    }
    if r.stopped {
        println!(
            "capture stopped by signal or --duration; every batch received before it was flushed"
        );
    }
    let outs: Vec<String> = r.jobs.iter().map(|j| j.1.display().to_string()).collect();
    println!(
        "output: {} (ring memory: {})",
        outs.join(", "),
        ring_pages_text(&r.pages)
    );
}

/// What the rings' memory is made of, as the kernel gave it.
fn ring_pages_text(p: &linecap_dataplane::ring::RingPages) -> String {
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    if p.all_reserved() {
        return "reserved hugepages".to_string();
    }
    let rest = p.bytes.saturating_sub(p.reserved + p.transparent);
    let mut parts = Vec::new();
    if p.reserved > 0 {
        parts.push(format!("reserved hugepages for {:.1}", mib(p.reserved)));
    }
    if p.transparent > 0 {
        parts.push(format!(
            "transparent hugepages for {:.1}",
            mib(p.transparent)
        ));
    }
    if rest > 0 {
        parts.push(format!("4 KiB pages for {:.1}", mib(rest)));
    }
    let why = if p.transparent > 0 || rest == 0 {
        ""
    } else if p.advised {
        " (transparent hugepages asked for, none given: see \
         /sys/kernel/mm/transparent_hugepage/enabled, or reserve vm.nr_hugepages)"
    } else {
        " (--hugepages never)"
    };
    format!("{} of {:.1} MiB{why}", parts.join(", "), mib(p.bytes))
}

/// The job's policies in a few words, from its manifest description.
fn policy_text(info: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    if let Some(f) = info["filter"].as_str() {
        parts.push(format!("filter {f:?}"));
    }
    if let Some(s) = info["sampling"].as_str() {
        parts.push(format!("sample {s}"));
    }
    if let Some(n) = info["snaplen"].as_u64() {
        parts.push(format!("snaplen {n}"));
    }
    if let Some(m) = info["anonymized"].as_str() {
        parts.push(format!("anonymized {m}"));
    }
    if info["mac_pseudonyms"].as_bool() == Some(true) {
        parts.push("MAC pseudonyms".into());
    }
    if parts.is_empty() {
        "everything".into()
    } else {
        parts.join(", ")
    }
}

/// 0 when everything balanced and nothing failed; 1 on source or writer
/// errors or drops; 70 (EX_SOFTWARE) when the accounting does not balance.
pub fn exit_code(r: &CaptureReport) -> i32 {
    if !r.balanced() {
        return 70;
    }
    let errors = r
        .queues
        .iter()
        .any(|q| !q.errors.is_empty() || q.writer.drop_packets > 0);
    i32::from(errors)
}

/// The accounting as JSON (for scripts and tests): per queue, every counter.
pub fn to_json(r: &CaptureReport) -> serde_json::Value {
    let queues: Vec<_> = r.queues.iter().map(queue_json).collect();
    let exports = r.exports.as_ref().map(|(reports, dropped)| {
        serde_json::json!({
            "dropped": dropped,
            "exporters": reports.iter().map(|e| serde_json::json!({
                "name": e.name, "records": e.records, "units": e.units, "errors": e.errors,
            })).collect::<Vec<_>>(),
        })
    });
    let jobs: Vec<_> = r
        .jobs
        .iter()
        .map(|(name, out, info)| {
            let mine: Vec<_> = r.queues.iter().filter(|q| &q.job == name).collect();
            job_totals(name, out, info, &mine)
        })
        .collect();
    serde_json::json!({
        "jobs": jobs,
        "exports": exports,
        "balanced": r.balanced(),
        "stopped": r.stopped,
        "hugepages": r.pages.all_reserved(),
        "ring_memory": {
            "bytes": r.pages.bytes, "reserved_huge_bytes": r.pages.reserved,
            "transparent_huge_bytes": r.pages.transparent,
            "transparent_advised": r.pages.advised,
        },
        // issue 14: which XDP program stamped the frames, per interface.
        "xdp_programs": r.xdp_programs.iter().map(|p| serde_json::json!({
            "ifname": p.ifname, "driver": p.driver,
            "mode": if p.native { "native" } else { "generic" },
            "program": if p.device_bound {
                "device-bound"
            } else if p.metadata_refused.is_some() {
                "no-metadata"
            } else {
                "ktime"
            },
            "prog_id": p.prog_id,
            "device_bound_refused": p.device_bound_refused,
            "metadata_refused": p.metadata_refused,
            "native_refused": p.native_refused,
        })).collect::<Vec<_>>(),
        "queues": queues,
    })
}

/// One job's totals over its queues, as in the report's `jobs[]`.
pub fn job_totals(
    name: &str,
    out: &std::path::Path,
    info: &serde_json::Value,
    mine: &[&crate::capture::QueueReport],
) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "out": out,
        "policies": info,
        "seen": mine.iter().map(|q| q.seen()).sum::<u64>(),
        "written": mine.iter().map(|q| q.writer.packets).sum::<u64>(),
        "dropped": mine.iter().map(|q| q.dropped()).sum::<u64>(),
        "balanced": mine.iter().all(|q| q.balanced()),
    })
}

/// One (job, queue) line of the report as JSON: every counter.
pub fn queue_json(q: &crate::capture::QueueReport) -> serde_json::Value {
    let w = &q.worker;
    let f = &q.writer;
    serde_json::json!({
        "job": q.job,
        "queue": q.queue,
        "source": q.source,
        "seen": q.seen(),
        "written": f.packets,
        "dropped": {
            "filter": w.filter_packets,
            "sample": w.sample_packets,
            "source": w.source_unsupported,
            "nic": w.source_nic + q.iface_drops,
            "xdp": q.xdp_not_redirected(),
            "ring_full": w.ring_full_packets,
            "writer": f.drop_packets,
            "after_count": q.after_count,
        },
        "balanced": q.balanced(),
        "worker": {
            "rx_packets": w.rx_packets, "rx_bytes": w.rx_bytes,
            "rx_captured_bytes": w.rx_captured_bytes, "ring_packets": w.ring_packets,
            "batches": w.batches, "ring_full_bytes": w.ring_full_bytes,
            "frames_cut": w.frames_cut,
            // issue 14: loss after the queue's last record, which no lctr
            // carries: the worker's own, and what the supervisor counted
            // (XDP stage, interface) beyond what was folded into lctr.
            "lctr_pending": w.lctr_pending
                + (q.iface_drops + q.xdp_not_redirected()).saturating_sub(w.lctr_outside)
                + f.lctr_pending,
            "lctr_outside": w.lctr_outside, "backpressure_waits": w.backpressure_waits, "parsed_ip": w.parsed_ip,
            "parsed_non_ip": w.parsed_non_ip, "parsed_truncated": w.parsed_truncated,
            "parsed_malformed": w.parsed_malformed,
        },
        "writer": {
            "batches": f.batches, "packets": f.packets, "bytes_wire": f.bytes_wire,
            "bytes_erf": f.bytes_erf, "bytes_file": f.bytes_file,
            "files_closed": f.files_closed, "files_deleted": f.files_deleted,
            "drop_batches": f.drop_batches,
            "lctr_carried": f.lctr_carried, "lctr_pending": f.lctr_pending,
            "direct_batches": { "in_place": f.direct_in_place, "copied": f.direct_copied },
            "index": {
                "files": f.index_written, "bytes": f.index_bytes, "errors": f.index_errors,
                "behind": f.index_skipped, "over_budget": f.index_over_budget,
                "stray_tmp_removed": f.index_tmp_removed,
                "manifest_errors": f.manifest_errors,
            },
        },
        "input_truncated_bytes": q.input_truncated_bytes,
        "xdp": q.xdp.map(|x| serde_json::json!({
            "seen": x.seen, "not_redirected": x.not_redirected, "no_meta": x.no_meta,
            "hw_stamped": x.hw_stamped, "hw_missing": x.hw_missing,
        })),
        "xdp_consistent": q.xdp_consistent(),
        "nic": serde_json::json!({
            "imissed": w.nic_imissed, "ierrors": w.nic_ierrors, "rx_nombuf": w.nic_rx_nombuf,
            "iface_dropped": w.nic_iface_dropped, "iface_rx_packets": w.nic_iface_rx_packets,
            "port_rx_packets": w.nic_port_rx_packets,
            "queue_dropped": w.nic_queue_dropped,
            "socket_dropped": w.nic_socket_dropped, "socket_packets": w.nic_socket_packets,
            // issue 14: the two parts of dropped.nic.
            "socket_or_port": w.source_nic, "iface": q.iface_drops,
        }),
        "flows": q.flows.map(|c| serde_json::json!({
            "packets": c.packets, "created": c.created, "active": c.active,
            "expired_idle": c.expired_idle, "expired_active": c.expired_active,
            "expired_end": c.expired_end, "evicted": c.evicted,
            "expired_input_end": c.expired_input_end, "not_tracked": c.non_ip + c.truncated + c.malformed,
            "export_drops": c.export_drops, "relocated": c.relocated,
        })),
        "errors": q.errors,
    })
}

#[cfg(test)]
mod tests {
    use super::ring_pages_text;
    use linecap_dataplane::ring::RingPages;

    #[test]
    fn the_ring_memory_line_says_what_the_kernel_gave() {
        let mib = 1u64 << 20;
        let p = |reserved, transparent, advised| RingPages {
            bytes: 64 * mib,
            reserved,
            transparent,
            advised,
        };
        assert_eq!(
            ring_pages_text(&p(64 * mib, 0, false)),
            "reserved hugepages"
        );
        assert_eq!(
            ring_pages_text(&p(0, 48 * mib, true)),
            "transparent hugepages for 48.0, 4 KiB pages for 16.0 of 64.0 MiB"
        );
        assert_eq!(
            ring_pages_text(&p(0, 64 * mib, true)),
            "transparent hugepages for 64.0 of 64.0 MiB"
        );
        // Too few reserved for every ring: the rest said apart.
        assert_eq!(
            ring_pages_text(&p(16 * mib, 40 * mib, true)),
            "reserved hugepages for 16.0, transparent hugepages for 40.0, 4 KiB pages for 8.0 of \
             64.0 MiB"
        );
        assert!(ring_pages_text(&p(0, 0, true)).ends_with("or reserve vm.nr_hugepages)"));
        assert_eq!(
            ring_pages_text(&p(0, 0, false)),
            "4 KiB pages for 64.0 of 64.0 MiB (--hugepages never)"
        );
    }
}
