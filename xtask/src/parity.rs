//! `cargo xtask parity`: build twice against one remote cache — the second time from a clean
//! output — and explain every action of the second build that missed the cache by comparing
//! Bazel's execution logs. Logs are streamed; only the first build's per-action index is kept.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::remote::{Remote, RemoteSettings};
use crate::{bazel, fsx, prereqs, Project};

/// One spawn of Bazel's JSON execution log (`--execution_log_json_file`), the fields compared.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spawn {
    #[serde(default)]
    pub command_args: Vec<String>,
    #[serde(default)]
    pub environment_variables: Vec<NameValue>,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub inputs: Vec<File>,
    #[serde(default)]
    pub listed_outputs: Vec<String>,
    #[serde(default)]
    pub mnemonic: String,
    #[serde(default)]
    pub remote_cache_hit: bool,
}

#[derive(Debug, Deserialize)]
pub struct NameValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub properties: Vec<NameValue>,
}

#[derive(Debug, Deserialize)]
pub struct File {
    pub path: String,
    #[serde(default)]
    pub digest: Option<Digest>,
}

#[derive(Debug, Deserialize)]
pub struct Digest {
    pub hash: String,
}

/// Every distinct string of the first build's log, stored once: actions share most of their
/// inputs, flags and environment, so the index grows with distinct strings, not with the log.
#[derive(Default)]
struct Interner {
    ids: HashMap<Box<str>, u32>,
    strings: Vec<Box<str>>,
}

impl Interner {
    fn intern(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = u32::try_from(self.strings.len()).expect("fewer than 4 billion distinct strings");
        self.strings.push(text.into());
        self.ids.insert(text.into(), id);
        id
    }

    fn get(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    fn text(&self, id: u32) -> &str {
        &self.strings[id as usize]
    }
}

/// What the first build's action looked like: interned ids, pairs sorted by name.
struct Recorded {
    args: Vec<u32>,
    environment: Vec<(u32, u32)>,
    platform: Vec<(u32, u32)>,
    inputs: Vec<(u32, u32)>,
}

impl Recorded {
    fn new(spawn: &Spawn, strings: &mut Interner) -> Recorded {
        let mut pairs = |items: &mut dyn Iterator<Item = (&str, &str)>| -> Vec<(u32, u32)> {
            let mut pairs: Vec<(u32, u32)> =
                items.map(|(name, value)| (strings.intern(name), strings.intern(value))).collect();
            pairs.sort_unstable();
            pairs
        };
        let environment = pairs(&mut spawn.environment_variables.iter().map(|v| (v.name.as_str(), v.value.as_str())));
        let platform =
            pairs(&mut spawn.platform.iter().flat_map(|p| &p.properties).map(|v| (v.name.as_str(), v.value.as_str())));
        let inputs = pairs(
            &mut spawn.inputs.iter().map(|f| (f.path.as_str(), f.digest.as_ref().map_or("", |d| d.hash.as_str()))),
        );
        Recorded { args: spawn.command_args.iter().map(|a| strings.intern(a)).collect(), environment, platform, inputs }
    }
}

/// A recorded name → value list as strings, for comparing with the second build's.
fn resolve(pairs: &[(u32, u32)], strings: &Interner) -> BTreeMap<String, String> {
    pairs.iter().map(|&(name, value)| (strings.text(name).to_owned(), strings.text(value).to_owned())).collect()
}

impl Spawn {
    fn key(&self) -> String {
        self.listed_outputs.join("\n")
    }

    fn environment(&self) -> BTreeMap<String, String> {
        self.environment_variables.iter().map(|v| (v.name.clone(), v.value.clone())).collect()
    }

    fn platform(&self) -> BTreeMap<String, String> {
        self.platform.iter().flat_map(|p| &p.properties).map(|v| (v.name.clone(), v.value.clone())).collect()
    }

    fn input_paths(&self) -> std::collections::HashSet<&str> {
        self.inputs.iter().map(|f| f.path.as_str()).collect()
    }
}

/// Reads a JSON execution log (concatenated objects) one spawn at a time.
pub fn spawns(reader: impl BufRead) -> impl Iterator<Item = Result<Spawn>> {
    serde_json::Deserializer::from_reader(reader)
        .into_iter::<Spawn>()
        .map(|spawn| spawn.context("the execution log is not Bazel's JSON execution log"))
}

/// One action of the second build that missed the cache, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Miss {
    pub mnemonic: String,
    pub output: String,
    pub causes: Vec<Cause>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    NotInFirstBuild,
    Argument {
        index: usize,
        first: Option<String>,
        second: Option<String>,
    },
    Environment {
        name: String,
        first: Option<String>,
        second: Option<String>,
    },
    PlatformProperty {
        name: String,
        first: Option<String>,
        second: Option<String>,
    },
    InputPath {
        path: String,
        in_first: bool,
    },
    InputDigest {
        path: String,
    },
    /// Everything compared is equal: the cache did not have the result (evicted, not uploaded).
    NothingDiffers,
}

