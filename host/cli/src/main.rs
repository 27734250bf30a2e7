//! The `agentbox` command.

mod admin;
mod compile;
mod dev;
mod folder;
mod inspect;
mod keys;
mod mcp;
mod new;
mod run;
mod serve;
mod sessions;

use inspect::{InspectArgs, ToolsCommand, inspect, tools_list, tools_stats};
use run::{RunArgs, run};

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use agentbox_host::engine::{Compilation, CompilerProcess, compile_from_stdin};
use agentbox_host::policy::{Grants, Policy, PolicyFile};
use agentbox_host::store::StoreSpec;
use agentbox_host::{Host, Limits, LoadError, PluginVersion};

/// Run agent plugins: WebAssembly components with per-session state, host-validated
/// tools and persistent storage.
#[derive(Debug, Parser)]
#[command(
    name = "agentbox",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,

    /// How to write logs to stderr: `text`, or `json` with one object per line (RUST_LOG picks
    /// what is logged; default `warn`)
    #[arg(
        long,
        value_name = "FORMAT",
        value_enum,
        default_value = "text",
        env = "AGENTBOX_LOG_FORMAT",
        global = true
    )]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Commands {
    Run(RunArgs),
    Serve(serve::ServeArgs),
    Mcp(mcp::McpArgs),
    Plugins(admin::PluginsArgs),
    Users(admin::UsersArgs),
    Sessions(sessions::SessionsArgs),
    New(new::NewArgs),
    Dev(dev::DevArgs),
    Inspect(InspectArgs),
    Compile(compile::CompileArgs),
    #[command(subcommand)]
    Tools(ToolsCommand),
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Compile the component on stdin for the host that started this process, writing the
    /// artifact to stdout (run by agentbox itself)
    #[command(hide = true)]
    CompileComponent(CompileComponentArgs),
}

#[derive(Debug, Args)]
struct CompileComponentArgs {
    /// Linear memory of one instance of the host's engine
    #[arg(long)]
    memory_bytes: usize,
    /// Whether the host's engine meters fuel
    #[arg(long)]
    fuel: bool,
    /// The most memory this process may take for its data
    #[arg(long)]
    memory_budget_bytes: u64,
    /// A folder of compiled functions to reuse and add to
    #[arg(long)]
    function_cache: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct PluginArg {
    /// The plugin: a .wasm component, or a plugin's cargo package directory, which is built
    /// for wasm32-wasip2 first
    #[arg(value_name = "PLUGIN")]
    path: PathBuf,
}

#[derive(Debug, Args, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HostArgs {
    /// Folder for the SQLite store and compiled plugins [default: agentbox-data]
    #[arg(long, value_name = "DIR", env = "AGENTBOX_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,

    /// Time one turn may run, in milliseconds [default: 2000]
    #[arg(long, value_name = "MS")]
    deadline_ms: Option<u64>,

    /// Memory one plugin instance may use, in MiB [default: 64]
    #[arg(long, value_name = "MIB")]
    memory_mib: Option<usize>,

    /// Time compiling one plugin may take, in milliseconds; a component that takes longer is
    /// refused, and its compiler (a child process) stopped [default: 120000]
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    compile_timeout_ms: Option<u64>,

    /// Memory compiling one plugin may take, in MiB; a component that needs more is refused
    /// [default: 2048]
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(COMPILE_MEMORY_MIB_RANGE))]
    compile_memory_mib: Option<u64>,

    /// The operator's policy, a TOML file: turn limits for every plugin or one, session
    /// time-to-live and bounds, KV quotas, and the named KV buckets each plugin may open (see
    /// docs/policy.md)
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,

    /// A folder of compiled functions the compiler reuses, for `agentbox dev`
    #[arg(skip)]
    #[serde(skip)]
    function_cache: Option<PathBuf>,
}

/// The data folder when none is given.
const DATA_DIR: &str = "agentbox-data";

/// How long compiling one plugin may take when no one says.
const COMPILE_TIMEOUT_MS: u64 = 120_000;

