//! The operator's MCP servers as tool sources: one link per server
//! ([`link`]) keeps a connection and the server's tool list, reconnecting
//! when it breaks and listing again when the server says its tools
//! changed. A call is checked against the tool's declared schema before it
//! is sent, bounded by the caller's deadline and the server's timeout, and
//! its result checked against the declared result schema.
//!
//! A server that cannot be reached is not fatal: its tools answer
//! [`RemoteError::Unavailable`] until it is back.

mod link;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use jsonschema::Validator;
use serde_json::Value;

use crate::plugin::tools::{Violation, compile_schema, violations};
use crate::policy::McpServer;

use link::Link;

/// A remote server's tool, with its schemas compiled.
#[derive(Debug)]
pub struct RemoteTool {
    /// Its name on its server.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: Value,
    /// JSON Schema of its structured result, if declared.
    pub result_schema: Option<Value>,
    parameters_validator: Validator,
    result_validator: Option<Validator>,
}

impl RemoteTool {
    /// The tool `name` as its server declared it, or why a schema of it
    /// does not compile.
    fn new(
        name: String,
        description: String,
        parameters: Value,
        result_schema: Option<Value>,
    ) -> Result<RemoteTool, String> {
        let parameters_validator = compile_schema(&parameters)
            .map_err(|err| format!("its parameter schema does not compile: {err}"))?;
        let result_validator = result_schema
            .as_ref()
            .map(compile_schema)
            .transpose()
            .map_err(|err| format!("its result schema does not compile: {err}"))?;
        Ok(RemoteTool {
            name,
            description,
            parameters,
            result_schema,
            parameters_validator,
            result_validator,
        })
    }
}

/// Why a call of a remote tool returned no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// The server does not offer the tool.
    #[error("{0}")]
    NotFound(String),
    /// The arguments break the tool's declared schema; nothing was sent.
    #[error("the arguments break the tool's schema")]
    InvalidArguments(Vec<Violation>),
    /// The server cannot be reached, or did not answer in its time.
    #[error("{0}")]
    Unavailable(String),
    /// The server answered with an error, or a result its schema refuses.
    #[error("{0}")]
    Failed(String),
    /// The result is larger than the caller may take.
    #[error("{0}")]
    TooLarge(String),
    /// The caller's deadline came first.
    #[error("the caller's deadline passed while waiting for the server")]
    Deadline,
}

/// What an operator sees of one server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServerStatus {
    /// Its name: `mcp:NAME/tool`.
    pub name: String,
    /// Where it is reached, without header values.
    pub reached: String,
    /// Whether it is connected now.
    pub connected: bool,
    /// Why it is not, if it is not.
    pub reason: Option<String>,
    /// The tools it offers, as last listed.
    pub tools: Vec<String>,
}

/// The operator's MCP servers, each with its link.
#[derive(Debug, Default)]
pub struct McpServers {
    links: BTreeMap<String, Arc<Link>>,
    /// A new value each time a re-exported server's tools are listed.
    reexported: Arc<tokio::sync::watch::Sender<u64>>,
    /// The links' tasks, once started on a runtime; aborted when the
    /// servers are dropped.
    tasks: OnceLock<Vec<tokio::task::AbortHandle>>,
}

impl McpServers {
    /// Links for `servers`, not yet connected.
    pub fn new(servers: Vec<McpServer>) -> McpServers {
        let reexported = Arc::new(tokio::sync::watch::Sender::new(0));
        McpServers {
            links: servers
                .into_iter()
                .map(|server| {
                    let listed = server.reexport.then(|| reexported.clone());
                    (server.name.clone(), Arc::new(Link::new(server, listed)))
                })
                .collect(),
            reexported,
            tasks: OnceLock::new(),
        }
    }

    /// Follows the listings of the re-exported servers' tools: a new value
    /// after each.
    pub fn watch_reexported(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reexported.subscribe()
    }

    /// Starts connecting every server, on the current tokio runtime, unless
    /// that was done already.
    pub fn connect(&self) {
        self.tasks.get_or_init(|| {
            self.links
                .values()
                .map(|link| tokio::spawn(link.clone().keep()).abort_handle())
                .collect()
        });
    }

    /// Each declared server's name and its tools as last listed.
    pub fn tools(&self) -> Vec<(&str, Vec<Arc<RemoteTool>>)> {
        self.links
            .iter()
            .map(|(name, link)| (name.as_str(), link.tools()))
            .collect()
    }

    /// How each server is doing.
    pub fn status(&self) -> Vec<ServerStatus> {
        self.links.values().map(|link| link.status()).collect()
    }

    /// Calls `server`'s tool `tool` with `arguments` for `conversation`
    /// (a session, or an MCP client of this host), over its own
    /// connection, waiting at most until `until` (and the server's
    /// timeout), and refusing a result over `max_bytes` of JSON.
    pub async fn call(
        &self,
        conversation: &str,
        server: &str,
        tool: &str,
        arguments: &Value,
        until: Option<Instant>,
        max_bytes: usize,
    ) -> Result<Value, RemoteError> {
        let Some(link) = self.links.get(server) else {
            return Err(RemoteError::NotFound(format!(
                "no MCP server `{server}` is declared"
            )));
        };
        self.connect();
        let result = link.call(conversation, tool, arguments, until).await?;
        let size = result.to_string().len();
        if size > max_bytes {
            return Err(RemoteError::TooLarge(format!(
                "the result is {size} bytes of JSON, over the {max_bytes} the caller may take"
            )));
        }
        Ok(result)
    }

    /// Each server the policy re-exports, with its tools as last listed.
    pub fn reexported(&self) -> Vec<(&str, Vec<Arc<RemoteTool>>)> {
        self.links
            .iter()
            .filter(|(_, link)| link.reexported())
            .map(|(name, link)| (name.as_str(), link.tools()))
            .collect()
    }

    /// Whether the policy re-exports server `server`.
    pub fn reexports(&self, server: &str) -> bool {
        self.links.get(server).is_some_and(|link| link.reexported())
    }

    /// Closes session `conversation`'s connections: it has ended.
    pub fn end_conversation(&self, conversation: &str) {
        for link in self.links.values() {
            link.forget(conversation);
        }
    }
}

impl Drop for McpServers {
    fn drop(&mut self) {
        for task in self.tasks.get().into_iter().flatten() {
            task.abort();
        }
    }
}

/// Checks `arguments` against `tool`'s parameter schema.
fn check_arguments(tool: &RemoteTool, arguments: &Value) -> Result<(), RemoteError> {
    violations(&tool.parameters_validator, arguments).map_err(RemoteError::InvalidArguments)
}

/// Checks a structured result against `tool`'s result schema, if declared.
fn check_result(tool: &RemoteTool, result: &Value) -> Result<(), RemoteError> {
    let Some(validator) = &tool.result_validator else {
        return Ok(());
    };
    violations(validator, result).map_err(|found| {
        let listed: Vec<String> = found.iter().map(ToString::to_string).collect();
        RemoteError::Failed(format!(
            "the result breaks the tool's declared result schema: {}",
            listed.join("; ")
        ))
    })
}
