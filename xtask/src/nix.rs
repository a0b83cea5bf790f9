//! How the xtask drives Nix for toolchains with `source = "nix"`: find Nix (2.19 or newer),
//! evaluate the toolchain image's tag and environment (`meta.Env`) from this repository's flake,
//! realise the image, and so every store path the environment names, then hand the environment
//! to the probe. The command lines are built by pure functions, which the tests pin down.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use xshell::{cmd, Shell};

use crate::manifest::Toolchain;
use crate::prereqs;
use crate::version::Version;

/// Flakes and the `nix` command are still "experimental" in Nix; naming them on every command
/// line means a stock installation works without editing `nix.conf`.
const FEATURES: [&str; 2] = ["--extra-experimental-features", "nix-command flakes"];

/// Applied to the image derivation by `nix eval`: what `generate` needs, in one evaluation.
/// `drvPath` lets `nix build` realise exactly what was evaluated without evaluating again.
pub const EVAL_APPLY: &str =
    "image: { name = image.imageName; tag = image.imageTag; env = image.meta.Env; drv = image.drvPath; }";

/// How many lines of a failed command's output an error repeats.
const TAIL_LINES: usize = 25;

pub fn minimum_version() -> Version {
    prereqs::NIX.minimum.expect("the Nix prerequisite names its minimum version")
}

/// A Nix installation new enough for the flake.
#[derive(Debug, Clone)]
pub struct Nix {
    pub program: PathBuf,
    pub version: Version,
}

/// What the flake says about one toolchain image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixImage {
    pub name: String,
    pub tag: String,
    pub env: BTreeMap<String, String>,
    /// The image's derivation, `/nix/store/…drv`.
    pub drv: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Evaluated {
    name: String,
    tag: String,
    env: Vec<String>,
    drv: String,
}

impl Nix {
    /// Finds `nix` on PATH and checks its version; `needed_by` names the toolchains that need it.
    pub fn find(needed_by: &[&str]) -> Result<Nix> {
        let toolchains = needed_by.join(", ");
        let subject = if needed_by.len() == 1 { "toolchain" } else { "toolchains" };
        let Ok(program) = which::which("nix") else {
            bail!(
                "{subject} {toolchains}: source = \"nix\" needs Nix {} or newer, and `nix` is not on PATH.\n\
                 Enter the dev shell with `nix develop` (install Nix first: https://nixos.org/download) and run \
                 `cargo xtask generate` there, or set source = \"host\" or \"oci\" for {toolchains} in lre/toolchains.toml.",
                minimum_version()
            );
        };
        let sh = Shell::new()?;
        let output = cmd!(sh, "{program} --version")
            .quiet()
            .read()
            .with_context(|| format!("cannot tell which Nix {} is", program.display()))?;
        let version = version_from(&output).with_context(|| {
            format!("`{} --version` printed {:?}, which names no version", program.display(), output)
        })?;
        if version < minimum_version() {
            bail!(
                "{subject} {toolchains}: source = \"nix\" needs Nix {} or newer, but {} is Nix {version}.\n\
                 Upgrade Nix (https://nixos.org/download), or set source = \"host\" or \"oci\" for {toolchains} \
                 in lre/toolchains.toml.",
                minimum_version(),
                program.display()
            );
        }
        Ok(Nix { program, version })
    }

    /// Evaluates the flake's image for `toolchain` (`packages.<system>.<name>`).
    pub fn evaluate(&self, flake: &Path, toolchain: &Toolchain) -> Result<NixImage> {
        eprintln!(
            "[{}] evaluating .#{} (fetching the flake's inputs if the store lacks them)",
            toolchain.name, toolchain.name
        );
        let argv = eval_argv(flake, &toolchain.name)?;
        let stdout = run_streaming(&toolchain.name, &self.program, &argv)?;
        let image = parse_evaluation(&stdout).with_context(|| {
            format!("reading what `nix eval` printed for .#{} (packages.<system>.{})", toolchain.name, toolchain.name)
        })?;
        if image.name != toolchain.image {
            bail!(
                "flake.nix names the image of toolchain {} {:?}, but lre/toolchains.toml says image = {:?}; make them agree",
                toolchain.name,
                image.name,
                toolchain.image
            );
        }
        Ok(image)
    }

