//! The durable local journal of what is shipped, one per queue directory
//! (`qNN/.ship-journal`). Append-only text, one record per line, each
//! appended with a single `write` and `fdatasync`ed before the shipper acts
//! on it, so it survives `kill -9` and power loss: a record is either whole
//! (ends with a newline) or ignored.
//!
//! ```text
//! U NAME UPLOAD_ID PART_BYTES   a multipart upload of NAME's object began
//! P NAME N ETAG SHA256          part N of it is on the server (checked)
//! O NAME SHA256                 NAME's object is whole and visible (checked)
//! S FILE                        FILE, its index and its manifest are shipped
//! H FILE                        FILE's post-rotate command exited 0
//! X FILE                        FILE was deleted before it was shipped (--ship-may-drop)
//! ```
//!
//! On open the journal is compacted: records of files no longer in the
//! directory are dropped (written to a temporary file, synced, renamed).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The journal's file name inside a queue directory.
pub const JOURNAL_NAME: &str = ".ship-journal";

/// A multipart upload in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Multipart {
    /// The server's upload id.
    pub upload_id: String,
    /// The part size it was started with (a restart keeps it).
    pub part_bytes: u64,
    /// Parts on the server: number → (ETag, SHA-256 base64).
    pub parts: BTreeMap<u16, (String, String)>,
}

/// One queue directory's journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    multipart: HashMap<String, Multipart>,
    objects: HashMap<String, String>,
    shipped: HashSet<String>,
    hooked: HashSet<String>,
    dropped: HashSet<String>,
}

impl Journal {
    /// Open (or create) the journal of `dir`, replay and compact it.
    pub fn open(dir: &Path) -> io::Result<Journal> {
        let path = dir.join(JOURNAL_NAME);
        let mut j = Journal {
            file: OpenOptions::new().create(true).append(true).open(&path)?,
            path,
            multipart: HashMap::new(),
            objects: HashMap::new(),
            shipped: HashSet::new(),
            hooked: HashSet::new(),
            dropped: HashSet::new(),
        };
        let text = fs::read(&j.path)?;
        let text = String::from_utf8_lossy(&text);
        // Only whole lines count: a crash mid-append leaves a tail without '\n'.
        let whole = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        for line in whole.lines() {
            j.apply(line);
        }
        j.compact(dir)?;
        Ok(j)
    }

