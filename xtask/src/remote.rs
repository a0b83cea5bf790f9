//! Remote endpoints: parsing, where they come from, and a preflight that fails within seconds,
//! before Bazel starts, when an endpoint is not there.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long the whole preflight of one endpoint may take.
pub const PREFLIGHT_DEADLINE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plaintext gRPC.
    Grpc,
    /// gRPC over TLS.
    Grpcs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parses `grpc://HOST:PORT` or `grpcs://HOST:PORT` (an IPv6 host in brackets).
    pub fn parse(text: &str) -> Result<Endpoint> {
        let malformed = |why: &str| {
            anyhow::anyhow!("malformed endpoint {text:?}: {why}; write grpc://HOST:PORT or grpcs://HOST:PORT")
        };
        let (scheme, rest) = if let Some(rest) = text.strip_prefix("grpc://") {
            (Scheme::Grpc, rest)
        } else if let Some(rest) = text.strip_prefix("grpcs://") {
            (Scheme::Grpcs, rest)
        } else {
            return Err(malformed("the scheme must be grpc:// or grpcs://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(|| malformed("an IPv6 address lacks its `]`"))?;
            (host, after.strip_prefix(':').ok_or_else(|| malformed("the port is missing"))?)
        } else {
            rest.rsplit_once(':').ok_or_else(|| malformed("the port is missing"))?
        };
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(malformed("the host is empty or not a host name"));
        }
        let port: u16 = port.parse().map_err(|_| malformed("the port is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(malformed("the port is not a number from 1 to 65535"));
        }
        Ok(Endpoint { scheme, host: host.to_owned(), port })
    }

    /// The URL Bazel takes.
    pub fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Grpc => "grpc",
            Scheme::Grpcs => "grpcs",
        };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Checks within `deadline` that `endpoint` accepts a TCP connection and, for plaintext gRPC,
/// answers an HTTP/2 connection preface with a SETTINGS frame (gRPC runs on HTTP/2). For TLS
/// endpoints only the connection is checked.
pub fn preflight(role: &str, endpoint: &Endpoint, deadline: Duration) -> Result<()> {
    let started = Instant::now();
    let remaining = || deadline.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
    let url = endpoint.url();
    let addresses: Vec<SocketAddr> = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .with_context(|| format!("the {role} {url}: cannot resolve host {:?}", endpoint.host))?
        .collect();
    let mut tried = Vec::new();
    let mut stream = None;
    for address in &addresses {
        match TcpStream::connect_timeout(address, remaining()) {
            Ok(connected) => {
                stream = Some(connected);
                break;
            }
            Err(err) => tried.push(format!("{address}: {err}")),
        }
    }
    let Some(mut stream) = stream else {
        bail!(
            "the {role} {url} accepts no connection (tried {}); start a server there (`cargo xtask up` runs NativeLink \
             on this machine), or point the xtask at a running one (--remote-cache/--remote-executor, \
             LRE_REMOTE_CACHE/LRE_REMOTE_EXECUTOR, or [remote] in {})",
            tried.join("; "),
            crate::Project::MANIFEST
        );
    };
    if endpoint.scheme == Scheme::Grpcs {
        return Ok(());
    }
    stream.set_read_timeout(Some(remaining()))?;
    stream.set_write_timeout(Some(remaining()))?;
    // The client connection preface, then an empty SETTINGS frame (RFC 9113, section 3.4).
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    let mut header = [0u8; 9];
    let answered = stream.write_all(&preface).and_then(|()| stream.read_exact(&mut header));
    if answered.is_err() || header[3] != 0x4 {
        bail!(
            "the {role} {url} accepts connections but does not answer as a gRPC (HTTP/2) server within {} s; \
             is it a plaintext gRPC endpoint (use grpcs:// for TLS)?",
            deadline.as_secs()
        );
    }
    Ok(())
}

/// Endpoint settings as one source gives them; `None` where it is silent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteSettings {
    pub cache: Option<String>,
    pub executor: Option<String>,
    pub instance_name: Option<String>,
    pub tls_ca: Option<PathBuf>,
}

