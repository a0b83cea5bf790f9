//! Local and remote share one cache: a build with the LRE toolchain uploads to a real REAPI
//! server (BuildGrid), and a build from a second output base and from a second checkout at
//! another path hit the remote cache for every compile and link action.

mod common;

use common::*;

#[test]
fn a_second_output_base_and_a_second_checkout_hit_the_remote_cache_for_every_action() {
    let _turn = bazel_lock();
    let grid = BuildGrid::start();
    let remote_cache = format!("--remote_cache={}", grid.url);
    let instance = format!("--remote_instance_name={}", grid.instance_name);
    let build = ["build", "--config=lre", remote_cache.as_str(), instance.as_str(), "//examples/..."];

    let (first, second) = (TempDir::new("cache-checkout-a"), TempDir::new("cache-checkout-b"));
    copy_repo(first.path());
    copy_repo(second.path());
    // The offline overrides (if this machine needs them) come from the xtask, as for users.
    xtask(first.path(), &["bazel", "info", "release"]).expect_success("preparing checkout a");
    xtask(second.path(), &["bazel", "info", "release"]).expect_success("preparing checkout b");

    let uploading = Bazel::new(first.path()).expunge_on_drop();
    let summary = process_summary(&uploading.run(&build).expect_success("the first build").stderr);
    let executed: u64 = summary.iter().filter(|(kind, _)| *kind != "internal").map(|(_, n)| n).sum();
    assert!(executed >= 6, "the first build should compile and link locally: {summary:?}");

    let clean_output = first.path().join("second-output-base");
    for (label, bazel) in [
        ("a second output base", Bazel::with_output_base(first.path(), &clean_output)),
        ("a second checkout at another path", Bazel::new(second.path()).expunge_on_drop()),
    ] {
        let summary = process_summary(&bazel.run(&build).expect_success(label).stderr);
        let not_hits: Vec<_> =
            summary.iter().filter(|(kind, _)| *kind != "internal" && *kind != "remote cache hit").collect();
        assert!(not_hits.is_empty(), "{label}: actions that missed the cache: {summary:?}");
        assert_eq!(summary.get("remote cache hit"), Some(&executed), "{label}: {summary:?}");
    }
}

#[test]
fn parity_reports_bazels_own_hit_rate_and_names_an_environment_difference() {
    let _turn = bazel_lock();
    let grid = BuildGrid::start();
    let dir = TempDir::new("parity");
    copy_repo(dir.path());
    let remote = ["--remote-cache", grid.url.as_str(), "--remote-instance-name", grid.instance_name];

    let mut args = vec!["parity", "//examples/..."];
    args.extend(remote);
    let run = xtask(dir.path(), &args).expect_success("parity against BuildGrid");
    let summary = process_summary(&run.stderr);
    let hits = summary["remote cache hit"];
    let actions: u64 = summary.iter().filter(|(kind, _)| *kind != "internal").map(|(_, n)| n).sum();
    assert!(hits >= 6 && hits == actions, "Bazel's summary of the second build: {summary:?}");
    assert!(
        run.stdout.contains(&format!("second build: {hits} of {actions} actions were remote cache hits (100.0 %)")),
        "{}",
        run.stdout
    );

    // A difference only the second build has: a variable no earlier build can have cached.
    let probe = format!("--action_env=LRE_PARITY_PROBE={}", std::process::id());
    args.extend(["--second-build-arg", probe.as_str()]);
    let run = xtask(dir.path(), &args).expect_failure("parity with a different environment");
    let summary = process_summary(&run.stderr);
    assert_eq!(summary.get("remote cache hit"), None, "{summary:?}");
    assert!(
        run.stdout.contains(&format!("second build: 0 of {actions} actions were remote cache hits (0.0 %)")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("causes of the misses:\n  environment variable LRE_PARITY_PROBE: {actions} action(s)")),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("below the threshold 100 %"), "{}", run.stderr);
    let _ = std::process::Command::new(require("bazel"))
        .current_dir(dir.path())
        .arg(format!("--output_base={}", dir.path().join(".lre/parity/output-base").display()))
        .args(["clean", "--expunge"])
        .output();
}
