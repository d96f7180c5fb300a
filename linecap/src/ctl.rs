//! `linecap ctl`: the control API's client (status, jobs, add, stop, query).
//!
//! A small HTTP/1.1 client written here rather than a crate: the API's
//! default listener is a unix socket, which the blocking HTTP clients in
//! the tree (none) and on crates.io (ureq) do not speak; one request per
//! connection with `Connection: close` is all it needs.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::apiconfig::ApiListen;

/// `linecap ctl`.
#[derive(Args, Debug)]
#[command(after_help = "\
EXAMPLES:
  linecap ctl status
  linecap ctl jobs
  linecap ctl job add dns /data/dns --filter 'udp port 53'
  linecap ctl job rm dns
  linecap ctl query 'udp port 53' --after '15m ago' -w dns.pcap
  linecap ctl query --job dns -F pcapng -w - 'host 10.1.2.3' | tshark -r -
  linecap ctl storage-test
  linecap ctl --api 127.0.0.1:9465 --api-token /etc/linecap/api.token status

The same with curl:
  curl --unix-socket /run/linecap/api.sock http://linecap/v1/status
  curl -H \"Authorization: Bearer $(cat /etc/linecap/api.token)\" http://127.0.0.1:9465/v1/jobs
  curl -X POST -H 'Content-Type: application/json' --unix-socket /run/linecap/api.sock \\
       -d '{\"name\":\"dns\",\"directory\":\"dns\",\"filter\":\"udp port 53\"}' http://linecap/v1/jobs
  curl --unix-socket /run/linecap/api.sock -G --data-urlencode 'expr=udp port 53' \\
       --data-urlencode 'after=15m ago' -o dns.pcap http://linecap/v1/query
  curl -X POST --unix-socket /run/linecap/api.sock http://linecap/v1/storage/test")]
pub struct CtlArgs {
    /// Where the capture's API listens (as its --api).
    #[arg(
        long,
        value_name = "unix:PATH|ADDR:PORT",
        default_value = "unix:/run/linecap/api.sock"
    )]
    pub api: ApiListen,
    /// Bearer token file (as the capture's --api-token).
    #[arg(long, value_name = "FILE")]
    pub api_token: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `linecap ctl` commands.
#[derive(Subcommand, Debug)]
// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum CtlCommand {
    /// Print the capture's status (JSON).
    Status,
    /// List the jobs with their counters.
    Jobs,
    /// Add or stop a job.
    #[command(subcommand)]
    Job(JobCommand),
    /// Find packets in the capture's files, fresh ones included (as `linecap query` over the
    /// jobs' directories; the answer streams from GET /v1/query).
    Query {
        /// tcpdump filter expression (several words are joined; none: every packet).
        #[arg(value_name = "EXPR")]
        expr: Vec<String>,
        /// Write the packets here (`-` = standard output).
        #[arg(short = 'w', long, value_name = "OUT")]
        write: PathBuf,
        /// Only packets at or after this time (as `linecap query --after`; relative times
        /// count back from the probe's clock).
        #[arg(long, value_name = "T")]
        after: Option<String>,
        /// Only packets before this time.
        #[arg(long, value_name = "T")]
        before: Option<String>,
        /// Output format: pcap (nanosecond), pcapng (one interface per queue) or erf.
        #[arg(short = 'F', long, default_value = "pcap")]
        format: linecap_reader::output::OutFormat,
        /// Only this job's directories (default: every job's).
        #[arg(long, value_name = "NAME")]
        job: Option<String>,
    },
    /// Test the capture's shipping target (put, read back, delete a probe object).
    StorageTest,
}

/// `linecap ctl job`.
#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Start a capture job on every queue of the running capture.
    Add {
        /// Job name.
        name: String,
        /// Output directory (relative to the capture's --api-job-root, or inside it).
        directory: String,
        /// tcpdump filter expression.
        #[arg(long)]
        filter: Option<String>,
        /// Sampling policy (as --sample).
        #[arg(long)]
        sample: Option<String>,
        /// Bytes kept per frame.
        #[arg(long)]
        snaplen: Option<u32>,
        /// Crypto-PAn key file on the probe.
        #[arg(long)]
        anonymize_key: Option<PathBuf>,
        /// src, dst or both.
        #[arg(long)]
        anonymize: Option<String>,
        /// MAC pseudonym key file on the probe.
        #[arg(long)]
        mac_key: Option<PathBuf>,
        /// New file at this many bytes.
        #[arg(long)]
        rotate_bytes: Option<u64>,
        /// Keep at most this many files per queue.
        #[arg(long)]
        rotate_files: Option<u32>,
        /// Bytes the job's files may take.
        #[arg(long)]
        budget_bytes: Option<u64>,
    },
    /// Stop a job: its last file is completed; its counters stay in the status.
    Rm {
        /// Job name.
        name: String,
    },
}

