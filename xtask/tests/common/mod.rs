//! Shared helpers for the integration tests: repository copies, running the xtask, Bazel.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A fresh directory under the target directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let base = repo_root().join("target/test-scratch");
        let path = base.join(format!("{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The parts of the repository a Bazel build or `generate` reads.
const REPOSITORY_ENTRIES: &[&str] =
    &[".bazelignore", ".bazelrc", "BUILD.bazel", "MODULE.bazel", "WORKSPACE", "examples", "generated", "lre", "third_party"];

/// Copies the repository's Bazel workspace and generator inputs into `dest`.
pub fn copy_repo(dest: &Path) {
    for entry in REPOSITORY_ENTRIES {
        let from = repo_root().join(entry);
        if from.exists() {
            copy_recursively(&from, &dest.join(entry));
        }
    }
}

pub fn copy_recursively(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_recursively(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}

/// Every file under `dir` with its bytes, for before/after comparisons.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    if dir.exists() {
        walk(dir, dir, &mut files);
    }
    files
}

fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(root, &path, files);
        } else {
            files.insert(path.strip_prefix(root).unwrap().to_path_buf(), std::fs::read(&path).unwrap());
        }
    }
}

pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn expect_success(self, what: &str) -> Run {
        assert!(self.success, "{what} failed:\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    pub fn expect_failure(self, what: &str) -> Run {
        assert!(!self.success, "{what} unexpectedly succeeded:\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

/// Runs this build's xtask binary on the repository at `root`.
pub fn xtask(root: &Path, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("the xtask binary runs");
    Run::from(output)
}

/// Replaces the manifest of the repository copy at `root`.
pub fn write_manifest(root: &Path, text: &str) {
    std::fs::write(root.join("lre/toolchains.toml"), text).unwrap();
}

/// The checked-in manifest with `from` replaced by `to` (which must occur).
pub fn manifest_with(from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("lre/toolchains.toml")).unwrap();
    assert!(text.contains(from), "the manifest no longer contains {from:?}");
    text.replace(from, to)
}

/// Finds a tool the test needs; a missing tool fails the test with what to do.
pub fn require(tool: &str) -> PathBuf {
    which::which(tool).unwrap_or_else(|_| {
        panic!("{tool} is required by this test and is not on PATH: run `cargo xtask test --install-missing`")
    })
}

/// Bazel servers are heavy: tests that use Bazel take turns.
pub fn bazel_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs Bazel in `workspace` and shuts its server down when dropped.
pub struct Bazel {
    pub workspace: PathBuf,
    program: PathBuf,
    expunge: bool,
}

impl Bazel {
    pub fn new(workspace: &Path) -> Bazel {
        Bazel { workspace: workspace.to_path_buf(), program: require("bazel"), expunge: false }
    }

    /// Deletes the output base when done (for throw-away workspaces, so disks do not fill up).
    pub fn expunge_on_drop(mut self) -> Bazel {
        self.expunge = true;
        self
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let output = Command::new(&self.program)
            .current_dir(&self.workspace)
            .args(args)
            .output()
            .expect("bazel runs");
        Run::from(output)
    }
}

impl Drop for Bazel {
    fn drop(&mut self) {
        let command = if self.expunge { ["clean", "--expunge"].as_slice() } else { ["shutdown"].as_slice() };
        let _ = Command::new(&self.program).current_dir(&self.workspace).args(command).output();
        if self.expunge {
            let _ = Command::new(&self.program).current_dir(&self.workspace).arg("shutdown").output();
        }
    }
}
