//! File-system writes that never leave a mix of old and new.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `contents` to `path` via a temporary file and a rename.
pub fn write_atomic(path: &Path, contents: &str) -> Result<()> {
    let parent = path.parent().context("a file to write has a parent directory")?;
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let temporary = sibling(path, "tmp");
    std::fs::write(&temporary, contents).with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot move {} into place", temporary.display()))
}

/// Replaces the directory `target` with exactly `files` (relative path → contents) in one step:
/// the new tree is written beside it and exchanged with the old one atomically, so a reader (or
/// a run killed half-way) sees the old set or the new set, never a mix.
pub fn replace_dir_atomic(target: &Path, files: &BTreeMap<String, String>) -> Result<()> {
    remove_leftovers(target)?;
    let staging = sibling(target, &format!("new-{}", std::process::id()));
    // A tree by that name can only be a dead run's whose pid this process now has.
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    for (relative, contents) in files {
        let path = staging.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if target.exists() {
        exchange(&staging, target)?;
        // `staging` now holds the old tree.
        std::fs::remove_dir_all(&staging).with_context(|| format!("cannot remove the old tree {}", staging.display()))
    } else {
        std::fs::rename(&staging, target).with_context(|| format!("cannot move {} into place", staging.display()))
    }
}

/// Every regular file under `dir`, by path relative to it; empty when `dir` does not exist.
pub fn read_tree(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    if dir.exists() {
        read_into(dir, dir, &mut files)?;
    }
    Ok(files)
}

fn read_into(root: &Path, dir: &Path, files: &mut BTreeMap<String, String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            read_into(root, &path, files)?;
        } else {
            let relative = path.strip_prefix(root).expect("listed below root").display().to_string();
            let contents = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            files.insert(relative, String::from_utf8_lossy(&contents).into_owned());
        }
    }
    Ok(())
}

/// `.<name>.<suffix>` next to `path`: hidden, on the same file system, easy to recognise.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{suffix}"))
}

/// Staging trees of runs that were killed before they finished (their process is gone).
fn remove_leftovers(target: &Path) -> Result<()> {
    let Some(parent) = target.parent() else { return Ok(()) };
    let Ok(entries) = std::fs::read_dir(parent) else { return Ok(()) };
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = format!(".{name}.new-");
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file_name.strip_prefix(&prefix).and_then(|pid| pid.parse::<i32>().ok()) else { continue };
        if !process_alive(pid) {
            std::fs::remove_dir_all(entry.path())
                .with_context(|| format!("cannot remove the leftover {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks whether the process exists.
    unsafe { libc::kill(pid, 0) == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) }
}

fn exchange(a: &Path, b: &Path) -> Result<()> {
    let path_a = CString::new(a.as_os_str().as_bytes())?;
    let path_b = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated paths; renameat2 does not keep the pointers.
    let status = unsafe {
        libc::renameat2(libc::AT_FDCWD, path_a.as_ptr(), libc::AT_FDCWD, path_b.as_ptr(), libc::RENAME_EXCHANGE)
    };
    if status != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot exchange {} with {}", a.display(), b.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lre-fsx-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replaces_a_tree_exactly() {
        let dir = temp_dir("replace");
        let target = dir.join("generated");
        let old = BTreeMap::from([("a/BUILD".to_owned(), "old".to_owned()), ("gone".to_owned(), "x".to_owned())]);
        replace_dir_atomic(&target, &old).unwrap();
        assert_eq!(read_tree(&target).unwrap(), old);
        let new = BTreeMap::from([("a/BUILD".to_owned(), "new".to_owned()), ("b/BUILD".to_owned(), "b".to_owned())]);
        replace_dir_atomic(&target, &new).unwrap();
        assert_eq!(read_tree(&target).unwrap(), new);
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec!["generated"], "no staging tree is left behind");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn leftovers_of_dead_runs_are_removed_and_live_ones_kept() {
        let dir = temp_dir("leftover");
        let target = dir.join("generated");
        // A run that died half-way: its pid no longer exists (pids are far below i32::MAX).
        let dead = dir.join(format!(".generated.new-{}", i32::MAX - 1));
        std::fs::create_dir_all(dead.join("half")).unwrap();
        // A concurrent run that is still alive: pid 1 always is.
        let alive = dir.join(".generated.new-1");
        std::fs::create_dir_all(alive.join("busy")).unwrap();
        replace_dir_atomic(&target, &BTreeMap::from([("x".to_owned(), "1".to_owned())])).unwrap();
        assert!(!dead.exists(), "a dead run's staging tree is removed");
        assert!(alive.join("busy").exists(), "a live run's staging tree is left alone");
        assert_eq!(read_tree(&target).unwrap()["x"], "1");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn writes_files_atomically() {
        let dir = temp_dir("file");
        let path = dir.join(".lre/local.bazelrc");
        write_atomic(&path, "one\n").unwrap();
        write_atomic(&path, "two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
