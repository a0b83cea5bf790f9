//! OCI images without a container engine, against real components: a Debian bookworm toolchain
//! image built by mmdebstrap and packed by `cargo xtask image pack` (cached under target/ between
//! runs), probed by `generate --from oci:` inside its own root and checked against what its
//! compiler and JDK report; `image wrap` output read back by skopeo, umoci and Docker; and every
//! kind of corrupt or malicious image refused with nothing written.

mod common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

const JDK: &str = "/usr/lib/jvm/java-17-openjdk-amd64";

fn run_ok(program: &str, args: &[&str]) -> String {
    let output = Command::new(require(program)).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// The test toolchain image: Debian bookworm with gcc, g++, libc6-dev and a headless JDK 17, made
/// by mmdebstrap from Debian's archive and packed by this project's own writer. Built once per
/// machine (target/tmp), since a build takes about a minute.
fn debian_image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-bookworm-toolchain");
            let layout = cache.join("layout");
            if layout.join("index.json").exists() {
                return layout;
            }
            let rootfs = cache.join("rootfs");
            let _ = std::fs::remove_dir_all(&cache);
            std::fs::create_dir_all(&cache).unwrap();
            eprintln!("building the Debian toolchain image with mmdebstrap (once per machine)");
            let output = Command::new(require("mmdebstrap"))
                .args(["--variant=minbase", "--include=gcc,g++,libc6-dev,openjdk-17-jdk-headless", "bookworm"])
                .arg(&rootfs)
                .arg("http://deb.debian.org/debian")
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            assert!(output.status.success(), "mmdebstrap failed:\n{}", String::from_utf8_lossy(&output.stderr));
            let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
                .args(["image", "pack", "--rootfs"])
                .arg(&rootfs)
                .arg("--output")
                .arg(&layout)
                .args(["--tag", "bookworm", "--env", "PATH=/usr/local/bin:/usr/bin:/bin", "--env", "CC=gcc"])
                .arg("--env")
                .arg(format!("JAVA_HOME={JDK}"))
                .output()
                .unwrap();
            assert!(output.status.success(), "image pack failed:\n{}", String::from_utf8_lossy(&output.stderr));
            std::fs::remove_dir_all(&rootfs).unwrap();
            layout
        })
        .clone()
}