impl RemoteSettings {
    pub fn from_env() -> RemoteSettings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        RemoteSettings {
            cache: var("LRE_REMOTE_CACHE"),
            executor: var("LRE_REMOTE_EXECUTOR"),
            instance_name: var("LRE_REMOTE_INSTANCE_NAME"),
            tls_ca: var("LRE_TLS_CA").map(PathBuf::from),
        }
    }

    /// The settings in force: `flags`, then the environment, then the manifest's `[remote]`
    /// table (a relative `tls_ca` there is relative to the repository), then what `cargo xtask up`
    /// runs, then the Kubernetes example `cargo xtask deploy` deployed. A CA file must exist.
    pub fn resolve(project: &crate::Project, flags: RemoteSettings) -> Result<RemoteSettings> {
        let manifest = crate::manifest::Manifest::load(&project.manifest_path())?;
        let mut from_manifest = manifest.remote;
        from_manifest.tls_ca = from_manifest.tls_ca.map(|ca| project.root.join(ca));
        let mut settings = RemoteSettings::layered(&[flags, RemoteSettings::from_env(), from_manifest]);
        // What `up` runs is one unit: it applies only when no other source names an endpoint.
        if settings.cache.is_none() && settings.executor.is_none() {
            if let Some(running) = crate::up::running_endpoints(project)? {
                settings = RemoteSettings::layered(&[settings, running]);
            } else if let Some(deployed) = crate::cluster::cluster_endpoints(project)? {
                settings = RemoteSettings::layered(&[settings, deployed]);
            }
        }
        if let Some(ca) = &settings.tls_ca {
            if !ca.is_file() {
                bail!("the TLS CA certificate {} does not exist (or is not a file)", ca.display());
            }
        }
        Ok(settings)
    }

    /// Each setting from the first source that gives it.
    pub fn layered(sources: &[RemoteSettings]) -> RemoteSettings {
        let first = |pick: &dyn Fn(&RemoteSettings) -> Option<String>| sources.iter().find_map(pick);
        RemoteSettings {
            cache: first(&|s| s.cache.clone()),
            executor: first(&|s| s.executor.clone()),
            instance_name: first(&|s| s.instance_name.clone()),
            tls_ca: sources.iter().find_map(|s| s.tls_ca.clone()),
        }
    }
}

/// Resolved, validated remote settings: a cache, and an executor when one is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub cache: Endpoint,
    pub executor: Option<Endpoint>,
    pub instance_name: Option<String>,
    pub tls_ca: Option<PathBuf>,
}

const WHERE_ENDPOINTS_COME_FROM: &str = "set LRE_REMOTE_EXECUTOR / LRE_REMOTE_CACHE, add them to [remote] in \
     lre/toolchains.toml, or start NativeLink here with `cargo xtask up`";

impl Remote {
    pub fn from_settings(settings: &RemoteSettings) -> Result<Remote> {
        let executor = settings.executor.as_deref().map(Endpoint::parse).transpose().context("the remote executor")?;
        // A NativeLink scheduler usually serves the cache as well.
        let cache = match (settings.cache.as_deref(), &executor) {
            (Some(cache), _) => Endpoint::parse(cache).context("the remote cache")?,
            (None, Some(executor)) => executor.clone(),
            (None, None) => bail!(
                "no remote endpoint is configured: pass --remote-executor/--remote-cache grpc://HOST:PORT, \
                 {WHERE_ENDPOINTS_COME_FROM}"
            ),
        };
        Ok(Remote { cache, executor, instance_name: settings.instance_name.clone(), tls_ca: settings.tls_ca.clone() })
    }

    /// The executor, which remote execution cannot do without.
    pub fn require_executor(&self) -> Result<&Endpoint> {
        self.executor.as_ref().with_context(|| {
            format!(
                "no remote executor is configured (only the cache {}): pass --remote-executor grpc://HOST:PORT, \
                 {WHERE_ENDPOINTS_COME_FROM}",
                self.cache.url()
            )
        })
    }

    /// The Bazel flags that read and write the remote cache.
    pub fn cache_flags(&self) -> Vec<String> {
        let mut flags = vec![format!("--remote_cache={}", self.cache.url())];
        if let Some(name) = &self.instance_name {
            flags.push(format!("--remote_instance_name={name}"));
        }
        if let Some(ca) = &self.tls_ca {
            flags.push(format!("--tls_certificate={}", ca.display()));
        }
        flags
    }

    /// The Bazel flags that put every action on the executor (none without one).
    pub fn execution_flags(&self) -> Vec<String> {
        let Some(executor) = &self.executor else { return Vec::new() };
        vec![
            format!("--remote_executor={}", executor.url()),
            // `--spawn_strategy` reaches test actions too, which `--strategy_regexp` alone does
            // not (Bazel 4 runs them locally); the regexp overrides per-mnemonic `--strategy`
            // lines a user's bazelrc may carry.
            "--spawn_strategy=remote".to_owned(),
            "--strategy_regexp=.*=remote".to_owned(),
        ]
    }

