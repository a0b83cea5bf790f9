//! Probes run a toolchain's own programs in its own environment and record what they report.
//! Independent questions are asked in parallel; a probe that fails shows its command and stderr.

pub mod cc;
pub mod java;

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::environment::ToolchainEnv;
use crate::facts::Probed;
use crate::manifest::{Kind, Toolchain};

/// Probes `toolchain` in `env`.
pub fn probe(toolchain: &Toolchain, env: &ToolchainEnv) -> Result<Probed> {
    let scratch = Scratch::new(&toolchain.name)?;
    let prober = Prober { env, scratch: scratch.path() };
    let probed = match toolchain.kind {
        Kind::Cc => cc::probe(&prober).map(|cc| Probed::Cc(Box::new(cc))),
        Kind::Java => java::probe(&prober).map(Probed::Java),
    };
    probed
        .with_context(|| format!("probing toolchain {} ({} from {})", toolchain.name, toolchain.kind, toolchain.source))
}

/// Runs programs with exactly the toolchain's environment (plus `LC_ALL=C` for parseable output).
pub struct Prober<'a> {
    pub env: &'a ToolchainEnv,
    pub scratch: &'a Path,
}

pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Prober<'_> {
    /// Runs `program` with a closed, empty stdin (inputs are files: a program that exits before
    /// reading a pipe would otherwise break it).
    pub fn run(&self, program: &Path, args: &[&str]) -> Result<Output> {
        let sh = Shell::new()?;
        sh.change_dir(self.scratch);
        let command = cmd!(sh, "{program} {args...}")
            .env_clear()
            .envs(&self.env.vars)
            .env("LC_ALL", "C")
            .stdin("")
            .quiet()
            .ignore_status();
        let rendered = command.to_string();
        let output = command.output().with_context(|| format!("cannot run `{rendered}`"))?;
        Ok(Output {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Like [`Prober::run`], but a non-zero exit is an error that shows the command and stderr.
    pub fn run_ok(&self, program: &Path, args: &[&str]) -> Result<Output> {
        let output = self.run(program, args)?;
        if !output.success {
            bail!(
                "`{} {}` failed in the toolchain's environment (PATH={}):\n{}",
                program.display(),
                args.join(" "),
                self.env.path(),
                output.stderr.trim_end()
            );
        }
        Ok(output)
    }

    /// Finds `program` (a name or an absolute path) on the toolchain's own PATH.
    pub fn resolve(&self, variable: &str, program: &str) -> Result<PathBuf> {
        let path = if program.contains('/') {
            let path = PathBuf::from(program);
            if !path.is_absolute() {
                bail!("{variable}={program} is a relative path; give a program name or an absolute path");
            }
            if !path.exists() {
                bail!("{variable}={program} does not exist");
            }
            path
        } else {
            which::which_in(program, Some(self.env.path()), self.scratch).map_err(|_| {
                anyhow::anyhow!(
                    "{variable}={program} is not on the toolchain's PATH ({}); install it or fix the toolchain's environment",
                    self.env.path()
                )
            })?
        };
        if !is_executable(&path) {
            bail!("{variable}={} is not an executable file", path.display());
        }
        Ok(path)
    }

    pub fn scratch_file(&self, name: &str) -> PathBuf {
        self.scratch.join(name)
    }

    /// Writes an input file into the scratch directory and returns its path as an argument.
    pub fn input_file(&self, name: &str, contents: &str) -> Result<String> {
        let path = self.scratch_file(name);
        std::fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))?;
        path.to_str().map(str::to_owned).context("scratch path is not UTF-8")
    }
}

pub fn is_executable(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Removes `.` and `name/..` pairs without touching the file system, so paths keep the
/// toolchain's own spelling (a symlink farm stays a symlink farm).
pub fn normalize(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !normal.pop() {
                    normal.push("..");
                }
            }
            other => normal.push(other),
        }
    }
    normal
}

/// A private temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Result<Scratch> {
        let path = std::env::temp_dir().join(format!("lre-probe-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Scratch(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Joins scoped threads, turning a panic into an error.
pub(crate) fn join<T>(handle: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    handle.join().unwrap_or_else(|_| bail!("a probe thread panicked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_lexically() {
        assert_eq!(
            normalize(Path::new("/usr/lib/gcc/x86_64-linux-gnu/12/../../../../x86_64-linux-gnu/bin/ld")),
            PathBuf::from("/usr/x86_64-linux-gnu/bin/ld")
        );
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    }
}
