//! The `agentbox` command.

mod admin;
mod serve;

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value, json};

use crate::engine::Compilation;
use crate::kv::Grants;
use crate::policy::{Policy, PolicyFile};
use crate::store::{State, StoreSpec};
use crate::tools::Tool;
use crate::{Host, Limits, LoadError, PluginVersion, SessionError, SessionStart, Sink, TurnReport};

/// Run agent plugins: WebAssembly components with per-session state, host-validated
/// tools and persistent storage.
#[derive(Debug, Parser)]
#[command(
    name = "agentbox",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
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
    Plugins(admin::PluginsArgs),
    Inspect(InspectArgs),
    #[command(subcommand)]
    Tools(ToolsCommand),
}

/// List the tools of plugins, or show how the tools in a store have been doing.
#[derive(Debug, Subcommand)]
enum ToolsCommand {
    List(ToolsListArgs),
    Stats(ToolsStatsArgs),
}

/// List the tools of one or more plugins as `plugin/tool`, with their schemas.
#[derive(Debug, Args)]
struct ToolsListArgs {
    /// Plugins: .wasm components or plugin cargo package folders
    #[arg(value_name = "PLUGIN", required = true)]
    plugins: Vec<PathBuf>,

    /// Print one JSON object per tool, one per line
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    host: HostArgs,
}

/// Show per-tool statistics from a store: calls, success rate, p50/p95 duration, cache hits.
///
/// Every tool call is recorded with its outcome: ok, invalid-args, precondition,
/// guest-error, trap, timeout or cache-hit.
#[derive(Debug, Args)]
struct ToolsStatsArgs {
    /// The store to read: `sqlite:PATH` or `redis://HOST:PORT` [default: sqlite:DATA_DIR/agentbox.db]
    #[arg(long, value_name = "SPEC")]
    store: Option<StoreSpec>,

    /// Folder of the default SQLite store
    #[arg(long, value_name = "DIR", default_value = "agentbox-data")]
    data_dir: PathBuf,

    /// Print one JSON object per tool, one per line
    #[arg(long)]
    json: bool,
}

/// Talk to a plugin in the terminal.
///
/// Starts a session (or resumes one with --session) and sends it one message per line, read
/// from the terminal or from --script. Shows what the agent says as it says it, and the
/// state change of each committed turn. Lines starting with `/` are commands:
///
///   /tool NAME {JSON}  call the plugin's tool NAME with JSON arguments ({} if left out)
///   /state             print the session's committed state
///   /end               end the session (the plugin's on-end runs) and exit
///   /quit              exit, leaving the session open to resume with --session
///
/// Sessions live in the store: with the default SQLite store, `--session ID` resumes a
/// session where it left off, even after the process was killed.
///
/// Examples:
///
///   agentbox run plugins/intake
///   agentbox run intake.wasm --var name=Ada --script conversation.txt
///   agentbox run intake.wasm --session ticket-42 --json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
struct RunArgs {
    #[command(flatten)]
    plugin: PluginArg,

    /// An initial variable for a new session; VALUE is JSON if it parses as JSON, else a string
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_var)]
    vars: Vec<(String, Value)>,

    /// The user the session belongs to
    #[arg(long, value_name = "ID")]
    user: Option<String>,

    /// Session id: resumes the session if the store has it, else starts one with this id
    #[arg(long, value_name = "ID")]
    session: Option<String>,

    /// Where sessions live: `memory`, `sqlite:PATH`, or `redis://HOST:PORT` to share them with
    /// other hosts [default: sqlite:DATA_DIR/agentbox.db]
    #[arg(long, value_name = "SPEC")]
    store: Option<StoreSpec>,

    /// Read the caller's messages from FILE, one per line, instead of the terminal
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,

    /// Print one JSON object per line per event (reply, committed, error) instead of text
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    host: HostArgs,
}

/// Show what a plugin is: its world version, manifest and tools, and whether it loads.
///
/// Exits non-zero with a one-line reason if the file is not a component of the
/// agentbox:plugin world or its manifest is invalid.
#[derive(Debug, Args)]
struct InspectArgs {
    #[command(flatten)]
    plugin: PluginArg,

    /// Print the description as one JSON object
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    host: HostArgs,
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

    /// The operator's policy, a TOML file: turn limits for every plugin or one, session
    /// time-to-live and bounds, KV quotas, and the named KV buckets each plugin may open (see
    /// docs/policy.md)
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
}

