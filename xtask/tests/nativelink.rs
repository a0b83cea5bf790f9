//! Real remote execution on NativeLink, started by `cargo xtask up`.
//!
//! OPT-IN: NativeLink is in no package registry this project's CI reaches, so this test runs only
//! when LRE_NATIVELINK names a `nativelink` binary (0.7.2 or newer), and says so when it does not
//! run (`cargo xtask test` prints the same).

mod common;

use std::path::Path;

use common::*;

/// Runs `cargo xtask down` in `root` when dropped, so a failing test leaves nothing running.
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = xtask(self.0, &["down"]);
    }
}

#[test]
fn up_then_run_remote_parity_and_remote_tests_on_real_nativelink() {
    if std::env::var_os("LRE_NATIVELINK").is_none_or(|v| v.is_empty()) {
        eprintln!("DID NOT RUN: set LRE_NATIVELINK=/path/to/nativelink to run remote execution on real NativeLink");
        return;
    }
    let _turn = bazel_lock();
    let dir = TempDir::new("nativelink");
    copy_repo(dir.path());
    let base = free_port_block(3);
    let up = xtask(dir.path(), &["up", "--port-base", &base.to_string()]).expect_success("up");
    let _down = Down(dir.path());
    eprintln!("{}", up.stdout);
    let _bazel = Bazel::new(dir.path()).expunge_on_drop();

    // On a cold cache, a local build uploads; a clean build executing on NativeLink then hits
    // the cache for every action.
    let parity = xtask(dir.path(), &["parity", "//examples/..."]).expect_success("parity on NativeLink");
    assert!(parity.stdout.contains("actions were remote cache hits (100.0 %)"), "{}", parity.stdout);
    let first = process_summary(parity.stderr.split("parity: second build").next().unwrap());
    assert!(!first.contains_key("remote cache hit"), "the cache was not cold: {first:?}");

    // run-remote finds what parity's local build cached...
    let run = xtask(dir.path(), &["run-remote", "//examples:hello_lre"]).expect_success("run-remote");
    assert!(run.stdout.contains("Hello from LRE!"), "{}", run.stdout);
    let summary = process_summary(&run.stderr);
    assert!(summary.keys().all(|kind| kind == "remote cache hit" || kind == "internal"), "{summary:?}");
    // ...and, from a clean output and told not to read the cache, compiles and links on the workers `up` started.
    xtask(dir.path(), &["bazel", "clean"]).expect_success("bazel clean");
    let run = xtask(dir.path(), &["run-remote", "//examples:hello_lre", "--", "--noremote_accept_cached"])
        .expect_success("run-remote");
    assert!(run.stdout.contains("Hello from LRE!"), "{}", run.stdout);
    let summary = process_summary(&run.stderr);
    assert!(summary.get("remote").is_some_and(|n| *n >= 2), "not executed remotely: {summary:?}");

    // Tests too, C and Java, on the worker of their toolchain.
    let project = xtask::Project::new(dir.path());
    let settings = xtask::remote::RemoteSettings::resolve(&project, Default::default()).unwrap();
    let remote = xtask::remote::Remote::from_settings(&settings).unwrap();
    let mut args =
        vec!["bazel".to_owned(), "test".to_owned(), "--config=lre".to_owned(), "--noremote_accept_cached".to_owned()];
    args.extend(remote.cache_flags());
    args.extend(remote.execution_flags());
    args.push("//examples/...".to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let test = xtask(dir.path(), &args).expect_success("remote bazel test");
    let summary = process_summary(&test.stderr);
    assert!(
        summary.keys().all(|kind| kind == "remote" || kind == "internal"),
        "some actions ran elsewhere: {summary:?}"
    );
    assert!(test.stdout.contains("2 tests pass"), "{}", test.stdout);

    let down = xtask(dir.path(), &["down"]).expect_success("down");
    assert_eq!(down.stdout.matches("stopped ").count(), 4, "{}", down.stdout);
}
