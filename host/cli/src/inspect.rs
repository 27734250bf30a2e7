//! `agentbox inspect` and `agentbox tools`: what a plugin is, its tools,
//! and how the tools in a store have been doing.

use std::path::PathBuf;
use std::process::ExitCode;

use agentbox_host::Host;
use agentbox_host::engine::Compilation;
use agentbox_host::engine::pool::SLOT;
use agentbox_host::instance::v0_1;
use agentbox_host::instance::world::CacheScope;
use agentbox_host::plugin::tools::Tool;
use agentbox_host::store::StoreSpec;
use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::{HostArgs, PluginArg, compilation_text, load, reach_parts};

/// List the tools of plugins, or show how the tools in a store have been doing.
#[derive(Debug, Subcommand)]
pub(crate) enum ToolsCommand {
    List(ToolsListArgs),
    Stats(ToolsStatsArgs),
}

/// List the tools of one or more plugins as `plugin/tool`, with their schemas.
#[derive(Debug, Args)]
pub(crate) struct ToolsListArgs {
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
/// guest-error, trap, timeout, cache-hit or interrupted (and a registry call's
/// denied, not-found, unavailable or limit).
#[derive(Debug, Args)]
pub(crate) struct ToolsStatsArgs {
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

/// Show what a plugin is: its world version, manifest and tools, and whether it loads.
///
/// Exits non-zero with a one-line reason if the file is not a component of the
/// agentbox:plugin world or its manifest is invalid.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    #[command(flatten)]
    plugin: PluginArg,

    /// Print the description as one JSON object
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    host: HostArgs,
}

pub(crate) fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let host = args.host.host(&StoreSpec::Memory, false)?;
    let plugin = load(&args.plugin.path, |bytes| host.stage_plugin(bytes))?;
    let manifest = &plugin.manifest;
    let schema = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    let tools: Vec<Value> = plugin.tools.iter().map(tool_json).collect();
    // What the policy lets it reach; a plugin of world 0.1.0 cannot import it.
    let outbound =
        (plugin.world != v0_1::WORLD_VERSION).then(|| host.outbound(&manifest.name).describe());
    // Other plugins' tools it may call through the registry, from 0.2.0 on.
    let may_call = (plugin.world != v0_1::WORLD_VERSION).then(|| host.may_call(&manifest.name));
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
            "digest": plugin.digest_hex(),
            "state_version": manifest.state_version,
            "state_schema": manifest.state_schema.as_deref().map(schema),
            "tools": tools,
            "artifact": { "cached": cached, "ms": took.as_secs_f64() * 1e3 },
            "initial_memory_bytes": plugin.initial_memory,
            "instance": {
                "core_instances": plugin.footprint.core_instances,
                "memories": plugin.footprint.memories,
                "tables": plugin.footprint.tables,
            },
            "extra_exports": plugin.extra_exports,
            "outbound": outbound,
            "may_call": may_call,
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
    println!(
        "memory        {:.1} MiB at start",
        plugin.initial_memory as f64 / f64::from(1 << 20)
    );
    println!(
        "instance      {} (a pool slot holds {})",
        plugin.footprint, SLOT
    );
    if !plugin.extra_exports.is_empty() {
        println!(
            "also exports  {} (never called)",
            plugin.extra_exports.join(", ")
        );
    }
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
    println!(
        "reaches       {}",
        reach_text(outbound.as_ref(), &plugin.world)
    );
    println!(
        "calls         {}",
        match may_call {
            None => format!("nothing (world {} has no registry)", plugin.world),
            Some(granted) if granted.is_empty() => "its own tools".to_owned(),
            Some(granted) => format!("its own tools, and {}", granted.join(", ")),
        }
    );
    println!("loads         yes");
    Ok(ExitCode::SUCCESS)
}

/// What the policy lets a plugin reach, in one line: its allow-list, then
/// its configuration (secrets shown as `[secret]`).
fn reach_text(outbound: Option<&Value>, world: &str) -> String {
    let Some(outbound) = outbound else {
        return format!("nothing (world {world} has no outbound HTTP or configuration)");
    };
    let (allow, config) = reach_parts(outbound);
    let config: Vec<String> = config
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    if allow.is_empty() && config.is_empty() {
        return "nothing (the policy names no [plugins.NAME.http] or config for it)".to_owned();
    }
    format!(
        "{}; config: {}",
        if allow.is_empty() {
            "no host".to_owned()
        } else {
            allow.join(", ")
        },
        if config.is_empty() {
            "none".to_owned()
        } else {
            config.join(", ")
        }
    )
}

fn tool_json(tool: &Tool) -> Value {
    json!({
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
        "result": tool.result_schema,
        "requires": tool.requires,
        "cache_ttl_ms": tool.cache_ttl.map(|ttl| ttl.as_millis() as u64),
        "cache_scope": tool.cache_ttl.map(|_| tool.cache_scope.as_str()),
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
        println!(
            "    cached for  {} ms, {}",
            ttl.as_millis(),
            match tool.cache_scope {
                CacheScope::Session => "per session",
                CacheScope::User => "per user",
                CacheScope::Global => "for everyone",
            }
        );
    }
}

pub(crate) fn tools_list(args: ToolsListArgs) -> anyhow::Result<ExitCode> {
    let host = args.host.host(&StoreSpec::Memory, false)?;
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

pub(crate) async fn tools_stats(args: ToolsStatsArgs) -> anyhow::Result<ExitCode> {
    let spec = args
        .store
        .unwrap_or_else(|| StoreSpec::Sqlite(args.data_dir.join("agentbox.db")));
    let store = spec
        .open()
        .with_context(|| format!("cannot open the store {spec}"))?;
    let host = Host::builder().store(store).build()?;
    let stats = agentbox_host::plugin::tools::stats(&host.executions().await?);
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
