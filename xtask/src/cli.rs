//! Command-line parsing: `cargo xtask <command> [options]`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::oci::pack::PackOptions;
use crate::oci::wrap::WrapOptions;
use crate::oci::ImageRef;
use crate::remote::RemoteSettings;
use crate::up::UpOptions;
use crate::{generate, parity};

pub const USAGE: &str = "\
cargo xtask [--root DIR] <command>

commands:
  generate [--check [--reprobe]] [--only NAME]... [--from oci:DIR[:TAG]|docker-archive:FILE]
        probe the toolchains of lre/toolchains.toml and write generated/;
        --check renders from the checked-in facts and fails with a diff when generated/ is stale;
        --reprobe (with --check) also probes again and compares with the facts;
        --only probes just the named toolchains (others keep their facts);
        --from takes the image of the selected oci-sourced toolchains from there (unpacked into
        .lre/oci/, probed inside it) instead of their `from` in the manifest
  image unpack --image oci:DIR[:TAG]|docker-archive:FILE --output DIR
        an image's root file system, unpacked safely (as `generate --from` does) into a new directory
  image pack --rootfs DIR --output DIR [--tag TAG] [--env NAME=VALUE]...
        a root file system directory → a one-layer OCI image layout (reproducible)
  image wrap --base oci:DIR[:TAG]|docker-archive:FILE --nativelink FILE --output DIR [--tag TAG]
             [--title TITLE] [--source URL] [--revision REV] [--env-program FILE]
        createWorker without Nix: the base's layers (by digest) plus one layer with nativelink in
        /usr/local/bin, user nativelink (1000:1000) and its home, /tmp 1777; sets User, WorkingDir,
        Entrypoint and OCI labels (source and revision default to this checkout's git origin and HEAD);
        --env-program installs a static `env` as /usr/bin/env for bases without one
  run [TARGET] [--install-missing] [-- BAZEL_ARGS...]
        bazel run --config=lre TARGET (default //examples:hello_lre)
  run-remote [TARGET] [--remote-executor URL] [--remote-cache URL] [--remote-instance-name NAME]
             [--tls-ca FILE] [-- BAZEL_ARGS...]
        the same build with every action on remote execution; endpoints come from these flags, then
        LRE_REMOTE_EXECUTOR / LRE_REMOTE_CACHE / LRE_REMOTE_INSTANCE_NAME / LRE_TLS_CA, then [remote]
        in lre/toolchains.toml, then what `cargo xtask up` runs; each is checked (within 3 s) before
        Bazel starts
  parity [TARGET] [--remote-cache URL] [--remote-executor URL] [--remote-instance-name NAME]
         [--tls-ca FILE] [--threshold PERCENT] [--second-build-arg ARG]... [-- BAZEL_ARGS...]
  parity --logs FIRST SECOND [--threshold PERCENT]
        build TARGET (default //examples:hello_lre) uploading to the remote cache, then again
        from a clean output (on the executor if one is configured, else reading the cache);
        report the second build's remote cache hit rate and, for each miss, what differs
        (argument, environment variable, platform property, input); fail below the threshold
        (default 100 %); with --logs, compare two existing execution logs
        (--execution_log_json_file) instead of building
  up [--bind ADDR] [--port-base N] [--instance-name NAME] [--timeout SECONDS]
        start NativeLink here (from $LRE_NATIVELINK or PATH): a CAS + action cache on N (default 50051),
        a scheduler on N+1 (its worker API on N+2), and a worker per generated toolchain advertising
        that toolchain's platform; configs are rendered from generated/lre.lock.json; binds 127.0.0.1
        unless --bind says otherwise; state, logs and data live in .lre/up/; run again to converge
  down
        stop exactly the processes `up` started (their data stays for the next `up`)
  status
        show what `up` started, whether it still runs, and the endpoints; fails if something stopped
  cluster up|down
        a local kind cluster `lre` with a registry on localhost:5001 (bound to 127.0.0.1); down also
        stops deploy's port-forwards
  deploy [--dry-run] [--image NAME=oci:DIR|NAME=docker-archive:FILE]... [--timeout SECONDS]
        render kubernetes/ with `kubectl kustomize`, check it against the facts, push every image
        it runs (from the flake's copyTo unless --image names a source), apply it, wait for every
        rollout, and port-forward the CAS and scheduler to 127.0.0.1; --dry-run checks and prints
        the plan only
  bazel BAZEL_ARGS...
        run Bazel in this repository (with this machine's offline overrides, if any)
  doctor
        report prerequisites and whether generated/ is stale or impure
  test [--install-missing]
        check generated/, then run the whole test suite (installs missing tools when CI is set)
  bench [--no-compile]
        print the median time of `generate` next to Bazel's C++ autoconfiguration, and the
        clean compile time of this crate
  bench parity
        print the time and peak memory of `parity --logs` on synthetic 100,000-action logs
  bench image
        print the time of `image wrap` on a 1 GiB base next to a 10 MiB one, and the peak memory of
        `image unpack` on images of 10 MiB, 256 MiB and 1 GiB
";

#[derive(Debug, PartialEq)]
pub enum Command {
    Generate(generate::Options),
    ImagePack(PackOptions),
    ImageUnpack {
        image: ImageRef,
        output: PathBuf,
    },
    /// Wrap options; `source` and `revision` left `None` are filled from git.
    ImageWrap(WrapOptions),
    Run {
        target: String,
        bazel_args: Vec<String>,
        install_missing: bool,
    },
    RunRemote {
        target: String,
        bazel_args: Vec<String>,
        settings: RemoteSettings,
    },
    Parity(parity::Options),
    Up(UpOptions),
    ClusterUp,
    ClusterDown,
    Deploy(crate::cluster::DeployOptions),
    Down,
    Status,
    Bazel(Vec<String>),
    Doctor,
    Test {
        install_missing: bool,
    },
    Bench {
        include_compile: bool,
    },
    BenchParity,
    BenchImage,
    Help,
}

#[derive(Debug, PartialEq)]
pub struct Invocation {
    pub root: Option<PathBuf>,
    pub command: Command,
}

pub const DEFAULT_TARGET: &str = "//examples:hello_lre";

pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Invocation> {
    let mut args = args.into_iter().peekable();
    let mut root = None;
    while let Some(arg) = args.peek() {
        match arg.as_str() {
            "--root" => {
                args.next();
                root = Some(PathBuf::from(args.next().context("--root needs a directory")?));
            }
            "-h" | "--help" | "help" => return Ok(Invocation { root, command: Command::Help }),
            _ => break,
        }
    }
    let Some(name) = args.next() else { return Ok(Invocation { root, command: Command::Help }) };
    let rest: Vec<String> = args.collect();
    let command = match name.as_str() {
        "generate" => {
            let mut options = generate::Options::default();
            let mut rest = rest.into_iter();
            while let Some(arg) = rest.next() {
                match arg.as_str() {
                    "--check" => options.check = true,
                    "--reprobe" => options.reprobe = true,
                    "--only" => options.only.push(rest.next().context("--only needs a toolchain name")?),
                    "--from" => {
                        options.from =
                            Some(ImageRef::parse(&rest.next().context("--from needs oci:DIR or docker-archive:FILE")?)?)
                    }
                    other => bail!("generate: unknown option {other:?}\n\n{USAGE}"),
                }
            }
            if options.reprobe && !options.check {
                bail!("generate: --reprobe compares with the facts and only makes sense with --check");
            }
            Command::Generate(options)
        }
        "run" => {
            let (own, bazel_args) = split_at_dashes(rest);
            let mut target = None;
            let mut install_missing = false;
            for arg in own {
                match arg.as_str() {
                    "--install-missing" => install_missing = true,
                    flag if flag.starts_with('-') => {
                        bail!("run: unknown option {flag:?}; pass Bazel options after `--`")
                    }
                    _ if target.is_some() => bail!("run: one target at a time (got {arg:?} too)"),
                    _ => target = Some(arg),
                }
            }
            Command::Run { target: target.unwrap_or_else(|| DEFAULT_TARGET.to_owned()), bazel_args, install_missing }
        }
        "run-remote" => {
            let (own, bazel_args) = split_at_dashes(rest);
            let mut target = None;
            let mut settings = RemoteSettings::default();
            let mut own = own.into_iter();
            while let Some(arg) = own.next() {
                if !remote_flag("run-remote", &arg, &mut own, &mut settings)? {
                    positional("run-remote", arg, &mut target)?;
                }
            }
            Command::RunRemote { target: target.unwrap_or_else(|| DEFAULT_TARGET.to_owned()), bazel_args, settings }
        }
        "parity" => {
            let (own, bazel_args) = split_at_dashes(rest);
            let mut target = None;
            let mut options = parity::Options {
                target: String::new(),
                settings: RemoteSettings::default(),
                threshold: 100.0,
                bazel_args,
                second_build_args: Vec::new(),
                logs: None,
            };
            let mut own = own.into_iter();
            while let Some(arg) = own.next() {
                match arg.as_str() {
                    "--threshold" => {
                        let value = own.next().context("parity: --threshold needs a percentage")?;
                        options.threshold = value
                            .trim_end_matches('%')
                            .parse()
                            .ok()
                            .filter(|t| (0.0..=100.0).contains(t))
                            .with_context(|| {
                                format!("parity: --threshold {value:?} is not a percentage from 0 to 100")
                            })?;
                    }
                    "--logs" => {
                        let mut log =
                            || own.next().map(PathBuf::from).context("parity: --logs needs two execution logs");
                        options.logs = Some((log()?, log()?));
                    }
                    "--second-build-arg" => options
                        .second_build_args
                        .push(own.next().context("parity: --second-build-arg needs a Bazel argument")?),
                    _ if remote_flag("parity", &arg, &mut own, &mut options.settings)? => {}
                    _ => positional("parity", arg, &mut target)?,
                }
            }
            options.target = target.unwrap_or_else(|| DEFAULT_TARGET.to_owned());
            Command::Parity(options)
        }
        "image" => parse_image(rest)?,
        "up" => {
            let mut options = UpOptions::default();
            let mut rest = rest.into_iter();
            while let Some(arg) = rest.next() {
                let mut value = || rest.next().with_context(|| format!("up: {arg} needs a value"));
                match arg.as_str() {
                    "--bind" => {
                        let text = value()?;
                        options.bind =
                            text.parse().with_context(|| format!("up: --bind {text:?} is not an IP address"))?;
                    }
                    "--port-base" => {
                        let text = value()?;
                        options.port_base =
                            text.parse().with_context(|| format!("up: --port-base {text:?} is not a port number"))?;
                    }
                    "--instance-name" => options.instance_name = value()?,
                    "--timeout" => options.timeout = seconds("up", "--timeout", &value()?)?,
                    other => bail!("up: unknown option {other:?}\n\n{USAGE}"),
                }
            }
            Command::Up(options)
        }
        "cluster" => match rest.as_slice() {
            [what] if what == "up" => Command::ClusterUp,
            [what] if what == "down" => Command::ClusterDown,
            _ => bail!("cluster: say `cluster up` or `cluster down`"),
        },
        "deploy" => {
            let mut options = crate::cluster::DeployOptions {
                dry_run: false,
                images: Vec::new(),
                timeout: std::time::Duration::from_secs(300),
            };
            let mut rest = rest.into_iter();
            while let Some(arg) = rest.next() {
                match arg.as_str() {
                    "--dry-run" => options.dry_run = true,
                    "--image" => {
                        let text = rest.next().context("deploy: --image needs NAME=SOURCE")?;
                        options.images.push(crate::cluster::parse_image_source(&text)?);
                    }
                    "--timeout" => {
                        options.timeout =
                            seconds("deploy", "--timeout", &rest.next().context("deploy: --timeout needs seconds")?)?
                    }
                    other => bail!("deploy: unknown option {other:?}\n\n{USAGE}"),
                }
            }
            Command::Deploy(options)
        }
        "down" => {
            no_more("down", &rest)?;
            Command::Down
        }
        "status" => {
            no_more("status", &rest)?;
            Command::Status
        }
        "bazel" => {
            if rest.is_empty() {
                bail!("bazel: give a Bazel command, e.g. `cargo xtask bazel build --config=lre //examples/...`");
            }
            Command::Bazel(rest)
        }
        "doctor" => {
            no_more("doctor", &rest)?;
            Command::Doctor
        }
        "test" => match rest.as_slice() {
            [] => Command::Test { install_missing: false },
            [flag] if flag == "--install-missing" => Command::Test { install_missing: true },
            _ => bail!("test: unknown arguments {rest:?}"),
        },
        "bench" => match rest.as_slice() {
            [] => Command::Bench { include_compile: true },
            [flag] if flag == "--no-compile" => Command::Bench { include_compile: false },
            [what] if what == "parity" => Command::BenchParity,
            [what] if what == "image" => Command::BenchImage,
            _ => bail!("bench: unknown arguments {rest:?}"),
        },
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    };
    Ok(Invocation { root, command })
}

fn parse_image(rest: Vec<String>) -> Result<Command> {
    let mut rest = rest.into_iter();
    let what = rest.next().context("image: say `image pack`, `image unpack` or `image wrap`")?;
    let mut flags: Vec<(String, String)> = Vec::new();
    while let Some(flag) = rest.next() {
        if !flag.starts_with("--") {
            bail!("image {what}: unexpected argument {flag:?}\n\n{USAGE}");
        }
        let value = rest.next().with_context(|| format!("image {what}: {flag} needs a value"))?;
        flags.push((flag, value));
    }
    let mut take = |name: &str| -> Vec<String> {
        let (taken, kept): (Vec<_>, Vec<_>) = flags.drain(..).partition(|(flag, _)| flag == name);
        flags = kept;
        taken.into_iter().map(|(_, value)| value).collect()
    };
    let command = match what.as_str() {
        "unpack" => {
            let mut one = |name: &str| take(name).pop();
            let image = ImageRef::parse(&one("--image").context("image unpack: --image oci:DIR[:TAG] is required")?)?;
            let output = one("--output").context("image unpack: --output DIR is required")?;
            Command::ImageUnpack { image, output: output.into() }
        }
        "pack" => {
            let mut one = |name: &str| take(name).pop();
            let rootfs = one("--rootfs").context("image pack: --rootfs DIR is required")?;
            let output = one("--output").context("image pack: --output DIR is required")?;
            let tag = one("--tag").unwrap_or_else(|| "latest".to_owned());
            Command::ImagePack(PackOptions { rootfs: rootfs.into(), output: output.into(), tag, env: take("--env") })
        }
        "wrap" => {
            let mut one = |name: &str| take(name).pop();
            let base = ImageRef::parse(&one("--base").context("image wrap: --base oci:DIR[:TAG] is required")?)?;
            let nativelink = one("--nativelink").context("image wrap: --nativelink FILE is required")?;
            let output = one("--output").context("image wrap: --output DIR is required")?;
            Command::ImageWrap(WrapOptions {
                base,
                nativelink: nativelink.into(),
                output: output.into(),
                tag: one("--tag"),
                title: one("--title").unwrap_or_else(|| "nativelink-worker".to_owned()),
                source: one("--source"),
                revision: one("--revision"),
                env_program: one("--env-program").map(PathBuf::from),
                unpacked_images: None,
            })
        }
        other => bail!("image: unknown subcommand {other:?}; say `image pack`, `image unpack` or `image wrap`"),
    };
    if let Some((flag, _)) = flags.first() {
        bail!("image {what}: unknown option {flag:?}\n\n{USAGE}");
    }
    Ok(command)
}

/// Takes a remote endpoint option (and its value); `false` when `arg` is not one.
fn remote_flag(
    command: &str,
    arg: &str,
    rest: &mut impl Iterator<Item = String>,
    settings: &mut RemoteSettings,
) -> Result<bool> {
    let field = match arg {
        "--remote-executor" => &mut settings.executor,
        "--remote-cache" => &mut settings.cache,
        "--remote-instance-name" => &mut settings.instance_name,
        "--tls-ca" => {
            settings.tls_ca =
                Some(PathBuf::from(rest.next().with_context(|| format!("{command}: --tls-ca needs a value"))?));
            return Ok(true);
        }
        _ => return Ok(false),
    };
    *field = Some(rest.next().with_context(|| format!("{command}: {arg} needs a value"))?);
    Ok(true)
}

fn seconds(command: &str, flag: &str, text: &str) -> Result<std::time::Duration> {
    let seconds: u64 =
        text.parse().with_context(|| format!("{command}: {flag} {text:?} is not a number of seconds"))?;
    Ok(std::time::Duration::from_secs(seconds))
}

/// The one positional argument (a target); options must come before `--` or be ours.
fn positional(command: &str, arg: String, target: &mut Option<String>) -> Result<()> {
    if arg.starts_with('-') {
        bail!("{command}: unknown option {arg:?}; pass Bazel options after `--`");
    }
    if target.is_some() {
        bail!("{command}: one target at a time (got {arg:?} too)");
    }
    *target = Some(arg);
    Ok(())
}

fn split_at_dashes(args: Vec<String>) -> (Vec<String>, Vec<String>) {
    match args.iter().position(|a| a == "--") {
        Some(at) => (args[..at].to_vec(), args[at + 1..].to_vec()),
        None => (args, Vec::new()),
    }
}

fn no_more(command: &str, rest: &[String]) -> Result<()> {
    if rest.is_empty() {
        Ok(())
    } else {
        bail!("{command}: unexpected arguments {rest:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Invocation> {
        parse(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn parses_generate_options() {
        let invocation = parse_str("--root /r generate --check --reprobe --only lre-cc").unwrap();
        assert_eq!(invocation.root, Some(PathBuf::from("/r")));
        assert_eq!(
            invocation.command,
            Command::Generate(generate::Options {
                check: true,
                reprobe: true,
                only: vec!["lre-cc".into()],
                from: None
            })
        );
        assert!(parse_str("generate --reprobe").unwrap_err().to_string().contains("--check"));
        assert!(parse_str("generate --force").is_err());
        let from = parse_str("generate --only lre-cc --from oci:images/debian:bookworm").unwrap();
        let Command::Generate(options) = from.command else { panic!("not generate") };
        assert_eq!(options.from, Some(ImageRef::Layout { dir: "images/debian".into(), tag: Some("bookworm".into()) }));
        assert!(parse_str("generate --from docker://debian").unwrap_err().to_string().contains("oci:DIR[:TAG]"));
    }

    #[test]
    fn parses_image_commands() {
        let wrap = parse_str("image wrap --base oci:/b --nativelink /n --output /o --tag t --env-program /e").unwrap();
        assert_eq!(
            wrap.command,
            Command::ImageWrap(WrapOptions {
                base: ImageRef::Layout { dir: "/b".into(), tag: None },
                nativelink: "/n".into(),
                output: "/o".into(),
                tag: Some("t".into()),
                title: "nativelink-worker".into(),
                source: None,
                revision: None,
                env_program: Some("/e".into()),
                unpacked_images: None,
            })
        );
        let pack = parse_str("image pack --rootfs /r --output /o --env A=1 --env B=2").unwrap();
        let Command::ImagePack(pack) = pack.command else { panic!("not pack") };
        assert_eq!((pack.tag.as_str(), pack.env), ("latest", vec!["A=1".to_owned(), "B=2".to_owned()]));
        assert!(parse_str("image wrap --base oci:/b --output /o").unwrap_err().to_string().contains("--nativelink"));
        assert!(parse_str("image wrap --base oci:/b --nativelink /n --output /o --bogus x")
            .unwrap_err()
            .to_string()
            .contains("unknown option \"--bogus\""));
        assert!(parse_str("image unpack --image oci:/i").unwrap_err().to_string().contains("--output"));
        assert!(parse_str("image rebase").is_err());
    }

    #[test]
    fn run_passes_bazel_arguments_through() {
        let invocation = parse_str("run //examples:hello_c -- --toolchain_resolution_debug=.* -c opt").unwrap();
        assert_eq!(
            invocation.command,
            Command::Run {
                target: "//examples:hello_c".into(),
                bazel_args: vec!["--toolchain_resolution_debug=.*".into(), "-c".into(), "opt".into()],
                install_missing: false,
            }
        );
        let default = parse_str("run --install-missing").unwrap();
        assert!(
            matches!(default.command, Command::Run { ref target, install_missing: true, .. } if target == DEFAULT_TARGET)
        );
        assert!(parse_str("run -c opt").unwrap_err().to_string().contains("after `--`"));
    }

    #[test]
    fn run_remote_takes_endpoints_and_bazel_arguments() {
        let invocation = parse_str(
            "run-remote //examples:hello_lre --remote-executor grpc://127.0.0.1:50052 --tls-ca ca.pem -- -c opt",
        )
        .unwrap();
        let Command::RunRemote { target, bazel_args, settings } = invocation.command else { panic!("not run-remote") };
        assert_eq!(target, "//examples:hello_lre");
        assert_eq!(bazel_args, ["-c", "opt"]);
        assert_eq!(settings.executor.as_deref(), Some("grpc://127.0.0.1:50052"));
        assert_eq!(settings.tls_ca, Some(PathBuf::from("ca.pem")));
        assert!(parse_str("run-remote --remote-cache").unwrap_err().to_string().contains("needs a value"));
    }

    #[test]
    fn parity_takes_a_threshold_and_second_build_arguments() {
        let invocation = parse_str(
            "parity //examples/... --remote-cache grpc://127.0.0.1:1 --threshold 90% --second-build-arg --action_env=X=1 -- -c opt",
        )
        .unwrap();
        let Command::Parity(options) = invocation.command else { panic!("not parity") };
        assert_eq!(options.target, "//examples/...");
        assert_eq!(options.threshold, 90.0);
        assert_eq!(options.second_build_args, ["--action_env=X=1"]);
        assert_eq!(options.bazel_args, ["-c", "opt"]);
        assert_eq!(options.settings.cache.as_deref(), Some("grpc://127.0.0.1:1"));
        assert!(parse_str("parity --threshold 120").unwrap_err().to_string().contains("from 0 to 100"));
    }

    #[test]
    fn up_takes_an_address_ports_and_a_timeout() {
        let Command::Up(options) =
            parse_str("up --bind 0.0.0.0 --port-base 6000 --instance-name ci --timeout 5").unwrap().command
        else {
            panic!("not up")
        };
        assert_eq!(options.bind, "0.0.0.0".parse::<std::net::IpAddr>().unwrap());
        assert_eq!((options.port_base, options.instance_name.as_str(), options.timeout.as_secs()), (6000, "ci", 5));
        assert_eq!(parse_str("up").unwrap().command, Command::Up(UpOptions::default()));
        assert!(parse_str("up --bind localhost").unwrap_err().to_string().contains("not an IP address"));
        assert!(parse_str("up --port-base").unwrap_err().to_string().contains("needs a value"));
        assert!(parse_str("down now").is_err());
    }

    #[test]
    fn unknown_commands_show_usage() {
        assert!(parse_str("deploy --image x").unwrap_err().to_string().contains("NAME=oci:DIR"));
        assert!(matches!(parse_str("deploy --dry-run").unwrap().command, Command::Deploy(ref o) if o.dry_run));
        assert_eq!(parse_str("cluster up").unwrap().command, Command::ClusterUp);
        assert!(parse_str("cluster sideways").is_err());
        assert!(parse_str("deploy-everything").unwrap_err().to_string().contains("commands:"));
        assert_eq!(parse_str("").unwrap().command, Command::Help);
    }
}
