//! `cargo xtask generate`: probe, lint, record facts, render, then write or check.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use similar::TextDiff;

use crate::environment::Resolver;
use crate::facts::{self, Facts, Provenance, ToolchainFacts};
use crate::manifest::{Manifest, Source};
use crate::oci::ImageRef;
use crate::{fsx, lint, probe, render, Project};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options {
    /// Render from the checked-in facts and compare; write nothing.
    pub check: bool,
    /// With `check`: also probe again and compare the result with the facts.
    pub reprobe: bool,
    /// Probe only these toolchains (others keep their facts).
    pub only: Vec<String>,
    /// The image of the `oci` toolchains probed (those in `only`, else all of them), instead of
    /// their `from` in the manifest.
    pub from: Option<ImageRef>,
}

pub fn run(project: &Project, options: &Options) -> Result<()> {
    let mut manifest = Manifest::load(&project.manifest_path())?;
    for name in &options.only {
        manifest.toolchain(name)?;
    }
    if let Some(from) = &options.from {
        let mut applied = 0;
        for toolchain in &mut manifest.toolchains {
            if toolchain.source == Source::Oci && (options.only.is_empty() || options.only.contains(&toolchain.name)) {
                toolchain.from = Some(from.clone());
                applied += 1;
            }
        }
        if applied == 0 {
            bail!("--from {from}: no toolchain with source = \"oci\" is selected; set source = \"oci\" in lre/toolchains.toml (and name it with --only)");
        }
    }
    if options.check {
        check(project, &manifest, options)
    } else {
        write(project, &manifest, options)
    }
}

fn write(project: &Project, manifest: &Manifest, options: &Options) -> Result<()> {
    let previous = Facts::load_if_present(&project.lock_path()).unwrap_or_else(|err| {
        eprintln!("warning: ignoring the previous facts ({err:#}); probing every toolchain");
        None
    });
    let facts = probe_facts(project, manifest, previous.as_ref(), &options.only)?;
    let files = render::render(&facts)?;
    let generated = project.generated_dir();
    if fsx::read_tree(&generated)? == files {
        eprintln!("generated/ is up to date ({} files)", files.len());
        return Ok(());
    }
    fsx::replace_dir_atomic(&generated, &files)?;
    eprintln!("wrote generated/ ({} files)", files.len());
    Ok(())
}

/// Probes the toolchains (all, or those named in `only` plus any without facts), lints them,
/// and merges the results with `previous`. Timestamps survive when nothing changed.
pub fn probe_facts(project: &Project, manifest: &Manifest, previous: Option<&Facts>, only: &[String]) -> Result<Facts> {
    let previous_toolchains = previous.map(|p| &p.toolchains);
    let to_probe: Vec<_> = manifest
        .toolchains
        .iter()
        .filter(|t| {
            only.is_empty()
                || only.contains(&t.name)
                || previous_toolchains.and_then(|p| p.get(&t.name)).is_none_or(|f| !f.disagreements_with(t).is_empty())
        })
        .collect();
    let resolver = Resolver::new(project, &to_probe).map_err(|err| anyhow::anyhow!("{err:#}\nNothing was written."))?;

    let probed: Vec<Result<ToolchainFacts>> = std::thread::scope(|s| {
        let handles: Vec<_> = to_probe
            .iter()
            .map(|toolchain| {
                let resolver = &resolver;
                s.spawn(move || {
                    eprintln!("probing {} ({} from {})", toolchain.name, toolchain.kind, toolchain.source);
                    let started = Instant::now();
                    let env = resolver.resolve(toolchain)?;
                    let probed = probe::probe(toolchain, &env)?;
                    let hermetic = toolchain.source != Source::Host;
                    let facts = ToolchainFacts {
                        image: facts::Image {
                            name: toolchain.image.clone(),
                            tag: env
                                .image_tag
                                .clone()
                                .unwrap_or_else(|| ToolchainFacts::content_tag(&env.vars, &probed)),
                            digest: env.image_digest.clone(),
                        },
                        provenance: Provenance {
                            source: toolchain.source,
                            machine: facts::machine(),
                            probed_at: facts::timestamp_now(),
                            hermetic,
                            note: (!hermetic).then(|| {
                                "host source: paths are this machine's own; remote workers must provide the same \
                                 files at the same paths (regenerate from nix or oci for a hermetic toolchain)"
                                    .to_owned()
                            }),
                        },
                        roots: toolchain.roots.clone(),
                        environment: env.vars.clone(),
                        probed,
                    };
                    lint::check(&toolchain.name, &facts, env.root.as_deref())?;
                    eprintln!("probed {} in {} ms", toolchain.name, started.elapsed().as_millis());
                    Ok(facts)
                })
            })
            .collect();
        handles.into_iter().map(probe::join).collect()
    });

    let mut toolchains = BTreeMap::new();
    let mut errors = Vec::new();
    for (toolchain, result) in to_probe.iter().zip(probed) {
        match result {
            Ok(mut fresh) => {
                if let Some(old) = previous_toolchains.and_then(|p| p.get(&toolchain.name)) {
                    let mut same = fresh.clone();
                    same.provenance.probed_at = old.provenance.probed_at.clone();
                    if &same == old {
                        fresh = same;
                    }
                }
                toolchains.insert(toolchain.name.clone(), fresh);
            }
            Err(err) => errors.push(format!("{err:#}")),
        }
    }
    if !errors.is_empty() {
        bail!("{}\nNothing was written.", errors.join("\n\n"));
    }
    for toolchain in &manifest.toolchains {
        if !toolchains.contains_key(&toolchain.name) {
            let kept = previous_toolchains.and_then(|p| p.get(&toolchain.name)).expect("selected above when missing");
            toolchains.insert(toolchain.name.clone(), kept.clone());
        }
    }
    Ok(Facts {
        generated_by: facts::GENERATED_BY.to_owned(),
        schema: facts::SCHEMA,
        bazel_version: manifest.bazel_version.to_string(),
        toolchains,
    })
}

