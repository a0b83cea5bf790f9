//! A toolchain's own environment: the variables its probes run with. Nothing from the caller's
//! environment leaks in, so a probe never silently finds another compiler on the machine.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use crate::manifest::{Source, Toolchain};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolchainEnv {
    pub vars: BTreeMap<String, String>,
}

impl ToolchainEnv {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    pub fn path(&self) -> &str {
        self.get("PATH").unwrap_or("")
    }
}

/// Resolves the environment of `toolchain` from its source.
pub fn resolve(toolchain: &Toolchain) -> Result<ToolchainEnv> {
    match toolchain.source {
        Source::Host => {
            if !toolchain.env.contains_key("PATH") {
                bail!(
                    "toolchain {}: source = \"host\" needs an explicit PATH in its `env` table in lre/toolchains.toml \
                     (the probe never falls back to your shell's PATH)",
                    toolchain.name
                );
            }
            Ok(ToolchainEnv { vars: toolchain.env.clone() })
        }
        Source::Nix => bail!(
            "toolchain {}: source = \"nix\" cannot be evaluated by this version of the xtask yet; \
             set source = \"host\" in lre/toolchains.toml to probe this machine's tools instead",
            toolchain.name
        ),
        Source::Oci => bail!(
            "toolchain {}: source = \"oci\" cannot be probed by this version of the xtask yet; \
             set source = \"host\" in lre/toolchains.toml to probe this machine's tools instead",
            toolchain.name
        ),
    }
}
