//! The policy's MCP servers as the front ends see them: connecting them,
//! their state for operators, and the tools of those this host passes on
//! to its own MCP clients. A guest reaches them through the registry
//! ([`crate::session::calls`]).

use std::sync::Arc;

use serde_json::Value;

use crate::host::Host;
use crate::remote::{RemoteError, RemoteTool, ServerStatus};

impl Host {
    /// The policy's MCP servers, as the front ends see them.
    pub fn mcp(&self) -> Mcp<'_> {
        Mcp { host: self }
    }
}

/// The policy's MCP servers, as the front ends see them ([`Host::mcp`]).
#[derive(Debug, Clone, Copy)]
pub struct Mcp<'a> {
    host: &'a Host,
}

impl Mcp<'_> {
    /// Starts connecting the policy's MCP servers, on the current tokio
    /// runtime, if that has not begun; a registry call that needs one
    /// starts them too.
    pub fn connect(&self) {
        self.host.parts.remotes.connect();
    }

    /// How each of the policy's MCP servers is doing: connected or why not,
    /// and its tools as last listed.
    pub fn servers(&self) -> Vec<ServerStatus> {
        self.host.parts.remotes.status()
    }

    /// The tools of the MCP servers the policy re-exports, by server, as
    /// last listed.
    pub fn reexported_tools(&self) -> Vec<(String, Vec<Arc<RemoteTool>>)> {
        self.host
            .parts
            .remotes
            .reexported()
            .into_iter()
            .map(|(server, tools)| (server.to_owned(), tools))
            .collect()
    }

    /// Follows the listings of the re-exported MCP servers' tools: a new
    /// value after each.
    pub fn watch_reexported_tools(&self) -> tokio::sync::watch::Receiver<u64> {
        self.host.parts.remotes.watch_reexported()
    }

    /// Calls re-exported MCP server `server`'s tool `tool` for one of this
    /// host's MCP clients, `conversation`, over that client's own
    /// connection; the result is bounded by the host's output limit.
    pub async fn call_reexported(
        &self,
        conversation: &str,
        server: &str,
        tool: &str,
        arguments: &Value,
    ) -> Result<Value, RemoteError> {
        let remotes = &self.host.parts.remotes;
        if !remotes.reexports(server) {
            return Err(RemoteError::NotFound(format!(
                "no MCP server `{server}` is re-exported"
            )));
        }
        let most = self.host.parts.limits.output_bytes;
        remotes
            .call(conversation, server, tool, arguments, None, most)
            .await
    }

    /// Closes the connections `conversation`, one of this host's MCP
    /// clients, had to re-exported servers: it has left.
    pub fn end_conversation(&self, conversation: &str) {
        self.host.parts.remotes.end_conversation(conversation);
    }
}
