//! `up`, `down` and `status`, driven against a MOCK NativeLink (tests/stand_in_nativelink.py):
//! NativeLink is in no registry CI can reach. The stand-in reads the rendered configs and listens
//! where they say; what is tested here is the xtask's side: configs rendered from the facts,
//! readiness, identity-checked stops, Ctrl-C, and the refusals. tests/nativelink.rs runs the real
//! engine when LRE_NATIVELINK names a binary.

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use xtask::process::{Identity, Liveness};
use xtask::up::State;

fn stand_in() -> PathBuf {
    require("python3");
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stand_in_nativelink.py")
}

/// Runs the xtask on `root` with the stand-in as `nativelink` and `env` on top.
fn xtask_with(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command.env("LRE_NATIVELINK", stand_in()).envs(env.iter().copied()).arg("--root").arg(root).args(args);
    Run::from_output(command.output().unwrap())
}

fn state(root: &Path) -> Option<State> {
    let text = std::fs::read_to_string(root.join(".lre/up/state.json")).ok()?;
    Some(serde_json::from_str(&text).unwrap())
}

fn assert_all_gone(identities: &[Identity]) {
    for identity in identities {
        let deadline = Instant::now() + Duration::from_secs(5);
        while identity.liveness() == Liveness::Running && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_ne!(identity.liveness(), Liveness::Running, "{identity:?} still runs");
    }
}

#[test]
fn up_status_and_down_manage_exactly_what_up_started() {
    let dir = TempDir::new("up-cycle");
    copy_repo(dir.path());
    let base = free_port_block(3);
    let base_text = base.to_string();
    let up = xtask_with(dir.path(), &["up", "--port-base", &base_text], &[]).expect_success("up");
    assert!(up.stdout.contains(&format!("remote executor: grpc://127.0.0.1:{}", base + 1)), "{}", up.stdout);
    let started = state(dir.path()).expect("up writes its state");
    let names: Vec<_> = started.processes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["cas", "scheduler", "worker-lre-cc", "worker-lre-java"]);
    assert!(started.processes.iter().all(|p| p.identity.liveness() == Liveness::Running));

    // The workers advertise exactly what the generated platforms send.
    let mut advertised = BTreeSet::new();
    for worker in started.processes.iter().filter(|p| p.name.starts_with("worker-")) {
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&worker.config).unwrap()).unwrap();
        let properties = &config["workers"][0]["local"]["platform_properties"];
        advertised.insert(properties["container-image"]["values"][0].as_str().unwrap().to_owned());
        assert_eq!(properties["OSFamily"]["values"][0], "Linux");
    }
    assert_eq!(advertised, platform_images(dir.path()));

    // Every server binds loopback.
    for process in &started.processes {
        assert!(process.listens.iter().all(|a| a.starts_with("127.0.0.1:")), "{:?}", process.listens);
    }

    let status = xtask_with(dir.path(), &["status"], &[]).expect_success("status");
    assert_eq!(status.stdout.matches(" running").count(), 4, "{}", status.stdout);

    let again = xtask_with(dir.path(), &["up", "--port-base", &base_text], &[]).expect_success("up again");
    assert!(again.stdout.contains("already running with this configuration"), "{}", again.stdout);
    assert_eq!(state(dir.path()).unwrap(), started, "a second `up` restarted something");

    // run-remote and parity find the endpoints when nothing else names them.
    let project = xtask::Project::new(dir.path());
    let settings = xtask::remote::RemoteSettings::resolve(&project, Default::default()).unwrap();
    assert_eq!(settings.executor, Some(format!("grpc://127.0.0.1:{}", base + 1)));
    assert_eq!(settings.cache, Some(format!("grpc://127.0.0.1:{base}")));
    assert_eq!(settings.instance_name.as_deref(), Some("main"));

    let down = xtask_with(dir.path(), &["down"], &[]).expect_success("down");
    assert_eq!(down.stdout.matches("stopped ").count(), 4, "{}", down.stdout);
    assert_all_gone(&started.processes.iter().map(|p| p.identity.clone()).collect::<Vec<_>>());
    assert!(state(dir.path()).is_none());
    assert!(dir.path().join(".lre/up/logs/scheduler.log").is_file(), "logs are kept");
    let settings = xtask::remote::RemoteSettings::resolve(&project, Default::default()).unwrap();
    assert_eq!(settings.executor, None, "a stopped `up` is no source of endpoints");

    let nothing = xtask_with(dir.path(), &["down"], &[]).expect_success("down with nothing running");
    assert!(nothing.stdout.contains("Nothing to stop"), "{}", nothing.stdout);
    let idle = xtask_with(dir.path(), &["status"], &[]).expect_success("status with nothing running");
    assert!(idle.stdout.contains("Nothing is running"), "{}", idle.stdout);
}

