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

/// Probes `toolchain` in `env` (inside `env.root` when the toolchain is an unpacked image).
pub fn probe(toolchain: &Toolchain, env: &ToolchainEnv) -> Result<Probed> {
    let scratch = Scratch::new(&toolchain.name, env.root.as_deref())?;
    let prober = Prober { env, scratch: &scratch.in_toolchain, host_scratch: &scratch.host, root: env.root.as_deref() };
    let probed = match toolchain.kind {
        Kind::Cc => cc::probe(&prober).map(|cc| Probed::Cc(Box::new(cc))),
        Kind::Java => java::probe(&prober).map(Probed::Java),
    };
    probed
        .with_context(|| format!("probing toolchain {} ({} from {})", toolchain.name, toolchain.kind, toolchain.source))
}

/// Runs programs with exactly the toolchain's environment (plus `LC_ALL=C` for parseable output).
/// Paths are the toolchain's own: with a `root` (an unpacked image), programs run inside it
/// (`unshare --root`: a chroot when root, a user namespace otherwise) and every path is looked
/// up inside it, following the image's symlinks.
pub struct Prober<'a> {
    pub env: &'a ToolchainEnv,
    /// The scratch directory as the toolchain's programs see it.
    pub scratch: &'a Path,
    host_scratch: &'a Path,
    root: Option<&'a Path>,
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
        sh.change_dir(self.host_scratch);
        let command = match self.root {
            None => cmd!(sh, "{program} {args...}"),
            Some(root) => {
                let unshare = which::which("unshare")
                    .context("probing inside an image needs `unshare` (util-linux) on this machine's PATH")?;
                // SAFETY: geteuid has no preconditions.
                let user_namespace = (unsafe { libc::geteuid() } != 0).then_some("--map-root-user");
                let root = format!("--root={}", root.display());
                let wd = format!("--wd={}", self.scratch.display());
                // A private /proc (programs find themselves through /proc/self/exe: a JDK's
                // launcher needs it for $ORIGIN), gone when the program exits.
                cmd!(sh, "{unshare} {user_namespace...} --mount --pid --fork --mount-proc=/proc {root} {wd} {program} {args...}")
            }
        };
        let command = command.env_clear().envs(&self.env.vars).env("LC_ALL", "C").stdin("").quiet().ignore_status();
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
            if !self.host_path(&path).is_some_and(|host| host.exists()) {
                bail!("{variable}={program} does not exist");
            }
            path
        } else {
            self.find_on_path(program).with_context(|| {
                format!(
                    "{variable}={program} is not on the toolchain's PATH ({}); install it or fix the toolchain's environment",
                    self.env.path()
                )
            })?
        };
        if !self.is_executable(&path) {
            bail!("{variable}={} is not an executable file", path.display());
        }
        Ok(path)
    }

    /// The first executable `name` in the toolchain's PATH, as the toolchain spells it.
    pub fn find_on_path(&self, name: &str) -> Option<PathBuf> {
        match self.root {
            None => which::which_in(name, Some(self.env.path()), self.host_scratch).ok(),
            Some(_) => self
                .env
                .path()
                .split(':')
                .filter(|dir| dir.starts_with('/'))
                .map(|dir| Path::new(dir).join(name))
                .find(|candidate| self.is_executable(candidate)),
        }
    }

    /// Where a path of the toolchain is on this machine (`None` when it cannot be resolved,
    /// such as a symlink loop inside the image).
    pub fn host_path(&self, path: &Path) -> Option<PathBuf> {
        match self.root {
            None => Some(path.to_owned()),
            Some(root) => crate::oci::unpack::resolve_in_root(root, path, true).ok(),
        }
    }

    pub fn is_executable(&self, path: &Path) -> bool {
        self.host_path(path).is_some_and(|host| is_executable(&host))
    }

    pub fn scratch_file(&self, name: &str) -> PathBuf {
        self.scratch.join(name)
    }

    /// Writes an input file into the scratch directory and returns its path as an argument.
    pub fn input_file(&self, name: &str, contents: &str) -> Result<String> {
        let host = self.host_scratch.join(name);
        std::fs::write(&host, contents).with_context(|| format!("cannot write {}", host.display()))?;
        self.scratch_file(name).to_str().map(str::to_owned).context("scratch path is not UTF-8")
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

/// A private temporary directory (inside the image's root when there is one), removed on drop.
struct Scratch {
    host: PathBuf,
    in_toolchain: PathBuf,
}

impl Scratch {
    fn new(label: &str, root: Option<&Path>) -> Result<Scratch> {
        let name = format!("lre-probe-{}-{label}", std::process::id());
        let (host, in_toolchain) = match root {
            None => (std::env::temp_dir().join(&name), std::env::temp_dir().join(&name)),
            Some(root) => {
                let proc = crate::oci::unpack::resolve_in_root(root, Path::new("/proc"), true)?;
                std::fs::create_dir_all(&proc).with_context(|| format!("cannot create {}", proc.display()))?;
                let in_toolchain = Path::new("/tmp").join(&name);
                (crate::oci::unpack::resolve_in_root(root, &in_toolchain, true)?, in_toolchain)
            }
        };
        let _ = std::fs::remove_dir_all(&host);
        std::fs::create_dir_all(&host).with_context(|| format!("cannot create {}", host.display()))?;
        Ok(Scratch { host, in_toolchain })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.host);
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
