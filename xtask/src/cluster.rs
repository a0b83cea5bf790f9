//! `cargo xtask cluster up|down` and `cargo xtask deploy`: the Kubernetes example on a local kind
//! cluster with a local registry.
//!
//! Every command is planned first (a pure function from what is known to a list of argv
//! [`Step`]s, which the tests check) and then run step by step with `xshell`. The host reaches the
//! CAS and the scheduler through `kubectl port-forward` processes that `deploy` starts (bound to
//! 127.0.0.1) and `cluster down` stops; kind has no load balancer of its own.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use xshell::{cmd, Shell};

use crate::facts::Facts;
use crate::kubernetes::{self, CACHE_PORT, CACHE_SERVICE, REGISTRY, SCHEDULER_PORT, SCHEDULER_SERVICE};
use crate::process::{self, Identity, Liveness};
use crate::remote::RemoteSettings;
use crate::{prereqs, run, Project};

pub const CLUSTER_NAME: &str = "lre";
pub const REGISTRY_CONTAINER: &str = "lre-registry";
const REGISTRY_HOST_PORT: u16 = 5001;
const NODE: &str = "lre-control-plane";

/// One command to run: argv, optional stdin, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub why: String,
    pub argv: Vec<String>,
    pub stdin: Option<String>,
}

fn step(why: impl Into<String>, argv: &[&str]) -> Step {
    Step { why: why.into(), argv: argv.iter().map(|a| (*a).to_owned()).collect(), stdin: None }
}

/// What `cluster up` finds before it plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClusterState {
    pub registry_running: bool,
    pub registry_exists: bool,
    pub cluster_exists: bool,
    pub registry_on_kind_network: bool,
}

/// kind's configuration: containerd reads registry mirrors from `certs.d`.
pub const KIND_CONFIG: &str = "\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
containerdConfigPatches:
- |-
  [plugins.\"io.containerd.grpc.v1.cri\".registry]
    config_path = \"/etc/containerd/certs.d\"
";

/// The documented way for a cluster to advertise a local registry (KEP-1755).
fn registry_hosting_config_map() -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: local-registry-hosting\n  namespace: kube-public\n\
         data:\n  localRegistryHosting.v1: |\n    host: \"{REGISTRY}\"\n    help: \"https://kind.sigs.k8s.io/docs/user/local-registry/\"\n"
    )
}

pub fn cluster_up_plan(state: ClusterState, kind_config: &Path) -> Vec<Step> {
    let mut steps = Vec::new();
    let port_mapping = format!("127.0.0.1:{REGISTRY_HOST_PORT}:5000");
    if !state.registry_running {
        steps.push(if state.registry_exists {
            step("start the local registry", &["docker", "start", REGISTRY_CONTAINER])
        } else {
            step(
                "run the local registry (on the host's loopback only)",
                &[
                    "docker",
                    "run",
                    "-d",
                    "--restart=always",
                    "-p",
                    &port_mapping,
                    "--network",
                    "bridge",
                    "--name",
                    REGISTRY_CONTAINER,
                    "registry:2",
                ],
            )
        });
    }
    if !state.cluster_exists {
        let config = kind_config.display().to_string();
        steps.push(step(
            "create the kind cluster",
            &["kind", "create", "cluster", "--name", CLUSTER_NAME, "--config", &config],
        ));
    }
    let certs_dir = format!("/etc/containerd/certs.d/localhost:{REGISTRY_HOST_PORT}");
    steps.push(step(
        "make the node's containerd resolve the registry",
        &["docker", "exec", NODE, "mkdir", "-p", &certs_dir],
    ));
    let mut hosts = step(
        "point localhost:5001 at the registry container",
        &["docker", "exec", "-i", NODE, "cp", "/dev/stdin", &format!("{certs_dir}/hosts.toml")],
    );
    hosts.stdin = Some(format!("[host.\"http://{REGISTRY_CONTAINER}:5000\"]\n"));
    steps.push(hosts);
    if !state.registry_on_kind_network {
        steps.push(step(
            "put the registry on kind's network",
            &["docker", "network", "connect", "kind", REGISTRY_CONTAINER],
        ));
    }
    let mut hosting =
        step("advertise the registry to the cluster", &["kubectl", "--context", "kind-lre", "apply", "-f", "-"]);
    hosting.stdin = Some(registry_hosting_config_map());
    steps.push(hosting);
    steps
}

