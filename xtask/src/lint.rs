//! Hermeticity lint: for `nix` and `oci` toolchains, every absolute path in the facts must lie
//! under a declared root, or the remote worker and the local shell could see different files.

use std::path::Path;

use anyhow::{bail, Result};
use serde_json::Value;

use crate::facts::ToolchainFacts;
use crate::probe::normalize;

/// An absolute path found in the facts, and where (a JSON pointer into the toolchain's facts).
#[derive(Debug, PartialEq, Eq)]
pub struct FoundPath {
    pub pointer: String,
    pub path: String,
}

/// Fails, naming every offending path, when a hermetic toolchain reaches outside its roots, or,
/// for a toolchain probed inside an unpacked image (`image_root`), names a path the image lacks.
/// Host toolchains are impure by nature: their facts say so (`provenance.hermetic = false`).
pub fn check(name: &str, facts: &ToolchainFacts, image_root: Option<&Path>) -> Result<()> {
    if !facts.provenance.hermetic {
        return Ok(());
    }
    let paths = absolute_paths(facts);
    let mut problems = Vec::new();
    if !facts.roots.is_empty() || image_root.is_none() {
        let outside: Vec<String> = paths
            .iter()
            .filter(|found| !facts.roots.iter().any(|root| is_under(&found.path, root)))
            .map(|f| format!("  {} (at {})", f.path, f.pointer))
            .collect();
        if !outside.is_empty() {
            problems.push(format!(
                "these paths lie outside its roots [{}]:\n{}",
                facts.roots.join(", "),
                outside.join("\n")
            ));
        }
    }
    if let Some(image_root) = image_root {
        let missing: Vec<String> = paths
            .iter()
            .filter(|found| {
                !crate::oci::unpack::resolve_in_root(image_root, Path::new(&found.path), true)
                    .is_ok_and(|host| host.exists())
            })
            .map(|f| format!("  {} (at {})", f.path, f.pointer))
            .collect();
        if !missing.is_empty() {
            problems.push(format!("these paths do not exist in its image:\n{}", missing.join("\n")));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "toolchain {name} ({} source) is not hermetic: {}\n\
         Make the toolchain refer only to paths under its roots (and inside its image), or declare the missing root in lre/toolchains.toml.",
        facts.provenance.source,
        problems.join("\n")
    )
}

/// Every absolute path in the environment and the probe results, including those inside
/// search paths (`a:b`), assignments (`--sysroot=/x`) and flags (`-L/x`, `-Wl,-rpath,/x`).
pub fn absolute_paths(facts: &ToolchainFacts) -> Vec<FoundPath> {
    let mut found = Vec::new();
    let environment = serde_json::to_value(&facts.environment).expect("facts always serialise");
    let probed = serde_json::to_value(&facts.probed).expect("facts always serialise");
    collect(&environment, "/environment".to_owned(), &mut found);
    collect(&probed, String::new(), &mut found);
    found
}

fn collect(value: &Value, pointer: String, found: &mut Vec<FoundPath>) {
    match value {
        Value::String(text) => {
            for piece in text.split([':', '=', ',', ' ']) {
                let start = if piece.starts_with('/') {
                    Some(0)
                } else if piece.starts_with('-') {
                    piece.find('/')
                } else {
                    None
                };
                if let Some(start) = start {
                    found.push(FoundPath { pointer: pointer.clone(), path: piece[start..].to_owned() });
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                collect(item, format!("{pointer}/{index}"), found);
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields {
                collect(item, format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1")), found);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// `path` is `root` or below it, after resolving `..` (so `/nix/store/../etc` is not under it).
fn is_under(path: &str, root: &str) -> bool {
    normalize(Path::new(path)).starts_with(normalize(Path::new(root)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{sample, Probed};
    use crate::manifest::Source;

    fn nix_toolchain(ld: &str, link_option: &str) -> ToolchainFacts {
        let mut facts = sample("7.4.1").toolchains.remove("lre-cc").unwrap();
        let Probed::Cc(cc) = &mut facts.probed else { unreachable!() };
        cc.tools.insert("ld".into(), Some(ld.to_owned()));
        cc.link_options = vec![link_option.to_owned()];
        facts
    }

    fn check_nix(facts: &ToolchainFacts) -> Result<()> {
        check("lre-cc", facts, None)
    }

    #[test]
    fn a_store_only_toolchain_passes() {
        check_nix(&nix_toolchain("/nix/store/bbbb-binutils/bin/ld", "-L/nix/store/dddd-libcxx/lib")).unwrap();
    }

    #[test]
    fn a_path_outside_the_store_fails_and_is_named() {
        let err = check_nix(&nix_toolchain("/usr/bin/ld", "-L/nix/store/dddd-libcxx/lib")).unwrap_err().to_string();
        assert!(err.contains("/usr/bin/ld (at /cc/tools/ld)"), "{err}");
        assert!(err.contains("toolchain lre-cc (nix source)"), "{err}");
    }

    #[test]
    fn paths_inside_flags_and_dotdot_escapes_are_caught() {
        let err = check_nix(&nix_toolchain("/nix/store/bbbb/bin/ld", "-Wl,-rpath,/usr/lib")).unwrap_err().to_string();
        assert!(err.contains("/usr/lib (at /cc/link_options/0)"), "{err}");
        let err = check_nix(&nix_toolchain("/nix/store/../usr/bin/ld", "-lm")).unwrap_err().to_string();
        assert!(err.contains("/nix/store/../usr/bin/ld"), "{err}");
    }

    #[test]
    fn host_toolchains_are_recorded_impure_instead_of_failing() {
        let mut facts = nix_toolchain("/usr/bin/ld", "-lm");
        facts.provenance.source = Source::Host;
        facts.provenance.hermetic = false;
        facts.roots.clear();
        check("lre-cc", &facts, None).unwrap();
    }
}
