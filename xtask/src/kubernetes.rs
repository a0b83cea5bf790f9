//! The Kubernetes example's generated half (pure), its consistency check, and how endpoints are
//! read from the cluster's services.
//!
//! `generate` renders `generated/kubernetes/`: one ConfigMap per NativeLink process (the same
//! configs `up` runs, with in-cluster addresses) and one worker Deployment per toolchain. The
//! hand-written kustomize base in `kubernetes/` adds the CAS and scheduler Deployments, Services
//! and the example TLS material, and includes the generated half.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::facts::Facts;
use crate::nativelink::{self, Role, TlsListener, Topology};

/// The local registry `cargo xtask cluster up` runs, as the cluster's nodes and the host see it.
pub const REGISTRY: &str = "localhost:5001";
/// Where the hand-written base lives, relative to the repository.
pub const BASE_DIR: &str = "kubernetes";
/// Where the generated half lives, relative to `generated/`.
pub const GENERATED_DIR: &str = "kubernetes";

pub const CACHE_SERVICE: &str = "nativelink-cas";
pub const SCHEDULER_SERVICE: &str = "nativelink-scheduler";
/// The name of the Service port that clients use.
pub const CLIENT_PORT_NAME: &str = "grpc";
pub const CACHE_PORT: u16 = 50051;
pub const CACHE_TLS_PORT: u16 = 50071;
pub const SCHEDULER_PORT: u16 = 50052;
pub const WORKER_API_PORT: u16 = 50061;

const CONFIG_DIR: &str = "/etc/nativelink";
const DATA_DIR: &str = "/var/lib/nativelink";
const TLS_DIR: &str = "/etc/nativelink-tls";

/// Processes reach each other through the Services; inside a pod a server binds every interface
/// of the pod (which is not the host's).
fn cluster_topology() -> Topology {
    Topology {
        cache_listen: format!("0.0.0.0:{CACHE_PORT}"),
        scheduler_listen: format!("0.0.0.0:{SCHEDULER_PORT}"),
        worker_api_listen: format!("0.0.0.0:{WORKER_API_PORT}"),
        cache_url: format!("grpc://{CACHE_SERVICE}:{CACHE_PORT}"),
        worker_api_url: format!("grpc://{SCHEDULER_SERVICE}:{WORKER_API_PORT}"),
        instance_name: "main".to_owned(),
        data_dir: DATA_DIR.to_owned(),
        cache_tls: Some(TlsListener {
            listen: format!("0.0.0.0:{CACHE_TLS_PORT}"),
            cert_file: format!("{TLS_DIR}/tls.crt"),
            key_file: format!("{TLS_DIR}/tls.key"),
        }),
    }
}

pub fn config_map_name(process: &str) -> String {
    format!("nativelink-{process}-config")
}

pub fn worker_deployment_name(toolchain: &str) -> String {
    format!("nativelink-worker-{toolchain}")
}

/// The worker image of a toolchain: the toolchain image's tag, in the local registry.
pub fn worker_image(toolchain: &str, tag: &str) -> String {
    format!("{REGISTRY}/{}:{tag}", worker_deployment_name(toolchain))
}

const GENERATED_BY: &str = "cargo xtask generate (from generated/lre.lock.json); do not edit";

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("JSON values serialise") + "\n"
}

/// The files of `generated/kubernetes/`, by path relative to `generated/`.
pub fn render(facts: &Facts) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for process in nativelink::render(facts, &cluster_topology()) {
        let config = pretty(&process.config);
        files.insert(
            format!("{GENERATED_DIR}/{}-config.json", process.name),
            pretty(&json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": config_map_name(&process.name),
                    "annotations": { "lre.nativelink.dev/generated-by": GENERATED_BY },
                },
                "data": { "config.json": config },
            })),
        );
        if process.role == Role::Worker {
            let toolchain = process.name.strip_prefix("worker-").expect("workers are named worker-<toolchain>");
            let tag = &facts.toolchains[toolchain].image.tag;
            files.insert(
                format!("{GENERATED_DIR}/{}.json", process.name),
                pretty(&worker(toolchain, tag, &process.name, &config)),
            );
        }
    }
    let resources: Vec<&str> = files.keys().map(|path| &path[GENERATED_DIR.len() + 1..]).collect();
    let mut kustomization = format!(
        "{}apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
        crate::render::HEADER
    );
    for resource in resources {
        kustomization += &format!("- {resource}\n");
    }
    files.insert(format!("{GENERATED_DIR}/kustomization.yaml"), kustomization);
    files
}