    fn apply(&mut self, line: &str) {
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            ["U", name, id, part] => {
                if let Ok(part_bytes) = part.parse() {
                    self.multipart.insert(
                        name.to_string(),
                        Multipart {
                            upload_id: id.to_string(),
                            part_bytes,
                            parts: BTreeMap::new(),
                        },
                    );
                }
            }
            ["P", name, n, etag, sha] => {
                if let (Some(m), Ok(n)) = (self.multipart.get_mut(*name), n.parse()) {
                    m.parts.insert(n, (etag.to_string(), sha.to_string()));
                }
            }
            ["A", name] => {
                self.multipart.remove(*name);
            }
            ["O", name, sha] => {
                self.multipart.remove(*name);
                self.objects.insert(name.to_string(), sha.to_string());
            }
            ["S", file] => {
                self.shipped.insert(file.to_string());
            }
            ["H", file] => {
                self.hooked.insert(file.to_string());
            }
            ["X", file] => {
                self.dropped.insert(file.to_string());
            }
            _ => {}
        }
    }

    /// Rewrite the journal with only the records of files still present.
    fn compact(&mut self, dir: &Path) -> io::Result<()> {
        let present = |n: &str| dir.join(n).exists();
        self.multipart.retain(|n, _| present(n));
        self.objects.retain(|n, _| present(n));
        self.shipped.retain(|n| present(n));
        self.hooked.retain(|n| present(n));
        self.dropped.clear();
        let mut out = String::new();
        for (n, m) in &self.multipart {
            out.push_str(&format!("U {n} {} {}\n", m.upload_id, m.part_bytes));
            for (p, (e, s)) in &m.parts {
                out.push_str(&format!("P {n} {p} {e} {s}\n"));
            }
        }
        for (n, s) in &self.objects {
            out.push_str(&format!("O {n} {s}\n"));
        }
        for n in &self.shipped {
            out.push_str(&format!("S {n}\n"));
        }
        for n in &self.hooked {
            out.push_str(&format!("H {n}\n"));
        }
        let tmp = dir.join(format!("{JOURNAL_NAME}.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(out.as_bytes())?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        File::open(dir)?.sync_all()?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        Ok(())
    }

    fn append(&mut self, line: String) -> io::Result<()> {
        debug_assert!(!line.contains('\n'));
        let rec = format!("{line}\n");
        self.file.write_all(rec.as_bytes())?;
        self.file.sync_data()?;
        self.apply(&line);
        Ok(())
    }

    /// A multipart upload of `name` began.
    pub fn begin_multipart(
        &mut self,
        name: &str,
        upload_id: &str,
        part_bytes: u64,
    ) -> io::Result<()> {
        self.append(format!("U {name} {upload_id} {part_bytes}"))
    }

    /// Part `n` of `name` is on the server.
    pub fn part_done(&mut self, name: &str, n: u16, etag: &str, sha: &str) -> io::Result<()> {
        // ETags are quoted hex; keep them one token.
        let etag = etag.replace(' ', "");
        self.append(format!("P {name} {n} {etag} {sha}"))
    }

    /// The multipart upload of `name` is abandoned (gone on the server).
    pub fn forget_multipart(&mut self, name: &str) -> io::Result<()> {
        self.append(format!("A {name}"))
    }

    /// `name`'s object is whole on the server.
    pub fn object_done(&mut self, name: &str, sha: &str) -> io::Result<()> {
        self.append(format!("O {name} {sha}"))
    }

    /// `file` and its companions are shipped.
    pub fn file_shipped(&mut self, file: &str) -> io::Result<()> {
        self.append(format!("S {file}"))
    }

    /// `file`'s post-rotate command succeeded.
    pub fn file_hooked(&mut self, file: &str) -> io::Result<()> {
        self.append(format!("H {file}"))
    }

    /// `file` was deleted unshipped.
    pub fn file_dropped(&mut self, file: &str) -> io::Result<()> {
        self.append(format!("X {file}"))
    }

    /// The multipart upload in progress for `name`, if any.
    pub fn multipart(&self, name: &str) -> Option<&Multipart> {
        self.multipart.get(name)
    }

    /// The checksum of `name`'s finished object, if it is finished.
    pub fn object(&self, name: &str) -> Option<&str> {
        self.objects.get(name).map(String::as_str)
    }

    /// Whether `file` is shipped.
    pub fn is_shipped(&self, file: &str) -> bool {
        self.shipped.contains(file)
    }

    /// Whether `file`'s post-rotate command succeeded.
    pub fn is_hooked(&self, file: &str) -> bool {
        self.hooked.contains(file)
    }

    /// Whether `file` was dropped unshipped.
    pub fn is_dropped(&self, file: &str) -> bool {
        self.dropped.contains(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_whole_records_and_ignores_a_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        for n in ["a", "b", "c"] {
            fs::write(d.path().join(n), n).unwrap();
        }
        {
            let mut j = Journal::open(d.path()).unwrap();
            j.begin_multipart("a", "up1", 5 << 20).unwrap();
            j.part_done("a", 1, "\"e1\"", "s1").unwrap();
            j.object_done("b", "sb").unwrap();
            j.file_shipped("b").unwrap();
            j.file_hooked("c").unwrap();
        }
        // A crash in the middle of an append.
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.path().join(JOURNAL_NAME))
            .unwrap();
        f.write_all(b"S a").unwrap();
        drop(f);
        let j = Journal::open(d.path()).unwrap();
        let m = j.multipart("a").unwrap();
        assert_eq!(m.upload_id, "up1");
        assert_eq!(m.part_bytes, 5 << 20);
        assert_eq!(m.parts[&1], ("\"e1\"".into(), "s1".into()));
        assert!(!j.is_shipped("a"));
        assert!(j.is_shipped("b"));
        assert_eq!(j.object("b"), Some("sb"));
        assert!(j.is_hooked("c"));
        drop(j);
        // Compaction forgets files that are gone.
        fs::remove_file(d.path().join("b")).unwrap();
        let j = Journal::open(d.path()).unwrap();
        assert!(!j.is_shipped("b"));
        assert!(j.multipart("a").is_some());
        let text = fs::read_to_string(d.path().join(JOURNAL_NAME)).unwrap();
        assert!(!text.contains(" b"), "{text}");
    }
}