/// An answer from the API.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body (JSON).
    pub body: Vec<u8>,
}

/// A connection to the API.
trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

fn connect(api: &ApiListen, read_timeout: Duration) -> anyhow::Result<Box<dyn Conn>> {
    Ok(match api {
        ApiListen::Unix(p) => {
            let s = std::os::unix::net::UnixStream::connect(p).with_context(|| {
                format!(
                    "connecting to unix:{} (is a capture running with --api?)",
                    p.display()
                )
            })?;
            s.set_read_timeout(Some(read_timeout))?;
            Box::new(s)
        }
        ApiListen::Tcp(a) => {
            let s = std::net::TcpStream::connect_timeout(a, Duration::from_secs(5))
                .with_context(|| format!("connecting to {a} (is a capture running with --api?)"))?;
            s.set_read_timeout(Some(read_timeout))?;
            Box::new(s)
        }
    })
}

/// How long a query answer may pause between two reads (a query scanning
/// much data for few matches sends its chunks slowly).
const QUERY_READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest header line or trailer read.
const LINE_BYTES_MAX: u64 = 16 * 1024;

/// What a streamed answer ended with.
pub struct Streamed {
    /// HTTP status.
    pub status: u16,
    /// The body when the status is not 200 (a JSON error); empty otherwise.
    pub error_body: Vec<u8>,
    /// Body bytes written to the output (status 200).
    pub bytes: u64,
    /// Trailers of a chunked answer (names in lower case).
    pub trailers: Vec<(String, String)>,
}

fn read_line<R: BufRead>(r: &mut R) -> anyhow::Result<String> {
    let mut line = Vec::new();
    Read::take(&mut *r, LINE_BYTES_MAX).read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        bail!("the API's answer ended in the middle of a line");
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

/// GET `path` and stream a 200 answer's body into `out` as it arrives
/// (chunked, by length, or to the end); any other status's body is kept
/// in `error_body`. A chunked answer without its last chunk is an error
/// (the server cut it short).
pub fn request_stream(
    api: &ApiListen,
    token: Option<&str>,
    path: &str,
    out: &mut dyn Write,
) -> anyhow::Result<Streamed> {
    let mut head =
        format!("GET {path} HTTP/1.1\r\nHost: linecap\r\nConnection: close\r\nTE: trailers\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    let mut conn = connect(api, QUERY_READ_TIMEOUT)?;
    conn.write_all(head.as_bytes())?;
    let mut r = std::io::BufReader::with_capacity(1 << 16, conn);
    let status_line = read_line(&mut r)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("the API's answer has no status line: {status_line:?}"))?;
    let (mut chunked, mut len) = (false, None);
    loop {
        let l = read_line(&mut r)?;
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                len = v.parse::<u64>().ok();
            }
        }
    }
    let mut error_body = Vec::new();
    let sink: &mut dyn Write = if status == 200 { out } else { &mut error_body };
    let mut bytes = 0u64;
    let mut trailers = Vec::new();
    if chunked {
        loop {
            let l = read_line(&mut r)?;
            let size = u64::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16)
                .with_context(|| format!("the API's answer has a bad chunk size {l:?}"))?;
            if size == 0 {
                loop {
                    let t = read_line(&mut r)?;
                    if t.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = t.split_once(':') {
                        trailers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
                break;
            }
            let n = std::io::copy(&mut (&mut r).take(size), sink)?;
            if n != size {
                bail!("the API's answer was cut short after {} bytes", bytes + n);
            }
            bytes += n;
            if !read_line(&mut r)?.is_empty() {
                bail!("the API's answer has a chunk without its end");
            }
        }
    } else if let Some(len) = len {
        bytes = std::io::copy(&mut (&mut r).take(len), sink)?;
        if bytes != len {
            bail!("the API's answer was cut short after {bytes} of {len} bytes");
        }
    } else {
        bytes = std::io::copy(&mut r, sink)?;
    }
    sink.flush()?;
    Ok(Streamed {
        status,
        error_body,
        bytes,
        trailers,
    })
}

/// `/v1/query?...` for these arguments.
pub fn query_path(
    expr: &str,
    after: Option<&str>,
    before: Option<&str>,
    format: linecap_reader::output::OutFormat,
    job: Option<&str>,
) -> String {
    use linecap_reader::output::OutFormat;
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("expr", expr);
    if let Some(a) = after {
        q.append_pair("after", a);
    }
    if let Some(b) = before {
        q.append_pair("before", b);
    }
    q.append_pair(
        "format",
        match format {
            OutFormat::Pcap => "pcap",
            OutFormat::PcapNg => "pcapng",
            OutFormat::Erf => "erf",
        },
    );
    if let Some(j) = job {
        q.append_pair("job", j);
    }
    format!("/v1/query?{}", q.finish())
}