    /// Checks the cache and, if it is elsewhere, the executor.
    pub fn preflight(&self) -> Result<()> {
        preflight("remote cache", &self.cache, PREFLIGHT_DEADLINE)?;
        match &self.executor {
            Some(executor) if *executor != self.cache => preflight("remote executor", executor, PREFLIGHT_DEADLINE),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_endpoints() {
        let plain = Endpoint::parse("grpc://127.0.0.1:50051").unwrap();
        assert_eq!((plain.scheme, plain.host.as_str(), plain.port), (Scheme::Grpc, "127.0.0.1", 50051));
        assert_eq!(plain.url(), "grpc://127.0.0.1:50051");
        let tls = Endpoint::parse("grpcs://cas.example.internal:443/").unwrap();
        assert_eq!((tls.scheme, tls.port), (Scheme::Grpcs, 443));
        let v6 = Endpoint::parse("grpc://[::1]:50052").unwrap();
        assert_eq!((v6.host.as_str(), v6.url()), ("::1", "grpc://[::1]:50052".to_owned()));
        for bad in [
            "http://127.0.0.1:50051",
            "grpc://127.0.0.1",
            "grpc://:50051",
            "grpc://host:0",
            "grpc://host:70000",
            "127.0.0.1:50051",
            "grpc://[::1:5",
        ] {
            let err = Endpoint::parse(bad).unwrap_err().to_string();
            assert!(err.contains("malformed endpoint") && err.contains("grpc://HOST:PORT"), "{bad}: {err}");
        }
    }

    #[test]
    fn settings_layer_by_field() {
        let flags = RemoteSettings { executor: Some("grpc://a:1".into()), ..Default::default() };
        let env = RemoteSettings {
            executor: Some("grpc://b:2".into()),
            cache: Some("grpc://c:3".into()),
            ..Default::default()
        };
        let manifest = RemoteSettings {
            instance_name: Some("main".into()),
            cache: Some("grpc://d:4".into()),
            ..Default::default()
        };
        let merged = RemoteSettings::layered(&[flags, env, manifest]);
        assert_eq!(merged.executor.as_deref(), Some("grpc://a:1"));
        assert_eq!(merged.cache.as_deref(), Some("grpc://c:3"));
        assert_eq!(merged.instance_name.as_deref(), Some("main"));
    }

    #[test]
    fn flags_switch_every_action_to_the_executor() {
        let remote = Remote::from_settings(&RemoteSettings {
            executor: Some("grpc://127.0.0.1:50052".into()),
            instance_name: Some("main".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(remote.cache_flags(), ["--remote_cache=grpc://127.0.0.1:50052", "--remote_instance_name=main"]);
        assert_eq!(
            remote.execution_flags(),
            ["--remote_executor=grpc://127.0.0.1:50052", "--spawn_strategy=remote", "--strategy_regexp=.*=remote"]
        );
    }

    #[test]
    fn a_cache_alone_gives_no_execution_flags_and_no_executor() {
        let remote = Remote::from_settings(&RemoteSettings {
            cache: Some("grpcs://cache.example:443".into()),
            tls_ca: Some("/etc/ca.pem".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(remote.cache_flags(), ["--remote_cache=grpcs://cache.example:443", "--tls_certificate=/etc/ca.pem"]);
        assert!(remote.execution_flags().is_empty());
        let err = remote.require_executor().unwrap_err().to_string();
        assert!(err.contains("only the cache grpcs://cache.example:443") && err.contains("cargo xtask up"), "{err}");
    }

    #[test]
    fn no_endpoint_at_all_is_refused_with_every_way_to_give_one() {
        let err = Remote::from_settings(&RemoteSettings::default()).unwrap_err().to_string();
        for way in ["--remote-executor", "LRE_REMOTE_EXECUTOR", "[remote]", "cargo xtask up"] {
            assert!(err.contains(way), "{way} missing from: {err}");
        }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    #[test]
    fn a_closed_port_fails_fast_and_says_what_to_do() {
        let endpoint = Endpoint::parse(&format!("grpc://127.0.0.1:{}", free_port())).unwrap();
        let started = Instant::now();
        let err = preflight("remote executor", &endpoint, PREFLIGHT_DEADLINE).unwrap_err().to_string();
        assert!(started.elapsed() <= PREFLIGHT_DEADLINE);
        assert!(err.contains("accepts no connection (tried 127.0.0.1:"), "{err}");
        assert!(err.contains("LRE_REMOTE_EXECUTOR"), "{err}");
    }

    #[test]
    fn a_silent_server_is_not_taken_for_grpc() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = Endpoint::parse(&format!("grpc://{}", listener.local_addr().unwrap())).unwrap();
        let started = Instant::now();
        let err = preflight("remote cache", &endpoint, Duration::from_millis(500)).unwrap_err().to_string();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(err.contains("does not answer as a gRPC (HTTP/2) server"), "{err}");
    }

    #[test]
    fn an_http2_server_passes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = Endpoint::parse(&format!("grpc://{}", listener.local_addr().unwrap())).unwrap();
        let server = std::thread::spawn(move || {
            let (mut connection, _) = listener.accept().unwrap();
            let mut preface = [0u8; 24 + 9];
            connection.read_exact(&mut preface).unwrap();
            assert!(preface.starts_with(b"PRI * HTTP/2.0"));
            connection.write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]).unwrap();
        });
        preflight("remote cache", &endpoint, PREFLIGHT_DEADLINE).unwrap();
        server.join().unwrap();
    }
}
