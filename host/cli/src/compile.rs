//! `agentbox compile`: compiles plugins ahead of deployment, into the
//! artifact cache a server on the same data folder reads.

use std::path::PathBuf;
use std::process::ExitCode;

use agentbox_host::engine::Compilation;
use agentbox_host::store::StoreSpec;
use clap::Args;

use crate::{HostArgs, compilation_text, load};

/// Compile plugins ahead of time, so that `agentbox serve` loads them without compiling.
///
/// Each PLUGIN is checked and compiled, in a child process under --compile-timeout-ms, for an
/// engine with the settings given here, and its artifact is stored in DATA_DIR/artifacts. A
/// server on the same data folder, with the same --memory-mib and --policy, then loads it in
/// milliseconds: a Python or JavaScript plugin, whose interpreter makes a component of 10 to
/// 20 MB, takes 5 to 20 s to compile. A server whose engine an artifact does not fit (fuel
/// metering on one side only, another agentbox release) compiles again.
///
///   agentbox compile plugins/*.wasm --data-dir /var/lib/agentbox --policy policy.toml
#[derive(Debug, Args)]
pub(crate) struct CompileArgs {
    /// Plugins: .wasm components or plugin cargo package folders
    #[arg(value_name = "PLUGIN", required = true)]
    plugins: Vec<PathBuf>,

    #[command(flatten)]
    host: HostArgs,
}

pub(crate) fn compile(args: CompileArgs) -> anyhow::Result<ExitCode> {
    let host = args.host.host(&StoreSpec::Memory, false)?;
    let artifacts = args.host.data_dir().join("artifacts");
    for path in &args.plugins {
        let version = load(path, |bytes| host.stage_plugin(bytes))?;
        let manifest = &version.manifest;
        let done = match version.compilation {
            Compilation::Compiled(_) => compilation_text(version.compilation)
                .replace(" and cached", &format!(" into {}", artifacts.display())),
            Compilation::Cached(_) => format!("already compiled in {}", artifacts.display()),
        };
        println!(
            "{} {} {} ({:?}): {done}",
            path.display(),
            manifest.name,
            manifest.version,
            version.digest
        );
    }
    Ok(ExitCode::SUCCESS)
}