/// Print an error answer as `ctl` does.
fn print_error(method: &str, path: &str, status: u16, body: &[u8]) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let msg = v["error"]["message"].as_str().unwrap_or("(no message)");
    match v["error"]["field"].as_str() {
        Some(f) => eprintln!("linecap ctl: {method} {path}: {status} (field {f}): {msg}"),
        None => eprintln!("linecap ctl: {method} {path}: {status}: {msg}"),
    }
}

/// `linecap ctl query`: stream the answer into OUT; exit 1 when the
/// capture could not read a file (as `linecap query`) or refused.
fn run_query(
    api: &ApiListen,
    token: Option<&str>,
    path: &str,
    write: &std::path::Path,
) -> anyhow::Result<i32> {
    let mut out: Box<dyn Write> = if write.as_os_str() == "-" {
        Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::io::stdout().lock(),
        ))
    } else {
        Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(write)
                .with_context(|| format!("creating {}", write.display()))?,
        ))
    };
    let a = request_stream(api, token, path, &mut out)?;
    drop(out);
    if a.status != 200 {
        print_error("GET", path, a.status, &a.error_body);
        if write.as_os_str() != "-" {
            let _ = std::fs::remove_file(write);
        }
        return Ok(1);
    }
    let trailer = |k: &str| {
        a.trailers
            .iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.parse::<u64>().ok())
    };
    let errors = trailer("linecap-errors").unwrap_or(0);
    if let Some(n) = trailer("linecap-matched") {
        eprintln!("linecap ctl: {n} packets ({} bytes)", a.bytes);
    }
    if errors > 0 {
        eprintln!(
            "linecap ctl: the capture could not read {errors} file(s) for this answer (its log names them)"
        );
        return Ok(1);
    }
    Ok(0)
}

/// Send one request and read the whole answer.
pub fn request(
    api: &ApiListen,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> anyhow::Result<Answer> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: linecap\r\nConnection: close\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    let mut raw = Vec::new();
    // A storage test may wait on a slow store (its own timeouts are shorter).
    let mut s = connect(api, Duration::from_secs(60))?;
    s.write_all(head.as_bytes())?;
    s.write_all(body.unwrap_or_default())?;
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// Split an HTTP/1.1 response into status and body (Content-Length or
/// chunked bodies, or everything to the end).
pub fn parse_response(raw: &[u8]) -> anyhow::Result<Answer> {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("the API's answer has no header end ({} bytes)", raw.len());
    };
    let head = std::str::from_utf8(&raw[..split]).context("the API's answer header is not text")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("the API's answer has no status line")?;
    let mut chunked = false;
    let mut len = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                len = v.parse::<usize>().ok();
            }
        }
    }
    let rest = &raw[split + 4..];
    let body = if chunked {
        let mut out = Vec::new();
        let mut r = rest;
        while let Some(eol) = r.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(
                std::str::from_utf8(&r[..eol])
                    .unwrap_or("0")
                    .split(';')
                    .next()
                    .unwrap_or("0")
                    .trim(),
                16,
            )
            .unwrap_or(0);
            r = &r[eol + 2..];
            if size == 0 || size > r.len() {
                break;
            }
            out.extend_from_slice(&r[..size]);
            r = &r[(size + 2).min(r.len())..];
        }
        out
    } else {
        rest[..len.unwrap_or(rest.len()).min(rest.len())].to_vec()
    };
    Ok(Answer { status, body })
}

