//! A toolchain's own environment: the variables its probes run with. Nothing from the caller's
//! environment leaks in, so a probe never silently finds another compiler on the machine.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use crate::manifest::{Source, Toolchain};
use crate::nix::Nix;
use crate::oci;
use crate::Project;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolchainEnv {
    pub vars: BTreeMap<String, String>,
    /// The image tag the source gives (Nix: the image derivation's hash); `None` when the source
    /// has no tag of its own and the facts' content decides it.
    pub image_tag: Option<String>,
    /// The manifest digest of the image the toolchain comes from (oci), naming it exactly.
    pub image_digest: Option<String>,
    /// The unpacked image the toolchain's paths refer to (oci); `None` for this machine.
    pub root: Option<PathBuf>,
}

impl ToolchainEnv {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    pub fn path(&self) -> &str {
        self.get("PATH").unwrap_or("")
    }
}

/// Resolves environments for one `generate` run. Sources that need a tool (Nix) find and check
/// it once, up front, so a missing tool fails before anything is probed or written.
pub struct Resolver {
    root: PathBuf,
    nix_out_links: PathBuf,
    unpacked_images: PathBuf,
    /// Toolchains probed in parallel may share an image; it is unpacked once.
    unpacking: Mutex<()>,
    nix: Option<Nix>,
}

impl Resolver {
    pub fn new(project: &Project, toolchains: &[&Toolchain]) -> Result<Resolver> {
        let needing_nix: Vec<&str> =
            toolchains.iter().filter(|t| t.source == Source::Nix).map(|t| t.name.as_str()).collect();
        let nix = if needing_nix.is_empty() { None } else { Some(Nix::find(&needing_nix)?) };
        Ok(Resolver {
            root: project.root.clone(),
            nix_out_links: project.local_dir().join("nix"),
            unpacked_images: project.local_dir().join("oci"),
            unpacking: Mutex::new(()),
            nix,
        })
    }

    /// The environment of `toolchain` from its source.
    pub fn resolve(&self, toolchain: &Toolchain) -> Result<ToolchainEnv> {
        match toolchain.source {
            Source::Host => {
                if !toolchain.env.contains_key("PATH") {
                    bail!(
                        "toolchain {}: source = \"host\" needs an explicit PATH in its `env` table in lre/toolchains.toml \
                         (the probe never falls back to your shell's PATH)",
                        toolchain.name
                    );
                }
                Ok(ToolchainEnv { vars: toolchain.env.clone(), image_tag: None, image_digest: None, root: None })
            }
            Source::Nix => {
                let nix = self.nix.as_ref().context("Nix was not looked for before resolving a nix toolchain")?;
                let image = nix.evaluate(&self.root, toolchain)?;
                nix.realise(&image, &toolchain.name, &self.nix_out_links.join(&toolchain.name))?;
                if !image.env.contains_key("PATH") {
                    bail!(
                        "toolchain {}: meta.Env of .#{} sets no PATH; the probe never falls back to your shell's PATH",
                        toolchain.name,
                        toolchain.name
                    );
                }
                Ok(ToolchainEnv { vars: image.env, image_tag: Some(image.tag), image_digest: None, root: None })
            }
            Source::Oci => {
                let Some(from) = &toolchain.from else {
                    bail!(
                        "toolchain {}: source = \"oci\" needs an image: set from = \"oci:DIR[:TAG]\" (or \"docker-archive:FILE\") \
                         for it in lre/toolchains.toml, or pass `--from oci:DIR`",
                        toolchain.name
                    );
                };
                let reference = from.clone().relative_to(&self.root);
                let opened = oci::open(&reference)?;
                let digest = opened.image.digest().to_string();
                eprintln!("[{}] image {reference} is {digest}", toolchain.name);
                let rootfs = {
                    let _one_at_a_time = self.unpacking.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    oci::unpack::unpack_cached(&opened.layout, &opened.image, &self.unpacked_images)
                        .with_context(|| format!("unpacking {reference}"))?
                };
                let mut vars: BTreeMap<String, String> = opened.image.env().into_iter().collect();
                vars.extend(toolchain.env.clone());
                if !vars.contains_key("PATH") {
                    bail!(
                        "toolchain {}: the image's config sets no PATH and lre/toolchains.toml adds none; \
                         the probe never falls back to your shell's PATH",
                        toolchain.name
                    );
                }
                Ok(ToolchainEnv {
                    vars,
                    image_tag: Some(oci::sha256_hex(opened.image.digest())?.to_owned()),
                    image_digest: Some(digest),
                    root: Some(rootfs),
                })
            }
        }
    }
}