fn manifest_digest(layout: &Path) -> String {
    let index: Value = serde_json::from_str(&std::fs::read_to_string(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"].as_str().unwrap().to_owned()
}

fn oci_manifest(dir: &Path) {
    let text = std::fs::read_to_string(repo_root().join("lre/toolchains.toml"))
        .unwrap()
        .replace("source = \"host\"\nenv = { PATH = \"/usr/bin:/bin\", CC = \"gcc\" }", "source = \"oci\"")
        .replace(
            &format!("source = \"host\"\nenv = {{ PATH = \"/usr/bin:/bin\", JAVA_HOME = \"{JDK}\" }}"),
            "source = \"oci\"",
        );
    assert_eq!(text.matches("source = \"oci\"").count(), 2, "the manifest changed shape:\n{text}");
    write_manifest(dir, &text);
}

#[test]
fn generate_from_a_debian_image_probes_inside_it() {
    let image = debian_image();
    let digest = manifest_digest(&image);
    let dir = TempDir::new("oci-generate");
    copy_repo(dir.path());
    oci_manifest(dir.path());
    let from = format!("oci:{}:bookworm", image.display());
    xtask(dir.path(), &["generate", "--from", &from]).expect_success("generate --from the Debian image");

    let facts: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("generated/lre.lock.json")).unwrap()).unwrap();
    let cc = &facts["toolchains"]["lre-cc"];
    assert_eq!(cc["image"]["digest"], digest);
    assert_eq!(cc["provenance"]["source"], "oci");
    assert_eq!(cc["provenance"]["hermetic"], true);
    assert_eq!(cc["environment"]["CC"], "gcc", "from the image's config");

    // Independently of the probe: ask the image's own compiler and JDK, inside its root.
    let rootfs = dir.path().join(".lre/oci").join(digest.trim_start_matches("sha256:")).join("rootfs");
    let inside = |args: &[&str]| {
        let root = format!("--root={}", rootfs.display());
        let mut all = vec!["--mount", "--pid", "--fork", "--mount-proc=/proc", root.as_str(), "--wd=/"];
        all.extend(args);
        run_ok("unshare", &all)
    };
    assert_eq!(cc["cc"]["version"].as_str().unwrap(), inside(&["/usr/bin/gcc", "-dumpfullversion"]).trim());
    assert_eq!(cc["cc"]["compiler_path"], "/usr/bin/gcc");
    assert_eq!(cc["cc"]["target_triple"].as_str().unwrap(), inside(&["/usr/bin/gcc", "-dumpmachine"]).trim());
    let ld = inside(&["/usr/bin/gcc", "-print-prog-name=ld"]);
    assert!(Path::new(cc["cc"]["tools"]["ld"].as_str().unwrap()).ends_with(Path::new(ld.trim()).file_name().unwrap()));
    for dir in cc["cc"]["include_dirs"]["cxx"].as_array().unwrap() {
        assert!(rootfs.join(dir.as_str().unwrap().trim_start_matches('/')).is_dir(), "{dir} is not in the image");
    }
    let java = &facts["toolchains"]["lre-java"]["java"];
    let banner = inside(&[&format!("{JDK}/bin/java"), "-version"]);
    assert!(banner.contains(&format!("\"{}\"", java["version"].as_str().unwrap())), "{banner} vs {java}");
    assert_eq!(java["java_home"], JDK);

    let platforms = std::fs::read_to_string(dir.path().join("generated/config/BUILD")).unwrap();
    assert!(platforms.contains(&format!("\"container-image\": \"docker://lre-cc@{digest}\"")), "{platforms}");
    xtask(dir.path(), &["generate", "--check"]).expect_success("--check after generating from the image");

    // Without root, the probe runs in a user namespace instead of a chroot, and finds the same.
    let unprivileged = TempDir::new("oci-generate-unprivileged");
    copy_repo(unprivileged.path());
    oci_manifest(unprivileged.path());
    run_ok("chown", &["-R", "65534:65534", unprivileged.path().to_str().unwrap()]);
    let output = Command::new(require("setpriv"))
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_xtask"), "--root"])
        .arg(unprivileged.path())
        .args(["generate", "--from", &from])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    Run::from_output(output).expect_success("generate --from as an unprivileged user");
    let theirs: Value =
        serde_json::from_str(&std::fs::read_to_string(unprivileged.path().join("generated/lre.lock.json")).unwrap())
            .unwrap();
    for name in ["lre-cc", "lre-java"] {
        for field in ["image", "environment", "cc", "java"] {
            assert_eq!(theirs["toolchains"][name][field], facts["toolchains"][name][field], "{name}.{field}");
        }
    }

    // A path the image lacks fails the hermeticity lint (here given by the manifest).
    let manifest = std::fs::read_to_string(dir.path().join("lre/toolchains.toml")).unwrap().replacen(
        "source = \"oci\"",
        "source = \"oci\"\nenv = { BAZEL_LINKOPTS = \"-L/opt/not-in-the-image/lib\" }",
        1,
    );
    write_manifest(dir.path(), &manifest);
    let before = snapshot(&dir.path().join("generated"));
    let run = xtask(dir.path(), &["generate", "--from", &from]).expect_failure("a path outside the image");
    assert!(run.stderr.contains("these paths do not exist in its image"), "{}", run.stderr);
    assert!(run.stderr.contains("/opt/not-in-the-image/lib (at /environment/BAZEL_LINKOPTS)"), "{}", run.stderr);
    assert_eq!(snapshot(&dir.path().join("generated")), before);
}

