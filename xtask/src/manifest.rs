//! `lre/toolchains.toml`: the single source of truth for which toolchains exist, where their
//! environment comes from, and which Bazel version the generated files target.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::oci::ImageRef;
use crate::remote::{Endpoint, RemoteSettings};
use crate::version::Version;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Cc,
    Java,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Cc => "cc",
            Kind::Java => "java",
        })
    }
}

/// Where a toolchain's environment (PATH, CC, JAVA_HOME, link options) comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A Nix derivation: every path lies in the Nix store.
    Nix,
    /// This machine as it is: impure by nature.
    Host,
    /// An OCI toolchain image: every path lies inside the image.
    Oci,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Nix => "nix",
            Source::Host => "host",
            Source::Oci => "oci",
        })
    }
}

impl Source {
    /// The roots every absolute path must lie under when the manifest declares none.
    pub fn default_roots(self) -> Vec<String> {
        match self {
            Source::Nix => vec!["/nix/store".to_owned()],
            Source::Host | Source::Oci => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub bazel_version: Version,
    pub toolchains: Vec<Toolchain>,
    /// The `[remote]` table: default endpoints for `run-remote`.
    pub remote: RemoteSettings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain {
    pub name: String,
    pub kind: Kind,
    pub image: String,
    pub source: Source,
    pub roots: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Where an `oci` toolchain's image is (`oci:DIR[:TAG]` or `docker-archive:FILE`; relative
    /// paths are from the repository root).
    pub from: Option<ImageRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    bazel: RawBazel,
    #[serde(rename = "toolchain", default)]
    toolchains: Vec<RawToolchain>,
    #[serde(default)]
    remote: RawRemote,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRemote {
    cache: Option<Spanned<String>>,
    executor: Option<Spanned<String>>,
    instance_name: Option<String>,
    tls_ca: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBazel {
    version: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToolchain {
    name: Spanned<String>,
    kind: Kind,
    image: Spanned<String>,
    source: Source,
    roots: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    env: Option<Spanned<BTreeMap<String, String>>>,
    from: Option<Spanned<String>>,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the toolchain manifest {}", path.display()))?;
        Manifest::parse(&text, &path.display().to_string())
    }

    /// Parses and validates; every error names `origin:line:column`.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest> {
        let raw: RawManifest = toml::from_str(text).map_err(|err| {
            let at = err.span().map(|span| location(text, span.start)).unwrap_or_default();
            anyhow::anyhow!("{origin}{at}: {}", err.message())
        })?;
        let at = |span: std::ops::Range<usize>| format!("{origin}{}", location(text, span.start));

        let bazel_version = Version::parse(raw.bazel.version.get_ref()).with_context(|| {
            format!(
                "{}: bazel.version {:?} is not a version like \"7.4.1\"",
                at(raw.bazel.version.span()),
                raw.bazel.version.get_ref()
            )
        })?;

        if raw.toolchains.is_empty() {
            bail!("{origin}: no [[toolchain]] entries; declare at least one toolchain");
        }
        let mut toolchains: Vec<Toolchain> = Vec::new();
        for entry in raw.toolchains {
            let name = entry.name.get_ref();
            if !is_valid_name(name) {
                bail!(
                    "{}: toolchain name {name:?} must be lowercase letters, digits and dashes, starting with a letter",
                    at(entry.name.span())
                );
            }
            if name == "config"
                || name == "image"
                || name == "kubernetes"
                || name.ends_with("-image")
                || name.ends_with("-toolchain")
            {
                bail!(
                    "{}: toolchain name {name:?} is reserved: `config`, `image`, `kubernetes` and names ending in `-image` or `-toolchain` \
                     collide with generated Bazel targets and directories; choose another name",
                    at(entry.name.span())
                );
            }
            if toolchains.iter().any(|t| &t.name == name) {
                bail!("{}: toolchain {name:?} is declared twice", at(entry.name.span()));
            }
            if !is_valid_image(entry.image.get_ref()) {
                bail!(
                    "{}: image {:?} must be a repository name without tag or digest (lowercase, digits, `.`, `_`, `-`, `/`); the tag comes from the facts",
                    at(entry.image.span()),
                    entry.image.get_ref()
                );
            }
            let roots = match entry.roots {
                Some(roots) => {
                    if let Some(bad) = roots.get_ref().iter().find(|r| !r.starts_with('/') || r.len() < 2) {
                        bail!("{}: root {bad:?} must be an absolute directory other than /", at(roots.span()));
                    }
                    roots.into_inner()
                }
                None => entry.source.default_roots(),
            };
            if let (Source::Nix, Some(env)) = (entry.source, &entry.env) {
                bail!(
                    "{}: toolchain {name:?} has source = \"nix\", so its environment comes from the flake \
                     (meta.Env of packages.<system>.{name} in flake.nix); remove this `env` table",
                    at(env.span())
                );
            }
            let from = match entry.from {
                None => None,
                Some(from) if entry.source != Source::Oci => bail!(
                    "{}: `from` names an image, which only a toolchain with source = \"oci\" has",
                    at(from.span())
                ),
                Some(from) => {
                    Some(ImageRef::parse(from.get_ref()).map_err(|err| anyhow::anyhow!("{}: {err}", at(from.span())))?)
                }
            };
            toolchains.push(Toolchain {
                name: name.clone(),
                kind: entry.kind,
                image: entry.image.into_inner(),
                source: entry.source,
                roots,
                env: entry.env.map(Spanned::into_inner).unwrap_or_default(),
                from,
            });
        }
        for endpoint in [&raw.remote.cache, &raw.remote.executor].into_iter().flatten() {
            if let Err(err) = Endpoint::parse(endpoint.get_ref()) {
                bail!("{}: {err}", at(endpoint.span()));
            }
        }
        let remote = RemoteSettings {
            cache: raw.remote.cache.map(Spanned::into_inner),
            executor: raw.remote.executor.map(Spanned::into_inner),
            instance_name: raw.remote.instance_name,
            tls_ca: raw.remote.tls_ca.map(PathBuf::from),
        };
        Ok(Manifest { bazel_version, toolchains, remote })
    }

    pub fn toolchain(&self, name: &str) -> Result<&Toolchain> {
        self.toolchains.iter().find(|t| t.name == name).with_context(|| {
            let known: Vec<&str> = self.toolchains.iter().map(|t| t.name.as_str()).collect();
            format!("unknown toolchain {name:?}; the manifest declares: {}", known.join(", "))
        })
    }
}

fn is_valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_valid_image(image: &str) -> bool {
    !image.is_empty()
        && image.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && image.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c))
}

/// `:line:column` (1-based) of a byte offset.
fn location(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(":{line}:{column}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[bazel]
version = "7.4.1"

[[toolchain]]
name = "lre-cc"
kind = "cc"
image = "lre-cc"
source = "host"
env = { PATH = "/usr/bin", CC = "gcc" }

[[toolchain]]
name = "lre-java"
kind = "java"
image = "lre-java"
source = "nix"
"#;

    fn error_of(text: &str) -> String {
        format!("{:#}", Manifest::parse(text, "lre/toolchains.toml").unwrap_err())
    }

    #[test]
    fn parses_a_valid_manifest_with_default_roots() {
        let manifest = Manifest::parse(GOOD, "m").unwrap();
        assert_eq!(manifest.bazel_version, Version::new(7, 4, 1));
        assert_eq!(manifest.toolchains.len(), 2);
        assert_eq!(manifest.toolchains[0].env["CC"], "gcc");
        assert!(manifest.toolchains[0].roots.is_empty());
        assert_eq!(manifest.toolchains[1].roots, vec!["/nix/store"]);
        assert_eq!(manifest.toolchain("lre-java").unwrap().kind, Kind::Java);
    }

    #[test]
    fn syntax_errors_name_file_line_and_column() {
        let err = error_of("[bazel]\nversion = \"7\"\n[[toolchain]\n");
        assert!(err.starts_with("lre/toolchains.toml:3:"), "{err}");
    }

    #[test]
    fn type_errors_name_file_line_and_column() {
        let err = error_of(&GOOD.replace("kind = \"java\"", "kind = \"rust\""));
        assert!(err.starts_with("lre/toolchains.toml:14:8"), "{err}");
        assert!(err.contains("rust"), "{err}");
        let err = error_of(&GOOD.replace("image = \"lre-cc\"", "image = 3"));
        assert!(err.starts_with("lre/toolchains.toml:8:9"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = error_of(&GOOD.replace("source = \"host\"", "source = \"host\"\ncompiler = \"gcc\""));
        assert!(err.contains("compiler") && err.starts_with("lre/toolchains.toml:10:"), "{err}");
    }

    #[test]
    fn semantic_errors_point_at_the_offending_value() {
        let err = error_of(&GOOD.replace("name = \"lre-java\"", "name = \"lre-cc\""));
        assert!(err.starts_with("lre/toolchains.toml:13:8") && err.contains("declared twice"), "{err}");
        let err = error_of(&GOOD.replace("image = \"lre-cc\"", "image = \"lre-cc:latest\""));
        assert!(err.contains("without tag"), "{err}");
        let err = error_of(&GOOD.replace("version = \"7.4.1\"", "version = \"latest\""));
        assert!(err.starts_with("lre/toolchains.toml:3:11"), "{err}");
        let err = error_of(&GOOD.replace("source = \"nix\"", "source = \"nix\"\nroots = [\"nix/store\"]"));
        assert!(err.contains("absolute"), "{err}");
    }

    #[test]
    fn a_nix_toolchain_takes_its_environment_from_the_flake_only() {
        let err = error_of(&GOOD.replace("source = \"nix\"", "source = \"nix\"\nenv = { PATH = \"/usr/bin\" }"));
        assert!(err.starts_with("lre/toolchains.toml:17:7"), "{err}");
        assert!(
            err.contains("meta.Env of packages.<system>.lre-java in flake.nix") && err.contains("remove this `env`"),
            "{err}"
        );
    }

    #[test]
    fn the_remote_table_is_read_and_its_endpoints_checked() {
        let manifest = Manifest::parse(
            &format!("{GOOD}\n[remote]\nexecutor = \"grpc://127.0.0.1:50052\"\ninstance_name = \"main\"\n"),
            "m",
        )
        .unwrap();
        assert_eq!(manifest.remote.executor.as_deref(), Some("grpc://127.0.0.1:50052"));
        assert_eq!(manifest.remote.instance_name.as_deref(), Some("main"));
        let err = error_of(&format!("{GOOD}\n[remote]\ncache = \"localhost:50051\"\n"));
        assert!(err.starts_with("lre/toolchains.toml:19:9") && err.contains("malformed endpoint"), "{err}");
    }

    #[test]
    fn names_that_collide_with_generated_targets_are_refused() {
        for reserved in ["config", "image", "kubernetes", "lre-cc-image", "lre-cc-toolchain"] {
            let err = error_of(&GOOD.replace("name = \"lre-java\"", &format!("name = \"{reserved}\"")));
            assert!(err.starts_with("lre/toolchains.toml:13:8") && err.contains("reserved"), "{err}");
        }
    }

    #[test]
    fn unknown_toolchain_names_list_the_known_ones() {
        let manifest = Manifest::parse(GOOD, "m").unwrap();
        let err = manifest.toolchain("lre-rust").unwrap_err().to_string();
        assert!(err.contains("lre-cc, lre-java"), "{err}");
    }
}