#[test]
fn up_refuses_a_taken_port_before_starting_anything() {
    let dir = TempDir::new("up-taken");
    copy_repo(dir.path());
    let base = free_port_block(3);
    let _taken = std::net::TcpListener::bind(("127.0.0.1", base + 2)).unwrap();
    let run =
        xtask_with(dir.path(), &["up", "--port-base", &base.to_string()], &[]).expect_failure("up on a taken port");
    assert!(run.stderr.contains(&format!("port {} on 127.0.0.1 is already taken", base + 2)), "{}", run.stderr);
    assert!(run.stderr.contains("--port-base"), "{}", run.stderr);
    assert!(!dir.path().join(".lre/up").exists(), "up wrote something before refusing");
}

#[test]
fn a_process_failing_at_start_is_reported_with_its_log_and_the_rest_stopped() {
    let dir = TempDir::new("up-fails");
    copy_repo(dir.path());
    let base = free_port_block(3).to_string();
    let run = xtask_with(dir.path(), &["up", "--port-base", &base], &[("STAND_IN_EXIT_FOR", "worker-lre-java")])
        .expect_failure("up with a worker that fails");
    assert!(run.stderr.contains("NativeLink `worker-lre-java` exited"), "{}", run.stderr);
    assert!(run.stderr.contains("simulated failure at start"), "the log's end is not shown:\n{}", run.stderr);
    assert_eq!(run.stdout.matches("stopped ").count(), 3, "{}", run.stdout);
    assert!(state(dir.path()).is_none());
    assert_no_stand_in_runs_under(dir.path());
}

#[test]
fn up_waits_no_longer_than_its_timeout() {
    let dir = TempDir::new("up-timeout");
    copy_repo(dir.path());
    let base = free_port_block(3).to_string();
    let started = Instant::now();
    let run = xtask_with(
        dir.path(),
        &["up", "--port-base", &base, "--timeout", "2"],
        &[("STAND_IN_DELAY_FOR", "scheduler"), ("STAND_IN_DELAY_SECONDS", "60")],
    )
    .expect_failure("up with a scheduler that never listens");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(run.stderr.contains("NativeLink `scheduler` does not accept connections on 127.0.0.1:"), "{}", run.stderr);
    assert!(run.stderr.contains("after 2 s"), "{}", run.stderr);
    assert_no_stand_in_runs_under(dir.path());
}

#[test]
fn ctrl_c_during_up_leaves_no_orphans() {
    let dir = TempDir::new("up-ctrl-c");
    copy_repo(dir.path());
    let base = free_port_block(3).to_string();
    let up = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .env("LRE_NATIVELINK", stand_in())
        .env("STAND_IN_DELAY_FOR", "scheduler")
        .env("STAND_IN_DELAY_SECONDS", "60")
        .args(["--root", dir.path().to_str().unwrap(), "up", "--port-base", &base])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // A terminal sends Ctrl-C to its foreground process group: give `up` one of its own.
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while state(dir.path()).is_none_or(|s| s.processes.len() < 2) {
        assert!(Instant::now() < deadline, "up never started the scheduler");
        std::thread::sleep(Duration::from_millis(50));
    }
    let recorded: Vec<Identity> = state(dir.path()).unwrap().processes.into_iter().map(|p| p.identity).collect();
    // SAFETY: kill(2) has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(-(up.id() as libc::pid_t), libc::SIGINT) }, 0);
    let output = up.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_all_gone(&recorded);
    assert!(state(dir.path()).is_none());
    assert_no_stand_in_runs_under(dir.path());
}