fn stand_in_nativelink(dir: &Path) -> PathBuf {
    let path = dir.join("nativelink");
    std::fs::write(&path, "#!/bin/sh\necho \"stand-in nativelink $* uid=$(id -u) gid=$(id -g) cwd=$(pwd)\"\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn wrap(base: &str, nativelink: &Path, output: &Path) -> Run {
    let mut args = vec!["image", "wrap", "--base", base, "--nativelink", nativelink.to_str().unwrap()];
    args.extend(["--output", output.to_str().unwrap(), "--title", "nativelink-worker-lre-cc"]);
    args.extend(["--source", "https://example.invalid/lre", "--revision", "0123abc"]);
    xtask(&repo_root(), &args)
}

#[test]
fn image_wrap_is_accepted_by_skopeo_umoci_and_docker_and_is_reproducible() {
    let image = debian_image();
    let dir = TempDir::new("oci-wrap");
    let nativelink = stand_in_nativelink(dir.path());
    let base = format!("oci:{}:bookworm", image.display());
    let (first, second) = (dir.path().join("worker"), dir.path().join("worker-again"));
    wrap(&base, &nativelink, &first).expect_success("image wrap");
    wrap(&base, &nativelink, &second).expect_success("image wrap, again");
    assert_eq!(manifest_digest(&first), manifest_digest(&second), "the same inputs give the same digests");

    // The base's layer is the base's file, linked, not rewritten.
    let base_manifest: Value = serde_json::from_str(&run_ok("skopeo", &["inspect", "--raw", &base])).unwrap();
    let base_layer = base_manifest["layers"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_owned();
    let inode = |layout: &Path| std::fs::metadata(layout.join("blobs/sha256").join(&base_layer)).unwrap().ino();
    assert_eq!(inode(&first), inode(&image));

    let worker = format!("oci:{}:bookworm", first.display());
    let inspected: Value = serde_json::from_str(&run_ok("skopeo", &["inspect", "--config", &worker])).unwrap();
    let config = &inspected["config"];
    assert_eq!(config["User"], "1000:1000");
    assert_eq!(config["WorkingDir"], "/home/nativelink");
    assert_eq!(config["Entrypoint"], json!(["/usr/local/bin/nativelink"]));
    assert_eq!(config["Labels"]["org.opencontainers.image.source"], "https://example.invalid/lre");
    assert_eq!(config["Labels"]["org.opencontainers.image.revision"], "0123abc");
    assert_eq!(config["Labels"]["org.opencontainers.image.title"], "nativelink-worker-lre-cc");
    assert!(config["Env"].as_array().unwrap().contains(&json!("CC=gcc")), "the base's environment stays");
    assert_eq!(inspected["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);

    let bundle = dir.path().join("bundle");
    run_ok("umoci", &["unpack", "--image", &format!("{}:bookworm", first.display()), bundle.to_str().unwrap()]);
    let rootfs = bundle.join("rootfs");
    let meta = |path: &str| std::fs::symlink_metadata(rootfs.join(path)).unwrap();
    assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);
    assert_eq!((meta("home/nativelink").uid(), meta("home/nativelink").gid()), (1000, 1000));
    assert_eq!(meta("usr/local/bin/nativelink").mode() & 0o777, 0o755);
    assert!(std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap().contains("nativelink:x:1000:1000:"));
    assert!(rootfs.join("usr/bin/gcc-12").exists(), "the base's files are there");
    let runtime: Value = serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(runtime["process"]["user"]["uid"], 1000);
    assert_eq!(runtime["process"]["cwd"], "/home/nativelink");
    assert_eq!(runtime["process"]["args"], json!(["/usr/local/bin/nativelink"]));

    // A real container engine runs the entrypoint as the worker user.
    let name = format!("lre-wrap-test:{}", std::process::id());
    run_ok("skopeo", &["copy", "--quiet", &worker, &format!("docker-daemon:{name}")]);
    let ran = Command::new(require("docker")).args(["run", "--rm", &name, "--version"]).output().unwrap();
    let _ = Command::new("docker").args(["rmi", "-f", &name]).output();
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert_eq!(stdout.trim(), "stand-in nativelink --version uid=1000 gid=1000 cwd=/home/nativelink", "{ran:?}");
}

/// A hand-made image: each layer is a raw tar stream (so names may be malicious).
fn tiny_image(dir: &Path, layers: &[Vec<u8>], layer_media_type: &str) -> PathBuf {
    let layout = dir.join("image");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let hex: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let layer_descriptors: Vec<(String, usize)> = layers.iter().map(|layer| put(layer)).collect();
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Env": ["PATH=/usr/bin", "CC=gcc"] },
        "rootfs": { "type": "layers", "diff_ids": layer_descriptors.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>() },
    });
    let (config_digest, config_size) = put(config.to_string().as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size },
        "layers": layer_descriptors.iter().map(|(digest, size)| json!({ "mediaType": layer_media_type, "digest": digest, "size": size })).collect::<Vec<_>>(),
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size,
                        "annotations": { "org.opencontainers.image.ref.name": "t" } }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    layout
}

