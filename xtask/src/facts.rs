//! The probe's result, checked in as `generated/lre.lock.json`. Rendering reads only this.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::{Kind, Manifest, Source, Toolchain};

pub const SCHEMA: u32 = 1;
pub const GENERATED_BY: &str = "cargo xtask generate";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    pub generated_by: String,
    pub schema: u32,
    /// The Bazel version the rendered files target (from the manifest).
    pub bazel_version: String,
    pub toolchains: BTreeMap<String, ToolchainFacts>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolchainFacts {
    pub image: Image,
    pub provenance: Provenance,
    /// Absolute paths in this toolchain must lie under these (empty for `host`).
    pub roots: Vec<String>,
    /// The environment the probe ran in.
    pub environment: BTreeMap<String, String>,
    #[serde(flatten)]
    pub probed: Probed,
}

impl ToolchainFacts {
    /// The remote-execution platform properties of this toolchain: the generated Bazel platform
    /// sends exactly these and the workers that run its actions advertise exactly these.
    pub fn platform_properties(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("OSFamily".to_owned(), "Linux".to_owned()),
            ("container-image".to_owned(), self.image.reference()),
        ])
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub name: String,
    pub tag: String,
    /// The manifest digest when the image is known exactly (`oci` source); it then names the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl Image {
    /// The `container-image` platform property, exactly as remote workers advertise it.
    pub fn reference(&self) -> String {
        match &self.digest {
            Some(digest) => format!("docker://{}@{digest}", self.name),
            None => format!("docker://{}:{}", self.name, self.tag),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    pub source: Source,
    /// The machine the probe ran on, as a Nix system string (`x86_64-linux`).
    pub machine: String,
    /// RFC 3339, UTC. Kept unchanged when a new probe finds the same toolchain.
    pub probed_at: String,
    pub hermetic: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Probed {
    Cc(Box<CcFacts>),
    Java(JavaFacts),
}

impl Probed {
    pub fn kind(&self) -> Kind {
        match self {
            Probed::Cc(_) => Kind::Cc,
            Probed::Java(_) => Kind::Java,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compiler {
    Gcc,
    Clang,
}

impl Compiler {
    pub fn as_str(self) -> &'static str {
        match self {
            Compiler::Gcc => "gcc",
            Compiler::Clang => "clang",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CcFacts {
    pub compiler: Compiler,
    pub version: String,
    pub target_triple: String,
    pub compiler_path: String,
    pub include_dirs: IncludeDirs,
    /// Binutils and coverage tools by Bazel's tool name; `null` when the toolchain has none.
    pub tools: BTreeMap<String, Option<String>>,
    pub libc: Libc,
    /// Optional flags, each decided by running the compiler with it.
    pub flags: BTreeMap<String, bool>,
    /// `BAZEL_CXXOPTS` of the environment, or the default, accepted by the compiler.
    pub cxx_options: Vec<String>,
    /// `BAZEL_LINKOPTS` of the environment, verified by linking and running a C++ program.
    pub link_options: Vec<String>,
    /// `BAZEL_LINKLIBS` of the environment, or the default.
    pub link_libs: Vec<String>,
}

impl CcFacts {
    pub fn accepts(&self, flag: &str) -> bool {
        self.flags.get(flag).copied().unwrap_or(false)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncludeDirs {
    pub c: Vec<String>,
    pub cxx: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Libc {
    pub name: String,
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JavaFacts {
    pub java_home: String,
    pub version: String,
    /// The major version (`java.specification.version`).
    pub release: u32,
    pub vendor: String,
}

impl Facts {
    pub fn load(path: &Path) -> Result<Facts> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("cannot read the facts {}; run `cargo xtask generate` to probe the toolchains", path.display())
        })?;
        let facts: Facts = serde_json::from_str(&text).with_context(|| {
            format!("{} is not a valid facts file; run `cargo xtask generate` to rewrite it", path.display())
        })?;
        anyhow::ensure!(
            facts.schema == SCHEMA,
            "{} has schema {}, this xtask writes schema {SCHEMA}; run `cargo xtask generate`",
            path.display(),
            facts.schema
        );
        Ok(facts)
    }

    /// Loads the facts when the file exists; `None` when it does not.
    pub fn load_if_present(path: &Path) -> Result<Option<Facts>> {
        if path.exists() {
            Facts::load(path).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The lock file's text: pretty, key-sorted, newline-terminated.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("facts always serialise");
        text.push('\n');
        text
    }

    /// Every way in which these facts no longer describe `manifest`, one line each.
    pub fn disagreements_with(&self, manifest: &Manifest) -> Vec<String> {
        let mut found = Vec::new();
        if self.bazel_version != manifest.bazel_version.to_string() {
            found.push(format!(
                "bazel.version is {} in the manifest but {} in the facts",
                manifest.bazel_version, self.bazel_version
            ));
        }
        for toolchain in &manifest.toolchains {
            match self.toolchains.get(&toolchain.name) {
                None => found.push(format!("toolchain {} has no facts", toolchain.name)),
                Some(facts) => found.extend(facts.disagreements_with(toolchain)),
            }
        }
        for name in self.toolchains.keys() {
            if manifest.toolchain(name).is_err() {
                found.push(format!("toolchain {name} has facts but is not in the manifest"));
            }
        }
        found
    }
}

impl ToolchainFacts {
    pub fn disagreements_with(&self, declared: &Toolchain) -> Vec<String> {
        let name = &declared.name;
        let mut found = Vec::new();
        let mut compare = |what: &str, manifest: String, facts: String| {
            if manifest != facts {
                found.push(format!("{name}: {what} is {manifest} in the manifest but {facts} in the facts"));
            }
        };
        compare("kind", declared.kind.to_string(), self.probed.kind().to_string());
        compare("image", declared.image.clone(), self.image.name.clone());
        compare("source", declared.source.to_string(), self.provenance.source.to_string());
        compare("roots", format!("{:?}", declared.roots), format!("{:?}", self.roots));
        if declared.source == Source::Host {
            compare("env", format!("{:?}", declared.env), format!("{:?}", self.environment));
        }
        found
    }

    /// A content tag for images whose source has no tag of its own: it changes exactly when the
    /// environment or anything probed changes.
    pub fn content_tag(environment: &BTreeMap<String, String>, probed: &Probed) -> String {
        let canonical = serde_json::to_vec(&(environment, probed)).expect("facts always serialise");
        let digest = Sha256::digest(&canonical);
        digest.iter().take(16).map(|byte| format!("{byte:02x}")).collect()
    }
}

/// The machine as a Nix system string.
pub fn machine() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// Now (or `SOURCE_DATE_EPOCH`) as RFC 3339 UTC, to the second.
pub fn timestamp_now() -> String {
    let seconds = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    });
    rfc3339(seconds)
}

fn rfc3339(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let second_of_day = unix_seconds % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// Facts as a Nix-sourced clang toolchain and JDK would produce, for tests of what reads facts.
#[cfg(test)]
pub(crate) fn sample(bazel_version: &str) -> Facts {
    let cc = ToolchainFacts {
        image: Image { name: "lre-cc".into(), tag: "0123abcd".into(), digest: None },
        provenance: Provenance {
            source: Source::Nix,
            machine: "x86_64-linux".into(),
            probed_at: "2026-01-01T00:00:00Z".into(),
            hermetic: true,
            note: None,
        },
        roots: vec!["/nix/store".into()],
        environment: BTreeMap::from([
            ("CC".into(), "/nix/store/aaaa-clang-18/bin/clang".into()),
            ("PATH".into(), "/nix/store/aaaa-clang-18/bin:/nix/store/bbbb-binutils/bin".into()),
        ]),
        probed: Probed::Cc(Box::new(CcFacts {
            compiler: Compiler::Clang,
            version: "18.1.8".into(),
            target_triple: "x86_64-unknown-linux-gnu".into(),
            compiler_path: "/nix/store/aaaa-clang-18/bin/clang".into(),
            include_dirs: IncludeDirs {
                c: vec!["/nix/store/cccc-glibc-dev/include".into()],
                cxx: vec![
                    "/nix/store/dddd-libcxx-dev/include/c++/v1".into(),
                    "/nix/store/cccc-glibc-dev/include".into(),
                ],
            },
            tools: BTreeMap::from([
                ("ar".into(), Some("/nix/store/bbbb-binutils/bin/ar".into())),
                ("dwp".into(), None),
                ("ld".into(), Some("/nix/store/bbbb-binutils/bin/ld".into())),
            ]),
            libc: Libc { name: "glibc".into(), version: Some("2.39".into()) },
            flags: BTreeMap::from([
                ("-Wall".into(), true),
                ("-Wno-builtin-macro-redefined".into(), true),
                ("-Wthread-safety".into(), true),
                ("-fno-canonical-system-headers".into(), false),
            ]),
            cxx_options: vec!["-std=c++17".into()],
            link_options: vec!["-L/nix/store/dddd-libcxx/lib".into()],
            link_libs: vec!["-lc++".into()],
        })),
    };
    let mut java = cc.clone();
    java.image = Image { name: "lre-java".into(), tag: "4567ef01".into(), digest: None };
    java.environment = BTreeMap::from([("JAVA_HOME".into(), "/nix/store/eeee-openjdk-17/lib/openjdk".into())]);
    java.probed = Probed::Java(JavaFacts {
        java_home: "/nix/store/eeee-openjdk-17/lib/openjdk".into(),
        version: "17.0.11".into(),
        release: 17,
        vendor: "N/A".into(),
    });
    Facts {
        generated_by: GENERATED_BY.into(),
        schema: SCHEMA,
        bazel_version: bazel_version.into(),
        toolchains: BTreeMap::from([("lre-cc".into(), cc), ("lre-java".into(), java)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_round_trips() {
        let facts = sample("7.4.1");
        let text = facts.to_json();
        assert_eq!(serde_json::from_str::<Facts>(&text).unwrap(), facts);
        assert!(text.contains("\"dwp\": null"), "absent tools are null, not a string:\n{text}");
    }

    #[test]
    fn content_tags_follow_the_content() {
        let facts = sample("7.4.1");
        let cc = &facts.toolchains["lre-cc"];
        let tag = ToolchainFacts::content_tag(&cc.environment, &cc.probed);
        assert_eq!(tag.len(), 32);
        assert_eq!(tag, ToolchainFacts::content_tag(&cc.environment, &cc.probed));
        let mut env = cc.environment.clone();
        env.insert("BAZEL_LINKOPTS".into(), "-lm".into());
        assert_ne!(tag, ToolchainFacts::content_tag(&env, &cc.probed));
    }

    #[test]
    fn an_image_known_by_digest_is_named_by_it() {
        let mut image = Image { name: "lre-cc".into(), tag: "0123abcd".into(), digest: None };
        assert_eq!(image.reference(), "docker://lre-cc:0123abcd");
        image.digest = Some(format!("sha256:{}", "ab".repeat(32)));
        assert_eq!(image.reference(), format!("docker://lre-cc@sha256:{}", "ab".repeat(32)));
        let json = serde_json::to_string(&Image { digest: None, ..image.clone() }).unwrap();
        assert!(!json.contains("digest"), "lock files without digests stay as they were: {json}");
    }

    #[test]
    fn formats_rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
