//! The policy's MCP servers as the front ends see them: connecting them,
//! their state for operators, and the tools of those this host passes on
//! to its own MCP clients. A guest reaches them through the registry
//! ([`crate::session::calls`]).

use std::sync::Arc;

use serde_json::Value;

use crate::host::Host;
use crate::remote::{RemoteError, RemoteTool, ServerStatus};

impl Host {
    /// Starts connecting the policy's MCP servers, on the current tokio
    /// runtime, if that has not begun; a registry call that needs one
    /// starts them too.
    pub fn connect_mcp_servers(&self) {
        self.parts.remotes.connect();
    }

    /// How each of the policy's MCP servers is doing: connected or why not,
    /// and its tools as last listed.
    pub fn mcp_servers(&self) -> Vec<ServerStatus> {
        self.parts.remotes.status()
    }

    /// The tools of the MCP servers the policy re-exports, by server, as
    /// last listed.
    pub fn reexported_mcp_tools(&self) -> Vec<(String, Vec<Arc<RemoteTool>>)> {
        self.parts
            .remotes
            .reexported()
            .into_iter()
            .map(|(server, tools)| (server.to_owned(), tools))
            .collect()
    }

    /// Follows the listings of the re-exported MCP servers' tools: a new
    /// value after each.
    pub fn watch_reexported_mcp_tools(&self) -> tokio::sync::watch::Receiver<u64> {
        self.parts.remotes.watch_reexported()
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
        let remotes = &self.parts.remotes;
        if !remotes.reexports(server) {
            return Err(RemoteError::NotFound(format!(
                "no MCP server `{server}` is re-exported"
            )));
        }
        let most = self.parts.limits.output_bytes;
        remotes
            .call(conversation, server, tool, arguments, None, most)
            .await
    }

    /// Closes the connections `conversation`, one of this host's MCP
    /// clients, had to re-exported servers: it has left.
    pub fn end_mcp_conversation(&self, conversation: &str) {
        self.parts.remotes.end_conversation(conversation);
    }
}