const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// A tar stream with entries written byte for byte, so `..`, absolute names and escaping links
/// can be expressed (the tar crate's safe setters refuse them).
fn raw_tar(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, data) in entries {
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        header[100..107].copy_from_slice(b"0000644");
        header[108..115].copy_from_slice(b"0000000");
        header[116..123].copy_from_slice(b"0000000");
        header[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        header[136..147].copy_from_slice(b"00000000000");
        header[156] = *kind;
        header[157..157 + link.len()].copy_from_slice(link.as_bytes());
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn good_layer() -> Vec<u8> {
    raw_tar(&[("usr/", b'5', "", b""), ("usr/bin/", b'5', "", b""), ("usr/bin/tool", b'0', "", b"#!/bin/sh\n")])
}

/// `generate --from` refuses `layout`, naming `expected`, and leaves generated/ and the unpack
/// cache as they were; so does `image wrap` (no output), naming `wrap_expected`, unless that is
/// `None`. Wrap reads the index, manifest and config, and checks the base's layers by size only:
/// it links them by digest without reading them, which keeps its cost independent of the base's
/// size.
fn assert_refused(label: &str, layout: &Path, expected: &str, wrap_expected: Option<&str>) {
    let dir = TempDir::new(&format!("oci-refused-{label}"));
    copy_repo(dir.path());
    oci_manifest(dir.path());
    let before = snapshot(&dir.path().join("generated"));
    let from = format!("oci:{}", layout.display());
    let run = xtask(dir.path(), &["generate", "--only", "lre-cc", "--from", &from]).expect_failure(label);
    assert!(run.stderr.contains(expected), "{label}: expected {expected:?} in:\n{}", run.stderr);
    assert!(run.stderr.contains("Nothing was written."), "{label}: {}", run.stderr);
    assert_eq!(snapshot(&dir.path().join("generated")), before, "{label}: generated/ changed");
    let cache = dir.path().join(".lre/oci");
    let left: Vec<_> =
        std::fs::read_dir(&cache).map(|d| d.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "{label}: the unpack cache kept {left:?}");

    let output = dir.path().join("worker");
    let nativelink = stand_in_nativelink(dir.path());
    let run = wrap(&from, &nativelink, &output);
    if let Some(expected) = wrap_expected {
        let run = run.expect_failure(&format!("{label} (wrap)"));
        assert!(run.stderr.contains(expected), "{label} (wrap): expected {expected:?} in:\n{}", run.stderr);
        assert!(!output.exists(), "{label}: wrap left an output");
        let staging: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains("staging"))
            .collect();
        assert!(staging.is_empty(), "{label}: wrap left {staging:?}");
    } else {
        run.expect_success(&format!("{label} (wrap links the layer without reading it)"));
    }
}

#[test]
fn corrupt_images_are_refused_and_nothing_is_written() {
    let dir = TempDir::new("oci-corrupt");
    let case = |name: &str| {
        let case_dir = dir.path().join(name);
        tiny_image(&case_dir, &[good_layer()], TAR)
    };
    let layer_blob = |layout: &Path| {
        let hex: String = Sha256::digest(good_layer()).iter().map(|b| format!("{b:02x}")).collect();
        layout.join("blobs/sha256").join(hex)
    };

    let wrong_digest = case("wrong-digest");
    let mut bytes = std::fs::read(layer_blob(&wrong_digest)).unwrap();
    bytes[600] ^= 1;
    std::fs::write(layer_blob(&wrong_digest), bytes).unwrap();
    assert_refused("wrong-digest", &wrong_digest, "its descriptor says sha256:", None);

    let wrong_config = case("wrong-config-digest");
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(wrong_config.join("index.json")).unwrap()).unwrap();
    let manifest_blob = wrong_config
        .join("blobs/sha256")
        .join(index["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:"));
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(manifest_blob).unwrap()).unwrap();
    let config_blob = wrong_config
        .join("blobs/sha256")
        .join(manifest["config"]["digest"].as_str().unwrap().trim_start_matches("sha256:"));
    let config = std::fs::read_to_string(&config_blob).unwrap().replace("amd64", "arm64");
    std::fs::write(&config_blob, config).unwrap();
    assert_refused("wrong-config-digest", &wrong_config, "config sha256:", Some("config sha256:"));

    let truncated = case("truncated");
    let file = std::fs::OpenOptions::new().write(true).open(layer_blob(&truncated)).unwrap();
    file.set_len(1000).unwrap();
    assert_refused(
        "truncated",
        &truncated,
        "is truncated: 1000 bytes",
        Some("is 1000 bytes, its descriptor says 3072"),
    );

    let no_index = case("no-index");
    std::fs::remove_file(no_index.join("index.json")).unwrap();
    assert_refused("missing-index", &no_index, "has no index.json", Some("has no index.json"));

    let unknown = tiny_image(&dir.path().join("unknown"), &[good_layer()], "application/vnd.example.layer.v1+squashfs");
    assert_refused(
        "unknown-media-type",
        &unknown,
        "unknown layer media type application/vnd.example.layer.v1+squashfs",
        Some("unknown layer media type"),
    );

    let no_blob = case("missing-blob");
    std::fs::remove_file(layer_blob(&no_blob)).unwrap();
    assert_refused("missing-blob", &no_blob, "is missing from", Some("is missing from"));
}

