//! A small blocking S3 client: `rusty-s3` signs (SigV4, presigned URLs with
//! the checksum headers signed), `ureq` sends. Only what shipping needs: put,
//! multipart (create, part, complete, abort, list parts), head, get, delete,
//! list. Every failure is classified ([`FailKind`]) so the shipper counts it
//! by kind and `linecap ship --test` can say exactly what failed.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use sha2::{Digest, Sha256};

use crate::config::S3Target;
use crate::throttle::Throttle;

/// How long a signed URL stays valid (each request is signed just before it is sent).
const SIGN_FOR: Duration = Duration::from_secs(15 * 60);

/// Why a request failed, coarse enough to count and to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailKind {
    /// The endpoint's host name does not resolve.
    Dns,
    /// No TCP connection (refused, unreachable, reset).
    Tcp,
    /// TLS handshake or certificate.
    Tls,
    /// No answer in time.
    Timeout,
    /// Unknown access key or bad signature.
    Credentials,
    /// The bucket does not exist.
    Bucket,
    /// The credentials are valid but may not do this.
    Permission,
    /// The server refused the checksum, or returned a different one.
    Checksum,
    /// The server answered 5xx (or 429/503 slow down).
    Server,
    /// A multipart upload the journal remembers is gone on the server.
    NoSuchUpload,
    /// The object does not exist (HEAD/GET).
    NotFound,
    /// The local file could not be read.
    Local,
    /// Anything else (4xx not above, malformed answers).
    Other,
}

impl FailKind {
    /// Every kind, in the order metrics list them.
    pub const ALL: [FailKind; 13] = [
        FailKind::Dns,
        FailKind::Tcp,
        FailKind::Tls,
        FailKind::Timeout,
        FailKind::Credentials,
        FailKind::Bucket,
        FailKind::Permission,
        FailKind::Checksum,
        FailKind::Server,
        FailKind::NoSuchUpload,
        FailKind::NotFound,
        FailKind::Local,
        FailKind::Other,
    ];

    /// The label used in metrics and reports.
    pub fn label(self) -> &'static str {
        match self {
            FailKind::Dns => "dns",
            FailKind::Tcp => "tcp",
            FailKind::Tls => "tls",
            FailKind::Timeout => "timeout",
            FailKind::Credentials => "credentials",
            FailKind::Bucket => "bucket",
            FailKind::Permission => "permission",
            FailKind::Checksum => "checksum",
            FailKind::Server => "server",
            FailKind::NoSuchUpload => "no_such_upload",
            FailKind::NotFound => "not_found",
            FailKind::Local => "local",
            FailKind::Other => "other",
        }
    }

    /// Index into per-kind counter arrays.
    pub fn index(self) -> usize {
        FailKind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// A failed request: its kind and a sentence for the operator.
#[derive(Debug, Clone)]
pub struct S3Error {
    /// What kind of failure.
    pub kind: FailKind,
    /// What happened, with the server's code and message when it gave one.
    pub detail: String,
}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.label(), self.detail)
    }
}

impl std::error::Error for S3Error {}

fn err(kind: FailKind, detail: impl Into<String>) -> S3Error {
    S3Error {
        kind,
        detail: detail.into(),
    }
}

/// Base64 of a SHA-256 digest (the form of `x-amz-checksum-sha256`).
pub fn b64(digest: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// SHA-256 of bytes, base64.
pub fn sha256_b64(data: &[u8]) -> String {
    b64(&Sha256::digest(data))
}

/// The checksum S3 reports for a multipart object: the SHA-256 of the
/// concatenated part digests, base64, then `-N`.
pub fn composite_sha256(part_sha256_b64: &[String]) -> Option<String> {
    let mut h = Sha256::new();
    for p in part_sha256_b64 {
        let raw = base64::engine::general_purpose::STANDARD.decode(p).ok()?;
        h.update(raw);
    }
    Some(format!("{}-{}", b64(&h.finalize()), part_sha256_b64.len()))
}

/// What a HEAD tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Content length.
    pub size: u64,
    /// `x-amz-checksum-sha256`, when the server keeps one.
    pub sha256: Option<String>,
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Key.
    pub key: String,
    /// Size.
    pub size: u64,
}

