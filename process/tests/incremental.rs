//! `linecap process` semantics on capture series made from the shared traces:
//! incremental runs equal one run, a crash at any write step and a re-run
//! equal a clean run, threads do not change the result, and the `flows` and
//! `dns` tables equal outside truth (the tshark-made reference flow tables,
//! tshark's DNS decode).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use linecap_process::run::{Options, run};
use linecap_process::{Cell, Row};

fn pick(names: &[&str]) -> Vec<PathBuf> {
    names.iter().map(|n| shared("traces").join(n)).collect()
}

/// Traces with DNS, TCP, UDP, ICMP, IPv6 and VLANs, several hours apart.
fn mixed() -> Vec<PathBuf> {
    pick(&[
        "zeek__wikipedia.pcap",
        "zeek__http_bro.org.pcap",
        "zeek__icmp_5-pings.pcap",
        "zeek__ftp_ipv6.pcap",
        "zeek__ipv6-fragmented-dns.pcap",
        "libtrace__vlan.pcap",
    ])
}

fn clean_run(
    all: &Path,
    threads: usize,
    s: &linecap_process::Settings,
) -> (tempfile::TempDir, Tables) {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in");
    copy_files(all, &input, |_| true);
    process(
        &[&input],
        &d.path().join("state"),
        &d.path().join("out"),
        threads,
        s,
    );
    let t = tables(&d.path().join("out"), s);
    (d, t)
}

#[test]
fn two_runs_with_files_arriving_between_equal_one_run_and_threads_do_not_matter() {
    let s = short_timeouts();
    let src = tempfile::tempdir().unwrap();
    let frames = capture(&mixed(), src.path(), 3, 7);
    assert!(frames > 300);
    let (_d, one) = clean_run(src.path(), 1, &s);
    let flows = &one.written[0].1;
    assert!(
        flows.len() > 20,
        "short timeouts end flows inside the traces"
    );
    assert!(
        flows
            .iter()
            .any(|r| r.cells[16] == Cell::Str("idle".into()))
    );
    assert!(!one.written[1].1.is_empty(), "hours ended");
    assert!(!one.written[2].1.is_empty(), "DNS responses");
    assert_eq!(one.summary["records"], frames);

    // Files arrive in three steps; a run after each.
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in");
    let (state, out) = (d.path().join("state"), d.path().join("out"));
    copy_files(src.path(), &input, |seq| seq < 3);
    let r1 = process(&[&input], &state, &out, 2, &s);
    assert!(r1.files > 0);
    copy_files(src.path(), &input, |seq| seq < 6);
    let r2 = process(&[&input], &state, &out, 2, &s);
    assert_eq!(r2.already_done, r1.files, "old files are not read again");
    copy_files(src.path(), &input, |_| true);
    let r3 = process(&[&input], &state, &out, 2, &s);
    assert_eq!(r1.records + r2.records + r3.records, frames);
    let again = process(&[&input], &state, &out, 2, &s);
    assert_eq!(
        (again.files, again.records),
        (0, 0),
        "nothing new, nothing done"
    );
    assert_eq!(tables(&out, &s), one, "three runs equal one run");

    let (_d4, four) = clean_run(src.path(), 4, &s);
    assert_eq!(four, one, "4 threads equal 1 thread");
}

#[test]
fn a_crash_at_any_write_step_then_a_rerun_equals_a_clean_run() {
    let s = short_timeouts();
    let src = tempfile::tempdir().unwrap();
    capture(
        &pick(&["zeek__wikipedia.pcap", "zeek__icmp_5-pings.pcap"]),
        src.path(),
        2,
        20,
    );
    let (_d, clean) = clean_run(src.path(), 1, &s);
    let mut crashed = 0;
    for step in 1.. {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("in");
        copy_files(src.path(), &input, |_| true);
        let (state, out) = (d.path().join("state"), d.path().join("out"));
        // Half the files first, so the crash also hits a run that resumes.
        let r = run(&Options {
            inputs: vec![input.clone()],
            state: state.clone(),
            out: out.clone(),
            processors: processors(&s),
            threads: 1,
            crash_at_step: Some(step),
        });
        if r.is_ok() {
            break;
        }
        crashed += 1;
        process(&[&input], &state, &out, 1, &s);
        assert_eq!(tables(&out, &s), clean, "crash at write step {step}");
    }
    assert!(crashed > 10, "only {crashed} write steps");
}

#[test]
fn a_changed_series_or_processor_list_is_refused_with_the_file_named() {
    let s = short_timeouts();
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in");
    capture(&pick(&["zeek__wikipedia.pcap"]), &input, 1, 50);
    let (state, out) = (d.path().join("state"), d.path().join("out"));
    process(&[&input], &state, &out, 1, &s);
    let r = run(&Options {
        inputs: vec![input.clone()],
        state: state.clone(),
        out: out.clone(),
        processors: processors(&s).into_iter().take(1).collect(),
        threads: 1,
        crash_at_step: None,
    });
    let e = match r {
        Err(e) => e.to_string(),
        Ok(r) => r.errors.join(";"),
    };
    assert!(e.contains("--processors") && e.contains("state"), "{e}");
    // Rewrite the last manifest: the series changed under the state.
    let q = input.join("q00");
    let mut manifests: Vec<_> = std::fs::read_dir(&q)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".json"))
        .collect();
    manifests.sort();
    let last = manifests.last().unwrap();
    let text = std::fs::read_to_string(last)
        .unwrap()
        .replace("\"lost_packets\": 0", "\"lost_packets\": 1");
    std::fs::write(last, text).unwrap();
    let r = run(&Options {
        inputs: vec![input],
        state,
        out,
        processors: processors(&s),
        threads: 1,
        crash_at_step: None,
    })
    .unwrap();
    assert_eq!(r.errors.len(), 1);
    assert!(r.errors[0].contains("manifest changed"), "{:?}", r.errors);
}

