//! `agentbox mcp`: plugins' tools for an MCP client, over stdin and stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use agentbox_host::store::StoreSpec;
use clap::Args;

use crate::{HostArgs, REAP_EVERY, compilation_text, load};

/// Serve plugins' tools to an MCP client over stdin and stdout.
///
/// A desktop assistant, an IDE or an agent framework starts this command and speaks MCP on its
/// stdin and stdout; logs go to stderr. Each tool is offered as `plugin_tool`, and each plugin
/// as `plugin__chat` (`{"text": ...}`), a conversation with its agent. The host checks every
/// call against the tool's schema and requirements, as it does for any caller; state lives in
/// one session per plugin, kept until the client leaves, so a login holds for the next call.
///
/// A client's configuration (Claude Desktop's `claude_desktop_config.json`, for one):
///
///   {"mcpServers": {"shop": {"command": "agentbox",
///     "args": ["mcp", "--plugin", "/srv/plugins/shop.wasm"]}}}
///
/// `agentbox serve` offers the same at `/mcp` over HTTP, to authenticated callers.
///
/// Examples:
///
///   agentbox mcp --plugin plugins/shop
///   agentbox mcp --plugin shop.wasm --plugin intake.wasm --store memory
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct McpArgs {
    /// A plugin to serve: a .wasm component, or a plugin's cargo package directory, which is
    /// built for wasm32-wasip2 first; give it once per plugin
    #[arg(long = "plugin", value_name = "PLUGIN", required = true)]
    plugins: Vec<PathBuf>,

    /// Where sessions live: `memory`, `sqlite:PATH`, or `redis://HOST:PORT` [default:
    /// sqlite:DATA_DIR/agentbox.db]
    #[arg(long, value_name = "SPEC")]
    store: Option<StoreSpec>,

    /// The user the client's sessions belong to, whose `user` KV bucket plugins read and
    /// write (as `run --user`); without it, a plugin's `user` bucket is refused
    #[arg(long, value_name = "ID")]
    user: Option<String>,

    #[command(flatten)]
    host: HostArgs,
}

pub(crate) async fn mcp(args: McpArgs) -> anyhow::Result<ExitCode> {
    let spec = args
        .store
        .clone()
        .unwrap_or_else(|| args.host.default_store());
    let host = args.host.host(&spec, false)?;
    for path in &args.plugins {
        let plugin = load(path, |bytes| host.stage_plugin(bytes))?;
        eprintln!(
            "agentbox: plugin {} {} (sha256:{:.12}, {}), {} tools",
            plugin.name(),
            plugin.manifest.version,
            plugin.digest_hex(),
            compilation_text(plugin.compilation),
            plugin.tools.iter().count(),
        );
    }
    // Sessions past their time-to-live end while this serves.
    let _reaper = host.spawn_reaper(REAP_EVERY);
    crate::announce_mcp_servers(&host);
    eprintln!("agentbox: serving MCP on stdin and stdout (store {spec})");
    agentbox_host::server::mcp::serve_stdio(host, args.user).await?;
    Ok(ExitCode::SUCCESS)
}
