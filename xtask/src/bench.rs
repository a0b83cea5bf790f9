//! `cargo xtask bench`: figures, never assertions. The median wall time of `generate` (cc + java,
//! probe to rendered files) next to Bazel's own C++ autoconfiguration measured the same way in
//! the same run, and the clean compile time of this crate.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::{bazel, fsx, Project};

const GENERATE_RUNS: usize = 21;
const WARM_RUNS: usize = 10;
const COLD_RUNS: usize = 5;

pub fn run(project: &Project, include_compile: bool) -> Result<()> {
    let scratch = std::env::temp_dir().join(format!("lre-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let result = measure(project, &scratch, include_compile);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn measure(project: &Project, scratch: &Path, include_compile: bool) -> Result<()> {
    let generate = median_of(GENERATE_RUNS, "cargo xtask generate (cc + java)", || time_generate(project, scratch))?;
    let bazel = bazel::find()?;
    let workspace = bazel_workspace(project, scratch)?;
    let sh = Shell::new()?;
    sh.change_dir(&workspace);
    eprintln!("warming Bazel's server for `bazel sync --only=local_config_cc`");
    quietly(cmd!(sh, "{bazel} sync --only=local_config_cc"))?;
    let warm = median_of(WARM_RUNS, "bazel sync --only=local_config_cc (warm server)", || {
        timed(|| quietly(cmd!(sh, "{bazel} sync --only=local_config_cc")))
    })?;
    quietly(cmd!(sh, "{bazel} shutdown"))?;
    let mut cold_index = 0;
    let cold = median_of(COLD_RUNS, "bazel --batch query @local_config_cc//:toolchain (cold output base)", || {
        cold_index += 1;
        let output_base = scratch.join(format!("cold-output-base-{cold_index}"));
        let flag = format!("--output_base={}", output_base.display());
        let result = timed(|| {
            quietly(cmd!(sh, "{bazel} --batch {flag} query @local_config_cc//:toolchain"))
        });
        let _ = std::fs::remove_dir_all(&output_base);
        result
    })?;

    println!();
    println!("{:<62} {:>10}", "median wall time", "ms");
    println!("{:<62} {:>10.1}", "cargo xtask generate (cc + java, probe + render + compare)", ms(generate));
    println!("{:<62} {:>10.1}", "bazel sync --only=local_config_cc (warm server)", ms(warm));
    println!("{:<62} {:>10.1}", "bazel --batch query @local_config_cc//:toolchain (cold)", ms(cold));
    println!();
    println!("generate is {:.1}x faster than warm autoconfiguration (target >= 6x)", ratio(warm, generate));
    println!("generate is {:.1}x faster than cold autoconfiguration (target >= 20x)", ratio(cold, generate));
    println!("generate median {:.1} ms (target <= 100 ms)", ms(generate));

    if include_compile {
        let target_dir = scratch.join("target");
        let flag = target_dir.display().to_string();
        let sh = Shell::new()?;
        sh.change_dir(&project.root);
        eprintln!("compiling the xtask crate from clean ({} cores)", std::thread::available_parallelism().map_or(1, |n| n.get()));
        let compile = timed(|| cmd!(sh, "cargo build --quiet --locked -p xtask --target-dir {flag}").run().map_err(Into::into))?;
        println!("clean compile of the xtask crate: {:.1} s (target <= 40 s on 2 cores)", compile.as_secs_f64());
    }
    Ok(())
}

fn time_generate(project: &Project, scratch: &Path) -> Result<Duration> {
    let root = scratch.join("generate");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("lre"))?;
    std::fs::copy(project.manifest_path(), root.join(Project::MANIFEST))?;
    let xtask = std::env::current_exe()?;
    let sh = Shell::new()?;
    timed(|| quietly(cmd!(sh, "{xtask} --root {root} generate")))
}

/// An empty workspace that lets Bazel configure its C++ toolchain (offline where needed).
fn bazel_workspace(project: &Project, scratch: &Path) -> Result<PathBuf> {
    let workspace = scratch.join("autoconf-workspace");
    fsx::write_atomic(&workspace.join("WORKSPACE"), "workspace(name = \"autoconf_bench\")\n")?;
    fsx::write_atomic(&workspace.join("BUILD.bazel"), "")?;
    fsx::write_atomic(&workspace.join(".bazelrc"), &bazel::offline_overrides(project).unwrap_or_default())?;
    Ok(workspace)
}

/// Runs a command without echoing it; on failure the error carries its stderr.
fn quietly(command: xshell::Cmd<'_>) -> Result<()> {
    let shown = command.to_string();
    let output = command.quiet().ignore_status().output()?;
    if !output.status.success() {
        bail!("`{shown}` failed ({}):\n{}", output.status, String::from_utf8_lossy(&output.stderr).trim_end());
    }
    Ok(())
}

fn timed(mut action: impl FnMut() -> Result<()>) -> Result<Duration> {
    let started = Instant::now();
    action()?;
    Ok(started.elapsed())
}

fn median_of(runs: usize, label: &str, mut measure: impl FnMut() -> Result<Duration>) -> Result<Duration> {
    eprintln!("measuring {label} ({runs} runs)");
    let mut samples = (0..runs).map(|_| measure()).collect::<Result<Vec<_>>>().with_context(|| format!("measuring {label}"))?;
    if samples.is_empty() {
        bail!("no samples for {label}");
    }
    samples.sort();
    Ok(samples[samples.len() / 2])
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn ratio(slow: Duration, fast: Duration) -> f64 {
    slow.as_secs_f64() / fast.as_secs_f64().max(f64::EPSILON)
}
