//! The Nix side: every `.nix` file parses with a real Nix parser, the toolchain environments and
//! createWorker evaluate (with real Nix) to what the xtask reads, and `generate` drives Nix for
//! `source = "nix"` toolchains: the real Debian Nix (too old) is refused, a missing Nix is
//! explained, and a MOCK `nix` (tests/mock_nix.py; Nix cannot evaluate or build this flake here)
//! pins the exact commands, the JSON handling and the failures. Nothing is written on failure.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

const JAVA_HOME: &str = "/usr/lib/jvm/java-17-openjdk-amd64";

fn nix_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // Not following symlinks keeps Bazel's convenience links (bazel-out, …) out.
            if entry.file_type().unwrap().is_dir() && !matches!(name.as_str(), ".git" | "target" | ".lre") {
                walk(&path, found);
            } else if name.ends_with(".nix") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(root, &mut found);
    found.sort();
    found
}

/// `nix-instantiate --parse` on each file; the files it rejects, with its message.
fn parse_failures(files: &[PathBuf]) -> Vec<String> {
    let parser = require("nix-instantiate");
    files
        .iter()
        .filter_map(|file| {
            let output = Command::new(&parser).arg("--parse").arg(file).output().unwrap();
            (!output.status.success())
                .then(|| format!("{}:\n{}", file.display(), String::from_utf8_lossy(&output.stderr)))
        })
        .collect()
}

#[test]
fn every_nix_file_parses_with_a_real_nix_parser() {
    let root = repo_root();
    let files = nix_files(&root);
    let relative: Vec<String> = files.iter().map(|f| f.strip_prefix(&root).unwrap().display().to_string()).collect();
    for expected in [
        "flake.nix",
        "lre/create-worker.nix",
        "lre/lre-cc.nix",
        "lre/lre-java.nix",
        "lre/cc-env.nix",
        "lre/java-env.nix",
    ] {
        assert!(relative.iter().any(|r| r == expected), "{expected} not found among {relative:?}");
    }
    let failures = parse_failures(&files);
    assert!(failures.is_empty(), "Nix syntax errors:\n{}", failures.join("\n"));

    // The same check on a file with an unbound variable and one with a syntax error fails.
    let dir = TempDir::new("nix-parse");
    std::fs::write(dir.path().join("unbound.nix"), "{ pkgs }: image: pkgs.hello // { inherit imag; }").unwrap();
    std::fs::write(dir.path().join("syntax.nix"), "{ x = ; }").unwrap();
    let failures = parse_failures(&nix_files(dir.path()));
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(failures.iter().any(|f| f.contains("undefined variable 'imag'")), "{failures:?}");
}

