//! A toolchain's own environment: the variables its probes run with. Nothing from the caller's
//! environment leaks in, so a probe never silently finds another compiler on the machine.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::manifest::{Source, Toolchain};
use crate::nix::Nix;
use crate::Project;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolchainEnv {
    pub vars: BTreeMap<String, String>,
    /// The image tag the source gives (Nix: the image derivation's hash); `None` when the source
    /// has no tag of its own and the facts' content decides it.
    pub image_tag: Option<String>,
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
    flake: PathBuf,
    nix_out_links: PathBuf,
    nix: Option<Nix>,
}

impl Resolver {
    pub fn new(project: &Project, toolchains: &[&Toolchain]) -> Result<Resolver> {
        let needing_nix: Vec<&str> =
            toolchains.iter().filter(|t| t.source == Source::Nix).map(|t| t.name.as_str()).collect();
        let nix = if needing_nix.is_empty() { None } else { Some(Nix::find(&needing_nix)?) };
        Ok(Resolver { flake: project.root.clone(), nix_out_links: project.local_dir().join("nix"), nix })
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
                Ok(ToolchainEnv { vars: toolchain.env.clone(), image_tag: None })
            }
            Source::Nix => {
                let nix = self.nix.as_ref().context("Nix was not looked for before resolving a nix toolchain")?;
                let image = nix.evaluate(&self.flake, toolchain)?;
                nix.realise(&image, &toolchain.name, &self.nix_out_links.join(&toolchain.name))?;
                if !image.env.contains_key("PATH") {
                    bail!(
                        "toolchain {}: meta.Env of .#{} sets no PATH; the probe never falls back to your shell's PATH",
                        toolchain.name,
                        toolchain.name
                    );
                }
                Ok(ToolchainEnv { vars: image.env, image_tag: Some(image.tag) })
            }
            Source::Oci => bail!(
                "toolchain {}: source = \"oci\" cannot be probed by this version of the xtask yet; \
                 set source = \"host\" in lre/toolchains.toml to probe this machine's tools instead",
                toolchain.name
            ),
        }
    }
}
