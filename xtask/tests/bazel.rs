//! Real Bazel builds through the generated toolchains: gcc and clang, the Java runtime, and a
//! downstream workspace that uses this repository as `@local-remote-execution`.

mod common;

use std::path::Path;

use common::*;

const SELECTED_CC: &str =
    "execution @local-remote-execution//generated/config:lre-cc: Selected toolchain @local-remote-execution//generated/lre-cc:cc_toolchain";

/// Bazel's test summary says `target` PASSED.
fn passed(summary: &str, target: &str) -> bool {
    summary.lines().any(|line| line.starts_with(target) && line.contains(" PASSED in "))
}

fn comment_section(binary: &Path) -> String {
    let output = std::process::Command::new(require("readelf")).args(["-p", ".comment"]).arg(binary).output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Builds, tests and runs the examples in the repository (or copy) at `root`, and returns the
/// `.comment` section of the built `hello_lre` (which names the compiler that built it).
fn build_test_and_run_examples(root: &Path) -> String {
    let run = xtask(root, &["run", "--", "--toolchain_resolution_debug"]).expect_success("cargo xtask run");
    assert!(run.stdout.contains("Hello from LRE!"), "hello_lre output:\n{}", run.stdout);
    assert!(run.stderr.contains(SELECTED_CC), "the generated C++ toolchain was not selected:\n{}", run.stderr);
    assert!(
        !run.stderr.contains("@local_config_cc//:cc-compiler-k8"),
        "Bazel's autodetected toolchain took part:\n{}",
        run.stderr
    );

    let test =
        xtask(root, &["bazel", "test", "--config=lre", "//examples/..."]).expect_success("bazel test //examples/...");
    for target in ["//examples/greeting:greeting_test", "//examples/java:hello_test"] {
        assert!(passed(&test.stdout, target), "{target} did not pass:\n{}", test.stdout);
    }
    assert!(test.stdout.contains("2 tests pass"), "{}", test.stdout);

    let java =
        xtask(root, &["bazel", "run", "--config=lre", "//examples/java:java_version"]).expect_success("java -version");
    assert!(
        java.stdout.contains("openjdk version \"17") || java.stderr.contains("openjdk version \"17"),
        "{}{}",
        java.stdout,
        java.stderr
    );
    let hello = xtask(root, &["bazel", "run", "--config=lre", "//examples/java:hello", "--", "Bazel"])
        .expect_success("java hello");
    assert!(hello.stdout.contains("Hello from Bazel!"), "{}", hello.stdout);

    comment_section(&root.join("bazel-bin/examples/hello_lre"))
}

#[test]
fn gcc_toolchain_builds_tests_and_runs_the_examples() {
    let _turn = bazel_lock();
    let root = repo_root();
    let _server = Bazel::new(&root);
    let comment = build_test_and_run_examples(&root);
    assert!(comment.contains("GCC: ("), "hello_lre was not built by gcc:\n{comment}");
    assert!(!comment.contains("clang version"), "{comment}");
}

#[test]
fn clang_toolchain_builds_tests_and_runs_the_examples() {
    let _turn = bazel_lock();
    require("clang");
    let dir = TempDir::new("clang-workspace");
    copy_repo(dir.path());
    write_manifest(dir.path(), &manifest_with("CC = \"gcc\"", "CC = \"clang\""));
    xtask(dir.path(), &["generate"]).expect_success("generate with clang");
    let _server = Bazel::new(dir.path()).expunge_on_drop();
    let comment = build_test_and_run_examples(dir.path());
    assert!(comment.contains("clang version"), "hello_lre was not built by clang:\n{comment}");
}

#[test]
fn a_downstream_workspace_builds_and_tests_with_the_generated_toolchain() {
    let _turn = bazel_lock();
    let root = repo_root();
    xtask(&root, &["bazel", "info", "release"]).expect_success("preparing this machine's Bazel overrides");
    let dir = TempDir::new("consumer");
    copy_recursively(&root.join("xtask/tests/consumer"), dir.path());
    std::fs::write(
        dir.path().join("WORKSPACE"),
        format!(
            "workspace(name = \"consumer\")\n\nlocal_repository(\n    name = \"local-remote-execution\",\n    path = \"{}\",\n)\n",
            root.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join(".bazelrc"),
        format!(
            "try-import {root}/generated/lre.bazelrc\ntry-import {root}/.lre/local.bazelrc\n",
            root = root.display()
        ),
    )
    .unwrap();
    let bazel = Bazel::new(dir.path()).expunge_on_drop();
    let test = bazel
        .run(&[
            "test",
            "--config=lre",
            "--toolchain_resolution_debug",
            "//lib:all",
            "@local-remote-execution//examples/greeting:all",
        ])
        .expect_success("bazel test in the consumer");
    assert!(passed(&test.stdout, "//lib:checksum_test"), "{}", test.stdout);
    assert!(passed(&test.stdout, "@local-remote-execution//examples/greeting:greeting_test"), "{}", test.stdout);
    assert!(test.stderr.contains(SELECTED_CC), "the consumer did not use the generated toolchain:\n{}", test.stderr);
    let hello = bazel.run(&["run", "--config=lre", "@local-remote-execution//examples:hello_lre", "--", "Consumer"]);
    let hello = hello.expect_success("running hello_lre from the consumer");
    assert!(hello.stdout.contains("Hello from Consumer!"), "{}", hello.stdout);
}