impl HostArgs {
    fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("agentbox-data"))
    }

    fn host(&self, store: &StoreSpec) -> anyhow::Result<Host> {
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
            ..defaults
        };
        let policy = match &self.policy {
            None => Policy {
                limits,
                plugins: Default::default(),
                grants: Grants::default(),
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
        Host::builder()
            .policy(policy)
            .store(store)
            .artifact_cache(artifacts)
            .build()
    }

    fn default_store(&self) -> StoreSpec {
        StoreSpec::Sqlite(self.data_dir().join("agentbox.db"))
    }
}

/// How often `run` looks for expired sessions and entries.
const REAP_EVERY: Duration = Duration::from_secs(60);

/// Runs the command line and returns the process's exit code.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().with_current_span(true).init(),
    }
    let result = match cli.command {
        Commands::Run(args) => run(args).await,
        Commands::Serve(args) => serve::serve(args).await,
        Commands::Plugins(args) => admin::plugins(args),
        Commands::Inspect(args) => inspect(args),
        Commands::Tools(ToolsCommand::List(args)) => tools_list(args),
        Commands::Tools(ToolsCommand::Stats(args)) => tools_stats(args),
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

fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let host = args.host.host(&StoreSpec::Memory)?;
    let plugin = load(&args.plugin.path, |bytes| host.stage_plugin(bytes))?;
    let manifest = &plugin.manifest;
    let schema = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    let tools: Vec<Value> = plugin.tools.iter().map(tool_json).collect();
    if args.json {
        let (cached, took) = match plugin.compilation {
            Compilation::Compiled(took) => (false, took),
            Compilation::Cached(took) => (true, took),
        };
        let description = json!({
            "world": format!("agentbox:plugin@{}", plugin.world),
            "name": manifest.name,
            "version": manifest.version,
            "description": manifest.description,
            "digest": plugin.digest.to_string(),
            "state_version": manifest.state_version,
            "state_schema": manifest.state_schema.as_deref().map(schema),
            "tools": tools,
            "artifact": { "cached": cached, "ms": took.as_secs_f64() * 1e3 },
            "loads": true,
        });
        println!("{description}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("plugin        {} {}", manifest.name, manifest.version);
    if !manifest.description.is_empty() {
        println!("about         {}", manifest.description);
    }
    println!("world         agentbox:plugin@{}", plugin.world);
    println!("digest        sha256:{}", plugin.digest);
    println!("artifact      {}", compilation_text(plugin.compilation));
    println!("state         version {}", manifest.state_version);
    if let Some(state_schema) = manifest.state_schema.as_deref() {
        println!("state schema  {}", schema(state_schema));
    }
    println!(
        "tools         {}",
        if tools.is_empty() {
            "none".to_owned()
        } else {
            tools.len().to_string()
        }
    );
    for tool in plugin.tools.iter() {
        print_tool(&tool.name, tool);
    }
    println!("loads         yes");
    Ok(ExitCode::SUCCESS)
}

fn tool_json(tool: &Tool) -> Value {
    json!({
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
        "result": tool.result_schema,
        "requires": tool.requires,
        "cache_ttl_ms": tool.cache_ttl.map(|ttl| ttl.as_millis() as u64),
    })
}

fn print_tool(heading: &str, tool: &Tool) {
    println!("  {heading} — {}", tool.description);
    println!("    parameters  {}", tool.parameters);
    if let Some(result) = &tool.result_schema {
        println!("    result      {result}");
    }
    if !tool.requires.is_empty() {
        println!("    requires    {}", tool.requires.join(", "));
    }
    if let Some(ttl) = tool.cache_ttl {
        println!("    cached for  {} ms", ttl.as_millis());
    }
}

fn tools_list(args: ToolsListArgs) -> anyhow::Result<ExitCode> {
    let host = args.host.host(&StoreSpec::Memory)?;
    for path in &args.plugins {
        load(path, |bytes| host.stage_plugin(bytes))?;
    }
    for tool in host.tools() {
        if args.json {
            let mut described = tool_json(tool.tool());
            described["address"] = json!(tool.address());
            println!("{described}");
        } else {
            print_tool(&tool.address(), tool.tool());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn tools_stats(args: ToolsStatsArgs) -> anyhow::Result<ExitCode> {
    let spec = args
        .store
        .unwrap_or_else(|| StoreSpec::Sqlite(args.data_dir.join("agentbox.db")));
    let store = spec
        .open()
        .with_context(|| format!("cannot open the store {spec}"))?;
    let stats = crate::tools::stats(&store.executions()?);
    if args.json {
        for tool in &stats {
            println!("{}", serde_json::to_value(tool)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if stats.is_empty() {
        println!("no tool calls recorded in {spec}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<32} {:>6} {:>8} {:>9} {:>9} {:>10}  outcomes",
        "tool", "calls", "success", "p50 ms", "p95 ms", "cache hit"
    );
    for tool in &stats {
        let outcomes: Vec<String> = tool
            .outcomes
            .iter()
            .map(|(outcome, n)| format!("{} {n}", outcome.as_str()))
            .collect();
        println!(
            "{:<32} {:>6} {:>7.1}% {:>9.2} {:>9.2} {:>9.1}%  {}",
            format!("{}/{}", tool.plugin, tool.tool),
            tool.calls,
            tool.success_rate * 100.0,
            tool.p50_us as f64 / 1e3,
            tool.p95_us as f64 / 1e3,
            tool.cache_hit_rate * 100.0,
            outcomes.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the events of a conversation, as text or JSON lines.
#[derive(Debug, Clone, Copy)]
struct Printer {
    json: bool,
}

impl Printer {
    fn emit(&self, event: Value, text: impl FnOnce() -> String) {
        let line = if self.json { event.to_string() } else { text() };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    /// An event only machine readers need: the text output says it on stderr.
    fn json_only(&self, event: Value) {
        if self.json {
            self.emit(event, String::new);
        }
    }

    fn sink(self, plugin: String) -> Sink {
        Arc::new(move |text: &str| {
            self.emit(json!({ "event": "reply", "text": text }), || {
                format!("{plugin}> {text}")
            });
        })
    }

    fn committed(&self, report: &TurnReport) {
        self.emit(
            json!({ "event": "committed", "session": report.session, "turn": report.turn, "state": report.state, "outcome": report.outcome }),
            || {
                let changes = state_changes(&report.before, &report.state);
                let changes = if changes.is_empty() { "no state change".to_owned() } else { changes.join(", ") };
                format!("  [turn {} committed: {changes}]", report.turn)
            },
        );
    }

    fn error(&self, err: &SessionError) {
        self.emit(
            json!({ "event": "error", "kind": err.cause.kind(), "message": err.to_string() }),
            || format!("  [error: {err}; nothing was committed]"),
        );
    }
}

/// The changes from `before` to `after`, as `+ key = value`, `~ key = value` and `- key`.
fn state_changes(before: &State, after: &State) -> Vec<String> {
    let mut changes = Vec::new();
    for (key, value) in after {
        match before.get(key) {
            None => changes.push(format!("+ {key} = {value}")),
            Some(old) if old != value => changes.push(format!("~ {key} = {value}")),
            Some(_) => {}
        }
    }
    changes.extend(
        before
            .keys()
            .filter(|key| !after.contains_key(*key))
            .map(|key| format!("- {key}")),
    );
    changes
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let spec = args
        .store
        .clone()
        .unwrap_or_else(|| args.host.default_store());
    let host = args.host.host(&spec)?;
    let plugin = load(&args.plugin.path, |bytes| host.stage_plugin(bytes))?;
    let name = plugin.name().to_owned();
    let printer = Printer { json: args.json };
    // Sessions of this plugin past their time-to-live end while this runs.
    let _reaper = host.spawn_reaper(REAP_EVERY);
    eprintln!(
        "agentbox: plugin {name} {} (sha256:{:.12}, {})",
        plugin.manifest.version,
        plugin.digest.to_string(),
        compilation_text(plugin.compilation)
    );
    let existing = match &args.session {
        Some(id) => host
            .store()
            .load(id)
            .with_context(|| format!("cannot read session {id}"))?,
        None => None,
    };
    let session = match existing {
        Some(record) => {
            if record.plugin != name {
                bail!(
                    "session `{}` belongs to plugin `{}`, not `{name}`",
                    record.id,
                    record.plugin
                );
            }
            if !args.vars.is_empty() || args.user.is_some() {
                eprintln!(
                    "agentbox: --var and --user apply to new sessions; session {} keeps its own",
                    record.id
                );
            }
            eprintln!(
                "agentbox: resuming session {} after turn {} (store {spec})",
                record.id, record.turn
            );
            printer.json_only(json!({ "event": "session", "session": record.id, "resumed": true, "turn": record.turn }));
            record.id
        }
        None => {
            let start = SessionStart {
                plugin: name.clone(),
                id: args.session.clone(),
                user_id: args.user.clone(),
                variables: args.vars.iter().cloned().collect::<Map<_, _>>(),
            };
            let report = host
                .start_session(start, Some(printer.sink(name.clone())))
                .await?;
            eprintln!(
                "agentbox: started session {} (store {spec})",
                report.session
            );
            printer.json_only(json!({ "event": "session", "session": report.session, "resumed": false, "turn": 0 }));
            printer.committed(&report);
            report.session
        }
    };
    converse(&host, &session, &name, &args, printer).await
}

/// Splits `/tool NAME {JSON}` into the tool's name and its arguments (`{}`
/// when left out).
fn parse_tool_line(line: &str) -> Result<(String, Value), String> {
    let usage = "usage: /tool NAME {JSON arguments}, for example /tool add_to_cart {\"product_id\": \"book\", \"quantity\": 2}";
    let rest = line
        .strip_prefix("/tool")
        .filter(|rest| rest.is_empty() || rest.starts_with(' '))
        .ok_or(usage)?
        .trim();
    let (name, arguments) = rest.split_once(char::is_whitespace).unwrap_or((rest, "{}"));
    if name.is_empty() {
        return Err(usage.to_owned());
    }
    let arguments = serde_json::from_str(arguments.trim())
        .map_err(|err| format!("the arguments of /tool {name} are not JSON ({err}); {usage}"))?;
    Ok((name.to_owned(), arguments))
}

/// Sends each line of the script or terminal to the session until the input
/// ends, `/quit`, `/end`, or the agent ends the conversation.
async fn converse(
    host: &Host,
    session: &str,
    plugin: &str,
    args: &RunArgs,
    printer: Printer,
) -> anyhow::Result<ExitCode> {
    let interactive = args.script.is_none() && std::io::stdin().is_terminal();
    let input: Box<dyn std::io::BufRead> = match &args.script {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .with_context(|| format!("cannot open the script {}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    if interactive {
        eprintln!(
            "agentbox: type a message and press Enter; /tool NAME {{JSON}}, /state, /end or /quit"
        );
    }
    let mut failed = false;
    let mut lines = input.lines();
    loop {
        if interactive {
            eprint!("you> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("cannot read input")?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if !interactive && !printer.json {
            println!("you> {line}");
        }
        let sink = Some(printer.sink(plugin.to_owned()));
        // What the line committed: a turn, or nothing (a cached tool result).
        let result: Result<Option<TurnReport>, SessionError> = match line {
            "/quit" => break,
            "/state" => {
                let record = host.store().load(session)?.context("the session is gone from the store")?;
                printer.emit(json!({ "event": "state", "turn": record.turn, "state": record.state }), || {
                    format!("  [state after turn {}: {}]", record.turn, Value::Object(record.state.clone()))
                });
                continue;
            }
            "/end" => host.end_session(session).await.map(Some),
            _ if line.starts_with("/tool") => match parse_tool_line(line) {
                Ok((name, arguments)) => host.call_tool(session, &name, arguments, sink).await.map(|report| {
                    printer.emit(
                        json!({ "event": "tool", "tool": name, "result": report.result, "cached": report.cached }),
                        || format!("  [tool {name}{}: {}]", if report.cached { " (cached)" } else { "" }, report.result),
                    );
                    (!report.cached).then_some(report.turn)
                }),
                Err(usage) => {
                    failed = true;
                    printer.emit(json!({ "event": "error", "kind": "bad-request", "message": usage }), || {
                        format!("  [error: {usage}]")
                    });
                    continue;
                }
            },
            _ => host.send_message(session, line, sink).await.map(Some),
        };
        match result {
            Ok(Some(report)) => {
                printer.committed(&report);
                if report.outcome == crate::Outcome::End {
                    eprintln!("agentbox: session {session} has ended");
                    break;
                }
            }
            Ok(None) => {}
            Err(err) => {
                failed = true;
                printer.error(&err);
            }
        }
    }
    Ok(if failed && !interactive {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