/// The default of `--compile-memory-mib`: compiling the largest plugins of
/// the guest languages (CPython, SpiderMonkey; 13 to 19 MB) peaks near
/// 380 MiB, so this leaves them five times that.
const COMPILE_MEMORY_MIB: u64 = 2048;

/// The memory budgets of compiling that may be given, in MiB.
const COMPILE_MEMORY_MIB_RANGE: std::ops::RangeInclusive<u64> = 64..=1 << 20;

/// Holds this process's data (heap and every writable private mapping) to
/// `bytes` with `RLIMIT_DATA`: an allocation past it fails, and the
/// process aborts saying so. Not `RLIMIT_AS`, which would also count the
/// address space the engine reserves without using it.
fn hold_data_to(bytes: u64) -> rustix::io::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};

    setrlimit(
        Resource::Data,
        Rlimit {
            current: Some(bytes),
            maximum: Some(bytes),
        },
    )
}

impl HostArgs {
    fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DATA_DIR))
    }

    /// The host these arguments describe, on `store`; failed calls carry
    /// the guest's output when `guest_output`, unless the policy says.
    fn host(&self, store: &StoreSpec, guest_output: bool) -> anyhow::Result<Host> {
        let data_dir = self.data_dir();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create the data folder {}", data_dir.display()))?;
        let data = cap_std::fs::Dir::open_ambient_dir(&data_dir, cap_std::ambient_authority())
            .with_context(|| format!("cannot open the data folder {}", data_dir.display()))?;
        data.create_dir_all("artifacts")
            .context("cannot create the artifact cache")?;
        let artifacts = data
            .open_dir("artifacts")
            .context("cannot open the artifact cache")?;
        let defaults = Limits::default();
        let limits = Limits {
            deadline: self
                .deadline_ms
                .map_or(defaults.deadline, Duration::from_millis),
            memory_bytes: self
                .memory_mib
                .map_or(defaults.memory_bytes, |mib| mib << 20),
            guest_output,
            ..defaults
        };
        let policy = match &self.policy {
            None => Policy {
                limits,
                plugins: Default::default(),
                grants: Grants::default(),
                outbound: Default::default(),
                calls: Default::default(),
                mcp: Vec::new(),
                webhooks: Default::default(),
            },
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the policy {}", path.display()))?;
                PolicyFile::parse(&text)
                    .and_then(|policy| policy.apply(limits))
                    .map_err(|reason| {
                        anyhow::anyhow!("the policy {} is invalid: {reason}", path.display())
                    })?
            }
        };
        let store = store
            .open()
            .with_context(|| format!("cannot open the store {store}"))?;
        // `/proc/self/exe` is this very program even once its file is
        // replaced by an upgrade, whose compiler would build for another
        // engine; elsewhere, the path it was started from.
        let this_program = Path::new("/proc/self/exe");
        let program = if this_program.exists() {
            this_program.to_owned()
        } else {
            std::env::current_exe().context("cannot find this program, to compile plugins with")?
        };
        let compiler = CompilerProcess {
            program,
            args: vec!["compile-component".into()],
            budget: Duration::from_millis(self.compile_timeout_ms.unwrap_or(COMPILE_TIMEOUT_MS)),
            memory_budget: self.compile_memory_mib.unwrap_or(COMPILE_MEMORY_MIB) << 20,
            functions: self.function_cache.clone(),
        };
        Host::builder()
            .policy(policy)
            .store(store)
            .artifact_cache(artifacts)
            .compiler(compiler)
            .build()
    }

    fn default_store(&self) -> StoreSpec {
        StoreSpec::Sqlite(self.data_dir().join("agentbox.db"))
    }
}

/// Starts connecting the policy's MCP servers and says which they are;
/// whether each connects is logged as it happens.
fn announce_mcp_servers(host: &Host) {
    host.mcp().connect();
    for server in host.mcp().servers() {
        eprintln!(
            "agentbox: MCP server {} at {}: its tools join the registry as mcp:{}/TOOL",
            server.name, server.reached, server.name
        );
    }
}