#[test]
fn a_recorded_pid_now_used_by_another_program_is_left_alone() {
    let dir = TempDir::new("up-stale");
    copy_repo(dir.path());
    let mut other = Command::new("sleep").arg("300").spawn().unwrap();
    let mut identity = Identity::of_new(other.id()).unwrap();
    identity.start_time += 1; // what `up` recorded for the process that used to have this pid
    let stale = State {
        nativelink: stand_in(),
        nativelink_version: "1.4.0".into(),
        digest: "0".into(),
        cache: "grpc://127.0.0.1:1".into(),
        executor: "grpc://127.0.0.1:2".into(),
        instance_name: "main".into(),
        processes: vec![xtask::up::RecordedProcess {
            name: "cas".into(),
            listens: vec!["127.0.0.1:1".into()],
            config: dir.path().join(".lre/up/cas.json"),
            log: dir.path().join(".lre/up/logs/cas.log"),
            identity,
        }],
    };
    std::fs::create_dir_all(dir.path().join(".lre/up")).unwrap();
    std::fs::write(dir.path().join(".lre/up/state.json"), serde_json::to_string(&stale).unwrap()).unwrap();

    let status = xtask_with(dir.path(), &["status"], &[]).expect_failure("status with a stale pid");
    assert!(status.stdout.contains("exited (pid now used by sleep 300)"), "{}", status.stdout);
    assert!(status.stderr.contains("not running: cas"), "{}", status.stderr);
    let down = xtask_with(dir.path(), &["down"], &[]).expect_success("down with a stale pid");
    assert!(
        down.stdout.contains("now belongs to another program (sleep 300), which was left alone"),
        "{}",
        down.stdout
    );
    assert!(other.try_wait().unwrap().is_none(), "down signalled a program it did not start");
    other.kill().unwrap();
    other.wait().unwrap();
}

#[test]
fn a_missing_or_too_old_nativelink_is_refused_with_where_to_get_one() {
    let dir = TempDir::new("up-no-binary");
    copy_repo(dir.path());
    let missing = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .env_remove("LRE_NATIVELINK")
        .env("PATH", "/usr/bin:/bin")
        .args(["--root", dir.path().to_str().unwrap(), "up"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert!(
        stderr.contains("no `nativelink` binary") && stderr.contains("LRE_NATIVELINK=/path/to/nativelink"),
        "{stderr}"
    );
    assert!(stderr.contains("nix develop") && stderr.contains("github.com/TraceMachina/nativelink"), "{stderr}");

    let wrong = xtask_with(dir.path(), &["up"], &[("LRE_NATIVELINK", "/nonexistent/nativelink")])
        .expect_failure("up with a bad path");
    assert!(
        wrong.stderr.contains("LRE_NATIVELINK=/nonexistent/nativelink is not an executable file"),
        "{}",
        wrong.stderr
    );

    let old =
        xtask_with(dir.path(), &["up"], &[("STAND_IN_VERSION", "0.5.3")]).expect_failure("up with NativeLink 0.5.3");
    assert!(
        old.stderr.contains("is NativeLink 0.5.3; the configs this xtask renders need NativeLink 0.7.2 or newer"),
        "{}",
        old.stderr
    );
    assert!(!dir.path().join(".lre/up").exists());
}

/// No process whose command line mentions `root` (the stand-in is given configs under it).
fn assert_no_stand_in_runs_under(root: &Path) {
    let root = root.to_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let survivors: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| Identity::of(pid).ok())
            .filter(|identity| identity.liveness() == Liveness::Running)
            .filter(|identity| identity.argv.iter().any(|arg| arg.contains(root) && arg.ends_with(".json")))
            .map(|identity| format!("{} {}", identity.pid, identity.argv.join(" ")))
            .collect();
        if survivors.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "orphans left running: {survivors:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