fn check(project: &Project, manifest: &Manifest, options: &Options) -> Result<()> {
    let facts = Facts::load(&project.lock_path())?;
    let mut problems = facts.disagreements_with(manifest);
    if !problems.is_empty() {
        problems.insert(0, format!("{} is stale against {}:", project.lock_path().display(), Project::MANIFEST));
    }
    if options.reprobe && problems.is_empty() {
        let fresh = probe_facts(project, manifest, Some(&facts), &[])?;
        let (old, new) = (facts.to_json(), fresh.to_json());
        if old != new {
            problems.push(format!(
                "the toolchains no longer match the facts:\n{}",
                diff("generated/lre.lock.json", &old, &new)
            ));
        }
    }
    problems.extend(stale_files(project, &facts)?);
    if problems.is_empty() {
        eprintln!("generated/ is up to date with its facts");
        return Ok(());
    }
    bail!("{}\nRun `cargo xtask generate` to bring generated/ up to date.", problems.join("\n"))
}

/// How the files under `generated/` differ from what the facts render to.
pub fn stale_files(project: &Project, facts: &Facts) -> Result<Vec<String>> {
    let expected = render::render(facts)?;
    let actual = fsx::read_tree(&project.generated_dir())?;
    let mut problems = Vec::new();
    for (path, want) in &expected {
        let shown = format!("generated/{path}");
        match actual.get(path) {
            None => problems.push(format!("{shown} is missing")),
            Some(have) if have != want => problems.push(format!("{shown} is stale:\n{}", diff(&shown, have, want))),
            Some(_) => {}
        }
    }
    for path in actual.keys().filter(|path| !expected.contains_key(*path)) {
        problems.push(format!("generated/{path} is not produced by the generator"));
    }
    Ok(problems)
}

/// Whether `generated/` is in sync with its facts, and the facts with the manifest.
pub fn is_fresh(project: &Project) -> Result<Vec<String>> {
    let manifest = Manifest::load(&project.manifest_path())?;
    let facts = Facts::load(&project.lock_path()).context("no facts yet")?;
    let mut problems = facts.disagreements_with(&manifest);
    problems.extend(stale_files(project, &facts)?);
    Ok(problems)
}

fn diff(name: &str, old: &str, new: &str) -> String {
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(2)
        .header(&format!("{name} (on disk)"), &format!("{name} (rendered)"))
        .to_string()
}
