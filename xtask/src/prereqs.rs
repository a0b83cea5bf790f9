//! The programs the workflow needs, how to tell their version, and how to install them.

use std::path::PathBuf;

use anyhow::{bail, Result};
use xshell::{cmd, Shell};

use crate::version::Version;

/// A program the workflow can use.
pub struct Prerequisite {
    pub name: &'static str,
    /// Executables that satisfy it, in order of preference.
    pub executables: &'static [&'static str],
    pub version_args: &'static [&'static str],
    pub minimum: Option<Version>,
    /// What it is for, shown by `doctor`.
    pub purpose: &'static str,
    /// Debian packages that provide it, when Debian has it.
    pub debian_packages: &'static [&'static str],
    /// Python packages (pinned) that provide it, when PyPI has it.
    pub pip_packages: &'static [&'static str],
    /// What to do when Debian does not provide it.
    pub otherwise: &'static str,
}

pub const NIX: Prerequisite = Prerequisite {
    name: "nix",
    executables: &["nix"],
    version_args: &["--version"],
    minimum: Some(Version::new(2, 19, 0)),
    purpose: "toolchains with source = \"nix\"; the dev shell",
    debian_packages: &[],
    pip_packages: &[],
    otherwise: "install Nix 2.19 or later (the official installer, or your distribution's package)",
};

pub const NIX_INSTANTIATE: Prerequisite = Prerequisite {
    name: "nix-instantiate",
    executables: &["nix-instantiate"],
    version_args: &["--version"],
    minimum: None,
    purpose: "the test suite's Nix parser and evaluator (Debian's Nix is also the too-old Nix a test expects)",
    debian_packages: &["nix-bin"],
    pip_packages: &[],
    otherwise: "install Nix",
};

pub const MMDEBSTRAP: Prerequisite = Prerequisite {
    name: "mmdebstrap",
    executables: &["mmdebstrap"],
    version_args: &["--version"],
    minimum: None,
    purpose: "the test suite's Debian toolchain image (bookworm with gcc and a JDK)",
    debian_packages: &["mmdebstrap"],
    pip_packages: &[],
    otherwise: "install mmdebstrap",
};

pub const UMOCI: Prerequisite = Prerequisite {
    name: "umoci",
    executables: &["umoci"],
    version_args: &["--version"],
    minimum: None,
    purpose: "the test suite's independent check of images `image wrap` writes",
    debian_packages: &["umoci"],
    pip_packages: &[],
    otherwise: "install umoci",
};

pub const BAZEL: Prerequisite = Prerequisite {
    name: "bazel",
    executables: &["bazel", "bazelisk"],
    version_args: &["--version"],
    minimum: None,
    purpose: "builds with --config=lre (Bazel 7 or newer recommended)",
    debian_packages: &["bazel-bootstrap", "bazel-platforms", "bazel-rules-java"],
    pip_packages: &[],
    otherwise: "install bazelisk and set USE_BAZEL_VERSION to bazel.version of lre/toolchains.toml",
};

pub const CONTAINER_RUNTIME: Prerequisite = Prerequisite {
    name: "container runtime",
    executables: &["docker", "podman"],
    version_args: &["--version"],
    minimum: None,
    purpose: "loading toolchain and worker images",
    debian_packages: &["docker.io"],
    pip_packages: &[],
    otherwise: "install Docker or Podman",
};

pub const KUBECTL: Prerequisite = Prerequisite {
    name: "kubectl",
    executables: &["kubectl"],
    version_args: &["version", "--client"],
    minimum: None,
    purpose: "the Kubernetes example",
    debian_packages: &[],
    pip_packages: &[],
    otherwise: "install kubectl from the Kubernetes project",
};

pub const KIND: Prerequisite = Prerequisite {
    name: "kind",
    executables: &["kind"],
    version_args: &["version"],
    minimum: None,
    purpose: "a local Kubernetes cluster for the example",
    debian_packages: &[],
    pip_packages: &[],
    otherwise: "install kind (it ships in the Nix dev shell)",
};

pub const SKOPEO: Prerequisite = Prerequisite {
    name: "skopeo",
    executables: &["skopeo"],
    version_args: &["--version"],
    minimum: None,
    purpose: "copying images to a registry; the test suite's independent image checks",
    debian_packages: &["skopeo"],
    pip_packages: &[],
    otherwise: "install skopeo",
};

pub const NATIVELINK: Prerequisite = Prerequisite {
    name: "nativelink",
    executables: &["nativelink"],
    version_args: &["--version"],
    minimum: None,
    purpose: "remote execution on this machine",
    debian_packages: &[],
    pip_packages: &[],
    otherwise: "enter the Nix dev shell (it provides nativelink) or build it from NativeLink's sources",
};

pub const CLANG: Prerequisite = Prerequisite {
    name: "clang",
    executables: &["clang"],
    version_args: &["--version"],
    minimum: None,
    purpose: "the test suite's clang toolchain",
    debian_packages: &["clang"],
    pip_packages: &[],
    otherwise: "install clang",
};