fn unpack(image: &str, output: &Path) -> Run {
    xtask(&repo_root(), &["image", "unpack", "--image", image, "--output", output.to_str().unwrap()])
}

#[test]
fn malicious_layers_are_refused_and_nothing_is_written() {
    let dir = TempDir::new("oci-malicious");
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "dotdot",
            raw_tar(&[("../../escaped", b'0', "", b"x")]),
            "entry ../../escaped: path ../../escaped climbs out with `..`",
        ),
        ("absolute", raw_tar(&[("/etc/cron.d/evil", b'0', "", b"x")]), "entry /etc/cron.d/evil: absolute path"),
        (
            "symlink",
            raw_tar(&[("usr/", b'5', "", b""), ("usr/lib", b'2', "../../../etc", b"")]),
            "points outside the image's root",
        ),
        (
            "hardlink",
            raw_tar(&[("shadow", b'1', "../../../etc/shadow", b"")]),
            "is a hard link to ../../../etc/shadow outside",
        ),
        ("device", raw_tar(&[("dev/", b'5', "", b""), ("dev/sda", b'4', "", b"")]), "entry dev/sda is a device node"),
    ];
    for (label, layer, expected) in cases {
        let layout = tiny_image(&dir.path().join(label), &[good_layer(), layer], TAR);
        assert_refused(label, &layout, expected, None);
    }

    // An absolute symlink target means the image's own root: allowed, and written inside it.
    let through_symlink = raw_tar(&[("conf", b'2', "/etc", b""), ("conf/passwd", b'0', "", b"root::0:0::/:/bin/sh\n")]);
    let layout = tiny_image(&dir.path().join("absolute-symlink"), &[good_layer(), through_symlink], TAR);
    let output = dir.path().join("absolute-symlink-rootfs");
    unpack(&format!("oci:{}", layout.display()), &output).expect_success("a write through an absolute symlink");
    assert!(std::fs::read_to_string(output.join("etc/passwd")).unwrap().starts_with("root::0:0"));
    assert_ne!(
        std::fs::read_to_string("/etc/passwd").unwrap().lines().next(),
        Some("root::0:0::/:/bin/sh"),
        "the host's /etc/passwd was written through the image's symlink"
    );
}