pub fn cluster_down_plan(state: ClusterState) -> Vec<Step> {
    let mut steps = Vec::new();
    if state.cluster_exists {
        steps.push(step("delete the kind cluster", &["kind", "delete", "cluster", "--name", CLUSTER_NAME]));
    }
    if state.registry_exists {
        steps.push(step("remove the local registry", &["docker", "rm", "-f", REGISTRY_CONTAINER]));
    }
    steps
}

/// Where an image `deploy` pushes comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// The flake output of that name, pushed with nix2container's `copyTo`.
    Nix,
    /// A skopeo transport reference: `oci:DIR[:TAG]` or `docker-archive:FILE`.
    Skopeo(String),
}

/// `NAME=oci:DIR` or `NAME=docker-archive:FILE`.
pub fn parse_image_source(text: &str) -> Result<(String, ImageSource)> {
    let (name, source) = text
        .split_once('=')
        .with_context(|| format!("--image {text:?}: write NAME=oci:DIR or NAME=docker-archive:FILE"))?;
    if !(source.starts_with("oci:") || source.starts_with("docker-archive:")) {
        bail!("--image {text:?}: the source must be oci:DIR or docker-archive:FILE");
    }
    Ok((name.to_owned(), ImageSource::Skopeo(source.to_owned())))
}

/// The registry images the rendered objects run (`localhost:5001/NAME:TAG`), by name.
fn images(objects: &[Value]) -> Result<BTreeSet<(String, String)>> {
    let mut images = BTreeSet::new();
    for object in objects.iter().filter(|o| o["kind"] == "Deployment") {
        for container in object["spec"]["template"]["spec"]["containers"].as_array().into_iter().flatten() {
            let image = container["image"].as_str().unwrap_or("");
            let (name, tag) =
                image.strip_prefix(&format!("{REGISTRY}/")).and_then(|rest| rest.rsplit_once(':')).with_context(
                    || format!("Deployment {} runs {image:?}, which is not in {REGISTRY}", object["metadata"]["name"]),
                )?;
            images.insert((name.to_owned(), tag.to_owned()));
        }
    }
    Ok(images)
}

pub fn deployments(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

pub fn deploy_plan(
    objects: &[Value],
    sources: &[(String, ImageSource)],
    base_dir: &Path,
    timeout: Duration,
) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for (name, tag) in images(objects)? {
        let destination = format!("docker://{REGISTRY}/{name}:{tag}");
        let source = sources.iter().find(|(n, _)| *n == name).map_or(ImageSource::Nix, |(_, s)| s.clone());
        steps.push(match source {
            ImageSource::Nix => step(
                format!("push {name} from the flake"),
                &["nix", "run", &format!(".#{name}.copyTo"), "--", &destination, "--dest-tls-verify=false"],
            ),
            ImageSource::Skopeo(reference) => step(
                format!("push {name} from {reference}"),
                &["skopeo", "copy", "--dest-tls-verify=false", &reference, &destination],
            ),
        });
    }
    let base = base_dir.display().to_string();
    steps.push(step("apply the kustomization", &["kubectl", "--context", "kind-lre", "apply", "-k", &base]));
    let timeout = format!("--timeout={}s", timeout.as_secs());
    for deployment in deployments(objects) {
        steps.push(step(
            format!("wait for {deployment}"),
            &["kubectl", "--context", "kind-lre", "rollout", "status", &format!("deployment/{deployment}"), &timeout],
        ));
    }
    Ok(steps)
}