/// `linecap ctl`.
pub fn run(a: CtlArgs) -> anyhow::Result<i32> {
    let token = a
        .api_token
        .as_deref()
        .map(crate::apiconfig::load_token)
        .transpose()?;
    let token = token.as_deref();
    if let CtlCommand::Query {
        expr,
        write,
        after,
        before,
        format,
        job,
    } = &a.command
    {
        let path = query_path(
            &expr.join(" "),
            after.as_deref(),
            before.as_deref(),
            *format,
            job.as_deref(),
        );
        return run_query(&a.api, token, &path, write);
    }
    let (method, path, body) = match &a.command {
        CtlCommand::Query { .. } => unreachable!("answered above"),
        CtlCommand::StorageTest => ("POST", "/v1/storage/test".to_string(), None),
        CtlCommand::Status => ("GET", "/v1/status".to_string(), None),
        CtlCommand::Jobs => ("GET", "/v1/jobs".to_string(), None),
        CtlCommand::Job(JobCommand::Rm { name }) => ("DELETE", format!("/v1/jobs/{name}"), None),
        CtlCommand::Job(JobCommand::Add {
            name,
            directory,
            filter,
            sample,
            snaplen,
            anonymize_key,
            anonymize,
            mac_key,
            rotate_bytes,
            rotate_files,
            budget_bytes,
        }) => {
            let mut req = json!({"name": name, "directory": directory});
            let mut set = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    req[k] = v;
                }
            };
            set("filter", filter.clone().map(Value::from));
            set("sample", sample.clone().map(Value::from));
            set("snaplen", snaplen.map(Value::from));
            set(
                "anonymize_key",
                anonymize_key
                    .as_ref()
                    .map(|p| p.display().to_string().into()),
            );
            set("anonymize", anonymize.clone().map(Value::from));
            set(
                "mac_key",
                mac_key.as_ref().map(|p| p.display().to_string().into()),
            );
            set("rotate_bytes", rotate_bytes.map(Value::from));
            set("rotate_files", rotate_files.map(Value::from));
            set("budget_bytes", budget_bytes.map(Value::from));
            (
                "POST",
                "/v1/jobs".to_string(),
                Some(serde_json::to_vec(&req)?),
            )
        }
    };
    let ans = request(&a.api, token, method, &path, body.as_deref())?;
    let v: Value = serde_json::from_slice(&ans.body).unwrap_or(Value::Null);
    if !(200..300).contains(&ans.status) {
        print_error(method, &path, ans.status, &ans.body);
        // The storage test's failure carries the steps: show them too.
        if v.get("steps").is_some() {
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        return Ok(1);
    }
    match &a.command {
        CtlCommand::Jobs => {
            println!(
                "{:<16} {:<8} {:>12} {:>12} {:>10}  OUT",
                "JOB", "STATE", "SEEN", "WRITTEN", "DROPPED"
            );
            for j in v["jobs"].as_array().into_iter().flatten() {
                println!(
                    "{:<16} {:<8} {:>12} {:>12} {:>10}  {}",
                    j["name"].as_str().unwrap_or(""),
                    j["state"].as_str().unwrap_or(""),
                    j["seen"],
                    j["written"],
                    j["dropped"],
                    j["out"].as_str().unwrap_or("")
                );
            }
        }
        _ => println!("{}", serde_json::to_string_pretty(&v)?),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serve `answer` once on a unix socket; the request is read first.
    fn serve_once(answer: &'static [u8]) -> (tempfile::TempDir, ApiListen) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s");
        let l = std::os::unix::net::UnixListener::bind(&p).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            s.write_all(answer).unwrap();
        });
        (d, ApiListen::Unix(p))
    }

    #[test]
    fn a_streamed_answer_is_decoded_with_its_trailers_and_a_cut_one_is_an_error() {
        let (_d, api) = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nLinecap-Matched: 5\r\nLinecap-Errors: 0\r\n\r\n",
        );
        let mut out = Vec::new();
        let a = request_stream(&api, None, "/v1/query", &mut out).unwrap();
        assert_eq!(
            (a.status, out.as_slice(), a.bytes),
            (200, b"abcde".as_slice(), 5)
        );
        assert_eq!(
            a.trailers,
            [
                ("linecap-matched".to_string(), "5".to_string()),
                ("linecap-errors".to_string(), "0".to_string())
            ]
        );
        // No last chunk: the server cut the answer short.
        let (_d, api) = serve_once(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab");
        let mut out = Vec::new();
        assert!(request_stream(&api, None, "/v1/query", &mut out).is_err());
        // An error's JSON body is kept apart, not written to the output.
        let (_d, api) = serve_once(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\n{}");
        let mut out = Vec::new();
        let a = request_stream(&api, None, "/v1/query", &mut out).unwrap();
        assert_eq!((a.status, a.error_body.as_slice()), (400, b"{}".as_slice()));
        assert!(out.is_empty());
    }

    #[test]
    fn query_paths_escape_the_expression() {
        let p = query_path(
            "host 10.0.0.1 and port 53",
            Some("15m ago"),
            None,
            linecap_reader::output::OutFormat::PcapNg,
            Some("dns"),
        );
        assert_eq!(
            p,
            "/v1/query?expr=host+10.0.0.1+and+port+53&after=15m+ago&format=pcapng&job=dns"
        );
    }

    #[test]
    fn responses_parse_with_length_or_chunks() {
        let a = parse_response(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}junk").unwrap();
        assert_eq!((a.status, a.body.as_slice()), (201, b"{}".as_slice()));
        let a = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(a.body, b"abcde");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }
}
