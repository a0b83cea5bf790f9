//! The Kubernetes example, rendered with the real `kubectl kustomize` and checked against the
//! facts. No cluster runs here: `deploy --dry-run` stops before anything would be pushed or applied.

mod common;

use std::collections::BTreeSet;

use common::*;

#[test]
fn the_kustomization_renders_and_its_workers_advertise_the_bazel_platforms() {
    require("kubectl");
    let dir = TempDir::new("kustomize");
    copy_repo(dir.path());
    let run = xtask(dir.path(), &["deploy", "--dry-run"]).expect_success("deploy --dry-run");
    assert!(run.stdout.contains("agrees with the facts"), "{}", run.stdout);
    assert!(run.stdout.contains("kubectl --context kind-lre apply -k "), "{}", run.stdout);

    // Independently of the xtask's own check: what kubectl renders against generated/config/BUILD.
    let objects = xtask::cluster::rendered_objects(&xtask::Project::new(dir.path())).unwrap();
    let mut advertised = BTreeSet::new();
    for map in objects.iter().filter(|o| o["kind"] == "ConfigMap") {
        let config: serde_json::Value = serde_json::from_str(map["data"]["config.json"].as_str().unwrap()).unwrap();
        for worker in config["workers"].as_array().into_iter().flatten() {
            advertised.insert(
                worker["local"]["platform_properties"]["container-image"]["values"][0].as_str().unwrap().to_owned(),
            );
        }
    }
    assert_eq!(advertised, platform_images(dir.path()));
    let names: BTreeSet<&str> = objects.iter().filter_map(|o| o["metadata"]["name"].as_str()).collect();
    for deployment in objects.iter().filter(|o| o["kind"] == "Deployment") {
        for volume in deployment["spec"]["template"]["spec"]["volumes"].as_array().unwrap() {
            if let Some(map) = volume["configMap"]["name"].as_str() {
                assert!(names.contains(map), "{map} is mounted but not rendered");
            }
        }
    }
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("generated/lre.lock.json")).unwrap()).unwrap();
    let cc_tag = lock["toolchains"]["lre-cc"]["image"]["tag"].as_str().unwrap();
    let cc_worker = objects.iter().find(|o| o["metadata"]["name"] == "nativelink-worker-lre-cc").unwrap();
    assert_eq!(
        cc_worker["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("localhost:5001/nativelink-worker-lre-cc:{cc_tag}")
    );
}

#[test]
fn hand_edits_to_workers_or_host_exposure_fail_the_check() {
    require("kubectl");
    let edits: [(&str, &str, &str, &str); 3] = [
        (
            "generated/kubernetes/worker-lre-cc-config.json",
            "docker://lre-cc:",
            "docker://lre-cc:edited-by-hand-",
            // Caught before kustomize runs: deploy refuses a stale generated/.
            "generated/kubernetes/worker-lre-cc-config.json is stale",
        ),
        (
            "kubernetes/kustomization.yaml",
            "images:\n",
            "images:\n- name: localhost:5001/nativelink-worker-lre-java\n  newTag: latest\n",
            "Deployment nativelink-worker-lre-java runs image \"localhost:5001/nativelink-worker-lre-java:latest\"",
        ),
        (
            "kubernetes/cas.yaml",
            "          containerPort: 50051\n",
            "          containerPort: 50051\n          hostPort: 50051\n",
            "binds hostPort 50051",
        ),
    ];
    for (file, from, to, expected) in edits {
        let dir = TempDir::new("kustomize-edit");
        copy_repo(dir.path());
        let path = dir.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} no longer contains {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        let run = xtask(dir.path(), &["deploy", "--dry-run"])
            .expect_failure(&format!("deploy --dry-run after editing {file}"));
        assert!(run.stderr.contains(expected), "{file}: expected {expected:?} in:\n{}", run.stderr);
        if file.starts_with("generated/") {
            let check =
                xtask(dir.path(), &["generate", "--check"]).expect_failure("generate --check after a hand edit");
            assert!(
                check.stderr.contains("edited-by-hand") || check.stdout.contains("edited-by-hand"),
                "no diff shown"
            );
        }
    }
}

#[test]
fn deploy_without_kubectl_says_what_to_install_and_runs_nothing() {
    let dir = TempDir::new("kustomize-no-kubectl");
    copy_repo(dir.path());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .env("PATH", dir.path())
        .args(["--root", dir.path().to_str().unwrap(), "deploy", "--dry-run"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("kubectl is missing"), "{stderr}");
}
