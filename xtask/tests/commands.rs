//! `run`, `doctor`, and what a killed `generate` leaves behind.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn run_refuses_a_stale_generated_tree_before_starting_bazel() {
    require("bazel");
    let dir = TempDir::new("run-stale");
    copy_repo(dir.path());
    let rc = dir.path().join("generated/lre.bazelrc");
    std::fs::write(
        &rc,
        std::fs::read_to_string(&rc).unwrap().replace("--define=EXECUTOR=remote", "--define=EXECUTOR=local"),
    )
    .unwrap();
    let started = Instant::now();
    let run = xtask(dir.path(), &["run"]).expect_failure("run with a stale generated/");
    assert!(
        run.stderr.contains("generated/ is stale") && run.stderr.contains("generated/lre.bazelrc is stale"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("cargo xtask generate"), "{}", run.stderr);
    assert!(!run.stderr.contains("bazel run"), "Bazel was started:\n{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!dir.path().join("bazel-bin").exists());
}

#[test]
fn doctor_reports_versions_staleness_and_impurity() {
    require("bazel");
    let doctor = xtask(&repo_root(), &["doctor"]).expect_success("doctor on the repository");
    for name in ["nix", "container runtime", "bazel", "kubectl", "kind", "skopeo", "nativelink"] {
        assert!(
            doctor.stdout.lines().any(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" ").starts_with(name)),
            "{name} missing from:\n{}",
            doctor.stdout
        );
    }
    assert!(doctor.stdout.contains("ok   in sync with lre/toolchains.toml"), "{}", doctor.stdout);
    assert!(doctor.stdout.contains("warn lre-cc: impure (host source"), "{}", doctor.stdout);
    if which::which("nix").is_err() {
        assert!(doctor.stdout.contains("missing (toolchains with source = \"nix\""), "{}", doctor.stdout);
    }

    let dir = TempDir::new("doctor-stale");
    copy_repo(dir.path());
    std::fs::remove_file(dir.path().join("generated/lre-java/BUILD")).unwrap();
    let stale = xtask(dir.path(), &["doctor"]).expect_failure("doctor with a stale generated/");
    assert!(
        stale.stdout.contains("FAIL stale") && stale.stdout.contains("generated/lre-java/BUILD is missing"),
        "{}",
        stale.stdout
    );
    assert!(stale.stderr.contains("blocking problems: generated/"), "{}", stale.stderr);
}

/// Kills `generate` at many points of its run; each time generated/ must be the old set or the
/// new set, never a mix, and the next run must clean up and finish.
#[test]
fn a_killed_generate_leaves_the_old_set_or_the_new_set() {
    let (old_copy, reference) = (TempDir::new("killed"), TempDir::new("killed-reference"));
    for dir in [&old_copy, &reference] {
        copy_repo(dir.path());
        write_manifest(dir.path(), &manifest_with("image = \"lre-java\"", "image = \"lre-java-next\""));
    }
    let generate = |root: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .env("SOURCE_DATE_EPOCH", "1795000000")
            .arg("--root")
            .arg(root)
            .arg("generate")
            .spawn()
            .unwrap()
    };
    assert!(generate(reference.path()).wait().unwrap().success());
    let new_set = snapshot(&reference.path().join("generated"));
    let generated = old_copy.path().join("generated");
    let old_set = snapshot(&generated);
    assert_ne!(old_set, new_set);

    let mut outcomes = (0, 0);
    for step in 0..24 {
        let mut child = generate(old_copy.path());
        std::thread::sleep(Duration::from_millis(step * 8));
        let _ = child.kill();
        let _ = child.wait();
        let now = snapshot(&generated);
        if now == old_set {
            outcomes.0 += 1;
        } else if now == new_set {
            outcomes.1 += 1;
            std::fs::remove_dir_all(&generated).unwrap();
            copy_recursively(&repo_root().join("generated"), &generated);
        } else {
            panic!("after a kill at {} ms generated/ is a mix:\n{:?}", step * 8, now.keys());
        }
    }
    eprintln!("kills that left the old set: {}, the new set: {}", outcomes.0, outcomes.1);
    assert!(generate(old_copy.path()).wait().unwrap().success());
    assert_eq!(snapshot(&generated), new_set);
    let leftovers: Vec<_> = std::fs::read_dir(old_copy.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".generated."))
        .collect();
    assert!(leftovers.is_empty(), "staging trees left behind: {leftovers:?}");
}

#[test]
fn run_remote_refuses_bad_endpoints_quickly_without_starting_bazel() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // A copy: nothing `cargo xtask up` may run in the checkout is a source of endpoints here.
    let dir = TempDir::new("run-remote-bad");
    copy_repo(dir.path());
    let cases: [(&[&str], &str); 5] = [
        (&["--remote-executor", &format!("grpc://127.0.0.1:{closed_port}")], "accepts no connection (tried 127.0.0.1:"),
        (&["--remote-executor", "127.0.0.1:50052"], "malformed endpoint \"127.0.0.1:50052\""),
        (
            &["--remote-executor", "grpcs://127.0.0.1:443", "--tls-ca", "/nonexistent/ca.pem"],
            "/nonexistent/ca.pem does not exist",
        ),
        (&[], "no remote endpoint is configured"),
        (
            &["--remote-cache", "grpc://127.0.0.1:1"],
            "no remote executor is configured (only the cache grpc://127.0.0.1:1)",
        ),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["run-remote"];
        args.extend_from_slice(flags);
        let started = Instant::now();
        let run = xtask(dir.path(), &args).expect_failure(&args.join(" "));
        assert!(started.elapsed() <= Duration::from_secs(3), "{args:?} took {:?}", started.elapsed());
        assert!(run.stderr.contains(expected), "{args:?}: expected {expected:?} in:\n{}", run.stderr);
        assert!(!run.stderr.contains("bazel run"), "Bazel was started:\n{}", run.stderr);
    }
}
