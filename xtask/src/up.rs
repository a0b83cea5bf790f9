//! `cargo xtask up`, `down` and `status`: NativeLink on this machine, configured from the facts.
//!
//! Everything lives under `.lre/up/`: the rendered configs, `state.json` (what runs, by
//! identity), `logs/`, and `data/` (the CAS, action cache and worker directories, kept across
//! `down` so the next `up` starts warm).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

use crate::facts::Facts;
use crate::nativelink::{self, ProcessConfig, Role, Topology};
use crate::process::{self, Identity, Liveness, Stopped};
use crate::remote::RemoteSettings;
use crate::version::Version;
use crate::{run, Project};

/// Names the `nativelink` binary to use instead of the one on PATH.
pub const NATIVELINK_VARIABLE: &str = "LRE_NATIVELINK";

/// How long a process may take to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long a worker must stay up after starting to count as started.
const WORKER_SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpOptions {
    /// The address every server binds.
    pub bind: IpAddr,
    /// The cache listens here, the scheduler on the next port, its worker API on the one after.
    pub port_base: u16,
    pub instance_name: String,
    /// How long to wait for every server to accept connections.
    pub timeout: Duration,
}

impl Default for UpOptions {
    fn default() -> UpOptions {
        UpOptions {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_base: 50051,
            instance_name: "main".to_owned(),
            timeout: Duration::from_secs(60),
        }
    }
}

/// What `up` started, recorded so `down`, `status` and `run-remote` can find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub nativelink: PathBuf,
    pub nativelink_version: String,
    /// Identifies the binary and every rendered config: `up` with the same digest is a no-op.
    pub digest: String,
    pub cache: String,
    pub executor: String,
    pub instance_name: String,
    pub processes: Vec<RecordedProcess>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedProcess {
    pub name: String,
    /// The addresses it listens on (none for a worker).
    pub listens: Vec<String>,
    pub config: PathBuf,
    pub log: PathBuf,
    pub identity: Identity,
}

struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn of(project: &Project) -> Layout {
        Layout { dir: project.local_dir().join("up") }
    }
    fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    fn config(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }
    fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
}

impl State {
    fn load(path: &Path) -> Result<Option<State>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        serde_json::from_str(&text).map(Some).with_context(|| {
            format!(
                "{} is not a state file this xtask wrote; stop what it lists by hand, then delete it",
                path.display()
            )
        })
    }

    fn save(&self, path: &Path) -> Result<()> {
        crate::fsx::write_atomic(path, &(serde_json::to_string_pretty(self)? + "\n"))
    }

    /// The endpoints, when the cache and the scheduler it records are still running.
    fn serving(&self) -> bool {
        self.processes.iter().filter(|p| !p.listens.is_empty()).all(|p| p.identity.liveness() == Liveness::Running)
    }
}

/// The endpoints `up` started, if they are running: a source of `run-remote`'s settings.
pub fn running_endpoints(project: &Project) -> Result<Option<RemoteSettings>> {
    let Some(state) = State::load(&Layout::of(project).state())? else { return Ok(None) };
    Ok(state.serving().then(|| RemoteSettings {
        cache: Some(state.cache.clone()),
        executor: Some(state.executor.clone()),
        instance_name: Some(state.instance_name.clone()),
        tls_ca: None,
    }))
}

/// The `nativelink` binary: `$LRE_NATIVELINK`, else the one on PATH.
pub fn find_nativelink() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(NATIVELINK_VARIABLE).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        let is_executable = std::fs::metadata(&path)
            .is_ok_and(|m| m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0);
        if !is_executable {
            bail!(
                "{NATIVELINK_VARIABLE}={} is not an executable file; point it at a `nativelink` binary",
                path.display()
            );
        }
        return Ok(path);
    }
    which::which("nativelink").map_err(|_| {
        anyhow::anyhow!(
            "no `nativelink` binary: it is not on PATH and {NATIVELINK_VARIABLE} is not set.\n\
             Inside `nix develop` the flake provides it. Elsewhere, build it from \
             https://github.com/TraceMachina/nativelink (a release tag, then `cargo build --release --bin nativelink`) \
             and set {NATIVELINK_VARIABLE}=/path/to/nativelink"
        )
    })
}

