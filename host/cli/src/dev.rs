//! `agentbox dev`: a plugin folder built, served, and built again and
//! swapped in on each change of its sources, its live sessions kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::serve::{ServeArgs, serve};

/// Build a plugin folder, serve it, and build it again and swap it in at each change.
///
/// FOLDER is a folder `agentbox new` wrote, which its build.sh builds, or a plugin's cargo
/// package. The plugin is built, then served as `agentbox serve` serves (its flags apply
/// here too), from DATA_DIR/dev. Whenever a source file in FOLDER changes, the plugin is
/// built again and the new version swapped in as --watch swaps: live sessions go on with
/// their state, migrated at their next turn if the state version moved. A build that fails
/// is shown and the running version keeps serving. Each build is compiled keeping its
/// functions in DATA_DIR/dev-functions, so the next compiles only the functions it changed.
///
///   agentbox new greeter --lang python
///   cd greeter && agentbox dev
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct DevArgs {
    /// The plugin folder
    #[arg(value_name = "FOLDER", default_value = ".")]
    folder: PathBuf,

    #[command(flatten)]
    serve: ServeArgs,
}

/// How often the sources are looked at.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// Folders of what builds make and tools install, never sources.
const NOT_SOURCES: &[&str] = &[
    ".git",
    ".venv",
    "__pycache__",
    "agentbox-data",
    "node_modules",
    "out",
    "target",
];

pub(crate) async fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    let build = Build::of(&args.folder)?;
    let (serve_args, into, functions) = args.serve.for_dev();
    let data = into.parent().map(Path::to_owned).unwrap_or_default();
    std::fs::create_dir_all(&into).with_context(|| format!("cannot create {}", into.display()))?;
    // Each build compiles only the functions it changed. What the last run
    // kept goes, so the folder holds at most what one run adds.
    if functions.exists() {
        std::fs::remove_dir_all(&functions)
            .with_context(|| format!("cannot empty {}", functions.display()))?;
    }
    std::fs::create_dir_all(&functions)
        .with_context(|| format!("cannot create {}", functions.display()))?;
    let first = build.clone();
    let placed = into.clone();
    tokio::task::spawn_blocking(move || first.run().and_then(|built| place(&built, &placed)))
        .await
        .expect("building the plugin panicked")?;
    // After the first build, which may write files of its own (a lockfile).
    let seen = sources(&build.folder, &data)?;
    std::thread::spawn(move || rebuild_on_change(&build, seen, &into, &data));
    serve(serve_args).await
}

/// How a plugin folder is built.
#[derive(Debug, Clone)]
struct Build {
    folder: PathBuf,
    cargo: bool,
}

impl Build {
    fn of(folder: &Path) -> anyhow::Result<Build> {
        let cargo = if folder.join("build.sh").is_file() {
            false
        } else if folder.join("Cargo.toml").is_file() {
            true
        } else {
            bail!(
                "{} has neither a build.sh (as `agentbox new` writes) nor a Cargo.toml: give the folder of a plugin",
                folder.display()
            );
        };
        Ok(Build {
            folder: folder.to_owned(),
            cargo,
        })
    }

    /// Builds the plugin: the component built.
    fn run(&self) -> anyhow::Result<PathBuf> {
        if self.cargo {
            return crate::build_plugin(&self.folder);
        }
        eprintln!("agentbox: building {} with build.sh", self.folder.display());
        let status = Command::new("sh")
            .arg("build.sh")
            .current_dir(&self.folder)
            .stdin(Stdio::null())
            .status()
            .context("cannot run sh")?;
        if !status.success() {
            bail!(
                "{}/build.sh failed ({status}; see its messages above)",
                self.folder.display()
            );
        }
        newest_component(&self.folder)?.with_context(|| {
            format!(
                "{}/build.sh built no .wasm in its folder",
                self.folder.display()
            )
        })
    }
}

/// The `.wasm` in `folder` written last.
fn newest_component(folder: &Path) -> anyhow::Result<Option<PathBuf>> {
    let mut newest = None;
    for entry in std::fs::read_dir(folder)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "wasm") {
            let written = path.metadata()?.modified()?;
            if newest.as_ref().is_none_or(|(at, _)| written > *at) {
                newest = Some((written, path));
            }
        }
    }
    Ok(newest.map(|(_, path)| path))
}

/// Puts `built` into the served folder `into` whole: written beside it,
/// then renamed, so the folder's watcher never reads half of it.
fn place(built: &Path, into: &Path) -> anyhow::Result<()> {
    let name = built.file_name().context("a component has a file name")?;
    let target = into.join(name);
    let partial = target.with_extension("partial");
    std::fs::copy(built, &partial)
        .with_context(|| format!("cannot copy {} into {}", built.display(), into.display()))?;
    std::fs::rename(&partial, &target)
        .with_context(|| format!("cannot put {} in place", target.display()))?;
    Ok(())
}

/// Each source file under `folder` (not in [`NOT_SOURCES`], not a `.wasm`,
/// not under `data`) with its size and time of writing.
fn sources(folder: &Path, data: &Path) -> anyhow::Result<BTreeMap<PathBuf, (u64, SystemTime)>> {
    let data = data.canonicalize().ok();
    let mut found = BTreeMap::new();
    let mut folders = vec![folder.to_owned()];
    while let Some(next) = folders.pop() {
        for entry in
            std::fs::read_dir(&next).with_context(|| format!("cannot read {}", next.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                let skipped = NOT_SOURCES.iter().any(|name| entry.file_name() == *name)
                    || path.canonicalize().ok() == data;
                if !skipped {
                    folders.push(path);
                }
            } else if kind.is_file() && path.extension().is_none_or(|ext| ext != "wasm") {
                let meta = entry.metadata()?;
                found.insert(path, (meta.len(), meta.modified()?));
            }
        }
    }
    Ok(found)
}

/// Builds again each time a source file changes, and puts what it built
/// into `into`; a build that fails leaves the running version serving.
fn rebuild_on_change(
    build: &Build,
    mut seen: BTreeMap<PathBuf, (u64, SystemTime)>,
    into: &Path,
    data: &Path,
) {
    loop {
        std::thread::sleep(LOOK_EVERY);
        let now = match sources(&build.folder, data) {
            Ok(now) if now != seen => now,
            Ok(_) => continue,
            Err(err) => {
                eprintln!("agentbox: cannot look at the sources: {err:#}");
                continue;
            }
        };
        let changed = now
            .iter()
            .find(|(path, stamp)| seen.get(*path) != Some(stamp))
            .or_else(|| seen.iter().find(|(path, _)| !now.contains_key(*path)))
            .map(|(path, _)| path.display().to_string())
            .unwrap_or_default();
        seen = now;
        eprintln!("agentbox: {changed} changed");
        match build.run().and_then(|built| place(&built, into)) {
            Ok(()) => eprintln!("agentbox: built; the new version is swapped in once it loads"),
            Err(err) => eprintln!(
                "agentbox: the build failed, so the running version keeps serving: {err:#}"
            ),
        }
    }
}