/// The port-forwards that make the CAS and the scheduler reachable on this machine's loopback.
pub fn port_forward_argv() -> [Vec<String>; 2] {
    let forward = |service: &str, port: u16| {
        [
            "kubectl",
            "--context",
            "kind-lre",
            "port-forward",
            "--address",
            "127.0.0.1",
            &format!("service/{service}"),
            &format!("{port}:{port}"),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    [forward(CACHE_SERVICE, CACHE_PORT), forward(SCHEDULER_SERVICE, SCHEDULER_PORT)]
}

fn missing_tools(steps: &[Step]) -> Vec<String> {
    let programs: BTreeSet<&str> = steps.iter().map(|s| s.argv[0].as_str()).collect();
    programs.into_iter().filter(|program| which::which(program).is_err()).map(str::to_owned).collect()
}

fn advice(tool: &str) -> &'static str {
    match tool {
        "kind" => "install kind (https://kind.sigs.k8s.io; the Nix dev shell has it)",
        "kubectl" => "install kubectl (Debian: kubernetes-client; the Nix dev shell has it)",
        "docker" => "install Docker (Debian: docker.io) and start its daemon",
        "skopeo" => "install skopeo (Debian: skopeo)",
        "nix" => "enter `nix develop`, or push images built elsewhere with --image NAME=oci:DIR",
        _ => "install it",
    }
}

fn run_steps(steps: &[Step]) -> Result<()> {
    let missing = missing_tools(steps);
    if !missing.is_empty() {
        let lines: Vec<String> = missing.iter().map(|tool| format!("  {tool}: {}", advice(tool))).collect();
        bail!("missing tools, nothing was run:\n{}", lines.join("\n"));
    }
    let sh = Shell::new()?;
    for (index, step) in steps.iter().enumerate() {
        eprintln!("[{}/{}] {}", index + 1, steps.len(), step.why);
        let (program, args) = (&step.argv[0], &step.argv[1..]);
        let command = cmd!(sh, "{program} {args...}");
        let command = match &step.stdin {
            Some(input) => command.stdin(input),
            None => command,
        };
        command.run().with_context(|| format!("step {:?} failed", step.why))?;
    }
    Ok(())
}

fn docker_reports(args: &[&str]) -> Option<String> {
    let sh = Shell::new().ok()?;
    cmd!(sh, "docker {args...}").quiet().ignore_stderr().read().ok()
}

fn cluster_state() -> ClusterState {
    let running = docker_reports(&["inspect", "-f", "{{.State.Running}}", REGISTRY_CONTAINER]);
    let networks = docker_reports(&["inspect", "-f", "{{json .NetworkSettings.Networks}}", REGISTRY_CONTAINER]);
    let clusters = Shell::new().ok().and_then(|sh| cmd!(sh, "kind get clusters").quiet().ignore_stderr().read().ok());
    ClusterState {
        registry_exists: running.is_some(),
        registry_running: running.as_deref() == Some("true"),
        cluster_exists: clusters.is_some_and(|c| c.lines().any(|l| l.trim() == CLUSTER_NAME)),
        registry_on_kind_network: networks.is_some_and(|n| n.contains("\"kind\"")),
    }
}

fn cluster_dir(project: &Project) -> PathBuf {
    project.local_dir().join("cluster")
}

/// `cargo xtask cluster up`.
pub fn up(project: &Project) -> Result<()> {
    prereqs::ensure(&[&prereqs::KIND, &prereqs::KUBECTL, &prereqs::CONTAINER_RUNTIME], false)?;
    let kind_config = cluster_dir(project).join("kind.yaml");
    crate::fsx::write_atomic(&kind_config, KIND_CONFIG)?;
    run_steps(&cluster_up_plan(cluster_state(), &kind_config))?;
    println!("Cluster kind-lre is up, with a registry on {REGISTRY}. Next: `cargo xtask deploy`.");
    Ok(())
}

/// `cargo xtask cluster down`: stops the port-forwards, deletes the cluster and the registry.
pub fn down(project: &Project) -> Result<()> {
    stop_port_forwards(project)?;
    let steps = cluster_down_plan(cluster_state());
    if steps.is_empty() {
        println!("Nothing to remove: no kind cluster {CLUSTER_NAME:?} and no container {REGISTRY_CONTAINER:?}.");
        return Ok(());
    }
    run_steps(&steps)
}

/// The objects the kustomization renders, read with the real `kubectl kustomize`.
pub fn rendered_objects(project: &Project) -> Result<Vec<Value>> {
    prereqs::ensure(&[&prereqs::KUBECTL], false)?;
    let sh = Shell::new()?;
    let base = project.root.join(kubernetes::BASE_DIR);
    let yaml = cmd!(sh, "kubectl kustomize {base}").quiet().read().context("`kubectl kustomize` failed")?;
    // kubectl prints YAML only; an empty local merge patch turns it into JSON without a cluster.
    let empty_patch = "{}";
    let json = cmd!(sh, "kubectl patch --local -f - --type merge -p {empty_patch} -o json")
        .quiet()
        .stdin(yaml)
        .read()
        .context("kubectl could not convert the kustomization's objects to JSON")?;
    kubernetes::parse_objects(&json)
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeployOptions {
    pub dry_run: bool,
    pub images: Vec<(String, ImageSource)>,
    pub timeout: Duration,
}

/// `cargo xtask deploy`.
pub fn deploy(project: &Project, options: &DeployOptions) -> Result<()> {
    run::ensure_fresh(project)?;
    let facts = Facts::load(&project.lock_path())?;
    let objects = rendered_objects(project)?;
    let problems = kubernetes::verify(&objects, &facts);
    if !problems.is_empty() {
        bail!(
            "the kustomization in {}/ disagrees with the facts or exposes the host:\n  {}\n\
             Worker configs and images come from `cargo xtask generate`; do not edit them by hand.",
            kubernetes::BASE_DIR,
            problems.join("\n  ")
        );
    }
    let steps = deploy_plan(&objects, &options.images, &project.root.join(kubernetes::BASE_DIR), options.timeout)?;
    if options.dry_run {
        println!("The kustomization renders {} objects and agrees with the facts. `deploy` would run:", objects.len());
        for step in &steps {
            println!("  # {}\n  {}", step.why, step.argv.join(" "));
        }
        return Ok(());
    }
    run_steps(&steps)?;
    start_port_forwards(project)?;
    let settings = cluster_endpoints(project)?.context("the port-forwards did not come up")?;
    println!(
        "Deployed. remote cache: {}  remote executor: {}",
        settings.cache.unwrap_or_default(),
        settings.executor.unwrap_or_default()
    );
    println!("`cargo xtask run-remote` uses these while the port-forwards run; `cargo xtask cluster down` removes everything.");
    Ok(())
}

#[derive(Debug, Serialize, Deserialize)]
struct PortForwards {
    processes: Vec<Identity>,
}

fn port_forwards_path(project: &Project) -> PathBuf {
    cluster_dir(project).join("port-forwards.json")
}

fn start_port_forwards(project: &Project) -> Result<()> {
    stop_port_forwards(project)?;
    let kubectl = which::which("kubectl").context("kubectl is not on PATH")?;
    let dir = cluster_dir(project);
    std::fs::create_dir_all(&dir)?;
    let mut processes = Vec::new();
    for argv in port_forward_argv() {
        let (identity, _handle) = process::spawn_detached(&kubectl, &argv[1..], &dir, &dir.join("port-forward.log"))?;
        processes.push(identity);
        crate::fsx::write_atomic(
            &port_forwards_path(project),
            &serde_json::to_string_pretty(&PortForwards { processes: processes.clone() })?,
        )?;
    }
    Ok(())
}

fn stop_port_forwards(project: &Project) -> Result<()> {
    let path = port_forwards_path(project);
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
    let recorded: PortForwards =
        serde_json::from_str(&text).with_context(|| format!("{} is unreadable", path.display()))?;
    for identity in &recorded.processes {
        process::stop(identity, Duration::from_secs(5))?;
    }
    std::fs::remove_file(&path)?;
    Ok(())
}

/// The cluster's endpoints, once `deploy` ran here: a LoadBalancer's ingress when the services
/// have one (read with `kubectl get services -o json`), else the running port-forwards.
pub fn cluster_endpoints(project: &Project) -> Result<Option<RemoteSettings>> {
    let path = port_forwards_path(project);
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    let sh = Shell::new()?;
    let services = cmd!(
        sh,
        "kubectl --context kind-lre --request-timeout=3s get services {CACHE_SERVICE} {SCHEDULER_SERVICE} -o json"
    )
    .quiet()
    .ignore_stderr()
    .read()
    .ok();
    if let Some(services) = services {
        if let Some((cache, executor)) = kubernetes::endpoints_from_services(&kubernetes::parse_objects(&services)?)? {
            return Ok(Some(RemoteSettings {
                cache: Some(cache),
                executor: Some(executor),
                instance_name: Some("main".into()),
                tls_ca: None,
            }));
        }
    }
    let recorded: PortForwards =
        serde_json::from_str(&text).with_context(|| format!("{} is unreadable", path.display()))?;
    if !recorded.processes.iter().all(|p| p.liveness() == Liveness::Running) {
        return Ok(None);
    }
    Ok(Some(RemoteSettings {
        cache: Some(format!("grpc://127.0.0.1:{CACHE_PORT}")),
        executor: Some(format!("grpc://127.0.0.1:{SCHEDULER_PORT}")),
        instance_name: Some("main".into()),
        tls_ca: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argvs(steps: &[Step]) -> Vec<String> {
        steps.iter().map(|s| s.argv.join(" ")).collect()
    }

    #[test]
    fn cluster_up_on_a_fresh_machine_runs_registry_cluster_and_wiring() {
        let steps = cluster_up_plan(ClusterState::default(), Path::new("/r/.lre/cluster/kind.yaml"));
        assert_eq!(
            argvs(&steps),
            [
                "docker run -d --restart=always -p 127.0.0.1:5001:5000 --network bridge --name lre-registry registry:2",
                "kind create cluster --name lre --config /r/.lre/cluster/kind.yaml",
                "docker exec lre-control-plane mkdir -p /etc/containerd/certs.d/localhost:5001",
                "docker exec -i lre-control-plane cp /dev/stdin /etc/containerd/certs.d/localhost:5001/hosts.toml",
                "docker network connect kind lre-registry",
                "kubectl --context kind-lre apply -f -",
            ]
        );
        assert_eq!(steps[3].stdin.as_deref(), Some("[host.\"http://lre-registry:5000\"]\n"));
        assert!(steps[5].stdin.as_deref().unwrap().contains("name: local-registry-hosting\n  namespace: kube-public"));
        assert!(KIND_CONFIG.contains("config_path = \"/etc/containerd/certs.d\""));
    }

    #[test]
    fn cluster_up_again_only_rewires_and_down_removes_what_exists() {
        let existing = ClusterState {
            registry_running: true,
            registry_exists: true,
            cluster_exists: true,
            registry_on_kind_network: true,
        };
        let steps = argvs(&cluster_up_plan(existing, Path::new("/k.yaml")));
        assert!(steps.iter().all(|s| !s.starts_with("kind create") && !s.starts_with("docker run")), "{steps:?}");
        let stopped = ClusterState { registry_running: false, ..existing };
        assert_eq!(argvs(&cluster_up_plan(stopped, Path::new("/k.yaml")))[0], "docker start lre-registry");
        assert_eq!(
            argvs(&cluster_down_plan(existing)),
            ["kind delete cluster --name lre", "docker rm -f lre-registry"]
        );
        assert!(cluster_down_plan(ClusterState::default()).is_empty());
    }

    #[test]
    fn deploy_pushes_each_image_applies_and_waits_for_every_rollout() {
        let facts = crate::facts::sample("7.4.1");
        let mut objects: Vec<Value> = kubernetes::render(&facts)
            .iter()
            .filter(|(path, _)| path.ends_with(".json"))
            .map(|(_, text)| serde_json::from_str(text).unwrap())
            .collect();
        objects.push(serde_json::json!({
            "kind": "Deployment", "metadata": { "name": "nativelink-cas" },
            "spec": { "template": { "spec": { "containers": [{ "image": "localhost:5001/nativelink:1.4.0" }] } } }
        }));
        let sources = [parse_image_source("nativelink=oci:/images/nativelink:1.4.0").unwrap()];
        let steps = deploy_plan(&objects, &sources, Path::new("/r/kubernetes"), Duration::from_secs(300)).unwrap();
        assert_eq!(
            argvs(&steps),
            [
                "skopeo copy --dest-tls-verify=false oci:/images/nativelink:1.4.0 docker://localhost:5001/nativelink:1.4.0",
                "nix run .#nativelink-worker-lre-cc.copyTo -- docker://localhost:5001/nativelink-worker-lre-cc:0123abcd --dest-tls-verify=false",
                "nix run .#nativelink-worker-lre-java.copyTo -- docker://localhost:5001/nativelink-worker-lre-java:4567ef01 --dest-tls-verify=false",
                "kubectl --context kind-lre apply -k /r/kubernetes",
                "kubectl --context kind-lre rollout status deployment/nativelink-worker-lre-cc --timeout=300s",
                "kubectl --context kind-lre rollout status deployment/nativelink-worker-lre-java --timeout=300s",
                "kubectl --context kind-lre rollout status deployment/nativelink-cas --timeout=300s",
            ]
        );
        assert!(parse_image_source("nativelink").unwrap_err().to_string().contains("NAME=oci:DIR"));
        assert!(parse_image_source("x=docker://hub/x")
            .unwrap_err()
            .to_string()
            .contains("oci:DIR or docker-archive:FILE"));
    }

    #[test]
    fn port_forwards_listen_on_loopback_only() {
        for argv in port_forward_argv() {
            let joined = argv.join(" ");
            assert!(joined.contains("port-forward --address 127.0.0.1 service/"), "{joined}");
        }
    }

    #[test]
    fn a_missing_tool_is_named_with_advice_before_anything_runs() {
        let steps = [step("impossible", &["lre-no-such-tool-here", "x"])];
        let err = run_steps(&steps).unwrap_err().to_string();
        assert!(
            err.contains("missing tools, nothing was run") && err.contains("lre-no-such-tool-here: install it"),
            "{err}"
        );
        assert!(advice("nix").contains("--image NAME=oci:DIR"));
    }
}
