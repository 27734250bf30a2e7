//! MCP: every tool a caller may use, served to MCP clients (desktop
//! assistants, IDEs, agent frameworks) over streamable HTTP at `/mcp` and
//! over stdio (`agentbox mcp`), with the official SDK, rmcp.
//!
//! One [`McpSession`] serves one MCP session. It keeps one agentbox session
//! per plugin, started at the first call of one of its tools and ended with
//! the MCP session, so `requires` and state work across calls: log in, then
//! fill the cart. Tool names are `plugin_tool` (MCP clients accept
//! `^[a-zA-Z0-9_-]{1,64}$`), and each plugin is also a tool,
//! `plugin__chat` with `{"text"}`, that runs a message turn and answers
//! what the agent said; its first answer starts with what the agent said
//! as its session started (a text block of its own). A failed call is a
//! tool error (`isError`) that says why, never a protocol error.
//!
//! The request that opens an MCP session over HTTP may name the user its
//! sessions belong to (`/mcp?user_id=`) under the rule of a start's: a
//! token's user, or a key that may act for users.
//!
//! The sessions of an MCP session belong to the caller that opened it: a
//! request of the same MCP session with other credentials is answered 404
//! by the transport ([`transport`]), before it reaches the session.

mod tools;
mod transport;

pub(crate) use tools::tools_for;
pub(crate) use transport::{McpOwners, admit, json_errors};

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeRequestParams, InitializeResult, JsonObject, ListToolsResult, PaginatedRequestParams,
    ProgressNotificationParam, ProtocolVersion, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt as _};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::capability::output::Sink;
use crate::names::{McpName, REMOTE_PREFIX, parse_mcp_name};
use crate::remote::RemoteError;

use crate::host::Host;
use crate::server::api::Api;
use crate::server::auth::rates::Action;
use crate::server::auth::{Caller, Callers};
use crate::server::bounds::{Bounds, Open};
use crate::server::mcp::tools::{answer, failure, refusal};
use crate::server::mcp::transport::{NewSession, Opened};
use crate::server::refusal::slow_message;
use crate::server::sockets::{Sockets, WebSocketSettings};
use crate::session::error::Cause;
use crate::session::report::SessionStart;

/// The streamable HTTP service of `/mcp` for `api`'s callers. An MCP
/// session unused for the bounds' `mcp_idle_ms` is closed.
pub(crate) fn service(api: Api) -> StreamableHttpService<McpSession, LocalSessionManager> {
    let mut config = StreamableHttpServerConfig::default();
    // An MCP session holds the caller's agentbox sessions between calls.
    config.legacy_session_mode = true;
    // The router checks `Host` on every route where it must.
    config.allowed_hosts = Vec::new();
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(Duration::from_millis(api.open.bounds.mcp_idle_ms));
    StreamableHttpService::new(
        move || Ok(McpSession::new(api.clone(), Caller::Anyone, None)),
        Arc::new(sessions),
        config,
    )
}

/// Serves `host`'s tools to the MCP client on stdin and stdout until it
/// leaves (`agentbox mcp`): the local user, who may use every plugin, as
/// an open server's callers may; its sessions belong to `user`, if given.
pub async fn serve_stdio(host: Host, user: Option<String>) -> anyhow::Result<()> {
    let api = Api {
        host,
        admin_token: None,
        callers: Arc::new(Callers::default()),
        sockets: Arc::new(Sockets::new(WebSocketSettings::default())),
        // Its one caller is no principal, whose requests are not counted.
        open: Arc::new(Open::new(Bounds::default(), usize::MAX)),
    };
    let host = api.host.clone();
    let session = McpSession::new(api, Caller::Anyone, user);
    let kept = session.kept.clone();
    let conversation = session.conversation.clone();
    let running = session.serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    host.mcp().end_conversation(&conversation);
    // The client left: end its sessions now, while the runtime runs.
    let sessions = std::mem::take(&mut kept.lock().await.sessions);
    for id in sessions.into_values() {
        end(&host, &id).await;
    }
    Ok(())
}

/// Ends session `id`, which a closed MCP session kept.
async fn end(host: &Host, id: &str) {
    if let Err(err) = host.end_session(id).await {
        tracing::warn!(session = id, error = %err, "ending the session of a closed MCP session failed");
    }
}

/// One MCP session: the agentbox session it keeps for each plugin, and
/// the caller they belong to.
pub(crate) struct McpSession {
    api: Api,
    /// The caller of a request that carries none: stdio's local user.
    local: Caller,
    /// Shared with [`serve_stdio`], which ends the sessions itself.
    kept: Arc<tokio::sync::Mutex<Kept>>,
    /// The changes of the active plugin versions and of the re-exported
    /// MCP servers' tools, until a listing starts following them for the
    /// client.
    changes: Mutex<Option<(watch::Receiver<u64>, watch::Receiver<u64>)>>,
    /// Its name to the re-exported MCP servers, each of which it reaches
    /// over a connection of its own.
    conversation: String,
    /// The user its sessions belong to, if it names one.
    user: Option<String>,
    /// Its place among the MCP sessions of its caller and of the server,
    /// and whose it is, over HTTP.
    opened: Mutex<Option<Arc<Opened>>>,
}