    /// Builds the image, which realises every store path its environment names, and keeps it
    /// from garbage collection with an out-link (`.lre/nix/<toolchain>`), since local builds use
    /// those paths directly.
    pub fn realise(&self, image: &NixImage, toolchain: &str, out_link: &Path) -> Result<PathBuf> {
        eprintln!("[{toolchain}] building {}:{}", image.name, image.tag);
        if let Some(dir) = out_link.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        run_streaming(toolchain, &self.program, &build_argv(&image.drv, out_link))?;
        let built = std::fs::read_link(out_link)
            .with_context(|| format!("`nix build` succeeded but left no out-link at {}", out_link.display()))?;
        let missing = missing_store_paths(&image.env);
        if !missing.is_empty() {
            bail!(
                "after `nix build`, these store paths named by meta.Env of .#{toolchain} are still missing:\n  {}\n\
                 meta.Env must refer only to paths inside the image (interpolate packages, do not write store paths as plain strings)",
                missing.join("\n  ")
            );
        }
        Ok(built)
    }
}

/// The version `nix --version` reports: the last version on its first line, so that
/// "nix (Nix) 2.24.10", "nix (Lix, like Nix) 2.91.1" and "nix (Determinate Nix 3.6.2) 2.29.0"
/// each give the Nix language version the flake is evaluated with.
pub fn version_from(output: &str) -> Option<Version> {
    output
        .lines()
        .next()?
        .split_whitespace()
        .rev()
        .filter(|word| word.starts_with(|c: char| c.is_ascii_digit()) && word.contains('.'))
        .find_map(Version::parse)
}

/// `nix eval` of the toolchain's image, with [`EVAL_APPLY`].
pub fn eval_argv(flake: &Path, attribute: &str) -> Result<Vec<String>> {
    let flake = flake.to_str().context("the repository's path is not UTF-8, which Nix flake references need")?;
    if flake.contains(['#', '?']) {
        bail!("the repository's path {flake:?} contains `#` or `?`, which cannot be written in a Nix flake reference; move the checkout");
    }
    let mut argv: Vec<String> = FEATURES.iter().map(|s| (*s).to_owned()).collect();
    argv.extend(["eval", "--json", &format!("{flake}#{attribute}"), "--apply", EVAL_APPLY].map(str::to_owned));
    Ok(argv)
}

/// `nix build` of exactly the evaluated derivation, with a GC root at `out_link`.
pub fn build_argv(drv: &str, out_link: &Path) -> Vec<String> {
    let mut argv: Vec<String> = FEATURES.iter().map(|s| (*s).to_owned()).collect();
    argv.extend(["build".to_owned(), "--out-link".to_owned(), out_link.display().to_string(), format!("{drv}^out")]);
    argv
}

/// Reads `nix eval --json` output made by [`EVAL_APPLY`].
pub fn parse_evaluation(json: &str) -> Result<NixImage> {
    let evaluated: Evaluated = serde_json::from_str(json)
        .with_context(|| format!("expected {{name, tag, env, drv}} as JSON, got {json:?}"))?;
    if !is_valid_tag(&evaluated.tag) {
        bail!("the image tag {:?} is not a valid OCI tag (letters, digits, `_`, `.`, `-`; at most 128)", evaluated.tag);
    }
    if !(evaluated.drv.starts_with("/nix/store/") && evaluated.drv.ends_with(".drv")) {
        bail!("the image's drvPath {:?} is not a derivation in /nix/store", evaluated.drv);
    }
    Ok(NixImage { name: evaluated.name, tag: evaluated.tag, env: parse_env(&evaluated.env)?, drv: evaluated.drv })
}

