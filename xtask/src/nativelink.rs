//! NativeLink configurations, rendered from the facts (pure).
//!
//! One CAS + action cache, one scheduler, and one worker per toolchain. Each worker advertises
//! exactly the platform properties the generated Bazel platform of its toolchain sends
//! ([`ToolchainFacts::platform_properties`]), and the scheduler matches them exactly, so an action
//! only ever runs on a worker of its own toolchain.
//!
//! The schema is NativeLink's array-based one (stores, schedulers and per-instance services as
//! lists with names), which NativeLink reads from 0.7.2 on.

use serde_json::{json, Map, Value};

use crate::facts::{Facts, ToolchainFacts};
use crate::version::Version;

/// The oldest NativeLink that reads the configurations rendered here.
pub const MINIMUM_VERSION: Version = Version::new(0, 7, 2);

const CAS_STORE: &str = "CAS";
const AC_STORE: &str = "AC";
const WORKER_CAS_STORE: &str = "WORKER_CAS";
const SCHEDULER: &str = "SCHEDULER";

/// Where the processes listen, how they reach each other, and where they keep data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// `HOST:PORT` the CAS + action cache listens on (Bazel's `--remote_cache`).
    pub cache_listen: String,
    /// `HOST:PORT` the scheduler's execution service listens on (Bazel's `--remote_executor`).
    pub scheduler_listen: String,
    /// `HOST:PORT` the scheduler's worker API listens on.
    pub worker_api_listen: String,
    /// How the scheduler and the workers reach the CAS (`grpc://HOST:PORT`).
    pub cache_url: String,
    /// How the workers reach the scheduler's worker API (`grpc://HOST:PORT`).
    pub worker_api_url: String,
    pub instance_name: String,
    /// Absolute directory under which every process keeps its stores and work directories.
    pub data_dir: String,
    /// A second, TLS listener of the cache.
    pub cache_tls: Option<TlsListener>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListener {
    pub listen: String,
    pub cert_file: String,
    pub key_file: String,
}

/// What one NativeLink process is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Cache,
    Scheduler,
    Worker,
}

/// One process to start: its name (unique, file-name safe), role and configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessConfig {
    pub name: String,
    pub role: Role,
    pub config: Value,
}

/// The configurations of every process, in start order: cache, scheduler, then the workers.
pub fn render(facts: &Facts, topology: &Topology) -> Vec<ProcessConfig> {
    let mut processes = vec![
        ProcessConfig { name: "cas".to_owned(), role: Role::Cache, config: cache(topology) },
        ProcessConfig { name: "scheduler".to_owned(), role: Role::Scheduler, config: scheduler(facts, topology) },
    ];
    for (name, toolchain) in &facts.toolchains {
        processes.push(ProcessConfig {
            name: format!("worker-{name}"),
            role: Role::Worker,
            config: worker(name, toolchain, topology),
        });
    }
    processes
}

fn filesystem_store(topology: &Topology, dir: &str, max_bytes: u64) -> Value {
    json!({
        "filesystem": {
            "content_path": format!("{}/{dir}/content", topology.data_dir),
            "temp_path": format!("{}/{dir}/tmp", topology.data_dir),
            "eviction_policy": { "max_bytes": max_bytes },
        }
    })
}

/// A store that forwards to the CAS process.
fn remote_store(topology: &Topology, name: &str, store_type: &str) -> Value {
    json!({
        "name": name,
        "grpc": {
            "instance_name": topology.instance_name,
            "endpoints": [{ "address": topology.cache_url }],
            "store_type": store_type,
        }
    })
}

fn listener(socket_address: &str) -> Value {
    json!({ "http": { "socket_address": socket_address } })
}

/// The services a Bazel client needs from a cache: CAS, action cache, ByteStream, capabilities.
fn cache_services(instance_name: &str) -> Map<String, Value> {
    let mut services = Map::new();
    services.insert("cas".into(), json!([{ "instance_name": instance_name, "cas_store": CAS_STORE }]));
    services.insert("ac".into(), json!([{ "instance_name": instance_name, "ac_store": AC_STORE }]));
    services.insert("bytestream".into(), json!([{ "instance_name": instance_name, "cas_store": CAS_STORE }]));
    services.insert("capabilities".into(), json!([{ "instance_name": instance_name }]));
    services.insert("health".into(), json!({}));
    services
}

