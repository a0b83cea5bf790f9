//! Long-running processes the xtask starts and stops: recorded with enough identity (pid, start
//! time, executable) that a later `down` signals exactly them, never a program that has since
//! been given the same pid.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::fsx;

/// A started process, as recorded in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    pub name: String,
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat`, field 22).
    pub start_time: u64,
    pub executable: PathBuf,
    pub log: PathBuf,
    /// Loopback ports it serves.
    pub ports: Vec<u16>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Running, and still the process that was started.
    Ours,
    Gone,
    /// The pid now belongs to another program; it must be left alone.
    Replaced,
}

impl Recorded {
    /// Records the identity of a just-started `pid`.
    pub fn of(name: &str, pid: i32, log: &Path, ports: &[u16]) -> Result<Recorded> {
        let (start_time, executable) = identity(pid).with_context(|| format!("{name} (pid {pid}) exited right after it started"))?;
        Ok(Recorded { name: name.to_owned(), pid, start_time, executable, log: log.to_path_buf(), ports: ports.to_vec() })
    }

    pub fn liveness(&self) -> Liveness {
        match identity(self.pid) {
            None => Liveness::Gone,
            Some((start_time, executable)) if start_time == self.start_time && executable == self.executable => Liveness::Ours,
            Some(_) => Liveness::Replaced,
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; only if the pid is still ours.
    pub fn stop(&self, grace: Duration) -> Result<Liveness> {
        let liveness = self.liveness();
        if liveness != Liveness::Ours {
            return Ok(liveness);
        }
        signal(self.pid, libc::SIGTERM)?;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.liveness() != Liveness::Ours {
                return Ok(Liveness::Ours);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.liveness() == Liveness::Ours {
            signal(self.pid, libc::SIGKILL)?;
        }
        Ok(Liveness::Ours)
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn signal(pid: i32, signal: libc::c_int) -> Result<()> {
    // SAFETY: kill has no memory-safety preconditions; the pid was checked to be ours just before.
    if unsafe { libc::kill(pid, signal) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err).with_context(|| format!("cannot signal pid {pid}"));
        }
    }
    Ok(())
}

/// A process's start time and executable, or `None` when it does not exist (or is a zombie).
pub fn identity(pid: i32) -> Option<(u64, PathBuf)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    let start_time = fields.get(19)?.parse().ok()?;
    let executable = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    Some((start_time, executable))
}

/// The state file of a set of processes.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub processes: Vec<Recorded>,
}

impl State {
    pub fn load(path: &Path) -> Result<Option<State>> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .with_context(|| format!("{} is not a state file of this xtask; remove it", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        fsx::write_atomic(path, &(serde_json::to_string_pretty(self)? + "\n"))
    }
}

/// Fails naming the port when something already listens on 127.0.0.1:`port`.
pub fn ensure_port_free(port: u16, purpose: &str) -> Result<()> {
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        bail!("port {port} on 127.0.0.1 ({purpose}) is already taken by another program; stop it or choose another port");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_running_processes_and_notices_replacement() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let log = std::env::temp_dir().join("lre-processes-test.log");
        let recorded = Recorded::of("sleeper", pid, &log, &[]).unwrap();
        assert_eq!(recorded.liveness(), Liveness::Ours);
        assert!(recorded.executable.ends_with("sleep"), "{:?}", recorded.executable);

        let mut impostor = recorded.clone();
        impostor.start_time += 1;
        assert_eq!(impostor.liveness(), Liveness::Replaced);
        assert_eq!(impostor.stop(Duration::from_millis(100)).unwrap(), Liveness::Replaced);
        assert!(child.try_wait().unwrap().is_none(), "a replaced pid must not be signalled");

        assert_eq!(recorded.stop(Duration::from_secs(2)).unwrap(), Liveness::Ours);
        child.wait().unwrap();
        assert_eq!(recorded.liveness(), Liveness::Gone);
    }

    #[test]
    fn a_taken_port_is_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let err = ensure_port_free(port, "CAS").unwrap_err().to_string();
        assert!(err.contains(&format!("port {port} on 127.0.0.1 (CAS) is already taken")), "{err}");
    }
}
