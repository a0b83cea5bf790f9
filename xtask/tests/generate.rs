//! `cargo xtask generate` end to end, with the real compilers and JDK of this machine.

mod common;

use std::process::Command;

use common::*;

fn facts(root: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(root.join("generated/lre.lock.json")).unwrap()).unwrap()
}

fn command_output(program: &str, args: &[&str]) -> String {
    let output = Command::new(require(program)).args(args).output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

#[test]
fn checked_in_generated_files_match_their_facts() {
    xtask(&repo_root(), &["generate", "--check"]).expect_success("generate --check on the repository");
}

#[test]
fn an_edited_generated_file_fails_the_check_with_a_diff_and_nothing_is_written() {
    let dir = TempDir::new("edited");
    copy_repo(dir.path());
    let build = dir.path().join("generated/lre-cc/BUILD");
    let edited = std::fs::read_to_string(&build).unwrap().replace("\"-Wall\"", "\"-Wextra\"");
    std::fs::write(&build, &edited).unwrap();
    let before = snapshot(dir.path());
    let run = xtask(dir.path(), &["generate", "--check"]).expect_failure("--check with an edited file");
    assert!(run.stderr.contains("generated/lre-cc/BUILD is stale"), "{}", run.stderr);
    assert!(
        run.stderr.contains("-        \"-Wextra\",") && run.stderr.contains("+        \"-Wall\","),
        "{}",
        run.stderr
    );
    assert_eq!(snapshot(dir.path()), before, "--check wrote something");

    std::fs::write(dir.path().join("generated/notes.txt"), "mine").unwrap();
    std::fs::remove_file(dir.path().join("generated/lre.bazelrc")).unwrap();
    let run = xtask(dir.path(), &["generate", "--check"]).expect_failure("--check with extra and missing files");
    assert!(run.stderr.contains("generated/notes.txt is not produced by the generator"), "{}", run.stderr);
    assert!(run.stderr.contains("generated/lre.bazelrc is missing"), "{}", run.stderr);
}

#[test]
fn a_manifest_edit_without_regenerating_fails_the_check() {
    let dir = TempDir::new("manifest-edit");
    copy_repo(dir.path());
    write_manifest(dir.path(), &manifest_with("image = \"lre-cc\"", "image = \"lre-cc-next\""));
    let run = xtask(dir.path(), &["generate", "--check"]).expect_failure("--check after a manifest edit");
    assert!(
        run.stderr.contains("lre-cc: image is lre-cc-next in the manifest but lre-cc in the facts"),
        "{}",
        run.stderr
    );
}

#[test]
fn output_is_byte_identical_across_runs_and_checkout_paths() {
    let (first, second) = (TempDir::new("checkout-a"), TempDir::new("checkout-b"));
    for dir in [&first, &second] {
        copy_repo(dir.path());
        std::fs::remove_dir_all(dir.path().join("generated")).unwrap();
    }
    // The same second for both, as two developers regenerating the same toolchain would record
    // different times; everything else must agree byte for byte.
    let generate = |root: &std::path::Path| {
        let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .env("SOURCE_DATE_EPOCH", "1795000000")
            .args(["--root".as_ref(), root.as_os_str(), "generate".as_ref()])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    generate(first.path());
    let once = snapshot(&first.path().join("generated"));
    generate(first.path());
    assert_eq!(snapshot(&first.path().join("generated")), once, "a second run changed generated/");
    generate(second.path());
    assert_eq!(snapshot(&second.path().join("generated")), once, "another checkout path changed generated/");
    assert!(once.keys().any(|p| p.ends_with("lre-cc/BUILD")) && once.len() == 12, "{:?}", once.keys());
    xtask(first.path(), &["generate", "--check", "--reprobe"]).expect_success("reprobe check right after generate");
}

#[test]
fn facts_record_what_the_gcc_and_jdk_of_this_machine_report() {
    let dir = TempDir::new("facts-gcc");
    copy_repo(dir.path());
    write_manifest(dir.path(), &manifest_with("CC = \"gcc\"", "CC = \"gcc\", BAZEL_LINKOPTS = \"-Wl,-O1\""));
    xtask(dir.path(), &["generate"]).expect_success("generate");
    let facts = facts(dir.path());
    let cc = &facts["toolchains"]["lre-cc"]["cc"];
    assert_eq!(cc["compiler"], "gcc");
    assert_eq!(cc["version"], command_output("gcc", &["-dumpfullversion"]).trim());
    assert_eq!(cc["target_triple"], command_output("gcc", &["-dumpmachine"]).trim());
    assert_eq!(cc["link_options"], serde_json::json!(["-Wl,-O1"]));
    for dir in cc["include_dirs"]["cxx"].as_array().unwrap() {
        assert!(std::path::Path::new(dir.as_str().unwrap()).is_dir(), "{dir} is not a directory");
    }
    for (tool, path) in cc["tools"].as_object().unwrap() {
        if let Some(path) = path.as_str() {
            assert!(std::path::Path::new(path).is_file(), "{tool} = {path} does not exist");
        }
    }
    assert_eq!(cc["flags"]["-fno-canonical-system-headers"], true, "gcc accepts it");
    assert_eq!(cc["flags"]["-Wthread-safety"], false, "gcc rejects it");
    let glibc = command_output("ldd", &["--version"]);
    assert!(glibc.lines().next().unwrap().ends_with(cc["libc"]["version"].as_str().unwrap()), "{glibc}");
    let provenance = &facts["toolchains"]["lre-cc"]["provenance"];
    assert_eq!((provenance["source"].as_str(), provenance["hermetic"].as_bool()), (Some("host"), Some(false)));

    let java = &facts["toolchains"]["lre-java"]["java"];
    let settings = command_output("/usr/lib/jvm/java-17-openjdk-amd64/bin/java", &["-version"]);
    assert!(settings.contains(&format!("\"{}\"", java["version"].as_str().unwrap())), "{settings}");
    assert_eq!(java["release"], 17);
    let rendered = std::fs::read_to_string(dir.path().join("generated/lre-cc/BUILD")).unwrap();
    assert!(rendered.contains("\"-Wl,-O1\""), "link options reach the toolchain:\n{rendered}");
}

#[test]
fn clang_is_probed_as_clang() {
    let dir = TempDir::new("facts-clang");
    copy_repo(dir.path());
    write_manifest(dir.path(), &manifest_with("CC = \"gcc\"", "CC = \"clang\""));
    xtask(dir.path(), &["generate"]).expect_success("generate with clang");
    let facts = facts(dir.path());
    let cc = &facts["toolchains"]["lre-cc"]["cc"];
    assert_eq!(cc["compiler"], "clang");
    let banner = command_output("clang", &["--version"]);
    assert!(banner.contains(&format!("clang version {}", cc["version"].as_str().unwrap())), "{banner}");
    assert_eq!(cc["flags"]["-Wthread-safety"], true, "clang accepts it");
    assert_eq!(cc["flags"]["-fno-canonical-system-headers"], false, "clang rejects it");
    let build = std::fs::read_to_string(dir.path().join("generated/lre-cc/BUILD")).unwrap();
    assert!(build.contains("compiler = \"clang\""), "{build}");
    assert!(!build.contains("None"), "absent tools are left out, not written as None:\n{build}");
}

/// Bad input: a clear error, and the repository copy is left exactly as it was.
fn assert_refused(label: &str, manifest: &str, expected: &[&str]) {
    let dir = TempDir::new(label);
    copy_repo(dir.path());
    write_manifest(dir.path(), manifest);
    let before = snapshot(dir.path());
    let run = xtask(dir.path(), &["generate"]).expect_failure(label);
    for fragment in expected {
        assert!(run.stderr.contains(fragment), "{label}: expected {fragment:?} in:\n{}", run.stderr);
    }
    assert_eq!(snapshot(dir.path()), before, "{label}: something was written");
}

#[test]
fn manifest_errors_name_the_file_line_and_column() {
    assert_refused(
        "syntax",
        &manifest_with("[[toolchain]]\nname = \"lre-java\"", "[[toolchain]\nname = \"lre-java\""),
        &["lre/toolchains.toml:"],
    );
    let text = manifest_with("kind = \"java\"", "kind = \"jvm\"");
    let line = text.lines().position(|l| l == "kind = \"jvm\"").unwrap() + 1;
    assert_refused("type", &text, &[&format!("lre/toolchains.toml:{line}:8"), "jvm"]);
}

#[test]
fn unknown_toolchain_names_are_refused() {
    let dir = TempDir::new("unknown-name");
    copy_repo(dir.path());
    let before = snapshot(dir.path());
    let run = xtask(dir.path(), &["generate", "--only", "lre-go"]).expect_failure("--only lre-go");
    assert!(
        run.stderr.contains("unknown toolchain \"lre-go\"") && run.stderr.contains("lre-cc, lre-java"),
        "{}",
        run.stderr
    );
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn a_missing_or_unusable_compiler_is_refused() {
    assert_refused(
        "missing-cc",
        &manifest_with("CC = \"gcc\"", "CC = \"gcc-does-not-exist\""),
        &["CC=gcc-does-not-exist is not on the toolchain's PATH (/usr/bin:/bin)", "Nothing was written"],
    );
    let files = TempDir::new("not-executable-bin");
    let plain_file = files.path().join("cc");
    std::fs::write(&plain_file, "not a compiler").unwrap();
    std::fs::set_permissions(
        &plain_file,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
    )
    .unwrap();
    assert_refused(
        "not-executable-cc",
        &manifest_with("CC = \"gcc\"", &format!("CC = \"{}\"", plain_file.display())),
        &[&format!("CC={} is not an executable file", plain_file.display())],
    );
    assert_refused(
        "missing-jdk",
        &manifest_with("/usr/lib/jvm/java-17-openjdk-amd64", "/usr/lib/jvm/no-such-jdk"),
        &["JAVA_HOME=/usr/lib/jvm/no-such-jdk/bin/java does not exist"],
    );
}

#[test]
fn a_failing_probe_shows_its_command_and_stderr() {
    let scripts = TempDir::new("failing-compiler-bin");
    let compiler = scripts.path().join("broken-cc");
    std::fs::write(&compiler, "#!/bin/sh\necho \"broken-cc: cannot find cc1 for $1\" >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&compiler, <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755))
        .unwrap();
    assert_refused(
        "failing-cc",
        &manifest_with("CC = \"gcc\"", &format!("CC = \"{}\"", compiler.display())),
        &[
            &format!("`{} -E -dM ", compiler.display()),
            "failed in the toolchain's environment (PATH=/usr/bin:/bin)",
            "broken-cc: cannot find cc1 for -E",
            "probing toolchain lre-cc",
        ],
    );
}

#[test]
fn a_nix_toolchain_with_an_env_table_is_refused_at_the_table() {
    assert_refused(
        "nix-env-table",
        &manifest_with(
            "source = \"host\"\nenv = { PATH = \"/usr/bin:/bin\", CC",
            "source = \"nix\"\nenv = { PATH = \"/usr/bin:/bin\", CC",
        ),
        &["lre/toolchains.toml:24:7", "its environment comes from the flake", "remove this `env` table"],
    );
}