/// An OCI-style `["NAME=value", …]` environment as a map; a malformed or repeated entry is an error.
pub fn parse_env(entries: &[String]) -> Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for entry in entries {
        let Some((name, value)) = entry.split_once('=') else {
            bail!("meta.Env entry {entry:?} is not NAME=value");
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("meta.Env entry {entry:?} does not start with a variable name");
        }
        if env.insert(name.to_owned(), value.to_owned()).is_some() {
            bail!("meta.Env sets {name} twice");
        }
    }
    Ok(env)
}

fn is_valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    tag.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The `/nix/store/<hash>-<name>` paths named anywhere in `env` that do not exist here.
pub fn missing_store_paths(env: &BTreeMap<String, String>) -> Vec<String> {
    const STORE: &str = "/nix/store/";
    let mut missing = Vec::new();
    for value in env.values() {
        let mut rest = value.as_str();
        while let Some(start) = rest.find(STORE) {
            let after = &rest[start + STORE.len()..];
            let name_len =
                after.find(|c: char| c == '/' || c == ':' || c == ',' || c.is_whitespace()).unwrap_or(after.len());
            let path = format!("{STORE}{}", &after[..name_len]);
            if name_len > 0 && !Path::new(&path).exists() && !missing.contains(&path) {
                missing.push(path);
            }
            rest = &after[name_len..];
        }
    }
    missing
}

/// A command line as a user can paste it into a shell.
fn shown(program: &Path, argv: &[String]) -> String {
    let quote = |word: &str| {
        if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=#^@+,".contains(c)) {
            word.to_owned()
        } else {
            format!("'{}'", word.replace('\'', r"'\''"))
        }
    };
    std::iter::once(program.display().to_string()).chain(argv.iter().map(|a| quote(a))).collect::<Vec<_>>().join(" ")
}

