//! The LRE xtask: one data flow, one module per step.
//!
//! manifest → environment → probe → facts (checked in) → render (pure) → write or check.
//! Everything else (`run`, `doctor`, the Bazel wrapper) reads the same manifest and facts.

pub mod bazel;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod doctor;
pub mod environment;
pub mod facts;
pub mod fsx;
pub mod generate;
pub mod kubernetes;
pub mod lint;
pub mod manifest;
pub mod nativelink;
pub mod nix;
pub mod oci;
pub mod parity;
pub mod prereqs;
pub mod probe;
pub mod process;
pub mod remote;
pub mod render;
pub mod run;
pub mod starlark;
pub mod up;
pub mod version;

use std::path::{Path, PathBuf};

/// Where the repository lives, and the fixed places inside it.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
}

impl Project {
    pub const MANIFEST: &'static str = "lre/toolchains.toml";
    pub const GENERATED: &'static str = "generated";
    pub const LOCK: &'static str = "lre.lock.json";

    pub fn new(root: impl Into<PathBuf>) -> Project {
        Project { root: root.into() }
    }

    /// The repository this xtask was built from.
    pub fn from_build() -> Project {
        let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        Project::new(xtask_dir.parent().expect("xtask lives one level below the repository root"))
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.root.join(Self::MANIFEST)
    }

    pub fn generated_dir(&self) -> PathBuf {
        self.root.join(Self::GENERATED)
    }

    pub fn lock_path(&self) -> PathBuf {
        self.generated_dir().join(Self::LOCK)
    }

    /// Machine-local, git-ignored state (offline Bazel overrides, later server state).
    pub fn local_dir(&self) -> PathBuf {
        self.root.join(".lre")
    }
}
