//! `linecap ctl`: the control API's client (status, jobs, add, stop).
//!
//! A small HTTP/1.1 client written here rather than a crate: the API's
//! default listener is a unix socket, which the blocking HTTP clients in
//! the tree (none) and on crates.io (ureq) do not speak; one request per
//! connection with `Connection: close` is all it needs.

use std::io::{Read, Write};
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
  linecap ctl --api 127.0.0.1:9465 --api-token /etc/linecap/api.token status

The same with curl:
  curl --unix-socket /run/linecap/api.sock http://linecap/v1/status
  curl -H \"Authorization: Bearer $(cat /etc/linecap/api.token)\" http://127.0.0.1:9465/v1/jobs
  curl -X POST -H 'Content-Type: application/json' --unix-socket /run/linecap/api.sock \\
       -d '{\"name\":\"dns\",\"directory\":\"dns\",\"filter\":\"udp port 53\"}' http://linecap/v1/jobs")]
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
    let timeout = Some(Duration::from_secs(30));
    match api {
        ApiListen::Unix(p) => {
            let mut s = std::os::unix::net::UnixStream::connect(p).with_context(|| {
                format!(
                    "connecting to unix:{} (is a capture running with --api?)",
                    p.display()
                )
            })?;
            s.set_read_timeout(timeout)?;
            s.write_all(head.as_bytes())?;
            s.write_all(body.unwrap_or_default())?;
            s.read_to_end(&mut raw)?;
        }
        ApiListen::Tcp(a) => {
            let mut s = std::net::TcpStream::connect_timeout(a, Duration::from_secs(5))
                .with_context(|| format!("connecting to {a} (is a capture running with --api?)"))?;
            s.set_read_timeout(timeout)?;
            s.write_all(head.as_bytes())?;
            s.write_all(body.unwrap_or_default())?;
            s.read_to_end(&mut raw)?;
        }
    }
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
    let (method, path, body) = match &a.command {
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
        let msg = v["error"]["message"].as_str().unwrap_or("(no message)");
        match v["error"]["field"].as_str() {
            Some(f) => eprintln!(
                "linecap ctl: {} {path}: {} (field {f}): {msg}",
                method, ans.status
            ),
            None => eprintln!("linecap ctl: {} {path}: {}: {msg}", method, ans.status),
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
