//! `cargo xtask run` and `cargo xtask test`.

use anyhow::{bail, Result};
use xshell::{cmd, Shell};

use crate::{bazel, generate, prereqs, Project};

/// `bazel run --config=lre <bazel_args> <target>`, after making sure generated/ is current.
pub fn run(project: &Project, target: &str, bazel_args: &[String], install_missing: bool) -> Result<()> {
    prereqs::ensure(&[&prereqs::BAZEL], install_missing)?;
    let problems = generate::is_fresh(project)?;
    if !problems.is_empty() {
        bail!(
            "generated/ is stale, so --config=lre would build with the wrong toolchain:\n{}\n\
             Run `cargo xtask generate` (or `cargo xtask generate --check` for the diff).",
            problems.iter().map(|p| p.lines().next().unwrap_or("")).collect::<Vec<_>>().join("\n")
        );
    }
    let mut args = vec!["run".to_owned(), "--config=lre".to_owned()];
    args.extend(bazel_args.iter().cloned());
    args.push(target.to_owned());
    bazel::run(project, &args)
}

/// The whole test suite.
pub fn cargo_test(project: &Project) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(&project.root);
    cmd!(sh, "cargo test --workspace --locked").run()?;
    Ok(())
}