fn cache(topology: &Topology) -> Value {
    let mut cas = filesystem_store(topology, "cas", 10_000_000_000);
    cas["name"] = json!(CAS_STORE);
    let mut ac = filesystem_store(topology, "ac", 500_000_000);
    ac["name"] = json!(AC_STORE);
    let mut servers = vec![json!({
        "name": "cache",
        "listener": listener(&topology.cache_listen),
        "services": cache_services(&topology.instance_name),
    })];
    if let Some(tls) = &topology.cache_tls {
        let mut tls_listener = listener(&tls.listen);
        tls_listener["http"]["tls"] = json!({ "cert_file": tls.cert_file, "key_file": tls.key_file });
        servers.push(json!({ "name": "cache-tls", "listener": tls_listener, "services": cache_services(&topology.instance_name) }));
    }
    json!({ "stores": [cas, ac], "servers": servers })
}

fn scheduler(facts: &Facts, topology: &Topology) -> Value {
    let properties: Map<String, Value> = facts
        .toolchains
        .values()
        .flat_map(ToolchainFacts::platform_properties)
        .map(|(property, _)| (property, json!("exact")))
        .collect();
    // The scheduler also serves the cache (forwarded to the CAS process), so a client given only
    // `--remote_executor` works too.
    let mut services = cache_services(&topology.instance_name);
    services.insert(
        "execution".into(),
        json!([{ "instance_name": topology.instance_name, "cas_store": CAS_STORE, "scheduler": SCHEDULER }]),
    );
    services.insert(
        "capabilities".into(),
        json!([{ "instance_name": topology.instance_name, "remote_execution": { "scheduler": SCHEDULER } }]),
    );
    json!({
        "stores": [remote_store(topology, CAS_STORE, "cas"), remote_store(topology, AC_STORE, "ac")],
        "schedulers": [{ "name": SCHEDULER, "simple": { "supported_platform_properties": properties } }],
        "servers": [
            { "name": "execution", "listener": listener(&topology.scheduler_listen), "services": services },
            {
                "name": "worker_api",
                "listener": listener(&topology.worker_api_listen),
                "services": { "worker_api": { "scheduler": SCHEDULER }, "health": {} },
            },
        ],
    })
}