#[test]
fn a_docker_save_archive_is_read_like_a_layout() {
    let dir = TempDir::new("oci-docker-archive");
    let layout = tiny_image(dir.path(), &[good_layer()], TAR);
    let archive = dir.path().join("image.tar");
    run_ok(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &format!("oci:{}:t", layout.display()),
            &format!("docker-archive:{}:lre/tiny:t", archive.display()),
        ],
    );
    let rootfs = dir.path().join("rootfs");
    unpack(&format!("docker-archive:{}", archive.display()), &rootfs).expect_success("unpacking a docker-archive");
    assert_eq!(std::fs::read_to_string(rootfs.join("usr/bin/tool")).unwrap(), "#!/bin/sh\n");

    let worker = dir.path().join("worker");
    let nativelink = stand_in_nativelink(dir.path());
    wrap(&format!("docker-archive:{}", archive.display()), &nativelink, &worker)
        .expect_success("wrapping a docker-archive");
    let inspected: Value =
        serde_json::from_str(&run_ok("skopeo", &["inspect", &format!("oci:{}:t", worker.display())])).unwrap();
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 2, "{inspected}");

    // A truncated archive is refused.
    let bytes = std::fs::read(&archive).unwrap();
    let mut cut = std::fs::File::create(dir.path().join("cut.tar")).unwrap();
    cut.write_all(&bytes[..bytes.len() / 2]).unwrap();
    let cut_output = dir.path().join("cut-rootfs");
    unpack(&format!("docker-archive:{}", dir.path().join("cut.tar").display()), &cut_output)
        .expect_failure("a truncated docker archive");
    assert!(!cut_output.exists());
}

#[test]
fn wrap_warns_when_a_base_it_knows_lacks_usr_bin_env_and_can_add_one() {
    let dir = TempDir::new("oci-env");
    copy_repo(dir.path());
    oci_manifest(dir.path());
    let layout = tiny_image(&dir.path().join("tiny"), &[good_layer()], TAR);
    let base = format!("oci:{}", layout.display());
    // The probe fails (the image has no gcc), but the image is unpacked and cached by then.
    let run =
        xtask(dir.path(), &["generate", "--only", "lre-cc", "--from", &base]).expect_failure("no gcc in the image");
    assert!(run.stderr.contains("CC=gcc is not on the toolchain's PATH (/usr/bin)"), "{}", run.stderr);

    let nativelink = stand_in_nativelink(dir.path());
    let wrap_in = |output: &str, extra: &[&str]| {
        let output = dir.path().join(output);
        let mut args = vec!["image", "wrap", "--base", &base, "--nativelink", nativelink.to_str().unwrap()];
        args.extend(["--output", output.to_str().unwrap()]);
        args.extend(extra);
        (xtask(dir.path(), &args).expect_success("image wrap"), output)
    };
    let (run, _) = wrap_in("worker", &[]);
    assert!(run.stderr.contains("warning: the base has no /usr/bin/env"), "{}", run.stderr);

    let (run, output) = wrap_in("worker-with-env", &["--env-program", "/usr/bin/env"]);
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    let rootfs = dir.path().join("worker-with-env-rootfs");
    unpack(&format!("oci:{}", output.display()), &rootfs).expect_success("unpacking the worker");
    assert_eq!(std::fs::read(rootfs.join("usr/bin/env")).unwrap(), std::fs::read("/usr/bin/env").unwrap());
    assert_eq!(std::fs::metadata(rootfs.join("usr/bin/env")).unwrap().mode() & 0o777, 0o755);
    assert_eq!(std::fs::read(rootfs.join("usr/bin/tool")).unwrap(), b"#!/bin/sh\n", "the base's files are kept");
}
