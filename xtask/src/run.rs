//! `cargo xtask run`, `run-remote` and `test`.

use anyhow::{bail, Result};
use xshell::{cmd, Shell};

use crate::remote::{Remote, RemoteSettings};
use crate::{bazel, generate, prereqs, Project};

/// `bazel run --config=lre <bazel_args> <target>`, after making sure generated/ is current.
pub fn run(project: &Project, target: &str, bazel_args: &[String], install_missing: bool) -> Result<()> {
    prereqs::ensure(&[&prereqs::BAZEL], install_missing)?;
    ensure_fresh(project)?;
    bazel::run(project, &run_args(&[], bazel_args, target))
}

/// The same build on remote execution: endpoints resolved (flags, environment, manifest) and
/// checked before Bazel starts.
pub fn run_remote(project: &Project, target: &str, bazel_args: &[String], flags: RemoteSettings) -> Result<()> {
    let remote = Remote::from_settings(&RemoteSettings::resolve(project, flags)?)?;
    remote.require_executor()?;
    remote.preflight()?;
    prereqs::ensure(&[&prereqs::BAZEL], false)?;
    ensure_fresh(project)?;
    let ours = [remote.cache_flags(), remote.execution_flags()].concat();
    bazel::run(project, &run_args(&ours, bazel_args, target))
}

/// `run --config=lre <ours> <the user's> <target>`.
fn run_args(ours: &[String], bazel_args: &[String], target: &str) -> Vec<String> {
    let mut args = vec!["run".to_owned(), "--config=lre".to_owned()];
    args.extend(ours.iter().cloned());
    args.extend(bazel_args.iter().cloned());
    args.push(target.to_owned());
    args
}

pub fn ensure_fresh(project: &Project) -> Result<()> {
    let problems = generate::is_fresh(project)?;
    if !problems.is_empty() {
        bail!(
            "generated/ is stale, so --config=lre would build with the wrong toolchain:\n{}\n\
             Run `cargo xtask generate` (or `cargo xtask generate --check` for the diff).",
            problems.iter().map(|p| p.lines().next().unwrap_or("")).collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

/// The whole test suite.
pub fn cargo_test(project: &Project) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(&project.root);
    cmd!(sh, "cargo test --workspace --locked").run()?;
    if std::env::var_os(crate::up::NATIVELINK_VARIABLE).is_none_or(|v| v.is_empty()) {
        println!(
            "NOT RUN: real remote execution on NativeLink (xtask/tests/nativelink.rs): set {}=/path/to/nativelink to run it",
            crate::up::NATIVELINK_VARIABLE
        );
    }
    Ok(())
}