/// Runs a Nix command that may take minutes (fetching, building): its stderr is shown as it
/// comes, each line prefixed with the toolchain, and the last lines are repeated in the error
/// when it fails. Returns its stdout.
fn run_streaming(label: &str, program: &Path, argv: &[String]) -> Result<String> {
    let (reader, writer) = std::io::pipe().context("cannot create a pipe for nix's output")?;
    let expression = duct::cmd(program, argv).stdin_null().stdout_capture().stderr_file(writer).unchecked();
    let handle = expression.start().with_context(|| format!("cannot run `{}`", shown(program, argv)))?;
    // The expression holds the pipe's write end; dropping it lets the reader see the end.
    drop(expression);
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    for line in BufReader::new(reader).lines() {
        let line = line.context("reading nix's output")?;
        eprintln!("[{label}] {line}");
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let output = handle.wait().with_context(|| format!("waiting for `{}`", shown(program, argv)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}); its last output:\n{}",
            shown(program, argv),
            output.status,
            tail.into_iter().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix_versions_are_read_as_each_implementation_prints_them() {
        assert_eq!(version_from("nix (Nix) 2.24.10\n"), Some(Version::new(2, 24, 10)));
        assert_eq!(version_from("nix (Nix) 2.8.0"), Some(Version::new(2, 8, 0)));
        assert_eq!(version_from("nix (Lix, like Nix) 2.91.1\nSystem type: x86_64-linux"), Some(Version::new(2, 91, 1)));
        assert_eq!(version_from("nix (Determinate Nix 3.6.2) 2.29.0"), Some(Version::new(2, 29, 0)));
        assert_eq!(version_from("nix (Nix) unknown"), None);
        assert_eq!(version_from(""), None);
        assert!(Version::new(2, 18, 9) < minimum_version() && minimum_version() == Version::new(2, 19, 0));
    }

    #[test]
    fn eval_and_build_command_lines() {
        assert_eq!(
            eval_argv(Path::new("/home/dev/lre"), "lre-cc").unwrap(),
            [
                "--extra-experimental-features",
                "nix-command flakes",
                "eval",
                "--json",
                "/home/dev/lre#lre-cc",
                "--apply",
                "image: { name = image.imageName; tag = image.imageTag; env = image.meta.Env; drv = image.drvPath; }",
            ]
        );
        assert_eq!(
            build_argv("/nix/store/0123-image-lre-cc.json.drv", Path::new("/home/dev/lre/.lre/nix/lre-cc")),
            [
                "--extra-experimental-features",
                "nix-command flakes",
                "build",
                "--out-link",
                "/home/dev/lre/.lre/nix/lre-cc",
                "/nix/store/0123-image-lre-cc.json.drv^out",
            ]
        );
        let err = eval_argv(Path::new("/home/dev/c#2/lre"), "lre-cc").unwrap_err().to_string();
        assert!(err.contains("move the checkout"), "{err}");
    }

    #[test]
    fn commands_are_shown_as_they_can_be_pasted() {
        let argv = eval_argv(Path::new("/r"), "lre-cc").unwrap();
        assert_eq!(
            shown(Path::new("/usr/bin/nix"), &argv),
            "/usr/bin/nix --extra-experimental-features 'nix-command flakes' eval --json /r#lre-cc --apply \
             'image: { name = image.imageName; tag = image.imageTag; env = image.meta.Env; drv = image.drvPath; }'"
        );
    }

    const EVALUATED: &str = r#"{"drv":"/nix/store/9c7g-image-lre-cc.json.drv","env":["PATH=/nix/store/a-clang/bin:/nix/store/b-coreutils/bin","CC=/nix/store/a-clang/bin/clang","BAZEL_LINKOPTS=-L/nix/store/c-libcxx/lib:-Wl,-rpath,/nix/store/c-libcxx/lib"],"name":"lre-cc","tag":"9c7gq1z2"}"#;

    #[test]
    fn reads_what_nix_eval_prints() {
        let image = parse_evaluation(EVALUATED).unwrap();
        assert_eq!(image.name, "lre-cc");
        assert_eq!(image.tag, "9c7gq1z2");
        assert_eq!(image.drv, "/nix/store/9c7g-image-lre-cc.json.drv");
        assert_eq!(image.env["CC"], "/nix/store/a-clang/bin/clang");
        assert_eq!(image.env["BAZEL_LINKOPTS"], "-L/nix/store/c-libcxx/lib:-Wl,-rpath,/nix/store/c-libcxx/lib");
        assert_eq!(image.env.len(), 3);
    }

    #[test]
    fn malformed_evaluations_are_refused_with_the_reason() {
        let cases = [
            (EVALUATED.replace(r#","tag":"9c7gq1z2""#, ""), "missing field `tag`"),
            (EVALUATED.replace("9c7gq1z2", "-bad tag"), "not a valid OCI tag"),
            (EVALUATED.replace("\"CC=", "\"CC"), "is not NAME=value"),
            (EVALUATED.replace("\"CC=", "\"PATH="), "meta.Env sets PATH twice"),
            (EVALUATED.replace("\"CC=", "\"=CC="), "does not start with a variable name"),
            (EVALUATED.replace(".json.drv", ".json"), "is not a derivation"),
            (EVALUATED.replace(r#""name":"lre-cc""#, r#""name":"lre-cc","system":"x""#), "unknown field `system`"),
            ("error: flake has no attribute".to_owned(), "expected {name, tag, env, drv}"),
        ];
        for (json, expected) in cases {
            let err = format!("{:#}", parse_evaluation(&json).unwrap_err());
            assert!(err.contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn store_paths_of_the_environment_that_are_missing_are_listed_once() {
        let env = parse_evaluation(EVALUATED).unwrap().env;
        assert_eq!(
            missing_store_paths(&env),
            ["/nix/store/c-libcxx", "/nix/store/a-clang", "/nix/store/b-coreutils"].map(str::to_owned)
        );
        let host = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
        assert!(missing_store_paths(&host).is_empty());
    }
}