#[derive(Default)]
struct Kept {
    /// Each plugin's agentbox session.
    sessions: HashMap<String, String>,
    /// What each plugin's agent said as its session started, until the
    /// first message to it answers with it.
    greetings: HashMap<String, String>,
}

impl McpSession {
    pub(crate) fn new(api: Api, local: Caller, user: Option<String>) -> McpSession {
        let changes = (
            api.host.watch_plugins(),
            api.host.mcp().watch_reexported_tools(),
        );
        McpSession {
            api,
            local,
            kept: Arc::default(),
            changes: Mutex::new(Some(changes)),
            conversation: format!("mcp-client-{}", uuid::Uuid::new_v4()),
            user,
            opened: Mutex::default(),
        }
    }

    /// The caller of the request `context` serves: over HTTP, the one that
    /// opened the MCP session (the transport answers any other 404); over
    /// stdio, the local user.
    fn caller(&self, context: &RequestContext<RoleServer>) -> Caller {
        context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>())
            .unwrap_or(&self.local)
            .clone()
    }

    /// The agentbox session this MCP session keeps for `plugin`, started
    /// for `caller` now if there is none. Calls of one MCP session may
    /// come at once; one of them starts the session, the others wait.
    async fn session_of(&self, caller: &Caller, plugin: &str) -> Result<String, String> {
        let mut kept = self.kept.lock().await;
        if let Some(id) = kept.sessions.get(plugin) {
            return Ok(id.clone());
        }
        let opened = self.opened.lock().expect("an MCP session poisoned").clone();
        let start = SessionStart {
            plugin: plugin.to_owned(),
            user_id: self
                .user
                .clone()
                .or_else(|| opened.and_then(|opened| opened.user.clone())),
            ..SessionStart::default()
        };
        let start = self
            .api
            .admit_start(caller, start)
            .await
            .map_err(|refused| refused.message())?;
        let started = self
            .api
            .host
            .start_session(start, None)
            .await
            .map_err(|err| err.to_string())?;
        if !started.said.is_empty() {
            kept.greetings
                .insert(plugin.to_owned(), started.said.join(""));
        }
        kept.sessions
            .insert(plugin.to_owned(), started.session.clone());
        Ok(started.session)
    }

    /// Forgets the session kept for `plugin`, which has ended.
    async fn forget(&self, plugin: &str) {
        let mut kept = self.kept.lock().await;
        kept.sessions.remove(plugin);
        kept.greetings.remove(plugin);
    }

    /// Takes one of `caller`'s tokens for `action`, or says how fast it goes.
    fn admit(&self, caller: &Caller, action: Action) -> Result<(), String> {
        self.api
            .callers
            .admit(caller, action, self.api.host.clock().now_ms())
            .map_err(|slow| slow_message(&slow))
    }

    /// Runs the call `name` with `arguments` for `caller`: a tool, or a
    /// message to a plugin's conversation, whose said text goes to `sink`.
    async fn run(
        &self,
        caller: &Caller,
        name: &str,
        arguments: JsonObject,
        sink: Option<Sink>,
    ) -> CallToolResult {
        let (plugin, tool) = match parse_mcp_name(name) {
            Some(McpName::Tool { plugin, tool }) => (plugin, Some(tool)),
            Some(McpName::Conversation { plugin }) => (plugin, None),
            Some(McpName::Remote { server, tool }) => {
                return self.run_remote(caller, server, tool, arguments).await;
            }
            None => {
                return refusal(
                    "not-found",
                    format!("`{name}` names no tool of this server"),
                );
            }
        };
        if let Err(reason) = caller.check_use(plugin) {
            return refusal("forbidden", reason);
        }
        let session = match self.session_of(caller, plugin).await {
            Ok(session) => session,
            Err(reason) => return refusal("refused", reason),
        };
        if let Err(reason) = self.admit(caller, Action::Turn) {
            return refusal("rate-limited", reason);
        }
        let host = &self.api.host;
        match tool {
            Some(tool) => match host
                .call_tool(&session, tool, Value::Object(arguments), None)
                .await
            {
                Ok(report) => answer(report.result),
                Err(err) => failure(&err.cause, err.to_string()),
            },
            None => {
                let Some(Value::String(text)) = arguments.get("text") else {
                    return refusal(
                        "invalid-arguments",
                        "the conversation takes `{\"text\": \"...\"}`".into(),
                    );
                };
                match host.send_message(&session, text, sink).await {
                    Ok(report) => {
                        let greeting = self.kept.lock().await.greetings.remove(plugin);
                        if report.outcome == crate::Outcome::End {
                            self.forget(plugin).await;
                        }
                        let said = greeting.into_iter().chain([report.said.join("")]);
                        CallToolResult::success(said.map(ContentBlock::text).collect())
                    }
                    Err(err) => {
                        if matches!(err.cause, Cause::Ended | Cause::NotFound) {
                            self.forget(plugin).await;
                        }
                        failure(&err.cause, err.to_string())
                    }
                }
            }
        }
    }
}