/// The client for one bucket.
pub struct S3Client {
    agent: ureq::Agent,
    bucket: Bucket,
    creds: Credentials,
    throttle: Option<Arc<Throttle>>,
    endpoint: String,
}

impl S3Client {
    /// A client for `target`; `throttle` caps the upload bandwidth.
    pub fn new(target: &S3Target, throttle: Option<Arc<Throttle>>) -> Result<Self, S3Error> {
        let url: url::Url = target.endpoint.parse().map_err(|e| {
            err(
                FailKind::Other,
                format!("endpoint {}: {e}", target.endpoint),
            )
        })?;
        let style = if target.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(url, style, target.bucket.clone(), target.region.clone())
            .map_err(|e| {
                err(
                    FailKind::Other,
                    format!(
                        "bucket {} at {}: {e} (an IP-address endpoint needs path style)",
                        target.bucket, target.endpoint
                    ),
                )
            })?;
        let creds = match &target.session_token {
            Some(t) => Credentials::new_with_token(&target.access_key, &target.secret_key, t),
            None => Credentials::new(&target.access_key, &target.secret_key),
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_recv_body(Some(Duration::from_secs(120)))
            .timeout_send_body(Some(Duration::from_secs(120)))
            .build()
            .new_agent();
        Ok(S3Client {
            agent,
            bucket,
            creds,
            throttle,
            endpoint: target.endpoint.clone(),
        })
    }

    /// The bucket's name.
    pub fn bucket_name(&self) -> &str {
        self.bucket.name()
    }

    fn transport(&self, e: ureq::Error) -> S3Error {
        let host = &self.endpoint;
        match e {
            ureq::Error::HostNotFound => {
                err(FailKind::Dns, format!("cannot resolve the host of {host}"))
            }
            ureq::Error::ConnectionFailed => {
                err(FailKind::Tcp, format!("cannot connect to {host} (TCP)"))
            }
            ureq::Error::Timeout(t) => err(FailKind::Timeout, format!("{host}: timeout ({t})")),
            ureq::Error::Tls(m) => err(FailKind::Tls, format!("TLS with {host}: {m}")),
            ureq::Error::Rustls(e) => err(FailKind::Tls, format!("TLS with {host}: {e}")),
            ureq::Error::Io(e) if is_dns(&e) => err(
                FailKind::Dns,
                format!("cannot resolve the host of {host}: {e}"),
            ),
            // rustls reports through the stream as I/O errors (InvalidData).
            ureq::Error::Io(e) if is_tls(&e, host) => {
                err(FailKind::Tls, format!("TLS with {host}: {e}"))
            }
            ureq::Error::Io(e) => match e.kind() {
                io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::UnexpectedEof => {
                    err(FailKind::Tcp, format!("{host}: connection: {e}"))
                }
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                    err(FailKind::Timeout, format!("{host}: {e}"))
                }
                _ => err(FailKind::Other, format!("{host}: {e}")),
            },
            other => err(FailKind::Other, format!("{host}: {other}")),
        }
    }

    /// Turn a non-2xx answer into an error, from its status and XML `<Code>`.
    fn status_error(&self, what: &str, status: u16, body: &str) -> S3Error {
        let code = xml_field(body, "Code").unwrap_or_default();
        let msg = xml_field(body, "Message").unwrap_or_default();
        let kind = match code.as_str() {
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "InvalidToken"
            | "TokenRefreshRequired" => FailKind::Credentials,
            "NoSuchBucket" => FailKind::Bucket,
            "AccessDenied" | "AllAccessDisabled" => FailKind::Permission,
            "BadDigest" | "InvalidDigest" | "XAmzContentChecksumMismatch" => FailKind::Checksum,
            "NoSuchUpload" => FailKind::NoSuchUpload,
            "NoSuchKey" => FailKind::NotFound,
            "SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout" => {
                FailKind::Server
            }
            _ => match status {
                403 => FailKind::Permission,
                404 => FailKind::NotFound,
                408 | 429 | 500..=599 => FailKind::Server,
                _ => FailKind::Other,
            },
        };
        let code = if code.is_empty() {
            String::new()
        } else {
            format!(" {code}")
        };
        let msg = if msg.is_empty() {
            String::new()
        } else {
            format!(": {msg}")
        };
        err(
            kind,
            format!(
                "{what} in bucket {}: HTTP {status}{code}{msg}",
                self.bucket.name()
            ),
        )
    }