/// How often `run` looks for expired sessions and entries.
const REAP_EVERY: Duration = Duration::from_secs(60);

/// Runs the command line and returns the process's exit code.
#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // A compiler process's stderr is the message it answers with, and
    // nothing else: it logs nothing.
    if let Commands::CompileComponent(args) = &cli.command {
        if let Err(err) = hold_data_to(args.memory_budget_bytes) {
            eprintln!("cannot hold the compiler to its memory budget: {err}");
            return ExitCode::FAILURE;
        }
        let code = compile_from_stdin(args.memory_bytes, args.fuel, args.function_cache.as_deref());
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person: no escape codes in a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().with_current_span(true).init(),
    }
    let result = match cli.command {
        Commands::Run(args) => run(args).await,
        Commands::Serve(args) => serve::serve(args).await,
        Commands::Mcp(args) => mcp::mcp(args).await,
        Commands::Plugins(args) => admin::plugins(args),
        Commands::Users(args) => admin::users(args),
        Commands::Sessions(args) => sessions::sessions(args),
        Commands::New(args) => new::new(args),
        Commands::Dev(args) => dev::dev(args).await,
        Commands::Inspect(args) => inspect(args),
        Commands::Compile(args) => compile::compile(args),
        Commands::Tools(ToolsCommand::List(args)) => tools_list(args),
        Commands::Tools(ToolsCommand::Stats(args)) => tools_stats(args).await,
        Commands::Keys(command) => keys::keys(command),
        Commands::CompileComponent(_) => unreachable!("answered before logging starts"),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("agentbox: {}", one_line(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}

fn parse_var(text: &str) -> Result<(String, Value), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
    if key.is_empty() {
        return Err(format!("`{text}` has an empty KEY"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((key.to_owned(), value))
}

/// What a plugin reaches, from the host's description of it (an admin
/// answer or `Outbound::describe`): its allow-list, and each configuration
/// value as shown (secrets as `[secret]`).
fn reach_parts(reach: &Value) -> (Vec<&str>, Vec<(&str, &str)>) {
    let allow = reach["http"]["allow"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let config = reach["config"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| (key.as_str(), value.as_str().unwrap_or_default()))
        .collect();
    (allow, config)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads the plugin's bytes, building its cargo package first if PLUGIN is a folder.
fn plugin_bytes(path: &Path) -> anyhow::Result<Vec<u8>> {
    let wasm = if path.is_dir() {
        build_plugin(path)?
    } else {
        path.to_owned()
    };
    std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))
}

/// Builds the cargo package in `dir` for `wasm32-wasip2` and returns its component.
fn build_plugin(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "{} is a folder without a Cargo.toml: give a .wasm file or a plugin's cargo package",
            dir.display()
        );
    }
    eprintln!("agentbox: building {} for wasm32-wasip2", dir.display());
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format",
            "json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!(
            "building {} failed (see cargo's messages above)",
            dir.display()
        );
    }
    let manifest = manifest.canonicalize()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| message["manifest_path"].as_str().map(Path::new) == Some(&manifest))
        .flat_map(|message| message["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|file| file.as_str().map(PathBuf::from))
        .find(|file| file.extension().is_some_and(|ext| ext == "wasm"))
        .with_context(|| {
            format!(
                "building {} produced no .wasm file: is it a `cdylib` crate?",
                dir.display()
            )
        })
}

/// Reads the plugin at `path` and loads it with `load` (one of the `Host` methods).
fn load(
    path: &Path,
    load: impl FnOnce(&[u8]) -> Result<Arc<PluginVersion>, LoadError>,
) -> anyhow::Result<Arc<PluginVersion>> {
    let bytes = plugin_bytes(path)?;
    load(&bytes).with_context(|| format!("cannot load {}", path.display()))
}

fn compilation_text(compilation: Compilation) -> String {
    match compilation {
        Compilation::Compiled(took) => format!("compiled in {} ms and cached", took.as_millis()),
        Compilation::Cached(took) => format!(
            "loaded precompiled from the cache in {:.1} ms",
            took.as_secs_f64() * 1e3
        ),
    }
}
