//! The C/C++ probe: asks the compiler itself what it is, where its headers and tools are,
//! which libc it targets, and which optional flags it really accepts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{join, normalize, Prober};
use crate::facts::{CcFacts, Compiler, IncludeDirs, Libc};

/// Tools Bazel's `tool_paths` can name, besides the compiler itself.
pub const TOOLS: &[&str] = &["ar", "cpp", "dwp", "gcov", "ld", "llvm-cov", "nm", "objcopy", "objdump", "strip"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagUse {
    /// Checked by compiling a C file.
    Compile,
    /// Checked by linking the C++ probe program with the toolchain's link options.
    Link,
}

/// Optional flags whose acceptance is decided by running the compiler; the renderer places
/// each accepted one in its feature.
pub const OPTIONAL_FLAGS: &[(&str, FlagUse)] = &[
    ("--coverage", FlagUse::Link),
    ("-Wall", FlagUse::Compile),
    ("-Wl,--gc-sections", FlagUse::Link),
    ("-Wl,-no-as-needed", FlagUse::Link),
    ("-Wl,-z,relro,-z,now", FlagUse::Link),
    ("-Wno-builtin-macro-redefined", FlagUse::Compile),
    ("-Wno-free-nonheap-object", FlagUse::Compile),
    ("-Wself-assign", FlagUse::Compile),
    ("-Wthread-safety", FlagUse::Compile),
    ("-Wunused-but-set-parameter", FlagUse::Compile),
    ("-fdata-sections", FlagUse::Compile),
    ("-ffunction-sections", FlagUse::Compile),
    ("-fno-canonical-system-headers", FlagUse::Compile),
    ("-fno-omit-frame-pointer", FlagUse::Compile),
    ("-fstack-protector", FlagUse::Compile),
    ("-no-canonical-prefixes", FlagUse::Compile),
    ("-pass-exit-codes", FlagUse::Link),
];

const DEFAULT_CXX_OPTIONS: &str = "-std=c++17";
const DEFAULT_LINK_LIBS: &str = "-lstdc++:-lm";
const EMPTY_C_PROGRAM: &str = "int main(void) { return 0; }\n";
/// Needs the C++ runtime (operator new, exceptions, unwinding) but no headers, so it compiles fast.
const CXX_PROGRAM: &str = "extern \"C\" int puts(const char*);\n\
int main() {\n\
    int* answer = new int(0);\n\
    try { throw 42; } catch (int thrown) { *answer = thrown; }\n\
    puts(*answer == 42 ? \"lre-probe-ok\" : \"exceptions are broken\");\n\
    delete answer;\n\
    return 0;\n\
}\n";

pub fn probe(prober: &Prober) -> Result<CcFacts> {
    let env = prober.env;
    let cc = env.get("CC").context("CC is not set in the toolchain's environment")?;
    let compiler_path = prober.resolve("CC", cc)?;
    let compiler = compiler_path.as_path();
    let cxx_options = colon_list(env.get("BAZEL_CXXOPTS").unwrap_or(DEFAULT_CXX_OPTIONS));
    let link_options = colon_list(env.get("BAZEL_LINKOPTS").unwrap_or(""));
    let link_libs = colon_list(env.get("BAZEL_LINKLIBS").unwrap_or(DEFAULT_LINK_LIBS));

    let inputs = Inputs {
        empty_c: prober.input_file("empty.c", EMPTY_C_PROGRAM)?,
        // Not /dev/null: an image's root has no devices.
        empty: prober.input_file("empty", "")?,
        features_c: prober.input_file("features.c", "#include <features.h>\n")?,
        cxx_program: prober.input_file("probe.cc", CXX_PROGRAM)?,
    };
    let inputs = &inputs;

    let (cxxopts, linkopts, linklibs) = (&cxx_options, &link_options, &link_libs);
    std::thread::scope(|s| {
        // The longest chain (compile, link, run) starts first.
        let link_flags =
            s.spawn(move || link_and_run(prober, compiler, &inputs.cxx_program, cxxopts, linkopts, linklibs));
        // Predefined macros (stdout) with the target and the C search list (-v, stderr).
        let c = s.spawn(move || prober.run_ok(compiler, &["-E", "-dM", "-v", &inputs.features_c]));
        let cxx = s.spawn(move || prober.run_ok(compiler, &["-E", "-v", "-x", "c++", &inputs.empty]));
        // The toolchain passes -no-canonical-prefixes when accepted; the compiler then finds its
        // own headers through the path it was invoked by (clang's resource directory, say), and
        // that spelling is the one dependency files use.
        let uncanonical = s.spawn(move || {
            prober.run(
                compiler,
                &["-no-canonical-prefixes", "-E", "-v", "-x", "c", &inputs.empty, "-x", "c++", &inputs.empty],
            )
        });
        let tools = s.spawn(move || find_tools(prober, compiler));
        let compile_flags = s.spawn(move || accepted_compile_flags(prober, compiler, &inputs.empty_c));

        let c = join(c)?;
        let macros = parse_macros(&c.stdout);
        let (compiler_kind, version) = identify(&macros)?;
        let c_verbose = Verbose::parse(&c.stderr);
        let target_triple = c_verbose.target.context("the compiler's -v output names no Target")?;
        let mut include_dirs = IncludeDirs {
            c: c_verbose.search_lists.into_iter().next().unwrap_or_default(),
            cxx: Verbose::parse(&join(cxx)?.stderr).search_lists.into_iter().next().unwrap_or_default(),
        };
        let uncanonical = join(uncanonical)?;
        if uncanonical.success {
            let lists = Verbose::parse(&uncanonical.stderr).search_lists;
            for (dirs, extra) in [&mut include_dirs.c, &mut include_dirs.cxx].into_iter().zip(lists) {
                for dir in extra {
                    if !dirs.contains(&dir) {
                        dirs.push(dir);
                    }
                }
            }
        }
        if include_dirs.c.is_empty() || include_dirs.cxx.is_empty() {
            bail!("`{} -E -v` listed no builtin include directories:\n{}", compiler.display(), c.stderr.trim_end());
        }
        let mut tools = join(tools)?;
        if compiler_kind == Compiler::Gcc {
            // gcc's coverage tool is gcov; an llvm-cov that happens to be on PATH is not its own.
            tools.remove("llvm-cov");
        }
        let mut accepted: BTreeMap<String, bool> = join(compile_flags)?.into_iter().collect();
        accepted.extend(join(link_flags)?);
        Ok(CcFacts {
            compiler: compiler_kind,
            version,
            target_triple,
            compiler_path: compiler.display().to_string(),
            include_dirs,
            tools,
            libc: libc(&macros),
            flags: accepted,
            cxx_options: cxxopts.clone(),
            link_options: linkopts.clone(),
            link_libs: linklibs.clone(),
        })
    })
}

/// Source files the probes compile, written once into the scratch directory.
struct Inputs {
    empty: String,
    empty_c: String,
    features_c: String,
    cxx_program: String,
}

fn colon_list(value: &str) -> Vec<String> {
    value.split(':').filter(|part| !part.is_empty()).map(str::to_owned).collect()
}

pub fn parse_macros(output: &str) -> BTreeMap<String, String> {
    output
        .lines()
        .filter_map(|line| line.strip_prefix("#define "))
        .filter_map(|rest| {
            let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
            (!name.contains('(')).then(|| (name.to_owned(), value.to_owned()))
        })
        .collect()
}

pub fn identify(macros: &BTreeMap<String, String>) -> Result<(Compiler, String)> {
    let triple = |a: &str, b: &str, c: &str| -> Option<String> {
        Some(format!("{}.{}.{}", macros.get(a)?, macros.get(b)?, macros.get(c)?))
    };
    if macros.contains_key("__clang__") {
        let version = triple("__clang_major__", "__clang_minor__", "__clang_patchlevel__")
            .context("clang did not report __clang_major__/__clang_minor__/__clang_patchlevel__")?;
        Ok((Compiler::Clang, version))
    } else if let Some(version) = triple("__GNUC__", "__GNUC_MINOR__", "__GNUC_PATCHLEVEL__") {
        Ok((Compiler::Gcc, version))
    } else {
        bail!("the compiler is neither gcc nor clang (it defines neither __clang__ nor __GNUC__)")
    }
}

fn libc(macros: &BTreeMap<String, String>) -> Libc {
    match (macros.get("__GLIBC__"), macros.get("__GLIBC_MINOR__")) {
        (Some(major), Some(minor)) => Libc { name: "glibc".to_owned(), version: Some(format!("{major}.{minor}")) },
        _ => Libc { name: "unknown".to_owned(), version: None },
    }
}

/// What a compiler driver's `-v` tells: its target and each `#include <...>` search list (one
/// per input), normalised (Bazel refuses `..` in builtin include directories).
#[derive(Debug, PartialEq, Eq)]
pub struct Verbose {
    pub target: Option<String>,
    pub search_lists: Vec<Vec<String>>,
}

impl Verbose {
    pub fn parse(verbose_output: &str) -> Verbose {
        let mut target = None;
        let mut search_lists: Vec<Vec<String>> = Vec::new();
        let mut inside = false;
        for line in verbose_output.lines() {
            if let Some(value) = line.strip_prefix("Target: ") {
                target.get_or_insert_with(|| value.trim().to_owned());
            } else if line.starts_with("#include <...> search starts here:") {
                inside = true;
                search_lists.push(Vec::new());
            } else if line.starts_with("End of search list.") {
                inside = false;
            } else if inside {
                let dir = line.trim().trim_end_matches(" (framework directory)");
                let normal = normalize(Path::new(dir)).display().to_string();
                let list = search_lists.last_mut().expect("inside a search list");
                if !list.contains(&normal) {
                    list.push(normal);
                }
            }
        }
        Verbose { target, search_lists }
    }
}

/// Each tool from the compiler's own program directories first (where its driver looks, as
/// `-print-search-dirs` lists them), then from the toolchain's PATH; `None` when neither has it.
fn find_tools(prober: &Prober, compiler: &Path) -> Result<BTreeMap<String, Option<String>>> {
    let output = prober.run_ok(compiler, &["-print-search-dirs"])?;
    let program_dirs = parse_program_dirs(&output.stdout);
    Ok(TOOLS
        .iter()
        .map(|&tool| {
            let own = program_dirs.iter().map(|dir| dir.join(tool)).find(|path| prober.is_executable(path));
            let found = match own {
                Some(path) => Some(normalize(&path)),
                None => prober.find_on_path(tool),
            };
            (tool.to_owned(), found.map(|path| path.display().to_string()))
        })
        .collect())
}

/// The `programs: =a:b:c` line of `-print-search-dirs`.
pub fn parse_program_dirs(search_dirs: &str) -> Vec<PathBuf> {
    search_dirs
        .lines()
        .find_map(|line| line.strip_prefix("programs: ="))
        .map(|dirs| dirs.split(':').filter(|dir| !dir.is_empty()).map(PathBuf::from).collect())
        .unwrap_or_default()
}

/// Decides which optional compile flags the compiler accepts: all are tried in one run; flags
/// the compiler names in its complaint are rejected; the rest must then pass together cleanly, or
/// every flag is tried on its own.
fn accepted_compile_flags(prober: &Prober, compiler: &Path, source: &str) -> Result<Vec<(String, bool)>> {
    let candidates = optional_flags(FlagUse::Compile);
    let compile = |flags: &[&str]| {
        let mut args = vec!["-Werror".to_owned()];
        args.extend(flags.iter().map(|flag| probed_spelling(flag)));
        args.extend(["-fsyntax-only", "-x", "c", source].map(str::to_owned));
        prober.run(compiler, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    decide(&candidates, compile)
}

/// Links a C++ program with the optional link flags plus the toolchain's BAZEL_LINKOPTS and
/// BAZEL_LINKLIBS, deciding which optional flags the linker accepts (as for compile flags), and
/// runs the program: the toolchain must produce working C++ binaries with its own link options.
fn link_and_run(
    prober: &Prober,
    compiler: &Path,
    source: &str,
    cxx_options: &[String],
    link_options: &[String],
    link_libs: &[String],
) -> Result<Vec<(String, bool)>> {
    let object = prober.scratch_file("probe.o").display().to_string();
    let mut compile: Vec<&str> = cxx_options.iter().map(String::as_str).collect();
    compile.extend(["-c", source, "-o", &object]);
    prober.run_ok(compiler, &compile).context("the toolchain cannot compile a C++ program with its BAZEL_CXXOPTS")?;

    // Every link attempt: its flags, its binary, and whether it linked.
    let attempts: std::cell::RefCell<Vec<(Vec<String>, String, bool)>> = Default::default();
    let link = |flags: &[&str]| {
        let output = prober.scratch_file(&format!("probe-cxx-{}", attempts.borrow().len())).display().to_string();
        let mut args = vec!["-Werror".to_owned()];
        args.extend(flags.iter().map(|flag| probed_spelling(flag)));
        args.extend([object.clone(), "-o".to_owned(), output.clone()]);
        args.extend(link_options.iter().cloned());
        args.extend(link_libs.iter().cloned());
        let result = prober.run(compiler, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
        attempts.borrow_mut().push((flags.iter().map(|f| f.to_string()).collect(), output, result.success));
        Ok(result)
    };
    let candidates = optional_flags(FlagUse::Link);
    let accepted = decide(&candidates, link)?;
    let chosen: Vec<&str> = accepted.iter().filter(|(_, ok)| *ok).map(|(flag, _)| flag.as_str()).collect();
    let linked = attempts.borrow().iter().find(|(flags, _, success)| *success && flags == &chosen).map(|a| a.1.clone());
    let binary = match linked {
        Some(binary) => binary,
        None => {
            let final_link = link(&chosen)?;
            if !final_link.success {
                bail!(
                    "the toolchain cannot link a C++ program with its BAZEL_LINKOPTS ({}) and BAZEL_LINKLIBS ({}):\n{}",
                    link_options.join(" "),
                    link_libs.join(" "),
                    final_link.stderr.trim_end()
                );
            }
            attempts.borrow().last().expect("just linked").1.clone()
        }
    };
    let ran = prober.run_ok(Path::new(&binary), &[]).context("a C++ program linked by the toolchain does not run")?;
    if ran.stdout.trim() != "lre-probe-ok" {
        bail!("a C++ program linked by the toolchain printed {:?} instead of \"lre-probe-ok\"", ran.stdout);
    }
    Ok(accepted)
}

fn optional_flags(usage: FlagUse) -> Vec<&'static str> {
    OPTIONAL_FLAGS.iter().filter(|(_, u)| *u == usage).map(|(flag, _)| *flag).collect()
}

/// Tries all `candidates` at once with `attempt`; a flag named (quoted) in the complaint is
/// rejected; the survivors must then pass together without a word, or each flag is tried alone.
fn decide(candidates: &[&str], attempt: impl Fn(&[&str]) -> Result<super::Output>) -> Result<Vec<(String, bool)>> {
    let clean = |output: &super::Output| output.success && output.stderr.trim().is_empty();
    let first = attempt(candidates)?;
    let named = |flag: &str| {
        let spelled = probed_spelling(flag);
        first.stderr.contains(&format!("'{spelled}'")) || first.stderr.contains(&format!("\u{2018}{spelled}\u{2019}"))
    };
    let survivors: Vec<&str> = candidates.iter().copied().filter(|flag| !named(flag)).collect();
    let together_clean = if survivors.len() == candidates.len() { clean(&first) } else { clean(&attempt(&survivors)?) };
    if together_clean {
        return Ok(candidates.iter().map(|flag| (flag.to_string(), survivors.contains(flag))).collect());
    }
    candidates.iter().map(|flag| Ok((flag.to_string(), clean(&attempt(&[flag])?)))).collect()
}

/// gcc ignores an unknown -Wno-X unless another warning fires, so ask about -WX instead.
fn probed_spelling(flag: &str) -> String {
    match flag.strip_prefix("-Wno-") {
        Some(warning) => format!("-W{warning}"),
        None => flag.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GCC_VERBOSE: &str = "ignoring nonexistent directory \"/usr/local/include/x86_64-linux-gnu\"\n\
#include \"...\" search starts here:\n\
#include <...> search starts here:\n \
/usr/lib/gcc/x86_64-linux-gnu/12/../../../../include/c++/12\n \
/usr/lib/gcc/x86_64-linux-gnu/12/include\n \
/usr/include\n\
End of search list.\n \
/usr/lib/gcc/x86_64-linux-gnu/12/cc1 -quiet\n";

    #[test]
    fn verbose_output_gives_target_and_normalised_search_lists() {
        let verbose = Verbose::parse(&format!("Target: x86_64-linux-gnu\n{GCC_VERBOSE}{GCC_VERBOSE}"));
        assert_eq!(verbose.target.as_deref(), Some("x86_64-linux-gnu"));
        assert_eq!(verbose.search_lists.len(), 2);
        assert_eq!(
            verbose.search_lists[1],
            vec!["/usr/include/c++/12", "/usr/lib/gcc/x86_64-linux-gnu/12/include", "/usr/include",]
        );
    }

    #[test]
    fn program_dirs_come_from_the_search_dirs() {
        let output = "install: /usr/lib/gcc/x86_64-linux-gnu/12/\nprograms: =/usr/lib/gcc/x86_64-linux-gnu/12/:/usr/bin\nlibraries: =/lib\n";
        assert_eq!(
            parse_program_dirs(output),
            vec![PathBuf::from("/usr/lib/gcc/x86_64-linux-gnu/12/"), PathBuf::from("/usr/bin")]
        );
        assert!(parse_program_dirs("nothing useful").is_empty());
    }

    #[test]
    fn identifies_compilers_from_their_macros() {
        let gcc = parse_macros("#define __GNUC__ 12\n#define __GNUC_MINOR__ 2\n#define __GNUC_PATCHLEVEL__ 0\n#define __GLIBC_PREREQ(maj,min) 1\n#define __GLIBC__ 2\n#define __GLIBC_MINOR__ 36\n");
        assert_eq!(identify(&gcc).unwrap(), (Compiler::Gcc, "12.2.0".to_owned()));
        assert_eq!(libc(&gcc), Libc { name: "glibc".into(), version: Some("2.36".into()) });
        let clang = parse_macros("#define __GNUC__ 4\n#define __GNUC_MINOR__ 2\n#define __GNUC_PATCHLEVEL__ 1\n#define __clang__ 1\n#define __clang_major__ 14\n#define __clang_minor__ 0\n#define __clang_patchlevel__ 6\n");
        assert_eq!(identify(&clang).unwrap(), (Compiler::Clang, "14.0.6".to_owned()));
        assert_eq!(libc(&clang).name, "unknown");
        assert!(identify(&parse_macros("#define __TINYC__ 1\n")).is_err());
    }
}
