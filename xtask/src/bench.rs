//! `cargo xtask bench`: figures, never assertions. The median wall time of `generate` (cc + java,
//! probe to rendered files) next to Bazel's own C++ autoconfiguration measured the same way in
//! the same run, and the clean compile time of this crate. `cargo xtask bench parity`: the time
//! and peak memory of comparing synthetic execution logs of Bazel's format. `cargo xtask bench
//! image`: `image wrap` on a 1 GiB base next to a 10 MiB one, and the peak memory of unpacking
//! images of growing size.

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
        let result = timed(|| quietly(cmd!(sh, "{bazel} --batch {flag} query @local_config_cc//:toolchain")));
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
        eprintln!(
            "compiling the xtask crate from clean ({} cores)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        let compile =
            timed(|| cmd!(sh, "cargo build --quiet --locked -p xtask --target-dir {flag}").run().map_err(Into::into))?;
        println!("clean compile of the xtask crate: {:.1} s (target <= 40 s on 2 cores)", compile.as_secs_f64());
    }
    Ok(())
}

/// Writes a pair of synthetic execution logs with `actions` spawns each (Bazel's JSON format):
/// compile actions sharing a pool of headers; in the second log every 100th action misses the
/// cache because of an extra environment variable, the rest are hits.
fn write_synthetic_logs(dir: &Path, first_actions: usize, second_actions: usize) -> Result<(PathBuf, PathBuf)> {
    use std::io::Write;
    let headers: Vec<String> = (0..2000).map(|i| format!("external/lib{}/include/header_{i}.h", i % 40)).collect();
    let digest = |text: &str| -> String {
        use sha2::Digest;
        sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    };
    let header_digests: Vec<String> = headers.iter().map(|h| digest(h)).collect();
    let write = |path: &Path, actions: usize, second: bool| -> Result<()> {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
        for action in 0..actions {
            let source = format!("src/module_{}/file_{action}.cc", action % 500);
            let object = format!("bazel-out/k8-fastbuild/bin/src/_objs/file_{action}.pic.o");
            let mut environment = vec![serde_json::json!({"name": "PATH", "value": "/bin:/usr/bin:/usr/local/bin"})];
            let misses = second && action % 100 == 0;
            if misses {
                environment.insert(0, serde_json::json!({"name": "CCACHE_DISABLE", "value": "1"}));
            }
            let mut inputs =
                vec![serde_json::json!({"path": source, "digest": {"hash": digest(&source), "sizeBytes": "4096"}})];
            for k in 0..15 {
                let header = (action * 7 + k * 131) % headers.len();
                inputs.push(serde_json::json!({"path": headers[header], "digest": {"hash": header_digests[header], "sizeBytes": "2048"}}));
            }
            let spawn = serde_json::json!({
                "commandArgs": ["/usr/bin/gcc", "-U_FORTIFY_SOURCE", "-fstack-protector", "-Wall", "-std=c++17", "-MD", "-MF",
                    object.replace(".o", ".d"), "-fPIC", "-iquote", ".", "-c", source, "-o", object],
                "environmentVariables": environment,
                "platform": {"properties": [{"name": "OSFamily", "value": "Linux"}, {"name": "container-image", "value": "docker://lre-cc:0123456789abcdef"}]},
                "inputs": inputs,
                "listedOutputs": [object.replace(".o", ".d"), object],
                "remotable": true,
                "cacheable": true,
                "mnemonic": "CppCompile",
                "runner": if second && !misses { "remote cache hit" } else { "processwrapper-sandbox" },
                "remoteCacheHit": second && !misses,
                "exitCode": 0,
            });
            serde_json::to_writer_pretty(&mut out, &spawn)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(())
    };
    let first = dir.join(format!("first-{first_actions}.json"));
    let second = dir.join(format!("second-{second_actions}.json"));
    write(&first, first_actions, false)?;
    write(&second, second_actions, true)?;
    Ok((first, second))
}

/// Compares synthetic execution logs in a child process: its wall time and peak resident memory.
pub fn parity() -> Result<()> {
    let scratch = std::env::temp_dir().join(format!("lre-bench-parity-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let result = (|| -> Result<()> {
        let cases = [(100_000, 10_000), (100_000, 100_000), (10_000, 100_000)];
        println!(
            "{:>14} {:>14} {:>10} {:>10} {:>16}",
            "first actions", "second actions", "log MiB", "seconds", "peak RSS MiB"
        );
        for (first_actions, second_actions) in cases {
            eprintln!("writing synthetic logs ({first_actions} + {second_actions} actions)");
            let (first, second) = write_synthetic_logs(&scratch, first_actions, second_actions)?;
            let size = std::fs::metadata(&first)?.len() + std::fs::metadata(&second)?.len();
            let (elapsed, peak_kib) = measure_child(&[
                "parity".as_ref(),
                "--logs".as_ref(),
                first.as_os_str(),
                second.as_os_str(),
                "--threshold".as_ref(),
                "0".as_ref(),
            ])?;
            println!(
                "{first_actions:>14} {second_actions:>14} {:>10.0} {:>10.2} {:>16.1}",
                size as f64 / 1048576.0,
                elapsed.as_secs_f64(),
                peak_kib as f64 / 1024.0
            );
            std::fs::remove_file(first)?;
            std::fs::remove_file(second)?;
        }
        println!("target: 100,000 + 100,000 actions in <= 10 s; peak memory flat as the second log grows");
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

const WRAP_RUNS: usize = 15;
const MIB: u64 = 1 << 20;

/// `image wrap` on bases of 10 MiB and 1 GiB (its cost should follow the added layer only), and
/// the peak memory of `image unpack` on images of 10 MiB, 256 MiB and 1 GiB (it streams).
pub fn image() -> Result<()> {
    let scratch = std::env::temp_dir().join(format!("lre-bench-image-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let result = (|| -> Result<()> {
        let nativelink = scratch.join("nativelink");
        std::io::copy(&mut PseudoRandom::new(32 * MIB, 1), &mut std::fs::File::create(&nativelink)?)?;
        let sizes = [10 * MIB, 256 * MIB, 1024 * MIB];
        let mut bases = Vec::new();
        for (seed, size) in sizes.into_iter().enumerate() {
            eprintln!("writing a synthetic {} MiB base image", size / MIB);
            let layout = scratch.join(format!("base-{}", size / MIB));
            synthetic_image(&layout, size, seed as u64 + 2)?;
            bases.push((size, layout));
        }

        println!("image wrap, 32 MiB nativelink, median of {WRAP_RUNS} runs:");
        println!("{:>10} {:>12}", "base MiB", "ms");
        let mut medians = Vec::new();
        for (size, layout) in bases.iter().filter(|(size, _)| *size != 256 * MIB) {
            let base = format!("oci:{}", layout.display());
            let output = scratch.join("wrapped");
            let median = median_of(WRAP_RUNS, &format!("image wrap on {} MiB", size / MIB), || {
                let _ = std::fs::remove_dir_all(&output);
                let (elapsed, _) = measure_child(&[
                    "image".as_ref(),
                    "wrap".as_ref(),
                    "--base".as_ref(),
                    base.as_ref(),
                    "--nativelink".as_ref(),
                    nativelink.as_os_str(),
                    "--output".as_ref(),
                    output.as_os_str(),
                    "--revision".as_ref(),
                    "bench".as_ref(),
                ])?;
                Ok(elapsed)
            })?;
            println!("{:>10} {:>12.1}", size / MIB, ms(median));
            medians.push(median);
        }
        println!("ratio 1 GiB / 10 MiB: {:.2}x (target <= 1.2x)\n", ratio(medians[1], medians[0]));

        println!("image unpack (gzip layers, streamed):");
        println!("{:>10} {:>10} {:>16}", "image MiB", "seconds", "peak RSS MiB");
        for (size, layout) in &bases {
            let output = scratch.join("rootfs");
            let _ = std::fs::remove_dir_all(&output);
            let image = format!("oci:{}", layout.display());
            let (elapsed, peak_kib) = measure_child(&[
                "image".as_ref(),
                "unpack".as_ref(),
                "--image".as_ref(),
                image.as_ref(),
                "--output".as_ref(),
                output.as_os_str(),
            ])?;
            println!("{:>10} {:>10.2} {:>16.1}", size / MIB, elapsed.as_secs_f64(), peak_kib as f64 / 1024.0);
            std::fs::remove_dir_all(&output)?;
        }
        println!("target: peak memory flat as the image grows");
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// A base image of about `size` bytes: gzip layers of 64 MiB files of incompressible bytes.
fn synthetic_image(layout: &Path, size: u64, seed: u64) -> Result<()> {
    use crate::oci::layer::{add_layer, Owner};
    let writer = crate::oci::LayoutWriter::create(layout)?;
    let file_size = size.min(64 * MIB);
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for index in 0..size.div_ceil(file_size) {
        let (layer, diff_id) = add_layer(&writer, |layer| {
            let bytes = PseudoRandom::new(file_size, seed * 1000 + index);
            layer.file(&format!("data/{index}.bin"), Owner::root(0o644), file_size, bytes)
        })?;
        layers.push(layer);
        diff_ids.push(diff_id.to_string());
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Env": ["PATH=/usr/bin"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let config = writer.add_bytes(oci_spec::image::MediaType::ImageConfig, &crate::oci::canonical_json(&config)?)?;
    let manifest = oci_spec::image::ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(oci_spec::image::MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()?;
    let manifest = writer.add_json(oci_spec::image::MediaType::ImageManifest, &manifest)?;
    writer.finish(manifest, "bench")?;
    Ok(())
}

/// Incompressible bytes (xorshift), so gzip cannot shrink the synthetic layers. Streamed: the
/// bench's own memory stays small, and a child's peak RSS starts from its parent's at fork.
struct PseudoRandom {
    state: u64,
    remaining: u64,
}

impl PseudoRandom {
    fn new(len: u64, seed: u64) -> PseudoRandom {
        PseudoRandom { state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, remaining: len }
    }
}

impl std::io::Read for PseudoRandom {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.remaining as usize) / 8 * 8;
        let n = if n == 0 { buf.len().min(self.remaining as usize) } else { n };
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            chunk.copy_from_slice(&self.state.to_le_bytes()[..chunk.len()]);
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Runs this xtask with `args`, output discarded; returns its wall time and peak RSS in KiB.
fn measure_child(args: &[&std::ffi::OsStr]) -> Result<(Duration, i64)> {
    let started = Instant::now();
    let child = std::process::Command::new(std::env::current_exe()?)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; both pointers are valid for the call.
    let waited = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    if waited < 0 {
        return Err(std::io::Error::last_os_error()).context("waiting for the measured child");
    }
    let elapsed = started.elapsed();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!(
            "`xtask {}` failed (wait status {status})",
            args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
        );
    }
    Ok((elapsed, usage.ru_maxrss))
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
    let mut samples =
        (0..runs).map(|_| measure()).collect::<Result<Vec<_>>>().with_context(|| format!("measuring {label}"))?;
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
