//! Running Bazel in this repository, including the machine-local `.lre/local.bazelrc` that lets
//! Debian's offline Bazel packages build without network access.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use xshell::{cmd, Shell};

use crate::prereqs;
use crate::{fsx, Project};

/// Where Debian's `bazel-platforms` and `bazel-rules-java` install their repositories.
const DEBIAN_PLATFORMS: &str = "/usr/share/bazel/tools/platforms";
const DEBIAN_RULES_JAVA: &str = "/usr/share/bazel/rules/java";

pub fn find() -> Result<PathBuf> {
    prereqs::BAZEL
        .executables
        .iter()
        .find_map(|exe| which::which(exe).ok())
        .with_context(|| format!("Bazel is not on PATH: {}", prereqs::BAZEL.remedy()))
}

/// The overrides a machine with Debian's offline Bazel needs, or `None` elsewhere (including
/// where another Bazel, say bazelisk's, comes first on PATH).
pub fn offline_overrides(project: &Project) -> Option<String> {
    let debian_bazel = find()
        .ok()
        .and_then(|bazel| bazel.canonicalize().ok())
        .is_some_and(|bazel| bazel.starts_with("/usr/bin") && Path::new("/usr/share/doc/bazel-bootstrap").exists());
    let rule_packages = Path::new(DEBIAN_PLATFORMS).join("WORKSPACE").exists()
        && Path::new(DEBIAN_RULES_JAVA).join("WORKSPACE").exists();
    if !(debian_bazel && rule_packages) {
        return None;
    }
    let third_party = project.root.join("third_party");
    let repositories = [
        ("platforms", PathBuf::from(DEBIAN_PLATFORMS)),
        ("rules_java", PathBuf::from(DEBIAN_RULES_JAVA)),
        ("rules_cc", third_party.join("rules_cc")),
        ("remote_coverage_tools", third_party.join("remote_coverage_tools")),
    ];
    let mut text = "# Written by `cargo xtask` for this machine (git-ignored): Debian's Bazel packages are\n\
                    # installed, so rule repositories come from local copies instead of the network.\n"
        .to_owned();
    for (name, path) in &repositories {
        text += &format!("common --override_repository={name}={}\n", path.display());
    }
    text += "# Debian's linux-sandbox logs every action; the process-wrapper sandbox does not.\n";
    text += "build --spawn_strategy=processwrapper-sandbox\n";
    Some(text)
}

/// Writes `.lre/local.bazelrc` when this machine needs offline overrides (and it changed), and
/// removes it when the machine no longer needs them.
pub fn prepare(project: &Project) -> Result<()> {
    let path = project.local_dir().join("local.bazelrc");
    let Some(overrides) = offline_overrides(project) else {
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            eprintln!("removed {} (this machine's Bazel needs no offline overrides)", path.display());
        }
        return Ok(());
    };
    if std::fs::read_to_string(&path).ok().as_deref() != Some(overrides.as_str()) {
        fsx::write_atomic(&path, &overrides)?;
        eprintln!("wrote {} (offline overrides for Debian's Bazel)", path.display());
    }
    Ok(())
}

/// Runs `bazel <args>` at the repository root with this terminal's stdio.
pub fn run(project: &Project, args: &[String]) -> Result<()> {
    run_with_startup(project, &[], args)
}

/// Runs `bazel <startup> <args>` (startup options such as `--output_base=…`).
pub fn run_with_startup(project: &Project, startup: &[String], args: &[String]) -> Result<()> {
    let bazel = find()?;
    prepare(project)?;
    let sh = Shell::new()?;
    sh.change_dir(&project.root);
    cmd!(sh, "{bazel} {startup...} {args...}").run().with_context(|| format!("`bazel {}` failed", args.join(" ")))
}
