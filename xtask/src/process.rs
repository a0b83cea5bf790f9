//! Long-running children that outlive the xtask: started detached, recorded by identity, and
//! signalled only while that identity still holds. Never by name.
//!
//! A pid alone is not an identity: once the process exits, the kernel may give the number to an
//! unrelated program. The identity is the pid together with the process's start time (in clock
//! ticks since boot, from `/proc/PID/stat`) and its command line; both are checked right before a
//! signal is sent.

use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub pid: u32,
    pub start_time: u64,
    pub argv: Vec<String>,
}

/// What a recorded identity refers to now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Running,
    /// Exited (a zombie counts as exited: it runs nothing and holds no port).
    Gone,
    /// The pid now belongs to another program, described here.
    Replaced(String),
}

/// The state letter and start time of `pid`, from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(char, u64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(text: &str) -> Option<(char, u64)> {
    // The command name (field 2) is in parentheses and may itself contain spaces or `)`.
    let after_name = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // Field 3 is the state; field 22 the start time, i.e. index 19 after the name.
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some((state, start_time))
}

fn cmdline(pid: u32) -> Option<Vec<String>> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        bytes
            .split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect(),
    )
}

impl Identity {
    /// The identity of the running process `pid`.
    pub fn of(pid: u32) -> Result<Identity> {
        let (_, start_time) = stat(pid).with_context(|| format!("process {pid} is not running"))?;
        let argv = cmdline(pid).with_context(|| format!("cannot read the command line of process {pid}"))?;
        Ok(Identity { pid, start_time, argv })
    }

    /// The identity of a process just started: it may still be in the middle of exec, which
    /// briefly shows an empty command line.
    pub fn of_new(pid: u32) -> Result<Identity> {
        for _ in 0..100 {
            let identity = Identity::of(pid)?;
            if !identity.argv.is_empty() {
                return Ok(identity);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Identity::of(pid)
    }

    pub fn liveness(&self) -> Liveness {
        match stat(self.pid) {
            None => Liveness::Gone,
            Some((state, start_time)) if start_time == self.start_time => {
                if state == 'Z' || state == 'X' {
                    Liveness::Gone
                } else {
                    Liveness::Running
                }
            }
            Some(_) => Liveness::Replaced(
                cmdline(self.pid)
                    .filter(|argv| !argv.is_empty())
                    .map_or_else(|| "an unknown program".to_owned(), |argv| argv.join(" ")),
            ),
        }
    }
}

/// Starts `program args` in `dir`, in a process group of its own (so a Ctrl-C meant for the
/// xtask does not reach it), with stdin closed and stdout + stderr appended to `log`.
pub fn spawn_detached(program: &Path, args: &[String], dir: &Path, log: &Path) -> Result<(Identity, duct::Handle)> {
    let mut log_file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open the log {}", log.display()))?;
    writeln!(log_file, "--- started by cargo xtask: {} {}", program.display(), args.join(" "))?;
    let handle = duct::cmd(program, args)
        .dir(dir)
        .stdin_null()
        // duct applies the outer redirection first: stdout to the log, then stderr to stdout.
        .stderr_to_stdout()
        .stdout_file(log_file)
        .unchecked()
        .before_spawn(|command| {
            command.process_group(0);
            // SAFETY: the hook only makes a raw syscall, which is async-signal-safe.
            unsafe { command.pre_exec(close_inherited_descriptors) };
            Ok(())
        })
        .start()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let pid = *handle.pids().first().context("duct started no process")?;
    Ok((Identity::of_new(pid)?, handle))
}

/// Marks every descriptor above stderr close-on-exec, so a long-running child holds no pipe of
/// whoever ran the xtask (`cargo xtask up | tee up.log` would otherwise never end). Kernels
/// before 5.11 lack the flag; there the child inherits what the xtask inherited.
fn close_inherited_descriptors() -> std::io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range(2) only changes descriptor flags.
    unsafe { libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC) };
    Ok(())
}

/// What [`stop`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// It was running and has exited.
    Stopped,
    /// It had already exited.
    WasGone,
    /// The pid belongs to another program now, which was left alone.
    LeftAlone(String),
}

/// Stops the process `identity` names, and its process group: SIGTERM, then SIGKILL after
/// `grace`. Signals only after checking that the pid still carries that identity.
pub fn stop(identity: &Identity, grace: Duration) -> Result<Stopped> {
    match identity.liveness() {
        Liveness::Gone => return Ok(Stopped::WasGone),
        Liveness::Replaced(now) => return Ok(Stopped::LeftAlone(now)),
        Liveness::Running => {}
    }
    for (signal, wait) in [(libc::SIGTERM, grace), (libc::SIGKILL, Duration::from_secs(5))] {
        signal_group(identity.pid, signal)?;
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if identity.liveness() != Liveness::Running {
                return Ok(Stopped::Stopped);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    bail!("process {} ({}) did not exit after SIGKILL", identity.pid, identity.argv.join(" "))
}

/// Signals the process group led by `pid` (a child started by [`spawn_detached`] leads its own),
/// or just the process if the group is gone.
fn signal_group(pid: u32, signal: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(-pid, signal) } == 0 || unsafe { libc::kill(pid, signal) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        return Ok(());
    }
    Err(err).with_context(|| format!("cannot signal process {pid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(label: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lre-process-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_detached_child_is_identified_stopped_and_logged() {
        let dir = scratch("stop");
        let log = dir.join("sleep.log");
        let sleep = which::which("sleep").unwrap();
        let (identity, handle) = spawn_detached(&sleep, &["300".into()], &dir, &log).unwrap();
        assert_eq!(identity.argv, [sleep.display().to_string(), "300".to_owned()]);
        assert_eq!(identity.liveness(), Liveness::Running);
        // Its own process group: a terminal's Ctrl-C to ours does not reach it.
        // SAFETY: getpgid(2) has no memory-safety preconditions.
        assert_eq!(unsafe { libc::getpgid(identity.pid as libc::pid_t) }, identity.pid as libc::pid_t);
        assert_eq!(stop(&identity, Duration::from_secs(5)).unwrap(), Stopped::Stopped);
        handle.wait().unwrap();
        assert_eq!(identity.liveness(), Liveness::Gone);
        assert_eq!(stop(&identity, Duration::from_secs(5)).unwrap(), Stopped::WasGone);
        assert!(std::fs::read_to_string(&log).unwrap().contains("--- started by cargo xtask:"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_pid_that_now_belongs_to_another_program_is_left_alone() {
        let mut other = std::process::Command::new("sleep").arg("300").spawn().unwrap();
        let mut recorded = Identity::of_new(other.id()).unwrap();
        recorded.start_time -= 1;
        let outcome = stop(&recorded, Duration::from_secs(1)).unwrap();
        assert!(matches!(&outcome, Stopped::LeftAlone(now) if now.contains("sleep 300")), "{outcome:?}");
        assert!(other.try_wait().unwrap().is_none(), "the other program was signalled");
        other.kill().unwrap();
        other.wait().unwrap();
    }

    #[test]
    fn parses_a_command_name_with_spaces_and_parentheses() {
        let line = "4242 (odd) name ) R 1 4242 4242 0 -1 4194560 120 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(parse_stat(line), Some(('R', 987654)));
        assert_eq!(parse_stat("4242 (truncated"), None);
        let ours = Identity::of(std::process::id()).unwrap();
        assert_eq!(ours.liveness(), Liveness::Running);
    }
}
