//! One MCP server's link: a task that connects (streamable HTTP or a child
//! process on stdio), lists the server's tools, lists them again when the
//! server announces a change, and reconnects, waiting longer each time up
//! to a bound, when the connection closes or a call finds it broken.
//! Calls go over connections of their own, one per calling session.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
    PaginatedRequestParams, ProtocolVersion,
};
use rmcp::service::{NotificationContext, RunningService, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt as _, Peer, RoleClient};
use serde_json::Value;
use tokio::sync::{Notify, watch};

use crate::names::check_remote_tool_name;
use crate::plugin::tools::Violation;
use crate::policy::{McpServer, McpTransport};
use crate::remote::{RemoteError, RemoteTool, ServerStatus, check_arguments, check_result};
use crate::tls::CLIENT_CONFIG;

/// The first wait before connecting again; it doubles after each failure.
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// The longest wait before connecting again.
const LAST_RETRY: Duration = Duration::from_secs(5);
/// The longest a connection, or a listing of tools, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most tools one server may offer; more are left out.
const MAX_TOOLS: usize = 1000;
/// The most pages of tools one listing reads.
const MAX_PAGES: usize = 100;
/// The most sessions with a connection of their own to one server.
const MAX_CONVERSATIONS: usize = 256;
/// How long a session's unused connection to a server stays open.
const CONVERSATION_IDLE: Duration = Duration::from_secs(600);

/// A server's link: what is known of it now, and the signals its task
/// waits for.
pub(super) struct Link {
    server: McpServer,
    state: watch::Sender<State>,
    /// The server said its tools changed.
    changed: Arc<Notify>,
    /// A call found the connection broken.
    broken: Notify,
    /// Each calling session's own connection, by session id.
    conversations: Mutex<HashMap<String, Conversation>>,
    /// Told of each listing, if the server is re-exported.
    listed: Option<Arc<watch::Sender<u64>>>,
    /// The HTTP client of every connection to an HTTP server, built at
    /// the first: its connections are reused across MCP sessions.
    client: OnceLock<reqwest::Client>,
}

/// One session's connection to a server, and when it was last used.
struct Conversation {
    running: RunningService<RoleClient, Listener>,
    used: Instant,
}

/// What is known of a server now.
#[derive(Clone, Default)]
struct State {
    /// The connection, while there is one.
    peer: Option<Peer<RoleClient>>,
    /// Which connection it is: a broken one is reported by its number.
    connection: u64,
    /// Its tools, as last listed.
    tools: Arc<BTreeMap<String, Arc<RemoteTool>>>,
    /// Why it is not connected.
    reason: Option<String>,
    /// Attempts to connect so far: a call waits for the first.
    attempts: u64,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("server", &self.server)
            .finish()
    }
}

/// The client side the server talks to: it passes on the server's
/// announcements that its tools changed, and declines everything else a
/// server may ask of a client (sampling, elicitation), as rmcp's defaults do.
struct Listener {
    changed: Arc<Notify>,
}

impl ClientHandler for Listener {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.changed.notify_one();
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("agentbox", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }
}

impl Link {
    /// The link to `server`, telling `listed` of each listing of its tools.
    pub(super) fn new(server: McpServer, listed: Option<Arc<watch::Sender<u64>>>) -> Link {
        Link {
            server,
            state: watch::Sender::new(State::default()),
            changed: Arc::new(Notify::new()),
            broken: Notify::new(),
            conversations: Mutex::default(),
            listed,
            client: OnceLock::new(),
        }
    }

