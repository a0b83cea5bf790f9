use std::process::ExitCode;

use xtask::cli::{self, Command};
use xtask::{bazel, doctor, generate, prereqs, Project};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let invocation = cli::parse(std::env::args().skip(1))?;
    let project = invocation.root.map_or_else(Project::from_build, Project::new);
    match invocation.command {
        Command::Generate(options) => generate::run(&project, &options),
        Command::ImagePack(options) => xtask::oci::pack::pack(&options),
        Command::ImageUnpack { image, output } => {
            let opened = xtask::oci::open(&image)?;
            xtask::oci::unpack::unpack_to(&opened.layout, &opened.image, &output)?;
            eprintln!("unpacked {image} ({}) into {}", opened.image.digest(), output.display());
            Ok(())
        }
        Command::ImageWrap(mut options) => {
            let (source, revision) = xtask::oci::wrap::git_labels(&project.root);
            options.source = options.source.or(source);
            options.revision = options.revision.or(revision);
            options.unpacked_images = Some(project.local_dir().join("oci"));
            xtask::oci::wrap::wrap(&options).map(drop)
        }
        Command::Run { target, bazel_args, install_missing } => {
            xtask::run::run(&project, &target, &bazel_args, install_missing || in_ci())
        }
        Command::RunRemote { target, bazel_args, settings } => {
            xtask::run::run_remote(&project, &target, &bazel_args, settings)
        }
        Command::Parity(options) => xtask::parity::run(&project, &options),
        Command::Up(options) => xtask::up::up(&project, &options),
        Command::Down => xtask::up::down(&project),
        Command::ClusterUp => xtask::cluster::up(&project),
        Command::ClusterDown => xtask::cluster::down(&project),
        Command::Deploy(options) => xtask::cluster::deploy(&project, &options),
        Command::Status => xtask::up::status(&project),
        Command::Bazel(args) => bazel::run(&project, &args),
        Command::Doctor => doctor::run(&project),
        Command::Test { install_missing } => {
            prereqs::ensure(prereqs::FOR_TESTS, install_missing || in_ci())?;
            generate::run(&project, &generate::Options { check: true, ..Default::default() })?;
            xtask::run::cargo_test(&project)
        }
        Command::Bench { include_compile } => xtask::bench::run(&project, include_compile),
        Command::BenchParity => xtask::bench::parity(),
        Command::BenchImage => xtask::bench::image(),
        Command::Help => {
            print!("{}", cli::USAGE);
            Ok(())
        }
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}