fn s(c: &Cell) -> String {
    match c {
        Cell::I64(v) => v.to_string(),
        Cell::Str(s) => s.clone(),
        Cell::Null => String::new(),
    }
}

fn ts(c: &Cell) -> String {
    match c {
        Cell::I64(v) => format!("{}.{:09}", v / 1_000_000_000, v % 1_000_000_000),
        _ => String::new(),
    }
}

/// A flows row in the reference layout.
fn tsv(r: &Row) -> String {
    let c = &r.cells;
    [
        s(&c[3]),
        s(&c[4]),
        s(&c[5]),
        s(&c[6]),
        s(&c[7]),
        s(&c[8]),
        s(&c[9]),
        s(&c[10]),
        s(&c[11]),
        s(&c[12]),
        s(&c[13]),
        s(&c[14]),
        ts(&c[0]),
        ts(&c[1]),
    ]
    .join("\t")
}

#[test]
fn flows_equal_the_reference_flow_tables_of_every_trace() {
    let st = no_timeouts();
    let mut failures = Vec::new();
    let all = traces();
    assert!(all.len() >= 40);
    for t in &all {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("in");
        if capture(std::slice::from_ref(t), &input, 3, 5) == 0 {
            // No Ethernet frame (ERF metadata only): no series, no flows.
            let name = t.file_name().unwrap().to_string_lossy().into_owned();
            let r = std::fs::read_to_string(
                shared("reference/flows").join(format!("{name}.flows.tsv")),
            )
            .unwrap();
            if r.lines().any(|l| !l.starts_with('#')) {
                failures.push(format!(
                    "{name}: no frames read but the reference has flows"
                ));
            }
            continue;
        }
        process(
            &[&input],
            &d.path().join("state"),
            &d.path().join("out"),
            2,
            &st,
        );
        let tb = tables(&d.path().join("out"), &st);
        assert!(
            tb.written[0].1.is_empty(),
            "no timeouts: every flow is open"
        );
        let mut got: Vec<String> = tb.open[0].1.iter().map(tsv).collect();
        got.sort();
        let name = t.file_name().unwrap().to_string_lossy().into_owned();
        let reference =
            std::fs::read_to_string(shared("reference/flows").join(format!("{name}.flows.tsv")))
                .unwrap();
        let erf = name.ends_with(".erf");
        let mut want: Vec<String> = reference
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let mut f: Vec<String> = l.split('\t').map(str::to_owned).collect();
                if erf {
                    // The reference counts ERF's FCS in the wire length; linecap's
                    // bytes are without FCS.
                    for (p, b) in [(6, 7), (8, 9)] {
                        let n: u64 = f[p].parse().unwrap();
                        let v: u64 = f[b].parse().unwrap();
                        f[b] = (v - 4 * n).to_string();
                    }
                }
                f.join("\t")
            })
            .collect();
        want.sort();
        let non_ip: u64 = reference
            .lines()
            .find_map(|l| l.strip_prefix("#non_ip_frames\t"))
            .unwrap()
            .parse()
            .unwrap();
        if got != want {
            failures.push(format!(
                "{name}: flows differ\n got {got:#?}\nwant {want:#?}"
            ));
        }
        if tb.summary["processors"]["flows"]["non_ip_records"] != non_ip {
            failures.push(format!(
                "{name}: non-IP {} want {non_ip}",
                tb.summary["processors"]["flows"]["non_ip_records"]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// tshark's DNS responses from port 53: time, names, A, AAAA, CNAME.
fn tshark_dns(trace: &Path) -> Vec<String> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(trace)
        .args([
            "-Y",
            "dns.flags.response == 1 && udp.srcport == 53",
            "-T",
            "fields",
        ])
        .args([
            "-e",
            "frame.time_epoch",
            "-e",
            "dns.qry.name",
            "-e",
            "dns.a",
        ])
        .args(["-e", "dns.aaaa", "-e", "dns.cname"])
        .output()
        .expect("tshark is needed (run .ci/setup)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

#[test]
fn the_dns_table_equals_what_tshark_decodes() {
    let st = no_timeouts();
    for name in ["zeek__wikipedia.pcap", "ndpi__http_ipv6.pcap"] {
        let t = shared("traces").join(name);
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("in");
        capture(std::slice::from_ref(&t), &input, 1, 10);
        process(
            &[&input],
            &d.path().join("state"),
            &d.path().join("out"),
            1,
            &st,
        );
        let tb = tables(&d.path().join("out"), &st);
        let mut got: Vec<String> = tb.written[2]
            .1
            .iter()
            .map(|r| {
                let c = &r.cells;
                [ts(&c[0]), s(&c[4]), s(&c[5]), s(&c[6]), s(&c[7])].join("\t")
            })
            .collect();
        got.sort();
        let want = tshark_dns(&t);
        assert_eq!(got, want, "{name}");
        if name.starts_with("zeek") {
            assert!(want.len() >= 10, "the trace has DNS answers");
            // The correlation: HTTP flows to the addresses resolved carry the name.
            let flows = &tb.open[0].1;
            let named = flows
                .iter()
                .filter(|r| r.cells[8] == Cell::I64(80) && r.cells[17] != Cell::Null)
                .count();
            assert!(named > 0, "no flow got a domain");
            assert!(flows.iter().any(|r| {
                r.cells[7] == Cell::Str("208.80.152.3".into())
                    && r.cells[17] == Cell::Str("upload.wikimedia.org".into())
            }));
        }
    }
}