fn worker(name: &str, toolchain: &ToolchainFacts, topology: &Topology) -> Value {
    let properties: Map<String, Value> = toolchain
        .platform_properties()
        .into_iter()
        .map(|(property, value)| (property, json!({ "values": [value] })))
        .collect();
    let dir = format!("worker-{name}");
    json!({
        "stores": [
            remote_store(topology, CAS_STORE, "cas"),
            remote_store(topology, AC_STORE, "ac"),
            {
                "name": WORKER_CAS_STORE,
                "fast_slow": {
                    // Must be a filesystem store: the worker hard-links inputs out of it.
                    "fast": filesystem_store(topology, &format!("{dir}/cas"), 10_000_000_000),
                    "slow": { "ref_store": { "name": CAS_STORE } },
                },
            },
        ],
        "workers": [{
            "local": {
                "name": name,
                "worker_api_endpoint": { "uri": topology.worker_api_url },
                "cas_fast_slow_store": WORKER_CAS_STORE,
                "upload_action_result": { "ac_store": AC_STORE },
                "work_directory": format!("{}/{dir}/work", topology.data_dir),
                "platform_properties": properties,
            }
        }],
        "servers": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        Topology {
            cache_listen: "127.0.0.1:50051".into(),
            scheduler_listen: "127.0.0.1:50052".into(),
            worker_api_listen: "127.0.0.1:50053".into(),
            cache_url: "grpc://127.0.0.1:50051".into(),
            worker_api_url: "grpc://127.0.0.1:50053".into(),
            instance_name: "main".into(),
            data_dir: "/repo/.lre/up/data".into(),
            cache_tls: None,
        }
    }

    fn server_addresses(config: &Value) -> Vec<&str> {
        config["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|server| server["listener"]["http"]["socket_address"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn one_cache_one_scheduler_and_a_worker_per_toolchain() {
        let processes = render(&crate::facts::sample("7.4.1"), &topology());
        let names: Vec<_> = processes.iter().map(|p| (p.name.as_str(), p.role)).collect();
        assert_eq!(
            names,
            [
                ("cas", Role::Cache),
                ("scheduler", Role::Scheduler),
                ("worker-lre-cc", Role::Worker),
                ("worker-lre-java", Role::Worker)
            ]
        );
        assert_eq!(server_addresses(&processes[0].config), ["127.0.0.1:50051"]);
        assert_eq!(server_addresses(&processes[1].config), ["127.0.0.1:50052", "127.0.0.1:50053"]);
        assert!(server_addresses(&processes[2].config).is_empty());
    }

    #[test]
    fn workers_advertise_exactly_the_generated_platform_properties() {
        let facts = crate::facts::sample("7.4.1");
        let processes = render(&facts, &topology());
        for (name, toolchain) in &facts.toolchains {
            let worker = processes.iter().find(|p| p.name == format!("worker-{name}")).unwrap();
            let advertised = &worker.config["workers"][0]["local"]["platform_properties"];
            let expected: Map<String, Value> = toolchain
                .platform_properties()
                .into_iter()
                .map(|(property, value)| (property, json!({ "values": [value] })))
                .collect();
            assert_eq!(advertised, &Value::Object(expected));
        }
        let cc = &processes[2].config["workers"][0]["local"]["platform_properties"]["container-image"]["values"][0];
        assert_eq!(cc, "docker://lre-cc:0123abcd");
        let matching = &processes[1].config["schedulers"][0]["simple"]["supported_platform_properties"];
        assert_eq!(matching, &json!({ "OSFamily": "exact", "container-image": "exact" }));
    }

    #[test]
    fn a_tls_listener_serves_the_same_cache() {
        let tls = TlsListener {
            listen: "0.0.0.0:50071".into(),
            cert_file: "/tls/tls.crt".into(),
            key_file: "/tls/tls.key".into(),
        };
        let topology = Topology { cache_tls: Some(tls), ..topology() };
        let cache = &render(&crate::facts::sample("7.4.1"), &topology)[0].config;
        assert_eq!(server_addresses(cache), ["127.0.0.1:50051", "0.0.0.0:50071"]);
        assert_eq!(
            cache["servers"][1]["listener"]["http"]["tls"],
            json!({ "cert_file": "/tls/tls.crt", "key_file": "/tls/tls.key" })
        );
        assert_eq!(cache["servers"][1]["services"], cache["servers"][0]["services"]);
    }

    /// Every string value stored under `key`, anywhere in `value`.
    fn values_of<'a>(value: &'a Value, key: &str, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    match v.as_str() {
                        Some(text) if k == key => found.push(text),
                        _ => values_of(v, key, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| values_of(item, key, found)),
            _ => {}
        }
    }

    #[test]
    fn every_service_serves_the_instance_and_data_stays_under_the_data_dir() {
        let processes = render(&crate::facts::sample("7.4.1"), &topology());
        for process in &processes {
            let mut instances = Vec::new();
            values_of(&process.config, "instance_name", &mut instances);
            assert!(
                !instances.is_empty() && instances.iter().all(|name| *name == "main"),
                "{}: {instances:?}",
                process.name
            );
            let mut paths = Vec::new();
            for key in ["content_path", "temp_path", "work_directory"] {
                values_of(&process.config, key, &mut paths);
            }
            assert!(paths.iter().all(|path| path.starts_with("/repo/.lre/up/data/")), "{}: {paths:?}", process.name);
        }
        let worker = &processes[2].config;
        assert_eq!(
            worker["stores"][2]["fast_slow"]["fast"]["filesystem"]["content_path"],
            "/repo/.lre/up/data/worker-lre-cc/cas/content"
        );
        assert_eq!(worker["workers"][0]["local"]["work_directory"], "/repo/.lre/up/data/worker-lre-cc/work");
        assert_eq!(worker["stores"][0]["grpc"]["endpoints"][0]["address"], "grpc://127.0.0.1:50051");
        assert_eq!(worker["workers"][0]["local"]["worker_api_endpoint"]["uri"], "grpc://127.0.0.1:50053");
    }
}