/// `nativelink --version`, refused below [`nativelink::MINIMUM_VERSION`].
fn nativelink_version(binary: &Path) -> Result<String> {
    let sh = Shell::new()?;
    let output = cmd!(sh, "{binary} --version").quiet().ignore_status().output()?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let version = Version::find_in(&text).with_context(|| {
        format!(
            "`{} --version` printed {text:?} (stderr: {}); is it NativeLink?",
            binary.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })?;
    if version < nativelink::MINIMUM_VERSION {
        bail!(
            "{} is NativeLink {version}; the configs this xtask renders need NativeLink {} or newer",
            binary.display(),
            nativelink::MINIMUM_VERSION
        );
    }
    Ok(version.to_string())
}

/// Where a client connects to reach a server bound to `bind` (a wildcard bind is reached on loopback).
fn connect_host(bind: IpAddr) -> IpAddr {
    match bind {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// The cache's, the scheduler's and the worker API's ports.
fn ports(options: &UpOptions) -> Result<[u16; 3]> {
    match options.port_base {
        0 | 65534.. => bail!("--port-base {} leaves no room for three ports", options.port_base),
        base => Ok([base, base + 1, base + 2]),
    }
}

fn client_url(bind: IpAddr, port: u16) -> String {
    format!("grpc://{}", SocketAddr::new(connect_host(bind), port))
}

fn topology(options: &UpOptions, data_dir: &Path) -> Result<Topology> {
    let [cache, scheduler, worker_api] = ports(options)?;
    let data_dir = data_dir.to_str().context("the repository path is not UTF-8")?;
    if data_dir.contains(['$', '~']) {
        bail!(
            "NativeLink expands `$` and `~` in config paths; move the repository to a path without them ({data_dir})"
        );
    }
    let listen = |port| SocketAddr::new(options.bind, port).to_string();
    Ok(Topology {
        cache_listen: listen(cache),
        scheduler_listen: listen(scheduler),
        worker_api_listen: listen(worker_api),
        cache_url: client_url(options.bind, cache),
        worker_api_url: client_url(options.bind, worker_api),
        instance_name: options.instance_name.clone(),
        data_dir: data_dir.to_owned(),
        cache_tls: None,
    })
}

fn listens(process: &ProcessConfig) -> Vec<String> {
    process.config["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|server| server["listener"]["http"]["socket_address"].as_str().map(str::to_owned))
        .collect()
}

fn digest(binary: &Path, version: &str, processes: &[ProcessConfig]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(binary.as_os_str().as_encoded_bytes());
    hasher.update([0]);
    hasher.update(version);
    for process in processes {
        hasher.update([0]);
        hasher.update(&process.name);
        hasher.update(process.config.to_string());
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `cargo xtask up`.
pub fn up(project: &Project, options: &UpOptions) -> Result<()> {
    run::ensure_fresh(project)?;
    let facts = Facts::load(&project.lock_path())?;
    let binary = find_nativelink()?;
    let version = nativelink_version(&binary)?;
    let layout = Layout::of(project);
    let data_dir = std::path::absolute(layout.data()).context("cannot resolve the data directory")?;
    let topology = topology(options, &data_dir)?;
    let processes = nativelink::render(&facts, &topology);
    let digest = digest(&binary, &version, &processes);

    if let Some(previous) = State::load(&layout.state())? {
        let all_running = previous.processes.iter().all(|p| p.identity.liveness() == Liveness::Running);
        if all_running && previous.digest == digest {
            println!("NativeLink {} is already running with this configuration.", previous.nativelink_version);
            print_endpoints(&previous);
            return Ok(());
        }
        println!(
            "Restarting: {}",
            if all_running { "the configuration changed" } else { "some processes have exited" }
        );
        stop_all(&previous)?;
        std::fs::remove_file(layout.state())?;
    }
    for process in &processes {
        for address in listens(process) {
            ensure_free(&address)?;
        }
    }

    std::fs::create_dir_all(layout.dir.join("logs"))?;
    std::fs::create_dir_all(&data_dir)?;
    let mut state = State {
        nativelink: binary.clone(),
        nativelink_version: version.clone(),
        digest,
        cache: topology.cache_url.clone(),
        executor: client_url(options.bind, ports(options)?[1]),
        instance_name: options.instance_name.clone(),
        processes: Vec::new(),
    };
    let interrupts = InterruptGuard::install();
    let mut handles = Vec::new();
    let started = start_all(&layout, &binary, &processes, options.timeout, &mut state, &mut handles);
    drop(interrupts);
    if let Err(err) = started {
        let stopped = stop_all(&state);
        for handle in &handles {
            let _ = handle.try_wait();
        }
        let _ = std::fs::remove_file(layout.state());
        stopped.context("while stopping what `up` had started")?;
        return Err(err);
    }
    println!("NativeLink {version} is up (logs in {}).", layout.dir.join("logs").display());
    print_endpoints(&state);
    Ok(())
}

fn start_all(
    layout: &Layout,
    binary: &Path,
    processes: &[ProcessConfig],
    timeout: Duration,
    state: &mut State,
    handles: &mut Vec<duct::Handle>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for process in processes {
        let config = layout.config(&process.name);
        crate::fsx::write_atomic(&config, &(serde_json::to_string_pretty(&process.config)? + "\n"))?;
        let log = layout.log(&process.name);
        eprintln!("starting {} ({})", process.name, config.display());
        let (identity, handle) = process::spawn_detached(binary, &[config.display().to_string()], &layout.dir, &log)?;
        handles.push(handle);
        let handle = handles.last().expect("just pushed");
        // Recorded at once, so `down` finds it even if this run is killed right now.
        state.processes.push(RecordedProcess {
            name: process.name.clone(),
            listens: listens(process),
            config,
            log: log.clone(),
            identity,
        });
        state.save(&layout.state())?;
        let fail = |why: String| -> anyhow::Error {
            anyhow::anyhow!(
                "NativeLink `{}` {why}. The end of {}:\n{}",
                process.name,
                log.display(),
                last_lines(&log, 20)
            )
        };
        let addresses = listens(process);
        let settle_until = Instant::now() + if process.role == Role::Worker { WORKER_SETTLE } else { Duration::ZERO };
        loop {
            if interrupted() {
                bail!("interrupted; stopping what was started");
            }
            if let Some(output) = handle.try_wait()? {
                return Err(fail(format!("exited ({}) while starting", output.status)));
            }
            let listening = addresses.iter().all(|address| accepts_connections(address));
            if listening && Instant::now() >= settle_until {
                break;
            }
            if Instant::now() > deadline {
                let waiting: Vec<_> = addresses.iter().filter(|a| !accepts_connections(a)).cloned().collect();
                return Err(fail(format!(
                    "does not accept connections on {} after {} s",
                    waiting.join(", "),
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

fn accepts_connections(address: &str) -> bool {
    let Ok(address) = address.parse::<SocketAddr>() else { return false };
    let address = SocketAddr::new(connect_host(address.ip()), address.port());
    TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
}

fn ensure_free(address: &str) -> Result<()> {
    let parsed: SocketAddr = address.parse().with_context(|| format!("{address} is not an address"))?;
    match TcpListener::bind(parsed) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "port {} on {} is already taken by another program (`ss -ltnp 'sport = :{}'` shows which); \
             stop it, or move NativeLink to other ports with `cargo xtask up --port-base N`",
            parsed.port(),
            parsed.ip(),
            parsed.port()
        ),
        Err(err) => Err(err).with_context(|| format!("cannot bind {address}")),
    }
}

/// Stops the recorded processes, last started first. Pids that now belong to other programs are
/// reported and left alone.
fn stop_all(state: &State) -> Result<()> {
    for process in state.processes.iter().rev() {
        let outcome = process::stop(&process.identity, STOP_GRACE)
            .with_context(|| format!("cannot stop `{}` (pid {})", process.name, process.identity.pid))?;
        match outcome {
            Stopped::Stopped => println!("stopped {} (pid {})", process.name, process.identity.pid),
            Stopped::WasGone => println!("{} (pid {}) had already exited", process.name, process.identity.pid),
            Stopped::LeftAlone(now) => println!(
                "{} (pid {}) had exited; that pid now belongs to another program ({now}), which was left alone",
                process.name, process.identity.pid
            ),
        }
    }
    Ok(())
}

/// `cargo xtask down`.
pub fn down(project: &Project) -> Result<()> {
    let layout = Layout::of(project);
    let Some(state) = State::load(&layout.state())? else {
        println!(
            "Nothing to stop: `cargo xtask up` has not started anything here ({} does not exist).",
            layout.state().display()
        );
        return Ok(());
    };
    stop_all(&state)?;
    std::fs::remove_file(layout.state()).with_context(|| format!("cannot remove {}", layout.state().display()))?;
    println!("NativeLink is down; its data stays in {} for the next `up`.", layout.data().display());
    Ok(())
}

/// `cargo xtask status`: fails when something `up` started is no longer running.
pub fn status(project: &Project) -> Result<()> {
    let layout = Layout::of(project);
    let Some(state) = State::load(&layout.state())? else {
        println!("Nothing is running: `cargo xtask up` starts NativeLink.");
        return Ok(());
    };
    println!("NativeLink {} ({})", state.nativelink_version, state.nativelink.display());
    let mut not_running = Vec::new();
    for process in &state.processes {
        let what = match process.identity.liveness() {
            Liveness::Running => "running".to_owned(),
            Liveness::Gone => "exited".to_owned(),
            Liveness::Replaced(now) => format!("exited (pid now used by {now})"),
        };
        if what != "running" {
            not_running.push(process.name.clone());
        }
        let listens =
            if process.listens.is_empty() { String::new() } else { format!(" on {}", process.listens.join(", ")) };
        println!(
            "  {:<22} pid {:<8} {what}{listens}  log {}",
            process.name,
            process.identity.pid,
            process.log.display()
        );
    }
    print_endpoints(&state);
    if !not_running.is_empty() {
        bail!(
            "not running: {}; `cargo xtask up` restarts everything (the end of each log says why it stopped)",
            not_running.join(", ")
        );
    }
    Ok(())
}

fn print_endpoints(state: &State) {
    println!("  remote cache:    {}", state.cache);
    println!("  remote executor: {}", state.executor);
    println!("  instance name:   {}", state.instance_name);
    println!("`cargo xtask run-remote` and `cargo xtask parity` use these while they run.");
}

fn last_lines(path: &Path, count: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

const INTERRUPTS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// While alive, Ctrl-C (and SIGTERM, SIGHUP) only set a flag, so `up` can stop what it started.
struct InterruptGuard;

impl InterruptGuard {
    fn install() -> InterruptGuard {
        INTERRUPTED.store(false, Ordering::SeqCst);
        for signal in INTERRUPTS {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            unsafe { libc::signal(signal, on_interrupt as *const () as libc::sighandler_t) };
        }
        InterruptGuard
    }
}

impl Drop for InterruptGuard {
    fn drop(&mut self) {
        for signal in INTERRUPTS {
            // SAFETY: restoring the default disposition has no preconditions.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_follow_the_base_and_a_wildcard_bind_is_reached_on_loopback() {
        let options = UpOptions { bind: "0.0.0.0".parse().unwrap(), port_base: 7000, ..Default::default() };
        let topology = topology(&options, Path::new("/r/.lre/up/data")).unwrap();
        assert_eq!(
            (topology.cache_listen.as_str(), topology.scheduler_listen.as_str(), topology.worker_api_listen.as_str()),
            ("0.0.0.0:7000", "0.0.0.0:7001", "0.0.0.0:7002")
        );
        assert_eq!(
            (topology.cache_url.as_str(), topology.worker_api_url.as_str()),
            ("grpc://127.0.0.1:7000", "grpc://127.0.0.1:7002")
        );
        let v6 = UpOptions { bind: "::".parse().unwrap(), ..Default::default() };
        assert_eq!(topology_of(&v6).cache_url, "grpc://[::1]:50051");
        let full = UpOptions { port_base: 65534, ..Default::default() };
        assert!(super::topology(&full, Path::new("/r")).unwrap_err().to_string().contains("no room for three ports"));
        let dollar = super::topology(&UpOptions::default(), Path::new("/home/$USER/r")).unwrap_err().to_string();
        assert!(dollar.contains("expands `$`"), "{dollar}");
    }

    fn topology_of(options: &UpOptions) -> Topology {
        topology(options, Path::new("/r")).unwrap()
    }

    #[test]
    fn a_taken_port_is_named_with_what_to_do() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let err = ensure_free(&taken.local_addr().unwrap().to_string()).unwrap_err().to_string();
        assert!(err.contains("is already taken") && err.contains("--port-base"), "{err}");
    }

    #[test]
    fn the_digest_follows_binary_and_configs() {
        let facts = crate::facts::sample("7.4.1");
        let configs = nativelink::render(&facts, &topology_of(&UpOptions::default()));
        let base = digest(Path::new("/bin/nativelink"), "1.4.0", &configs);
        assert_eq!(base, digest(Path::new("/bin/nativelink"), "1.4.0", &configs));
        assert_ne!(base, digest(Path::new("/other/nativelink"), "1.4.0", &configs));
        let moved = nativelink::render(&facts, &topology_of(&UpOptions { port_base: 6000, ..Default::default() }));
        assert_ne!(base, digest(Path::new("/bin/nativelink"), "1.4.0", &moved));
    }
}