/// Evaluates a Nix expression with the real `nix-instantiate` and returns its JSON.
fn evaluate(expression: &str) -> Value {
    let output = Command::new(require("nix-instantiate"))
        .args(["--eval", "--strict", "--json", "--expr", expression])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(output.status.success(), "{expression}\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn env_of(list: &Value) -> BTreeMap<String, String> {
    let entries: Vec<String> = serde_json::from_value(list.clone()).unwrap();
    xtask::nix::parse_env(&entries).unwrap()
}

#[test]
fn the_toolchain_environments_evaluate_to_what_generate_reads() {
    // Store paths as plain strings: the environment functions need nothing else from nixpkgs.
    let cc = env_of(&evaluate(
        r#"import ./lre/cc-env.nix {
             clang = "/nix/store/a1-clang-wrapper-19"; bintools = "/nix/store/b2-bintools-wrapper";
             libcxx = "/nix/store/c3-libcxx-19"; libcxxHeaders = "/nix/store/c4-libcxx-19-dev";
             libunwind = "/nix/store/d5-libunwind-19"; glibc = "/nix/store/e6-glibc-2.40";
             coreutils = "/nix/store/f7-coreutils"; findutils = "/nix/store/f8-findutils"; gnutar = "/nix/store/f9-gnutar";
           }"#,
    ));
    assert_eq!(
        cc,
        BTreeMap::from(
            [
                (
                    "PATH",
                    "/nix/store/a1-clang-wrapper-19/bin:/nix/store/b2-bintools-wrapper/bin:/nix/store/f7-coreutils/bin:\
                     /nix/store/f8-findutils/bin:/nix/store/f9-gnutar/bin"
                ),
                ("CC", "/nix/store/a1-clang-wrapper-19/bin/clang"),
                ("BAZEL_CXXOPTS", "-std=c++17:-stdlib=libc++:-isystem/nix/store/c4-libcxx-19-dev/include/c++/v1"),
                (
                    "BAZEL_LINKOPTS",
                    "-L/nix/store/c3-libcxx-19/lib:-L/nix/store/d5-libunwind-19/lib:-Wl,-rpath,/nix/store/c3-libcxx-19/lib,\
                     -rpath,/nix/store/d5-libunwind-19/lib,-rpath,/nix/store/e6-glibc-2.40/lib"
                ),
                ("BAZEL_LINKLIBS", "-lc++:-lm"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        )
    );
    let java = env_of(&evaluate(
        r#"import ./lre/java-env.nix {
             jdk = "/nix/store/j1-openjdk-headless-17"; coreutils = "/nix/store/f7-coreutils";
             findutils = "/nix/store/f8-findutils"; gnutar = "/nix/store/f9-gnutar";
           }"#,
    ));
    assert_eq!(java["JAVA_HOME"], "/nix/store/j1-openjdk-headless-17/lib/openjdk");
    assert!(java["PATH"].starts_with("/nix/store/j1-openjdk-headless-17/bin:"), "{java:?}");
    // Every path the probe will see lies in the store, as the hermeticity lint will demand.
    for value in cc.values().chain(java.values()) {
        for piece in value.split([':', ',', '=']) {
            let path = piece.find('/').map_or("", |at| &piece[at..]);
            assert!(path.is_empty() || path.starts_with("/nix/store/"), "{path} in {value}");
        }
    }
}

#[test]
fn create_worker_keeps_the_toolchain_tag_and_adds_user_tmp_env_and_nativelink() {
    // MOCK nixpkgs and nix2container: derivations are stand-in store paths and buildImage
    // returns its arguments, so the test sees exactly what createWorker asks for.
    let worker = evaluate(
        r#"let
             pkgs = {
               lib = {
                 optionalString = condition: text: if condition then text else "";
                 mapAttrsToList = f: attrs: map (name: f name attrs.${name}) (builtins.attrNames attrs);
               };
               buildEnv = { name, ... }: "/nix/store/p0-${name}";
               runCommand = name: _: _: "/nix/store/r0-${name}";
               bashInteractive = "/nix/store/b0-bash"; coreutils = "/nix/store/c0-coreutils";
             };
             createWorker = import ./lre/create-worker.nix {
               inherit pkgs; buildImage = args: args;
               nativelink = "/nix/store/n0-nativelink"; revision = "0123abc";
             };
             toolchain = {
               imageName = "lre-cc"; imageTag = "9c7gq1z2";
               meta.Env = [ "PATH=/nix/store/a1-clang/bin" "CC=/nix/store/a1-clang/bin/clang" ];
             };
           in builtins.removeAttrs (createWorker toolchain) [ "fromImage" ]"#,
    );
    assert_eq!(worker["name"], "nativelink-worker-lre-cc");
    assert_eq!(worker["tag"], "9c7gq1z2", "the worker's tag is the toolchain image's tag");
    let config = &worker["config"];
    assert_eq!(config["User"], "1000:1000");
    assert_eq!(config["WorkingDir"], "/home/nativelink");
    assert_eq!(config["Entrypoint"], json!(["/bin/nativelink"]));
    assert_eq!(
        config["Env"],
        json!(["CC=/nix/store/a1-clang/bin/clang", "PATH=/bin:/nix/store/a1-clang/bin"]),
        "the toolchain's environment, with /bin (nativelink, bash, coreutils) first on PATH"
    );
    assert_eq!(worker["meta"]["Env"], config["Env"]);
    assert_eq!(config["Labels"]["org.opencontainers.image.base.name"], "lre-cc:9c7gq1z2");
    assert_eq!(config["Labels"]["org.opencontainers.image.revision"], "0123abc");
    assert_eq!(
        worker["copyToRoot"],
        json!(["/nix/store/r0-nativelink-worker-rootfs", "/nix/store/p0-nativelink-worker-programs"])
    );
    let perms = worker["perms"].as_array().unwrap();
    assert!(perms.iter().any(|p| p["regex"] == "/tmp$" && p["mode"] == "1777" && p["uid"] == 0), "{perms:?}");
    assert!(
        perms.iter().any(|p| p["regex"] == "/home/nativelink$" && p["uid"] == 1000 && p["gid"] == 1000),
        "{perms:?}"
    );
}

#[test]
fn the_flake_pins_the_nativelink_the_kubernetes_example_runs() {
    let kustomization = std::fs::read_to_string(repo_root().join("kubernetes/kustomization.yaml")).unwrap();
    let tag = kustomization
        .lines()
        .skip_while(|line| !line.contains("newName: localhost:5001/nativelink"))
        .find_map(|line| line.trim().strip_prefix("newTag: "))
        .expect("kustomization.yaml sets the nativelink image's tag")
        .trim_matches('"')
        .to_owned();
    let flake = std::fs::read_to_string(repo_root().join("flake.nix")).unwrap();
    assert!(
        flake.contains(&format!("\"github:TraceMachina/nativelink/v{tag}\"")),
        "flake.nix does not pin NativeLink v{tag}"
    );
    assert!(
        flake.contains(&format!("nativelinkTag = \"{tag}\";")),
        "flake.nix does not tag its nativelink image {tag}"
    );
}

/// A directory holding only `nix` (the MOCK), to be the xtask's whole PATH.
struct MockNix {
    dir: TempDir,
}

impl MockNix {
    fn new(label: &str, images: Value) -> MockNix {
        let dir = TempDir::new(&format!("{label}-mock-nix"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mock_nix.py");
        let nix = dir.path().join("bin/nix");
        std::fs::create_dir_all(nix.parent().unwrap()).unwrap();
        // The interpreter itself, not a launcher that needs PATH (the xtask runs with PATH = bin/).
        let python =
            Command::new(require("python3")).args(["-c", "import sys; print(sys.executable)"]).output().unwrap();
        let python = String::from_utf8(python.stdout).unwrap();
        std::fs::write(&nix, format!("#!/bin/sh\nexec {} {} \"$@\"\n", python.trim(), script.display())).unwrap();
        std::fs::set_permissions(&nix, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("images.json"), images.to_string()).unwrap();
        MockNix { dir }
    }

    fn generate(&self, root: &Path, extra_env: &[(&str, &str)]) -> Run {
        let mut env = vec![
            ("MOCK_NIX_LOG", self.dir.path().join("log").into_os_string()),
            ("MOCK_NIX_IMAGES", self.dir.path().join("images.json").into_os_string()),
        ];
        env.extend(extra_env.iter().map(|(name, value)| (*name, value.into())));
        generate_with(root, &self.dir.path().join("bin"), &env)
    }

    fn command_lines(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.dir.path().join("log"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

/// `generate` with `path` as the xtask's whole PATH (and `env` added).
fn generate_with(root: &Path, path: &Path, env: &[(&str, std::ffi::OsString)]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .env("PATH", path)
        .envs(env.iter().map(|(name, value)| (name, value)))
        .arg("--root")
        .arg(root)
        .arg("generate")
        .output()
        .unwrap();
    Run::from_output(output)
}

fn generate_with_path(root: &Path, path: &Path) -> Run {
    generate_with(root, path, &[])
}

/// The Debian machine's gcc and JDK, reported as if the flake's images carried them. `/usr`
/// is declared as their root, so the hermeticity lint applies to the real probe results.
fn host_tools_as_images() -> Value {
    json!({
        "lre-cc": { "name": "lre-cc", "tag": "0a1b2c3d4e5f", "env": ["PATH=/usr/bin", "CC=gcc"] },
        "lre-java": { "name": "lre-java", "tag": "6a7b8c9d0e1f", "env": ["PATH=/usr/bin", format!("JAVA_HOME={JAVA_HOME}")] },
    })
}

fn nix_manifest(roots: &str) -> String {
    let mut text = "[bazel]\nversion = \"4.2.3\"\n".to_owned();
    for (name, kind) in [("lre-cc", "cc"), ("lre-java", "java")] {
        text += &format!(
            "\n[[toolchain]]\nname = \"{name}\"\nkind = \"{kind}\"\nimage = \"{name}\"\nsource = \"nix\"\n{roots}"
        );
    }
    text
}

fn repo_with_manifest(label: &str, manifest: &str) -> TempDir {
    let dir = TempDir::new(label);
    copy_repo(dir.path());
    write_manifest(dir.path(), manifest);
    dir
}

const EVAL_APPLY: &str =
    "image: { name = image.imageName; tag = image.imageTag; env = image.meta.Env; drv = image.drvPath; }";

#[test]
fn generate_drives_nix_with_exact_commands_and_records_the_images_tags() {
    require("g++");
    let mock = MockNix::new("nix-generate", host_tools_as_images());
    let dir = repo_with_manifest("nix-generate", &nix_manifest("roots = [\"/usr\"]\n"));
    let root = dir.path().display().to_string();

    let run = mock.generate(dir.path(), &[]).expect_success("generate with nix toolchains");
    assert!(run.stderr.contains(&format!("[lre-cc] warning: Git tree '{root}' is dirty")), "{}", run.stderr);
    assert!(
        run.stderr.contains("[lre-java] building '/nix/store/6a7b8c9d0e1f-image-lre-java.json.drv'..."),
        "{}",
        run.stderr
    );

    let lines = mock.command_lines();
    assert_eq!(lines[0], ["--version"], "Nix's version is checked once, first: {lines:?}");
    assert_eq!(lines.iter().filter(|l| l[0] == "--version").count(), 1, "{lines:?}");
    for (name, tag) in [("lre-cc", "0a1b2c3d4e5f"), ("lre-java", "6a7b8c9d0e1f")] {
        let eval: Vec<String> = [
            "--extra-experimental-features",
            "nix-command flakes",
            "eval",
            "--json",
            &format!("{root}#{name}"),
            "--apply",
            EVAL_APPLY,
        ]
        .map(str::to_owned)
        .to_vec();
        let build: Vec<String> = [
            "--extra-experimental-features",
            "nix-command flakes",
            "build",
            "--out-link",
            &format!("{root}/.lre/nix/{name}"),
            &format!("/nix/store/{tag}-image-{name}.json.drv^out"),
        ]
        .map(str::to_owned)
        .to_vec();
        let at = |command: &Vec<String>| lines.iter().position(|l| l == command);
        let (eval_at, build_at) = (at(&eval), at(&build));
        assert!(eval_at.is_some() && build_at.is_some() && eval_at < build_at, "{name}: {lines:?}");
        assert!(dir.path().join(".lre/nix").join(name).is_symlink(), "no GC root for {name}");
    }
    assert_eq!(lines.len(), 5, "{lines:?}");

    let facts: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("generated/lre.lock.json")).unwrap()).unwrap();
    let cc = &facts["toolchains"]["lre-cc"];
    assert_eq!(cc["image"], json!({ "name": "lre-cc", "tag": "0a1b2c3d4e5f" }));
    assert_eq!(cc["provenance"]["source"], "nix");
    assert_eq!(cc["provenance"]["hermetic"], true);
    assert_eq!(cc["environment"], json!({ "CC": "gcc", "PATH": "/usr/bin" }));
    assert_eq!(cc["cc"]["compiler_path"], "/usr/bin/gcc", "the probe ran in the evaluated environment");
    assert_eq!(facts["toolchains"]["lre-java"]["java"]["java_home"], JAVA_HOME);

    let platforms = std::fs::read_to_string(dir.path().join("generated/config/BUILD")).unwrap();
    assert!(platforms.contains("\"container-image\": \"docker://lre-cc:0a1b2c3d4e5f\""), "{platforms}");
    let bazelrc = std::fs::read_to_string(dir.path().join("generated/lre.bazelrc")).unwrap();
    assert!(
        bazelrc.contains("#   lre-cc: cc from nix (hermetic), image docker://lre-cc:0a1b2c3d4e5f\n#     CC=gcc\n"),
        "{bazelrc}"
    );
    xtask(dir.path(), &["generate", "--check"]).expect_success("--check after generating from nix");
}

#[test]
fn a_failing_nix_command_shows_its_stderr_and_nothing_is_written() {
    let mock = MockNix::new("nix-fails", host_tools_as_images());
    let dir = repo_with_manifest("nix-fails", &nix_manifest("roots = [\"/usr\"]\n"));
    let before = snapshot(&dir.path().join("generated"));
    for (failing, message) in [
        ("eval", "error: flake 'git+file://"),
        ("build", "error: builder for '/nix/store/0a1b2c3d4e5f-image-lre-cc.json.drv' failed with exit code 2"),
    ] {
        let run = mock.generate(dir.path(), &[("MOCK_NIX_FAIL", failing)]).expect_failure(failing);
        // The xtask's own error (streamed lines of nix carry a `[toolchain]` prefix).
        let error = &run.stderr[run.stderr.find("error: ").unwrap_or_else(|| panic!("no error in:\n{}", run.stderr))..];
        assert!(error.contains(&format!("nix-command flakes' {failing} ")), "{failing}: {error}");
        assert!(error.contains(message), "{failing}: {error}");
        assert!(error.contains("Nothing was written."), "{error}");
        assert_eq!(snapshot(&dir.path().join("generated")), before, "{failing}: generated/ changed");
    }
}

#[test]
fn nix_paths_outside_the_store_fail_the_hermeticity_lint_and_nothing_is_written() {
    require("g++");
    let mock = MockNix::new("nix-lint", host_tools_as_images());
    let dir = repo_with_manifest("nix-lint", &nix_manifest(""));
    let before = snapshot(&dir.path().join("generated"));
    let run = mock.generate(dir.path(), &[]).expect_failure("a nix toolchain with /usr paths");
    assert!(run.stderr.contains("toolchain lre-cc (nix source) is not hermetic"), "{}", run.stderr);
    assert!(run.stderr.contains("/usr/bin/gcc (at /cc/compiler_path)"), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("{JAVA_HOME} (at /environment/JAVA_HOME)")), "{}", run.stderr);
    assert_eq!(snapshot(&dir.path().join("generated")), before);
}

#[test]
fn an_image_name_that_disagrees_with_the_manifest_is_refused() {
    let mut images = host_tools_as_images();
    images["lre-cc"]["name"] = json!("clang-toolchain");
    let mock = MockNix::new("nix-name", images);
    let dir = repo_with_manifest("nix-name", &nix_manifest("roots = [\"/usr\"]\n"));
    let run = mock.generate(dir.path(), &[]).expect_failure("a renamed image");
    assert!(
        run.stderr.contains("flake.nix names the image of toolchain lre-cc \"clang-toolchain\", but lre/toolchains.toml says image = \"lre-cc\""),
        "{}",
        run.stderr
    );
}

#[test]
fn store_paths_the_build_did_not_produce_are_named() {
    let missing = "/nix/store/00000000000000000000000000000000-libcxx-19";
    let mut images = host_tools_as_images();
    images["lre-cc"]["env"] = json!(["PATH=/usr/bin", "CC=gcc", format!("BAZEL_LINKOPTS=-L{missing}/lib")]);
    let mock = MockNix::new("nix-missing-path", images);
    let dir = repo_with_manifest("nix-missing-path", &nix_manifest("roots = [\"/usr\"]\n"));
    let before = snapshot(&dir.path().join("generated"));
    let run = mock.generate(dir.path(), &[]).expect_failure("an environment naming a path the build did not produce");
    assert!(
        run.stderr.contains(&format!("store paths named by meta.Env of .#lre-cc are still missing:\n  {missing}\n")),
        "{}",
        run.stderr
    );
    assert_eq!(snapshot(&dir.path().join("generated")), before);
}

#[test]
fn without_nix_generate_says_what_to_do_and_leaves_generated_untouched() {
    let empty = TempDir::new("no-nix");
    let manifest =
        manifest_with("source = \"host\"\nenv = { PATH = \"/usr/bin:/bin\", CC = \"gcc\" }", "source = \"nix\"");
    let dir = repo_with_manifest("no-nix-repo", &manifest);
    let before = snapshot(dir.path());
    let run = generate_with_path(dir.path(), empty.path()).expect_failure("generate without Nix");
    for expected in [
        "toolchain lre-cc: source = \"nix\" needs Nix 2.19.0 or newer, and `nix` is not on PATH",
        "`nix develop`",
        "set source = \"host\" or \"oci\" for lre-cc in lre/toolchains.toml",
        "Nothing was written.",
    ] {
        assert!(run.stderr.contains(expected), "missing {expected:?} in:\n{}", run.stderr);
    }
    assert!(!run.stderr.contains("probing lre-java"), "nothing is probed before Nix is found:\n{}", run.stderr);
    assert_eq!(snapshot(dir.path()), before, "the repository changed");
}

#[test]
fn debians_nix_is_refused_naming_the_version_found_and_the_one_needed() {
    let nix = require("nix");
    let printed = String::from_utf8(Command::new(&nix).arg("--version").output().unwrap().stdout).unwrap();
    let found = printed.split_whitespace().last().unwrap().to_owned();
    assert!(
        found.starts_with("2.8."),
        "this test uses Debian bookworm's nix-bin (Nix 2.8), which is older than 2.19; {} is {printed}",
        nix.display()
    );
    let dir = repo_with_manifest("old-nix", &nix_manifest("roots = [\"/usr\"]\n"));
    let before = snapshot(dir.path());
    let run = generate_with_path(dir.path(), nix.parent().unwrap()).expect_failure("generate with Nix 2.8");
    assert!(
        run.stderr.contains(&format!("needs Nix 2.19.0 or newer, but {} is Nix {found}", nix.display())),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Nothing was written."), "{}", run.stderr);
    assert_eq!(snapshot(dir.path()), before, "the repository changed");
}