impl Cause {
    /// The cause without per-action details, for the summary.
    pub fn headline(&self) -> String {
        match self {
            Cause::NotInFirstBuild => "the first build had no such action".to_owned(),
            Cause::Argument { .. } => "command-line arguments".to_owned(),
            Cause::Environment { name, .. } => format!("environment variable {name}"),
            Cause::PlatformProperty { name, .. } => format!("platform property {name}"),
            Cause::InputPath { .. } => "the set of input paths".to_owned(),
            Cause::InputDigest { path } => format!("input {path}"),
            Cause::NothingDiffers => "nothing differs (the result was not in the cache)".to_owned(),
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |value: &Option<String>| value.as_ref().map_or_else(|| "absent".to_owned(), |v| format!("{v:?}"));
        match self {
            Cause::Argument { index, first, second } => {
                write!(f, "argument {index}: {} in the first build, {} in the second", shown(first), shown(second))
            }
            Cause::Environment { name, first, second } => write!(
                f,
                "environment variable {name}: {} in the first build, {} in the second",
                shown(first),
                shown(second)
            ),
            Cause::PlatformProperty { name, first, second } => write!(
                f,
                "platform property {name}: {} in the first build, {} in the second",
                shown(first),
                shown(second)
            ),
            Cause::InputPath { path, in_first } => {
                write!(f, "input {path} is only in the {} build", if *in_first { "first" } else { "second" })
            }
            Cause::InputDigest { path } => write!(f, "input {path} has different contents"),
            Cause::NotInFirstBuild | Cause::NothingDiffers => f.write_str(&self.headline()),
        }
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    pub actions: u64,
    pub hits: u64,
    pub misses: Vec<Miss>,
}

impl Comparison {
    pub fn hit_rate(&self) -> f64 {
        if self.actions == 0 {
            100.0
        } else {
            self.hits as f64 * 100.0 / self.actions as f64
        }
    }
}

/// Compares two execution logs: indexes the first, streams the second.
pub fn compare(first: impl BufRead, second: impl BufRead) -> Result<Comparison> {
    let mut strings = Interner::default();
    let mut index: HashMap<u32, Recorded> = HashMap::new();
    for spawn in spawns(first) {
        let spawn = spawn.context("reading the first build's execution log")?;
        let key = strings.intern(&spawn.key());
        index.insert(key, Recorded::new(&spawn, &mut strings));
    }
    let mut comparison = Comparison::default();
    for spawn in spawns(second) {
        let spawn = spawn.context("reading the second build's execution log")?;
        comparison.actions += 1;
        if spawn.remote_cache_hit {
            comparison.hits += 1;
            continue;
        }
        let recorded = strings.get(&spawn.key()).and_then(|key| index.get(&key));
        let causes = match recorded {
            None => vec![Cause::NotInFirstBuild],
            Some(recorded) => differences(recorded, &strings, &spawn),
        };
        comparison.misses.push(Miss {
            mnemonic: spawn.mnemonic.clone(),
            output: primary_output(&spawn.listed_outputs),
            causes,
        });
    }
    Ok(comparison)
}

/// The output that names an action best: the first that is not a dependency file.
fn primary_output(outputs: &[String]) -> String {
    outputs.iter().find(|o| !o.ends_with(".d")).or(outputs.first()).cloned().unwrap_or_default()
}

fn differences(first: &Recorded, strings: &Interner, second: &Spawn) -> Vec<Cause> {
    let mut causes = Vec::new();
    let first_args: Vec<&str> = first.args.iter().map(|&id| strings.text(id)).collect();
    let longest = first_args.len().max(second.command_args.len());
    if let Some(index) =
        (0..longest).find(|&i| first_args.get(i).copied() != second.command_args.get(i).map(String::as_str))
    {
        causes.push(Cause::Argument {
            index,
            first: first_args.get(index).map(|a| a.to_string()),
            second: second.command_args.get(index).cloned(),
        });
    }
    let mapped = |first: &BTreeMap<String, String>,
                  second: &BTreeMap<String, String>|
     -> Vec<(String, Option<String>, Option<String>)> {
        let mut names: Vec<&String> = first.keys().chain(second.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter(|name| first.get(*name) != second.get(*name))
            .map(|name| (name.clone(), first.get(name).cloned(), second.get(name).cloned()))
            .collect()
    };
    for (name, a, b) in mapped(&resolve(&first.environment, strings), &second.environment()) {
        causes.push(Cause::Environment { name, first: a, second: b });
    }
    for (name, a, b) in mapped(&resolve(&first.platform, strings), &second.platform()) {
        causes.push(Cause::PlatformProperty { name, first: a, second: b });
    }
    let second_inputs = second.input_paths();
    let mut input_causes = Vec::new();
    for file in &second.inputs {
        let digest = file.digest.as_ref().map_or("", |d| d.hash.as_str());
        let recorded = strings
            .get(&file.path)
            .and_then(|path| first.inputs.binary_search_by_key(&path, |&(p, _)| p).ok())
            .map(|at| strings.text(first.inputs[at].1));
        match recorded {
            None => input_causes.push(Cause::InputPath { path: file.path.clone(), in_first: false }),
            Some(recorded) if recorded != digest => input_causes.push(Cause::InputDigest { path: file.path.clone() }),
            Some(_) => {}
        }
    }
    for &(path, _) in &first.inputs {
        let path = strings.text(path);
        if !second_inputs.contains(path) {
            input_causes.push(Cause::InputPath { path: path.to_owned(), in_first: true });
        }
    }
    input_causes.sort();
    causes.extend(input_causes);
    if causes.is_empty() {
        causes.push(Cause::NothingDiffers);
    }
    causes
}

/// A readable report: the rate, each miss with its causes, and the causes by how many actions
/// they explain.
pub fn report(comparison: &Comparison) -> String {
    let mut text = format!(
        "second build: {} of {} actions were remote cache hits ({:.1} %)\n",
        comparison.hits,
        comparison.actions,
        comparison.hit_rate()
    );
    let mut tally: BTreeMap<String, u64> = BTreeMap::new();
    for miss in &comparison.misses {
        writeln!(text, "  missed: {} {}", miss.mnemonic, miss.output).expect("writing to a String");
        for cause in &miss.causes {
            writeln!(text, "    {cause}").expect("writing to a String");
        }
        let mut headlines: Vec<String> = miss.causes.iter().map(Cause::headline).collect();
        headlines.dedup();
        for headline in headlines {
            *tally.entry(headline).or_default() += 1;
        }
    }
    if !tally.is_empty() {
        let mut ranked: Vec<(String, u64)> = tally.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        text += "causes of the misses:\n";
        for (headline, count) in ranked {
            writeln!(text, "  {headline}: {count} action(s)").expect("writing to a String");
        }
    }
    text
}

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub target: String,
    pub settings: RemoteSettings,
    /// Minimum remote cache hit rate of the second build, in percent.
    pub threshold: f64,
    /// Bazel arguments for both builds.
    pub bazel_args: Vec<String>,
    /// Bazel arguments for the second build only (to see what a difference costs).
    pub second_build_args: Vec<String>,
    /// Compare these two execution logs instead of building.
    pub logs: Option<(PathBuf, PathBuf)>,
}

pub fn run(project: &Project, options: &Options) -> Result<()> {
    if let Some((first, second)) = &options.logs {
        return judge(&compare_files(first, second)?, options.threshold, None);
    }
    let remote = Remote::from_settings(&RemoteSettings::resolve(project, options.settings.clone())?)?;
    remote.preflight()?;
    prereqs::ensure(&[&prereqs::BAZEL], false)?;

    let logs = project.local_dir().join("parity");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let (first_log, second_log) = (logs.join("first.json"), logs.join("second.json"));
    let mut common = vec!["--config=lre".to_owned()];
    common.extend(remote.cache_flags());

    let mut first = vec!["build".to_owned()];
    first.extend(common.iter().cloned());
    first.push(format!("--execution_log_json_file={}", first_log.display()));
    first.extend(options.bazel_args.iter().cloned());
    first.push(options.target.clone());

    let mut second = vec!["build".to_owned()];
    second.extend(common.iter().cloned());
    second.extend(remote.execution_flags());
    second.push(format!("--execution_log_json_file={}", second_log.display()));
    second.extend(options.bazel_args.iter().cloned());
    second.extend(options.second_build_args.iter().cloned());
    second.push(options.target.clone());

    // Both builds use their own output base, cleaned before each, so every action runs (or is
    // fetched) and is logged, and the user's own outputs stay untouched.
    let startup = [format!("--output_base={}", logs.join("output-base").display())];
    let bazel = |args: &[String]| bazel::run_with_startup(project, &startup, args);
    let clean = ["clean".to_owned()];
    let builds = bazel(&clean)
        .and_then(|()| {
            eprintln!("parity: first build from a clean output, local execution, uploading to {}", remote.cache.url());
            bazel(&first)
        })
        .and_then(|()| bazel(&clean))
        .and_then(|()| {
            match &remote.executor {
                Some(executor) => {
                    eprintln!("parity: second build from a clean output, executing on {}", executor.url())
                }
                None => eprintln!("parity: second build from a clean output, local execution reading the cache"),
            }
            bazel(&second)
        });
    let _ = bazel(&["shutdown".to_owned()]);
    builds?;

    let comparison = compare_files(&first_log, &second_log)?;
    judge(&comparison, options.threshold, Some(&logs))
}

/// Compares two execution log files.
pub fn compare_files(first: &Path, second: &Path) -> Result<Comparison> {
    let open = |path: &Path| -> Result<std::io::BufReader<std::fs::File>> {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open the execution log {}", path.display()))?;
        Ok(std::io::BufReader::with_capacity(1 << 20, file))
    };
    compare(open(first)?, open(second)?)
}

/// Prints the report (and keeps it beside the logs), and fails below the threshold.
fn judge(comparison: &Comparison, threshold: f64, logs: Option<&Path>) -> Result<()> {
    let text = report(comparison);
    print!("{text}");
    if let Some(logs) = logs {
        fsx::write_atomic(&logs.join("report.txt"), &text)?;
    }
    if comparison.hit_rate() + f64::EPSILON < threshold {
        let kept = logs.map(|l| format!("; the execution logs are in {}", l.display())).unwrap_or_default();
        bail!(
            "the second build's remote cache hit rate {:.1} % is below the threshold {threshold} %{kept}",
            comparison.hit_rate()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn(output: &str, args: &[&str], env: &[(&str, &str)], input_digest: &str, hit: bool) -> String {
        serde_json::json!({
            "commandArgs": args,
            "environmentVariables": env.iter().map(|(n, v)| serde_json::json!({"name": n, "value": v})).collect::<Vec<_>>(),
            "platform": {"properties": [{"name": "container-image", "value": "docker://lre-cc:1"}]},
            "inputs": [{"path": "src/a.cc", "digest": {"hash": input_digest, "sizeBytes": "1"}}],
            "listedOutputs": [output],
            "mnemonic": "CppCompile",
            "remoteCacheHit": hit,
            "runner": if hit { "remote cache hit" } else { "processwrapper-sandbox" },
        })
        .to_string()
    }

    #[test]
    fn names_what_differs_for_each_miss() {
        let first = [
            spawn("a.o", &["gcc", "-c", "a.cc"], &[("PATH", "/bin")], "aa", false),
            spawn("b.o", &["gcc", "-c", "b.cc"], &[("PATH", "/bin")], "bb", false),
            spawn("c.o", &["gcc", "-c", "c.cc"], &[("PATH", "/bin")], "cc", false),
        ]
        .join("\n");
        let second = [
            spawn("a.o", &["gcc", "-c", "a.cc"], &[("PATH", "/bin")], "aa", true),
            spawn("b.o", &["gcc", "-c", "b.cc"], &[("PATH", "/bin"), ("CCACHE", "1")], "bb", false),
            spawn("c.o", &["gcc", "-O2", "-c", "c.cc"], &[("PATH", "/bin")], "c2", false),
            spawn("d.o", &["gcc", "-c", "d.cc"], &[("PATH", "/bin")], "dd", false),
        ]
        .join("\n");
        let comparison = compare(first.as_bytes(), second.as_bytes()).unwrap();
        assert_eq!((comparison.actions, comparison.hits), (4, 1));
        assert_eq!(comparison.hit_rate(), 25.0);
        assert_eq!(
            comparison.misses[0].causes,
            [Cause::Environment { name: "CCACHE".into(), first: None, second: Some("1".into()) }]
        );
        assert_eq!(
            comparison.misses[1].causes,
            [
                Cause::Argument { index: 1, first: Some("-c".into()), second: Some("-O2".into()) },
                Cause::InputDigest { path: "src/a.cc".into() }
            ]
        );
        assert_eq!(comparison.misses[2].causes, [Cause::NotInFirstBuild]);
        let text = report(&comparison);
        assert!(text.starts_with("second build: 1 of 4 actions were remote cache hits (25.0 %)\n"), "{text}");
        assert!(text.contains("environment variable CCACHE: absent in the first build, \"1\" in the second"), "{text}");
        assert!(text.contains("causes of the misses:\n"), "{text}");
    }

    #[test]
    fn equal_actions_that_missed_say_so() {
        let log = spawn("a.o", &["gcc"], &[], "aa", false);
        let comparison = compare(log.as_bytes(), log.as_bytes()).unwrap();
        assert_eq!(comparison.misses[0].causes, [Cause::NothingDiffers]);
    }

    #[test]
    fn a_log_that_is_not_an_execution_log_is_refused() {
        let err = compare("[1, 2]".as_bytes(), "".as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("not Bazel's JSON execution log"), "{err:#}");
    }
}
