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
const REPOSITORY_ENTRIES: &[&str] = &[
    ".bazelignore",
    ".bazelrc",
    "BUILD.bazel",
    "MODULE.bazel",
    "WORKSPACE",
    "examples",
    "generated",
    "kubernetes",
    "lre",
    "third_party",
];

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
    pub fn from_output(output: Output) -> Run {
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
    Run::from_output(output)
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
    startup: Vec<String>,
    expunge: bool,
}

impl Bazel {
    pub fn new(workspace: &Path) -> Bazel {
        Bazel { workspace: workspace.to_path_buf(), program: require("bazel"), startup: Vec::new(), expunge: false }
    }

    /// A server with its own output base (a clean build of the same workspace).
    pub fn with_output_base(workspace: &Path, output_base: &Path) -> Bazel {
        let mut bazel = Bazel::new(workspace).expunge_on_drop();
        bazel.startup.push(format!("--output_base={}", output_base.display()));
        bazel
    }

    /// Deletes the output base when done (for throw-away workspaces, so disks do not fill up).
    pub fn expunge_on_drop(mut self) -> Bazel {
        self.expunge = true;
        self
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let output = Command::new(&self.program)
            .current_dir(&self.workspace)
            .args(&self.startup)
            .args(args)
            .output()
            .expect("bazel runs");
        Run::from_output(output)
    }
}

impl Drop for Bazel {
    fn drop(&mut self) {
        let command = if self.expunge { ["clean", "--expunge"].as_slice() } else { ["shutdown"].as_slice() };
        let _ = Command::new(&self.program).current_dir(&self.workspace).args(&self.startup).args(command).output();
        if self.expunge {
            let _ =
                Command::new(&self.program).current_dir(&self.workspace).args(&self.startup).arg("shutdown").output();
        }
    }
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The first of `count` consecutive free loopback ports.
pub fn free_port_block(count: u16) -> u16 {
    for _ in 0..100 {
        let base = free_port();
        if base.checked_add(count).is_some()
            && (1..count).all(|offset| std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok())
        {
            return base;
        }
    }
    panic!("no {count} consecutive free loopback ports");
}

/// A real REAPI server: BuildGrid with a disk CAS and an action cache (no workers), on a free
/// loopback port, stopped when dropped.
pub struct BuildGrid {
    pub url: String,
    pub instance_name: &'static str,
    server: duct::Handle,
    _dir: TempDir,
}

impl BuildGrid {
    pub fn start() -> BuildGrid {
        let bgd = require("bgd");
        let dir = TempDir::new("buildgrid");
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "server:\n  - !channel\n    address: \"127.0.0.1:{port}\"\n    insecure-mode: true\n\
                 authorization:\n  method: none\n\
                 storages:\n  - !disk-storage &cas\n    path: {cas}\n\
                 caches:\n  - !lru-action-cache &ac\n    storage: *cas\n    max-cached-refs: 100000\n    allow-updates: true\n\
                 instances:\n  - name: main\n    services:\n      - !action-cache\n        cache: *ac\n      - !cas\n        storage: *cas\n      - !bytestream\n        storage: *cas\n",
                cas = dir.path().join("cas").display()
            ),
        )
        .unwrap();
        let log = dir.path().join("server.log");
        let server = duct::cmd!(bgd, "server", "start", &config)
            .stdout_path(&log)
            .stderr_to_stdout()
            .unchecked()
            .start()
            .expect("bgd starts");
        let url = format!("grpc://127.0.0.1:{port}");
        let endpoint = xtask::remote::Endpoint::parse(&url).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while xtask::remote::preflight("BuildGrid", &endpoint, std::time::Duration::from_secs(1)).is_err() {
            if std::time::Instant::now() > deadline || server.try_wait().ok().flatten().is_some() {
                panic!("BuildGrid did not come up on {url}:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        BuildGrid { url, instance_name: "main", server, _dir: dir }
    }
}

impl Drop for BuildGrid {
    fn drop(&mut self) {
        let _ = self.server.kill();
    }
}

/// The counts of Bazel's (last) `INFO: N processes: 7 remote cache hit, 19 internal.` line, by kind.
pub fn process_summary(bazel_stderr: &str) -> BTreeMap<String, u64> {
    let line = bazel_stderr
        .lines()
        .filter_map(|line| line.strip_prefix("INFO: "))
        .rfind(|line| [" processes: ", " process: "].iter().any(|p| line.contains(p)) || line.ends_with(" processes."))
        .unwrap_or_else(|| panic!("no process summary in:\n{bazel_stderr}"));
    let Some((_, kinds)) = line.split_once(": ") else { return BTreeMap::new() };
    kinds
        .trim_end_matches('.')
        .split(", ")
        .map(|part| {
            let (count, kind) = part.split_once(' ').unwrap();
            (kind.to_owned(), count.parse().unwrap())
        })
        .collect()
}

/// Every `"container-image": "…"` value in the generated Bazel platforms.
pub fn platform_images(root: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_to_string(root.join("generated/config/BUILD"))
        .unwrap()
        .lines()
        .filter_map(|line| line.trim().strip_prefix("\"container-image\": \""))
        .map(|rest| rest.trim_end_matches("\",").to_owned())
        .collect()
}