    fn finish(
        &self,
        what: &str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(ureq::http::HeaderMap, String), S3Error> {
        let mut resp = r.map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_string()
            .unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(self.status_error(what, status, &body));
        }
        // S3 may answer 200 with an <Error> body (CompleteMultipartUpload).
        if body.contains("<Error>") {
            return Err(self.status_error(what, 500, &body));
        }
        Ok((resp.headers().clone(), body))
    }

    fn send_bytes(
        &self,
        method: &str,
        url: &url::Url,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(url.as_str())
            .header("content-length", body.len().to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut reader = Throttled {
            data: body,
            pos: 0,
            throttle: self.throttle.as_deref(),
        };
        let req = req
            .body(ureq::SendBody::from_reader(&mut reader))
            .map_err(ureq::Error::Http)?;
        self.agent.run(req)
    }

    /// PUT an object in one request with its SHA-256 for the server to check;
    /// the checksum the server returns must match. The checksum it returned, if any.
    pub fn put(&self, key: &str, data: &[u8]) -> Result<Option<String>, S3Error> {
        let sha = sha256_b64(data);
        let mut a = self.bucket.put_object(Some(&self.creds), key);
        a.headers_mut().insert("x-amz-checksum-sha256", sha.clone());
        let url = a.sign(SIGN_FOR);
        let r = self.send_bytes("PUT", &url, &[("x-amz-checksum-sha256", &sha)], data);
        let (h, _) = self.finish(&format!("PUT {key}"), r)?;
        check_returned(&h, &sha, key)?;
        Ok(header(&h, "x-amz-checksum-sha256"))
    }

    /// List at most one key under `prefix`: checks endpoint, credentials,
    /// bucket and list permission in one request.
    pub fn list_one(&self, prefix: &str) -> Result<(), S3Error> {
        let mut a = self.bucket.list_objects_v2(Some(&self.creds));
        a.with_prefix(prefix.to_string());
        a.with_max_keys(1);
        let url = a.sign(SIGN_FOR);
        let r = self.agent.get(url.as_str()).call();
        self.finish(&format!("LIST {prefix}"), r).map(|_| ())
    }

    /// Start a multipart upload (SHA-256 checksums): its upload id.
    pub fn create_multipart(&self, key: &str) -> Result<String, S3Error> {
        let mut a = self.bucket.create_multipart_upload(Some(&self.creds), key);
        a.headers_mut().insert("x-amz-checksum-algorithm", "SHA256");
        let url = a.sign(SIGN_FOR);
        let r = self.send_bytes("POST", &url, &[("x-amz-checksum-algorithm", "SHA256")], &[]);
        let (_, body) = self.finish(&format!("CreateMultipartUpload {key}"), r)?;
        xml_field(&body, "UploadId")
            .filter(|id| !id.is_empty())
            .ok_or_else(|| err(FailKind::Other, format!("no UploadId for {key}: {body}")))
    }

    /// Upload one part (numbered from 1): its ETag. `sha` is the part's
    /// SHA-256 (base64); the server checks it and must return it.
    pub fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        data: &[u8],
        sha: &str,
    ) -> Result<String, S3Error> {
        let mut a = self
            .bucket
            .upload_part(Some(&self.creds), key, number, upload_id);
        a.headers_mut()
            .insert("x-amz-checksum-sha256", sha.to_string());
        let url = a.sign(SIGN_FOR);
        let r = self.send_bytes("PUT", &url, &[("x-amz-checksum-sha256", sha)], data);
        let (h, _) = self.finish(&format!("UploadPart {number} of {key}"), r)?;
        check_returned(&h, sha, key)?;
        header(&h, "etag").ok_or_else(|| {
            err(
                FailKind::Other,
                format!("no ETag for part {number} of {key}"),
            )
        })
    }