pub const GXX: Prerequisite = Prerequisite {
    name: "g++",
    executables: &["g++"],
    version_args: &["--version"],
    minimum: None,
    purpose: "the host gcc toolchain",
    debian_packages: &["g++"],
    pip_packages: &[],
    otherwise: "install g++",
};

pub const JDK: Prerequisite = Prerequisite {
    name: "java",
    executables: &["java"],
    version_args: &["-version"],
    minimum: None,
    purpose: "the host Java toolchain",
    debian_packages: &["openjdk-17-jdk-headless"],
    pip_packages: &[],
    otherwise: "install a JDK 17",
};

pub const BUILDGRID: Prerequisite = Prerequisite {
    name: "buildgrid",
    executables: &["bgd"],
    version_args: &["--help"],
    minimum: None,
    purpose: "the test suite's REAPI remote cache",
    debian_packages: &[],
    pip_packages: &["buildgrid==0.4.4"],
    otherwise: "pip install buildgrid==0.4.4",
};

/// What `doctor` reports, in order.
pub const ALL: &[&Prerequisite] = &[&NIX, &CONTAINER_RUNTIME, &BAZEL, &KUBECTL, &KIND, &SKOPEO, &NATIVELINK];

/// What `run` and the test suite need on this machine.
pub const FOR_TESTS: &[&Prerequisite] = &[
    &BAZEL,
    &GXX,
    &CLANG,
    &JDK,
    &BUILDGRID,
    &KUBECTL,
    &NIX_INSTANTIATE,
    &MMDEBSTRAP,
    &SKOPEO,
    &UMOCI,
    &CONTAINER_RUNTIME,
];

#[derive(Debug)]
pub enum Found {
    Missing,
    /// The program runs; its version when it told one.
    Present {
        path: PathBuf,
        version: Option<Version>,
        banner: String,
    },
}

impl Prerequisite {
    pub fn find(&self) -> Found {
        let Some(path) = self.executables.iter().find_map(|exe| which::which(exe).ok()) else {
            return Found::Missing;
        };
        let banner = Shell::new()
            .ok()
            .and_then(|sh| {
                let args = self.version_args;
                let output = cmd!(sh, "{path} {args...}").quiet().ignore_status().output().ok()?;
                let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&output.stderr));
                Some(text)
            })
            .unwrap_or_default();
        let banner = banner.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned();
        Found::Present { version: Version::find_in(&banner), path, banner }
    }

    /// The advice for a missing or too old program.
    pub fn remedy(&self) -> String {
        if !self.pip_packages.is_empty() {
            format!("python3 -m pip install {}", self.pip_packages.join(" "))
        } else if self.debian_packages.is_empty() || !is_debian() {
            self.otherwise.to_owned()
        } else {
            format!("apt-get install {}", self.debian_packages.join(" "))
        }
    }
}

fn is_debian() -> bool {
    std::path::Path::new("/etc/debian_version").exists()
}

/// Installs the Debian and Python packages of every missing prerequisite (Debian's need root).
pub fn install_missing(prerequisites: &[&Prerequisite]) -> Result<()> {
    let missing: Vec<&Prerequisite> =
        prerequisites.iter().copied().filter(|p| matches!(p.find(), Found::Missing)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if let Some(p) = missing.iter().find(|p| p.debian_packages.is_empty() && p.pip_packages.is_empty()) {
        bail!("{} is missing and cannot be installed automatically: {}", p.name, p.otherwise);
    }
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
    let debian: Vec<&str> = missing.iter().flat_map(|p| p.debian_packages.iter().copied()).collect();
    let python: Vec<&str> = missing.iter().flat_map(|p| p.pip_packages.iter().copied()).collect();
    let sh = Shell::new()?;
    if !debian.is_empty() {
        if !is_debian() || which::which("apt-get").is_err() {
            bail!("missing: {}; install them ({}) and retry", names.join(", "), debian.join(" "));
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("missing: {}; run `sudo apt-get install {}` and retry", names.join(", "), debian.join(" "));
        }
        eprintln!("installing Debian packages: {}", debian.join(" "));
        cmd!(sh, "apt-get update -qq").env("DEBIAN_FRONTEND", "noninteractive").run()?;
        cmd!(sh, "apt-get install -y -qq {debian...}").env("DEBIAN_FRONTEND", "noninteractive").run()?;
    }
    if !python.is_empty() {
        eprintln!("installing Python packages: {}", python.join(" "));
        cmd!(sh, "python3 -m pip install --quiet {python...}").run()?;
    }
    Ok(())
}

/// Fails with advice when a prerequisite is missing (or installs it when `install` is set).
pub fn ensure(prerequisites: &[&Prerequisite], install: bool) -> Result<()> {
    if install {
        install_missing(prerequisites)?;
    }
    let missing: Vec<String> = prerequisites
        .iter()
        .filter(|p| matches!(p.find(), Found::Missing))
        .map(|p| format!("{} is missing ({}): {}", p.name, p.purpose, p.remedy()))
        .collect();
    if !missing.is_empty() {
        bail!("{}\n(--install-missing installs them for you)", missing.join("\n"));
    }
    Ok(())
}