fn worker(toolchain: &str, tag: &str, process: &str, config: &str) -> Value {
    let name = worker_deployment_name(toolchain);
    let labels = json!({ "app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "lre" });
    let digest: String = Sha256::digest(config.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name, "labels": labels, "annotations": { "lre.nativelink.dev/generated-by": GENERATED_BY } },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app.kubernetes.io/name": name } },
            "template": {
                // A changed config rolls the workers.
                "metadata": { "labels": labels, "annotations": { "lre.nativelink.dev/config-digest": digest } },
                "spec": {
                    "containers": [{
                        "name": "worker",
                        "image": worker_image(toolchain, tag),
                        "command": ["nativelink"],
                        "args": [format!("{CONFIG_DIR}/config.json")],
                        "volumeMounts": [
                            { "name": "config", "mountPath": CONFIG_DIR, "readOnly": true },
                            { "name": "data", "mountPath": DATA_DIR },
                        ],
                    }],
                    "volumes": [
                        { "name": "config", "configMap": { "name": config_map_name(process) } },
                        { "name": "data", "emptyDir": {} },
                    ],
                },
            },
        },
    })
}

/// Everything wrong with the objects a kustomization renders, measured against the facts: missing
/// ConfigMaps and Secrets, worker images or platform properties that differ from the generated
/// Bazel platforms, and anything that exposes a port on the host.
pub fn verify(objects: &[Value], facts: &Facts) -> Vec<String> {
    let mut problems = Vec::new();
    let named = |kind: &str, name: &str| {
        objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"].as_str() == Some(name))
    };
    for object in objects {
        let name = object["metadata"]["name"].as_str().unwrap_or("?");
        let kind = object["kind"].as_str().unwrap_or("?");
        let pod = &object["spec"]["template"]["spec"];
        if kind == "Deployment" {
            for volume in pod["volumes"].as_array().into_iter().flatten() {
                if let Some(map) = volume["configMap"]["name"].as_str() {
                    if named("ConfigMap", map).is_none() {
                        problems.push(format!(
                            "Deployment {name} mounts ConfigMap {map}, which is not in the kustomization"
                        ));
                    }
                }
                if let Some(secret) = volume["secret"]["secretName"].as_str() {
                    if named("Secret", secret).is_none() {
                        problems.push(format!(
                            "Deployment {name} mounts Secret {secret}, which is not in the kustomization"
                        ));
                    }
                }
            }
            if pod["hostNetwork"] == true {
                problems.push(format!("Deployment {name} uses the host's network"));
            }
            for container in pod["containers"].as_array().into_iter().flatten() {
                for port in container["ports"].as_array().into_iter().flatten() {
                    if port.get("hostPort").is_some() {
                        problems.push(format!("Deployment {name} binds hostPort {} on every node", port["hostPort"]));
                    }
                }
            }
        }
        if kind == "Service" {
            if object["spec"]["type"] == "NodePort" {
                problems.push(format!("Service {name} is a NodePort: it listens on every node's addresses"));
            }
            if object["spec"].get("externalIPs").is_some() {
                problems.push(format!("Service {name} sets externalIPs"));
            }
        }
    }
    for (toolchain, facts) in &facts.toolchains {
        let deployment_name = worker_deployment_name(toolchain);
        let Some(deployment) = named("Deployment", &deployment_name) else {
            problems.push(format!("no Deployment {deployment_name} for toolchain {toolchain}"));
            continue;
        };
        let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap_or("");
        let expected = worker_image(toolchain, &facts.image.tag);
        if image != expected {
            problems.push(format!("Deployment {deployment_name} runs image {image:?}; the facts say {expected:?}"));
        }
        let map_name = config_map_name(&format!("worker-{toolchain}"));
        let advertised = named("ConfigMap", &map_name)
            .and_then(|map| map["data"]["config.json"].as_str())
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .map(|config| config["workers"][0]["local"]["platform_properties"].clone());
        let expected: serde_json::Map<String, Value> =
            facts.platform_properties().into_iter().map(|(key, value)| (key, json!({ "values": [value] }))).collect();
        match advertised {
            Some(properties) if properties == Value::Object(expected.clone()) => {}
            Some(properties) => problems.push(format!(
                "the worker of {toolchain} advertises {properties}; the generated Bazel platform sends {}",
                Value::Object(expected)
            )),
            None => problems.push(format!("ConfigMap {map_name} is missing or holds no readable worker config")),
        }
    }
    problems
}

