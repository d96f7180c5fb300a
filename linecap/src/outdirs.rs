//! Output directories a capture creates, taken back if the capture fails
//! before it starts (a later check refused a flag, a key, a port): a failed
//! start leaves the file system as it found it. Only directories this run
//! created are removed, and only while they hold no file.

use std::path::{Path, PathBuf};

/// The directories created so far; removed on drop unless [`Self::keep`].
#[derive(Default)]
pub struct CreatedDirs {
    dirs: Vec<PathBuf>,
    keep: bool,
}

impl CreatedDirs {
    /// `create_dir_all(dir)`, remembering the topmost directory it created.
    pub fn create(&mut self, dir: &Path) -> std::io::Result<()> {
        let mut top = None;
        let mut d = Some(dir);
        while let Some(p) = d {
            if p.as_os_str().is_empty() || p.exists() {
                break;
            }
            top = Some(p.to_path_buf());
            d = p.parent();
        }
        std::fs::create_dir_all(dir)?;
        self.dirs.extend(top);
        Ok(())
    }

    /// The capture started: the directories stay.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

/// Remove `dir` and the directories below it, bottom-up, if no file is there.
fn remove_empty_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        if !self.keep {
            for d in self.dirs.iter().rev() {
                remove_empty_tree(d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_start_takes_back_only_what_it_created() {
        let t = tempfile::tempdir().unwrap();
        let old = t.path().join("old");
        std::fs::create_dir(&old).unwrap();
        let busy = t.path().join("busy");
        {
            let mut c = CreatedDirs::default();
            c.create(&old.join("q00")).unwrap();
            c.create(&t.path().join("new/a/b")).unwrap();
            c.create(&busy).unwrap();
            std::fs::write(busy.join("keep.txt"), b"x").unwrap();
        }
        assert!(old.is_dir(), "existed before: stays");
        assert!(!old.join("q00").exists());
        assert!(!t.path().join("new").exists());
        assert!(
            busy.join("keep.txt").exists(),
            "a directory with a file stays"
        );
        let mut c = CreatedDirs::default();
        c.create(&t.path().join("kept")).unwrap();
        c.keep();
        drop(c);
        assert!(t.path().join("kept").is_dir());
    }
}