    /// Complete a multipart upload from `(etag, sha256)` per part (in
    /// order); the composite checksum the server returns must match. The
    /// checksum it returned, if any.
    pub fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(String, String)],
    ) -> Result<Option<String>, S3Error> {
        let a = self.bucket.complete_multipart_upload(
            Some(&self.creds),
            key,
            upload_id,
            std::iter::empty::<&str>(),
        );
        let url = a.sign(SIGN_FOR);
        let mut body = String::from("<CompleteMultipartUpload>");
        for (i, (etag, sha)) in parts.iter().enumerate() {
            body.push_str(&format!(
                "<Part><ETag>{}</ETag><PartNumber>{}</PartNumber><ChecksumSHA256>{}</ChecksumSHA256></Part>",
                xml_escape(etag),
                i + 1,
                sha
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let r = self.send_bytes("POST", &url, &[], body.as_bytes());
        let (_, resp) = self.finish(&format!("CompleteMultipartUpload {key}"), r)?;
        let shas: Vec<String> = parts.iter().map(|(_, s)| s.clone()).collect();
        let want = composite_sha256(&shas)
            .ok_or_else(|| err(FailKind::Other, "a part checksum is not base64"))?;
        match xml_field(&resp, "ChecksumSHA256").filter(|g| !g.is_empty()) {
            Some(got) if got != want && got != want_without_suffix(&want) => Err(err(
                FailKind::Checksum,
                format!("{key}: the server's composite SHA-256 {got} is not ours {want}"),
            )),
            // Normalise to the `-N` form the journal keeps.
            Some(_) => Ok(Some(want)),
            None => Ok(None),
        }
    }

    /// Abort a multipart upload (its parts are freed).
    pub fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        let url = self
            .bucket
            .abort_multipart_upload(Some(&self.creds), key, upload_id)
            .sign(SIGN_FOR);
        let r = self.send_bytes("DELETE", &url, &[], &[]);
        self.finish(&format!("AbortMultipartUpload {key}"), r)
            .map(|_| ())
    }

    /// Part numbers (with their sizes) the server holds for an upload.
    pub fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<(u16, u64)>, S3Error> {
        let url = self
            .bucket
            .list_parts(Some(&self.creds), key, upload_id)
            .sign(SIGN_FOR);
        let r = self.agent.get(url.as_str()).call();
        let (_, body) = self.finish(&format!("ListParts {key}"), r)?;
        let mut out = Vec::new();
        for part in body.split("<Part>").skip(1) {
            let n = xml_field(part, "PartNumber").and_then(|n| n.parse().ok());
            let s = xml_field(part, "Size").and_then(|n| n.parse().ok());
            if let (Some(n), Some(s)) = (n, s) {
                out.push((n, s));
            }
        }
        Ok(out)
    }

    /// HEAD an object (asking for its checksum): `None` when it is absent.
    pub fn head(&self, key: &str) -> Result<Option<ObjectInfo>, S3Error> {
        let mut a = self.bucket.head_object(Some(&self.creds), key);
        a.headers_mut().insert("x-amz-checksum-mode", "ENABLED");
        let url = a.sign(SIGN_FOR);
        let r = self
            .agent
            .head(url.as_str())
            .header("x-amz-checksum-mode", "ENABLED")
            .call();
        let resp = r.map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            // HEAD has no body: tell NoSuchBucket from credentials by status.
            return Err(self.status_error(&format!("HEAD {key}"), status, ""));
        }
        let h = resp.headers();
        Ok(Some(ObjectInfo {
            size: header(h, "content-length")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            sha256: header(h, "x-amz-checksum-sha256"),
        }))
    }

    /// GET an object's bytes.
    pub fn get(&self, key: &str) -> Result<Vec<u8>, S3Error> {
        let url = self
            .bucket
            .get_object(Some(&self.creds), key)
            .sign(SIGN_FOR);
        let mut resp = self
            .agent
            .get(url.as_str())
            .call()
            .map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        let mut data = Vec::new();
        resp.body_mut()
            .as_reader()
            .read_to_end(&mut data)
            .map_err(|e| err(FailKind::Tcp, format!("GET {key}: {e}")))?;
        if !(200..300).contains(&status) {
            return Err(self.status_error(
                &format!("GET {key}"),
                status,
                &String::from_utf8_lossy(&data),
            ));
        }
        Ok(data)
    }

    /// DELETE an object.
    pub fn delete(&self, key: &str) -> Result<(), S3Error> {
        let url = self
            .bucket
            .delete_object(Some(&self.creds), key)
            .sign(SIGN_FOR);
        let r = self.agent.delete(url.as_str()).call();
        self.finish(&format!("DELETE {key}"), r).map(|_| ())
    }

    /// List the objects under a prefix (all pages).
    pub fn list(&self, prefix: &str) -> Result<Vec<Listed>, S3Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..10_000 {
            let mut a = self.bucket.list_objects_v2(Some(&self.creds));
            a.with_prefix(prefix.to_string());
            if let Some(t) = &token {
                a.with_continuation_token(t.clone());
            }
            let url = a.sign(SIGN_FOR);
            let r = self.agent.get(url.as_str()).call();
            let (_, body) = self.finish(&format!("LIST {prefix}"), r)?;
            let parsed = rusty_s3::actions::ListObjectsV2::parse_response(&body)
                .map_err(|e| err(FailKind::Other, format!("LIST {prefix}: {e}")))?;
            out.extend(parsed.contents.into_iter().map(|c| Listed {
                key: c.key,
                size: c.size.unwrap_or(0),
            }));
            match parsed.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        Ok(out)
    }
}