/// Parses concatenated JSON documents (what `kubectl … -o json` prints for several objects).
pub fn parse_objects(text: &str) -> Result<Vec<Value>> {
    let mut objects = Vec::new();
    for document in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        let document = document.context("kubectl printed something that is not JSON")?;
        match document["kind"].as_str() {
            Some("List") => objects.extend(document["items"].as_array().cloned().unwrap_or_default()),
            _ => objects.push(document),
        }
    }
    Ok(objects)
}

/// A client URL for `service` from its LoadBalancer ingress and its `grpc` port (the only port,
/// when there is one); `None` while the service has no external address.
pub fn service_url(service: &Value) -> Result<Option<String>> {
    let name = service["metadata"]["name"].as_str().unwrap_or("?");
    let ports = service["spec"]["ports"].as_array().cloned().unwrap_or_default();
    let port = match ports.as_slice() {
        [only] => only,
        several => several
            .iter()
            .find(|p| p["name"] == CLIENT_PORT_NAME)
            .with_context(|| format!("Service {name} has several ports and none is named {CLIENT_PORT_NAME:?}"))?,
    };
    let number = port["port"].as_u64().with_context(|| format!("Service {name} has a port without a number"))?;
    let ingress = &service["status"]["loadBalancer"]["ingress"][0];
    let host = ingress["ip"].as_str().or_else(|| ingress["hostname"].as_str());
    Ok(host.map(|host| {
        if host.contains(':') {
            format!("grpc://[{host}]:{number}")
        } else {
            format!("grpc://{host}:{number}")
        }
    }))
}