impl McpSession {
    /// Runs re-exported MCP server `server`'s tool `tool` for `caller`,
    /// over this MCP session's own connection to it.
    async fn run_remote(
        &self,
        caller: &Caller,
        server: &str,
        tool: &str,
        arguments: JsonObject,
    ) -> CallToolResult {
        if let Err(reason) = caller.check_use(&format!("{REMOTE_PREFIX}{server}")) {
            return refusal("forbidden", reason);
        }
        if let Err(reason) = self.admit(caller, Action::Turn) {
            return refusal("rate-limited", reason);
        }
        let arguments = Value::Object(arguments);
        let called = self
            .api
            .host
            .mcp()
            .call_reexported(&self.conversation, server, tool, &arguments)
            .await;
        match called {
            Ok(result) => answer(result),
            Err(RemoteError::InvalidArguments(violations)) => {
                CallToolResult::structured_error(json!({
                    "kind": "invalid-arguments",
                    "message": format!("the arguments break the schema of `{tool}`"),
                    "violations": violations,
                }))
            }
            Err(err) => {
                let kind = match err {
                    RemoteError::NotFound(_) => "not-found",
                    RemoteError::Unavailable(_) | RemoteError::Deadline => "unavailable",
                    RemoteError::TooLarge(_) => "too-large",
                    _ => "failed",
                };
                refusal(kind, err.to_string())
            }
        }
    }
}

impl Drop for McpSession {
    /// Ends the agentbox sessions the MCP session kept, unless
    /// [`serve_stdio`] holds them to end them itself. No call holds the
    /// lock any more: each borrowed the session.
    fn drop(&mut self) {
        if Arc::strong_count(&self.kept) > 1 {
            return;
        }
        self.api.host.mcp().end_conversation(&self.conversation);
        let sessions = match self.kept.try_lock() {
            Ok(mut kept) => std::mem::take(&mut kept.sessions),
            Err(_) => return,
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for id in sessions.into_values() {
            let host = self.api.host.clone();
            runtime.spawn(async move { end(&host, &id).await });
        }
    }
}

impl ServerHandler for McpSession {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("agentbox", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Each plugin's tools are `plugin_tool`; `plugin__chat` with {\"text\"} talks to the \
             plugin's agent. Each plugin keeps one conversation per MCP session. \
             `server__mcp_tool` is a tool of an MCP server this host passes on.",
        )
    }

    /// Takes the session's place, and whose it is, from the request that
    /// opens it.
    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        let opened = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<NewSession>())
            .map(|NewSession(opened)| Arc::clone(opened));
        *self.opened.lock().expect("an MCP session poisoned") = opened;
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        // From 2026-07-28 MCP has no sessions, and a conversation's state
        // lives in one.
        Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let caller = self.caller(&context);
        self.follow_changes(&context);
        Ok(ListToolsResult::with_all_items(tools_for(
            &self.api.host,
            &caller,
        )))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let caller = self.caller(&context);
        // What the agent says goes to the client as progress while the
        // turn runs, when the client asked for progress.
        let (sink, forwarding) = match context.meta.get_progress_token() {
            Some(token) => {
                let (said, mut hear) = tokio::sync::mpsc::unbounded_channel::<String>();
                let peer = context.peer.clone();
                let forwarding = tokio::spawn(async move {
                    let mut progress = 0.0;
                    while let Some(text) = hear.recv().await {
                        progress += 1.0;
                        let note = ProgressNotificationParam::new(token.clone(), progress)
                            .with_message(text);
                        if peer.notify_progress(note).await.is_err() {
                            break;
                        }
                    }
                });
                let sink: Sink = Arc::new(move |text: &str| {
                    let _ = said.send(text.to_owned());
                });
                (Some(sink), Some(forwarding))
            }
            None => (None, None),
        };
        let arguments = request.arguments.unwrap_or_default();
        let result = self.run(&caller, &request.name, arguments, sink).await;
        // The turn has dropped the sink: every note is sent before the answer.
        if let Some(forwarding) = forwarding {
            let _ = forwarding.await;
        }
        Ok(result.into())
    }
}

impl McpSession {
    /// Tells the client each time the tools may have changed, from its
    /// first listing on.
    fn follow_changes(&self, context: &RequestContext<RoleServer>) {
        let Some((mut plugins, mut remote)) =
            self.changes.lock().expect("an MCP session poisoned").take()
        else {
            return;
        };
        plugins.mark_unchanged();
        remote.mark_unchanged();
        let peer = context.peer.clone();
        tokio::spawn(async move {
            loop {
                let changed = tokio::select! {
                    changed = plugins.changed() => changed,
                    changed = remote.changed() => changed,
                };
                if changed.is_err() || peer.notify_tool_list_changed().await.is_err() {
                    break;
                }
            }
        });
    }
}
