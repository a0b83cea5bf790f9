//! `cargo xtask doctor`: every prerequisite with the version found or what to do, and whether
//! `generated/` is stale or impure.

use anyhow::{bail, Result};

use crate::facts::Facts;
use crate::manifest::{Manifest, Source};
use crate::prereqs::{self, Found, Prerequisite};
use crate::{generate, Project};

pub fn run(project: &Project) -> Result<()> {
    let manifest = Manifest::load(&project.manifest_path())?;
    let needs_nix = manifest.toolchains.iter().any(|t| t.source == Source::Nix);
    let mut blocking = Vec::new();
    println!("prerequisites:");
    for prerequisite in prereqs::ALL {
        let required =
            prerequisite.name == prereqs::BAZEL.name || (needs_nix && prerequisite.name == prereqs::NIX.name);
        let (status, line) = report(prerequisite);
        let flag = match (status, required) {
            (Status::Ok, _) => "ok",
            (_, true) => "FAIL",
            (_, false) => "warn",
        };
        println!("  {flag:<4} {:<18} {line}", prerequisite.name);
        if flag == "FAIL" {
            blocking.push(prerequisite.name);
        }
    }
    if let Found::Present { version: Some(found), .. } = prereqs::BAZEL.find() {
        if found.major != manifest.bazel_version.major {
            println!(
                "  warn bazel {found} runs here, but generated/ targets Bazel {} (bazel.version in {})",
                manifest.bazel_version,
                Project::MANIFEST
            );
        }
    }

    println!("generated/:");
    match generate::is_fresh(project) {
        Ok(problems) if problems.is_empty() => println!("  ok   in sync with {}", Project::MANIFEST),
        Ok(problems) => {
            println!("  FAIL stale ({} problems); run `cargo xtask generate --check` for the diff:", problems.len());
            for problem in &problems {
                println!("         {}", problem.lines().next().unwrap_or(""));
            }
            blocking.push("generated/");
        }
        Err(err) => {
            println!("  FAIL {err:#}");
            blocking.push("generated/");
        }
    }
    if let Ok(facts) = Facts::load(&project.lock_path()) {
        for (name, toolchain) in &facts.toolchains {
            let provenance = &toolchain.provenance;
            if provenance.hermetic {
                println!(
                    "  ok   {name}: hermetic ({} source, roots {})",
                    provenance.source,
                    toolchain.roots.join(", ")
                );
            } else {
                println!(
                    "  warn {name}: impure ({} source, probed on {} at {}): {}",
                    provenance.source,
                    provenance.machine,
                    provenance.probed_at,
                    provenance.note.as_deref().unwrap_or("paths are this machine's own")
                );
            }
        }
    }
    if !blocking.is_empty() {
        bail!("doctor found blocking problems: {}", blocking.join(", "));
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    Missing,
    TooOld,
}

fn report(prerequisite: &Prerequisite) -> (Status, String) {
    match prerequisite.find() {
        Found::Missing => (Status::Missing, format!("missing ({}): {}", prerequisite.purpose, prerequisite.remedy())),
        Found::Present { path, version, banner } => {
            let shown = version.map_or_else(|| format!("version unknown ({banner:?})"), |v| v.to_string());
            match (version, prerequisite.minimum) {
                (Some(found), Some(minimum)) if found < minimum => (
                    Status::TooOld,
                    format!(
                        "{shown} at {} is older than the {minimum} needed: {}",
                        path.display(),
                        prerequisite.remedy()
                    ),
                ),
                _ => (Status::Ok, format!("{shown} at {}", path.display())),
            }
        }
    }
}