/// The cache and executor URLs from `kubectl get services -o json`, if both have an address.
pub fn endpoints_from_services(services: &[Value]) -> Result<Option<(String, String)>> {
    let url = |name: &str| -> Result<Option<String>> {
        match services.iter().find(|s| s["metadata"]["name"] == name) {
            Some(service) => service_url(service),
            None => bail!("the cluster has no Service {name}; run `cargo xtask deploy`"),
        }
    };
    Ok(url(CACHE_SERVICE)?.zip(url(SCHEDULER_SERVICE)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered_objects(facts: &Facts) -> Vec<Value> {
        render(facts)
            .iter()
            .filter(|(path, _)| path.ends_with(".json"))
            .map(|(_, text)| serde_json::from_str(text).unwrap())
            .collect()
    }

    #[test]
    fn workers_run_the_toolchain_tag_and_advertise_the_platform() {
        let facts = crate::facts::sample("7.4.1");
        let files = render(&facts);
        let worker: Value = serde_json::from_str(&files["kubernetes/worker-lre-cc.json"]).unwrap();
        let container = &worker["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "localhost:5001/nativelink-worker-lre-cc:0123abcd");
        assert_eq!(container["args"][0], "/etc/nativelink/config.json");
        let map: Value = serde_json::from_str(&files["kubernetes/worker-lre-cc-config.json"]).unwrap();
        let config: Value = serde_json::from_str(map["data"]["config.json"].as_str().unwrap()).unwrap();
        assert_eq!(
            config["workers"][0]["local"]["platform_properties"]["container-image"]["values"][0],
            "docker://lre-cc:0123abcd"
        );
        assert_eq!(config["workers"][0]["local"]["worker_api_endpoint"]["uri"], "grpc://nativelink-scheduler:50061");
        let kustomization = &files["kubernetes/kustomization.yaml"];
        for resource in
            ["cas-config.json", "scheduler-config.json", "worker-lre-cc.json", "worker-lre-java-config.json"]
        {
            assert!(kustomization.contains(&format!("- {resource}\n")), "{kustomization}");
        }
        assert!(verify(&rendered_objects(&facts), &facts).is_empty());
    }

    #[test]
    fn verify_catches_hand_edits_and_host_exposure() {
        let facts = crate::facts::sample("7.4.1");
        let mut objects = rendered_objects(&facts);
        let worker = objects.iter_mut().find(|o| o["metadata"]["name"] == "nativelink-worker-lre-cc").unwrap();
        worker["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!("localhost:5001/nativelink-worker-lre-cc:latest");
        worker["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
        let map = objects.iter_mut().find(|o| o["metadata"]["name"] == "nativelink-worker-lre-java-config").unwrap();
        let edited = map["data"]["config.json"]
            .as_str()
            .unwrap()
            .replace("docker://lre-java:4567ef01", "docker://lre-java:hand");
        map["data"]["config.json"] = json!(edited);
        objects.retain(|o| o["metadata"]["name"] != "nativelink-scheduler-config");
        objects.push(json!({
            "kind": "Deployment", "metadata": { "name": "nativelink-scheduler" },
            "spec": { "template": { "spec": { "volumes": [{ "name": "c", "configMap": { "name": "nativelink-scheduler-config" } }] } } }
        }));
        objects.push(
            json!({ "kind": "Service", "metadata": { "name": "nativelink-cas" }, "spec": { "type": "NodePort" } }),
        );
        let problems = verify(&objects, &facts).join("\n");
        for expected in [
            "Deployment nativelink-worker-lre-cc runs image \"localhost:5001/nativelink-worker-lre-cc:latest\"; the facts say \"localhost:5001/nativelink-worker-lre-cc:0123abcd\"",
            "Deployment nativelink-worker-lre-cc uses the host's network",
            "the worker of lre-java advertises",
            "Deployment nativelink-scheduler mounts ConfigMap nativelink-scheduler-config, which is not in the kustomization",
            "Service nativelink-cas is a NodePort",
        ] {
            assert!(problems.contains(expected), "{expected:?} not in:\n{problems}");
        }
    }

    fn service(name: &str, ports: Value, ingress: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service", "metadata": { "name": name },
            "spec": { "type": "LoadBalancer", "ports": ports },
            "status": { "loadBalancer": ingress },
        })
    }

    #[test]
    fn endpoints_come_from_load_balancer_ingress_and_the_grpc_port() {
        let list = json!({
            "apiVersion": "v1", "kind": "List",
            "items": [
                service("nativelink-cas", json!([{ "name": "grpc", "port": 50051 }, { "name": "grpc-tls", "port": 50071 }]), json!({ "ingress": [{ "ip": "172.18.0.5" }] })),
                service("nativelink-scheduler", json!([{ "name": "worker-api", "port": 50061 }, { "name": "grpc", "port": 50052 }]), json!({ "ingress": [{ "hostname": "lb.example" }] })),
            ],
        });
        let services = parse_objects(&list.to_string()).unwrap();
        assert_eq!(
            endpoints_from_services(&services).unwrap(),
            Some(("grpc://172.18.0.5:50051".to_owned(), "grpc://lb.example:50052".to_owned()))
        );
    }

    #[test]
    fn a_service_without_ingress_gives_no_endpoint_and_ambiguous_ports_are_refused() {
        let pending = service("nativelink-cas", json!([{ "name": "grpc", "port": 50051 }]), json!({}));
        assert_eq!(service_url(&pending).unwrap(), None);
        let single = service("x", json!([{ "port": 8980 }]), json!({ "ingress": [{ "ip": "fd00::1" }] }));
        assert_eq!(service_url(&single).unwrap().as_deref(), Some("grpc://[fd00::1]:8980"));
        let ambiguous = service("x", json!([{ "name": "a", "port": 1 }, { "name": "b", "port": 2 }]), json!({}));
        assert!(service_url(&ambiguous).unwrap_err().to_string().contains("none is named \"grpc\""));
        let objects = parse_objects(&format!(
            "{}\n{}",
            pending,
            service("nativelink-scheduler", json!([{ "port": 50052 }]), json!({}))
        ))
        .unwrap();
        assert_eq!(endpoints_from_services(&objects).unwrap(), None);
        let err = endpoints_from_services(&objects[..1]).unwrap_err().to_string();
        assert!(err.contains("no Service nativelink-scheduler"), "{err}");
    }
}