    /// Keeps the server connected and its tools listed, until aborted.
    pub(super) async fn keep(self: Arc<Self>) {
        let mut wait = FIRST_RETRY;
        loop {
            let connected = tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "it did not finish connecting within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ))
                });
            let reason = match connected {
                Ok(running) => {
                    wait = FIRST_RETRY;
                    self.serve(running).await
                }
                Err(reason) => reason,
            };
            self.down(reason);
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(LAST_RETRY);
        }
    }

    /// A connection to the server, initialized.
    async fn connect(&self) -> Result<RunningService<RoleClient, Listener>, String> {
        let listener = Listener {
            changed: self.changed.clone(),
        };
        let running = match &self.server.transport {
            McpTransport::Http { url, headers } => {
                let client = match self.client.get() {
                    Some(client) => client.clone(),
                    None => {
                        // Its headers (tokens) go to its URL's origin and
                        // nowhere else: no redirect is followed, and no
                        // proxy from the environment sees them.
                        let built = reqwest::Client::builder()
                            .tls_backend_preconfigured((**CLIENT_CONFIG).clone())
                            .connect_timeout(CONNECT_TIMEOUT)
                            .redirect(reqwest::redirect::Policy::none())
                            .no_proxy()
                            .build()
                            .map_err(|err| format!("its HTTP client cannot be built: {err}"))?;
                        self.client.get_or_init(|| built).clone()
                    }
                };
                let config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
                    .custom_headers(headers.iter().cloned().collect());
                let transport = StreamableHttpClientTransport::with_client(client, config);
                listener
                    .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
                    .await
            }
            McpTransport::Command { program, args } => {
                let mut command = tokio::process::Command::new(program);
                command.args(args);
                let transport = TokioChildProcess::new(command)
                    .map_err(|err| format!("`{program}` cannot be started: {err}"))?;
                listener
                    .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
                    .await
            }
        };
        running.map_err(|err| err.to_string())
    }

    /// Serves calls over `running`, listing the tools now and whenever the
    /// server says they changed, until the connection closes or breaks;
    /// returns why it ended.
    async fn serve(&self, running: RunningService<RoleClient, Listener>) -> String {
        let token = running.cancellation_token();
        let peer = running.peer().clone();
        let mut quit = std::pin::pin!(running.waiting());
        loop {
            let listed = tokio::time::timeout(CONNECT_TIMEOUT, self.list(&peer))
                .await
                .unwrap_or_else(|_| Err("listing its tools took too long".into()));
            match listed {
                Ok(tools) => self.up(&peer, tools),
                Err(reason) => {
                    token.cancel();
                    let _ = quit.await;
                    return reason;
                }
            }
            tokio::select! {
                quit = &mut quit => {
                    return match quit {
                        Ok(reason) => format!("the connection closed ({reason:?})"),
                        Err(err) => format!("the connection failed: {err}"),
                    };
                }
                () = self.changed.notified() => {}
                () = self.broken.notified() => {
                    token.cancel();
                    let _ = quit.await;
                    return "a call found the connection broken".into();
                }
            }
        }
    }

    /// The server's tools, page by page, up to [`MAX_TOOLS`]; a tool with
    /// a name MCP does not allow or a schema that does not compile is left
    /// out, with a warning.
    async fn list(
        &self,
        peer: &Peer<RoleClient>,
    ) -> Result<BTreeMap<String, Arc<RemoteTool>>, String> {
        let server = &self.server.name;
        let mut tools = BTreeMap::new();
        let mut cursor = None;
        for _ in 0..MAX_PAGES {
            let page = peer
                .list_tools(
                    cursor
                        .map(|cursor| PaginatedRequestParams::default().with_cursor(Some(cursor))),
                )
                .await
                .map_err(|err| format!("listing its tools failed: {err}"))?;
            for tool in page.tools {
                let name = tool.name.to_string();
                if tools.len() == MAX_TOOLS {
                    tracing::warn!(
                        server,
                        "the MCP server offers more than {MAX_TOOLS} tools; the rest are left out"
                    );
                    return Ok(tools);
                }
                let compiled = check_remote_tool_name(&name).and_then(|()| {
                    RemoteTool::new(
                        name.clone(),
                        tool.description.as_deref().unwrap_or_default().to_owned(),
                        Value::Object((*tool.input_schema).clone()),
                        tool.output_schema
                            .map(|schema| Value::Object((*schema).clone())),
                    )
                });
                match compiled {
                    Ok(compiled) => {
                        tools.insert(name, Arc::new(compiled));
                    }
                    Err(reason) => {
                        tracing::warn!(
                            server,
                            tool = name,
                            "a tool of the MCP server is left out: {reason}"
                        );
                    }
                }
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        Ok(tools)
    }

    /// Records a connection and the tools it lists.
    fn up(&self, peer: &Peer<RoleClient>, tools: BTreeMap<String, Arc<RemoteTool>>) {
        let count = tools.len();
        self.state.send_modify(|state| {
            state.peer = Some(peer.clone());
            state.tools = Arc::new(tools);
            state.reason = None;
        });
        if let Some(listed) = &self.listed {
            listed.send_modify(|listings| *listings += 1);
        }
        tracing::info!(
            server = self.server.name,
            tools = count,
            "connected to the MCP server and listed its tools"
        );
    }

    /// Records that the server is not connected, and why; its tools stay
    /// listed as they were last.
    fn down(&self, reason: String) {
        let reason = without_body(&reason);
        let mut changed = false;
        self.state.send_modify(|state| {
            changed = state.peer.is_some() || state.reason.as_ref() != Some(&reason);
            state.peer = None;
            state.connection += 1;
            state.attempts += 1;
            state.reason = Some(reason.clone());
        });
        if changed {
            tracing::warn!(
                server = self.server.name,
                reason,
                "the MCP server is not connected; its tools answer `unavailable` until it is"
            );
        }
    }

    /// Whether the policy re-exports it.
    pub(super) fn reexported(&self) -> bool {
        self.server.reexport
    }

    /// Its tools, as last listed.
    pub(super) fn tools(&self) -> Vec<Arc<RemoteTool>> {
        self.state.borrow().tools.values().cloned().collect()
    }

    pub(super) fn status(&self) -> ServerStatus {
        let state = self.state.borrow();
        ServerStatus {
            name: self.server.name.clone(),
            reached: self.server.describe(),
            connected: state.peer.is_some(),
            reason: state.reason.clone(),
            tools: state.tools.keys().cloned().collect(),
        }
    }

    /// Calls `tool` with `arguments` for `conversation`, checked against
    /// the tool's schema first, waiting at most until `until` and the
    /// server's timeout.
    pub(super) async fn call(
        &self,
        conversation: &str,
        tool: &str,
        arguments: &Value,
        until: Option<Instant>,
    ) -> Result<Value, RemoteError> {
        let name = &self.server.name;
        let timeout = Instant::now() + self.server.timeout;
        let (until, cut_by_caller) = match until {
            Some(until) if until <= timeout => (until, true),
            _ => (timeout, false),
        };
        // Out of time: the caller's, or the server's.
        let late = || {
            if cut_by_caller {
                RemoteError::Deadline
            } else {
                RemoteError::Unavailable(format!(
                    "the MCP server `{name}` did not answer within {} ms",
                    self.server.timeout.as_millis()
                ))
            }
        };
        let mut state = self.state.subscribe();
        // The first attempt to connect may still be under way.
        tokio::time::timeout_at(
            until.into(),
            state.wait_for(|state| state.attempts > 0 || state.peer.is_some()),
        )
        .await
        .map_err(|_| late())?
        .map_err(|_| RemoteError::Unavailable(format!("the MCP server `{name}` is shut down")))?;
        let (found, connection) = {
            let state = state.borrow();
            if state.peer.is_none() {
                return Err(RemoteError::Unavailable(format!(
                    "the MCP server `{name}` is not connected: {}",
                    state.reason.as_deref().unwrap_or("it is connecting")
                )));
            }
            (state.tools.get(tool).cloned(), state.connection)
        };
        let tool = found.ok_or_else(|| {
            RemoteError::NotFound(format!("the MCP server `{name}` offers no tool `{tool}`"))
        })?;
        check_arguments(&tool, arguments)?;
        let Value::Object(arguments) = arguments else {
            return Err(RemoteError::InvalidArguments(vec![Violation {
                pointer: String::new(),
                message: "the arguments of an MCP tool are a JSON object".into(),
            }]));
        };
        let peer = match self.conversation(conversation, until).await {
            Ok(peer) => peer,
            Err(RemoteError::Deadline) => return Err(late()),
            Err(err) => {
                self.broke(connection);
                return Err(err);
            }
        };
        let wait = until.saturating_duration_since(Instant::now());
        let request =
            CallToolRequestParams::new(tool.name.clone()).with_arguments(arguments.clone());
        match tokio::time::timeout(wait, peer.call_tool(request)).await {
            Err(_) => Err(late()),
            Ok(Err(ServiceError::McpError(err))) => Err(RemoteError::Failed(format!(
                "the MCP server `{name}` refused the call: {}",
                err.message
            ))),
            Ok(Err(err)) => {
                self.forget(conversation);
                self.broke(connection);
                Err(RemoteError::Unavailable(format!(
                    "the MCP server `{name}` cannot be reached: {}",
                    without_body(&err.to_string())
                )))
            }
            Ok(Ok(result)) => answer(name, &tool, result),
        }
    }

    /// The connection of session `id` to the server: its own MCP session,
    /// so that what the server keeps between calls (a login, a browser)
    /// belongs to one conversation. Made at its first call; the least
    /// recently used is closed past [`MAX_CONVERSATIONS`], and any unused
    /// for [`CONVERSATION_IDLE`].
    async fn conversation(
        &self,
        id: &str,
        until: Instant,
    ) -> Result<Peer<RoleClient>, RemoteError> {
        let name = &self.server.name;
        {
            let mut open = self.conversations.lock().expect("conversations lock");
            if let Some(conversation) = open.get_mut(id) {
                if !conversation.running.peer().is_transport_closed() {
                    conversation.used = Instant::now();
                    return Ok(conversation.running.peer().clone());
                }
                open.remove(id);
            }
        }
        let connecting = tokio::time::timeout(CONNECT_TIMEOUT, self.connect());
        let running = match tokio::time::timeout_at(until.into(), connecting).await {
            Err(_) => return Err(RemoteError::Deadline),
            Ok(Err(_)) => {
                return Err(RemoteError::Unavailable(format!(
                    "the MCP server `{name}` did not finish connecting within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
            Ok(Ok(Err(reason))) => {
                return Err(RemoteError::Unavailable(format!(
                    "the MCP server `{name}` cannot be reached: {reason}"
                )));
            }
            Ok(Ok(Ok(running))) => running,
        };
        let mut open = self.conversations.lock().expect("conversations lock");
        let now = Instant::now();
        open.retain(|_, conversation| now.duration_since(conversation.used) < CONVERSATION_IDLE);
        if open.len() >= MAX_CONVERSATIONS
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, conversation)| conversation.used)
                .map(|(id, _)| id.clone())
        {
            open.remove(&oldest);
        }
        let conversation = open
            .entry(id.to_owned())
            .or_insert(Conversation { running, used: now });
        Ok(conversation.running.peer().clone())
    }

    /// Closes session `id`'s connection, if it has one.
    pub(super) fn forget(&self, id: &str) {
        let closed = self
            .conversations
            .lock()
            .expect("conversations lock")
            .remove(id);
        drop(closed);
    }

    /// Has the link connect again if `connection` is still its connection:
    /// a call found the server unreachable through it.
    fn broke(&self, connection: u64) {
        let current = {
            let state = self.state.borrow();
            state.connection == connection && state.peer.is_some()
        };
        if current {
            self.broken.notify_one();
        }
    }
}

/// What a call answered: its structured result, or its text as a JSON
/// string, or its content blocks; an error result is a failure.
fn answer(server: &str, tool: &RemoteTool, result: CallToolResult) -> Result<Value, RemoteError> {
    let texts: Option<Vec<&str>> = result
        .content
        .iter()
        .map(|block| block.as_text().map(|text| text.text.as_str()))
        .collect();
    if result.is_error == Some(true) {
        let said = texts.map(|texts| texts.join("\n")).unwrap_or_default();
        return Err(RemoteError::Failed(format!(
            "the MCP server `{server}`'s tool `{}` answered an error: {said}",
            tool.name
        )));
    }
    let value = match (result.structured_content, texts) {
        (Some(structured), _) => structured,
        (None, Some(texts)) => Value::String(texts.join("\n")),
        (None, None) => serde_json::to_value(&result.content).expect("content serializes"),
    };
    check_result(tool, &value)?;
    Ok(value)
}

/// `reason` without what the server sent back: an unexpected answer reads
/// `HTTP STATUS [PHRASE]: BODY`, and the body may hold anything (what an
/// internal address answered, a reflected header), so only the status and
/// the body's length are kept, for logs, listings and callers alike.
fn without_body(reason: &str) -> String {
    const MARK: &str = "HTTP ";
    let Some(at) = reason.find(MARK) else {
        return reason.to_owned();
    };
    let after = &reason[at + MARK.len()..];
    let Some(colon) = after.find(": ") else {
        return reason.to_owned();
    };
    let status = &after[..colon];
    let is_status = status.len() >= 3
        && status.as_bytes()[..3].iter().all(u8::is_ascii_digit)
        && status[3..]
            .chars()
            .all(|c| c.is_ascii_alphabetic() || c == ' ' || c == '-');
    if !is_status {
        return reason.to_owned();
    }
    format!(
        "{}{MARK}{status} (a body of {} bytes, left out)",
        &reason[..at],
        after.len() - colon - 2
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answers_body_is_left_out_of_a_reason_and_its_status_kept() {
        assert_eq!(
            without_body(
                "unexpected server response: HTTP 307 Temporary Redirect: internal page, token=abc"
            ),
            "unexpected server response: HTTP 307 Temporary Redirect (a body of 24 bytes, left out)"
        );
        assert_eq!(
            without_body("HTTP 400: {\"secret\": 1}"),
            "HTTP 400 (a body of 13 bytes, left out)"
        );
        for kept in ["HTTP 503", "connection refused", "HTTP 2xx: odd", ""] {
            assert_eq!(without_body(kept), kept);
        }
    }
}