/// The resolver's failures come as plain I/O errors.
fn is_dns(e: &io::Error) -> bool {
    let m = e.to_string();
    m.contains("lookup address")
        || m.contains("Name or service not known")
        || m.contains("No address associated")
        || m.contains("Temporary failure in name resolution")
}

fn is_tls(e: &io::Error, endpoint: &str) -> bool {
    let m = e.to_string().to_ascii_lowercase();
    endpoint.starts_with("https:")
        && (e.kind() == io::ErrorKind::InvalidData
            || [
                "corrupt message",
                "certificate",
                "handshake",
                "tls",
                "alert",
            ]
            .iter()
            .any(|w| m.contains(w)))
}

fn want_without_suffix(s: &str) -> &str {
    s.rsplit_once('-').map_or(s, |(a, _)| a)
}

fn header(h: &ureq::http::HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.to_string())
}

/// The server must return the checksum we sent (when it returns one).
fn check_returned(h: &ureq::http::HeaderMap, sha: &str, key: &str) -> Result<(), S3Error> {
    match header(h, "x-amz-checksum-sha256") {
        Some(got) if got != sha => Err(err(
            FailKind::Checksum,
            format!("{key}: the server stored SHA-256 {got}, we sent {sha}"),
        )),
        _ => Ok(()),
    }
}

/// The text of the first `<NAME>...</NAME>` (enough for S3's flat answers).
pub fn xml_field(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&close)? + start;
    Some(xml_unescape(&body[start..end]))
}

fn xml_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A request body read through the bandwidth cap.
struct Throttled<'a> {
    data: &'a [u8],
    pos: usize,
    throttle: Option<&'a Throttle>,
}

impl Read for Throttled<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.data.len() - self.pos;
        if left == 0 {
            return Ok(0);
        }
        let mut n = left.min(buf.len()).min(64 * 1024);
        if let Some(t) = &self.throttle {
            n = t.take(n);
        }
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_checksum_is_the_sha_of_the_part_digests() {
        let a = sha256_b64(b"hello");
        let b = sha256_b64(b"world");
        let mut h = Sha256::new();
        h.update(Sha256::digest(b"hello"));
        h.update(Sha256::digest(b"world"));
        assert_eq!(
            composite_sha256(&[a, b]).unwrap(),
            format!("{}-2", b64(&h.finalize()))
        );
        assert_eq!(composite_sha256(&["!!".into()]), None);
    }

    #[test]
    fn xml_fields_and_escapes() {
        let body = "<Error><Code>NoSuchBucket</Code><Message>a &amp; b</Message></Error>";
        assert_eq!(xml_field(body, "Code").as_deref(), Some("NoSuchBucket"));
        assert_eq!(xml_field(body, "Message").as_deref(), Some("a & b"));
        assert_eq!(xml_field(body, "UploadId"), None);
        assert_eq!(xml_escape("\"e&t\""), "&quot;e&amp;t&quot;");
    }
}
