//! `agentbox serve`: the HTTP API for sessions and tools, and the admin API
//! for plugins.
//!
//! Every error is JSON, `{"kind": "...", "message": "..."}`, with a stable
//! `kind`: the caller's mistakes (bad JSON, unknown plugin, session or tool,
//! invalid arguments, oversized bodies) are 4xx; a plugin that fails its turn
//! is 502; the store failing is 503. See `docs/api.md`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message as Frame, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::session::{Cause, SessionError};
use crate::{ActivateError, Host, LoadError, PluginVersion, SessionStart};

/// Largest JSON request body, in bytes.
const MAX_JSON_BODY: usize = 1 << 20;

/// Largest plugin upload, in bytes.
const MAX_PLUGIN_BODY: usize = 64 << 20;

/// What the handlers share.
#[derive(Clone)]
struct Api {
    host: Host,
    /// The admin API's bearer token; `None` turns the admin API off.
    admin_token: Option<Arc<str>>,
}

/// Serves `router` on `listener` until `stop` resolves, then lets running
/// requests finish. Every connection writes without delay (`TCP_NODELAY`):
/// a streamed reply is several small writes, and Nagle's algorithm would
/// hold each one after the first until the client's delayed ACK, some 40 ms.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|connection| {
        if let Err(err) = connection.set_nodelay(true) {
            tracing::warn!(error = %err, "cannot set TCP_NODELAY on a connection");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
}

/// The routes of `agentbox serve`, serving `host`. Without `admin_token`
/// every admin request is refused.
pub fn router(host: Host, admin_token: Option<String>) -> Router {
    let api = Api {
        host,
        admin_token: admin_token.map(Into::into),
    };
    let admin = Router::new()
        .route("/v1/admin/plugins", get(list_plugins).post(load_plugin))
        .route("/v1/admin/plugins/{name}/activate", post(activate))
        .route("/v1/admin/plugins/{name}/rollback", post(roll_back))
        .layer(DefaultBodyLimit::max(MAX_PLUGIN_BODY))
        .layer(middleware::from_fn(|request, next| {
            refuse_declared_over(MAX_PLUGIN_BODY, request, next)
        }));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/tools", get(list_tools))
        .route("/v1/sessions", post(start_session))
        .route("/v1/sessions/{id}", get(show_session).delete(end_session))
        .route("/v1/sessions/{id}/history", get(history))
        .route("/v1/sessions/{id}/messages", post(send_message))
        .route("/v1/sessions/{id}/tools/{tool}", post(call_tool))
        .route("/v1/sessions/{id}/ws", get(converse))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(middleware::from_fn(|request, next| {
            refuse_declared_over(MAX_JSON_BODY, request, next)
        }))
        .merge(admin)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not-found", "no such endpoint") })
        .with_state(api)
}

/// A JSON error response.
fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({ "kind": kind, "message": message.into() });
    (status, Json(body)).into_response()
}

/// The response for a failed session operation.
fn session_error(err: &SessionError) -> Response {
    let status = match &err.cause {
        Cause::NotFound | Cause::PluginNotLoaded(_) | Cause::UnknownTool { .. } => {
            StatusCode::NOT_FOUND
        }
        Cause::BadRequest(_) => StatusCode::BAD_REQUEST,
        Cause::InvalidArguments { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Cause::Precondition { .. } => StatusCode::PRECONDITION_FAILED,
        Cause::Ended | Cause::Exists | Cause::Conflict(_) | Cause::Busy(_) => StatusCode::CONFLICT,
        Cause::LiveSessions(_) | Cause::ConcurrentTurns(_) => StatusCode::TOO_MANY_REQUESTS,
        Cause::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    error(status, err.cause.kind(), err.to_string())
}

/// Refuses a request whose declared body is over `limit` before reading it
/// (a body without a declared length is cut off at the limit as it is read).
async fn refuse_declared_over(limit: usize, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok())
        .and_then(|length| length.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit as u64 => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("the request body is {length} bytes, over the limit of {limit} bytes"),
        ),
        _ => next.run(request).await,
    }
}

/// The response for a request body that is not the JSON expected.
fn rejected(rejection: &JsonRejection) -> Response {
    let kind = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        "too-large"
    } else {
        "bad-request"
    };
    error(rejection.status(), kind, rejection.body_text())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    plugin: String,
    id: Option<String>,
    user_id: Option<String>,
    #[serde(default)]
    variables: Map<String, Value>,
}

async fn start_session(
    State(api): State<Api>,
    body: Result<Json<StartRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => return rejected(&rejection),
    };
    let start = SessionStart {
        plugin: request.plugin,
        id: request.id,
        user_id: request.user_id,
        variables: request.variables,
    };
    match api.host.start_session(start, None).await {
        Ok(report) => (
            StatusCode::CREATED,
            Json(json!({
                "session": report.session,
                "turn": report.turn,
                "said": report.said,
                "state": report.state,
            })),
        )
            .into_response(),
        Err(err) => session_error(&err),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageRequest {
    text: String,
}

/// What a running message turn reports to its response.
enum Event {
    Say(String),
    Done(Result<crate::TurnReport, SessionError>),
}

/// Streams the reply as JSON lines: one `say` event per `say` as the plugin
/// says it, then `committed`, or `error` if the turn failed after it began
/// to speak. A turn that fails before saying anything (an unknown session,
/// an ended one, a trap) is answered with a plain JSON error and its status.
async fn send_message(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Result<Json<MessageRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => return rejected(&rejection),
    };
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let said = events.clone();
    let sink: crate::Sink = Arc::new(move |text: &str| {
        let _ = said.send(Event::Say(text.to_owned()));
    });
    tokio::spawn(async move {
        let done = api.host.send_message(&id, &request.text, Some(sink)).await;
        let _ = events.send(Event::Done(done));
    });
    let first = received
        .recv()
        .await
        .expect("the turn always reports its end");
    if let Event::Done(Err(err)) = &first {
        return session_error(err);
    }
    let rest = UnboundedReceiverStream::new(received);
    let lines = tokio_stream::StreamExt::map(
        tokio_stream::StreamExt::chain(tokio_stream::once(first), rest),
        |event| Ok::<_, std::convert::Infallible>(line(&event_json(event))),
    );
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

fn event_json(event: Event) -> Value {
    match event {
        Event::Say(text) => json!({ "event": "say", "text": text }),
        Event::Done(Ok(report)) => json!({
            "event": "committed",
            "turn": report.turn,
            "outcome": report.outcome,
            "state": report.state,
        }),
        Event::Done(Err(err)) => {
            json!({ "event": "error", "kind": err.cause.kind(), "message": err.to_string() })
        }
    }
}

fn line(event: &Value) -> Bytes {
    let mut text = event.to_string();
    text.push('\n');
    Bytes::from(text)
}

async fn call_tool(
    State(api): State<Api>,
    Path((id, tool)): Path<(String, String)>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let Json(arguments) = match body {
        Ok(body) => body,
        Err(rejection) => return rejected(&rejection),
    };
    match api.host.call_tool(&id, &tool, arguments, None).await {
        Ok(report) => Json(json!({
            "result": report.result,
            "cached": report.cached,
            "turn": report.turn.turn,
            "said": report.turn.said,
        }))
        .into_response(),
        Err(err) => session_error(&err),
    }
}

async fn show_session(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let store = api.host.store().clone();
    let loaded = tokio::task::spawn_blocking(move || store.load(&id).map(|record| (id, record)))
        .await
        .expect("loading a session panicked");
    match loaded {
        Ok((_, Some(record))) => Json(record).into_response(),
        Ok((id, None)) => error(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("session `{id}`: no such session"),
        ),
        Err(err) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            err.to_string(),
        ),
    }
}

#[derive(Deserialize)]
struct HistoryQuery {
    last: Option<usize>,
}

async fn history(
    State(api): State<Api>,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return error(rejection.status(), "bad-request", rejection.body_text()),
    };
    let store = api.host.store().clone();
    let last = query.last.unwrap_or(usize::MAX);
    match tokio::task::spawn_blocking(move || store.history(&id, last))
        .await
        .expect("reading history panicked")
    {
        Ok(messages) => Json(messages).into_response(),
        Err(err) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            err.to_string(),
        ),
    }
}

async fn end_session(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.host.end_session(&id).await {
        Ok(report) => Json(json!({ "turn": report.turn, "said": report.said })).into_response(),
        Err(err) => session_error(&err),
    }
}

async fn metrics(State(api): State<Api>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        api.host.metrics_text().await,
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

/// What a WebSocket client sends: one JSON object per text frame.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
enum Inbound {
    /// A message from the caller: `on-message`.
    Message { text: String },
    /// A tool call.
    Tool {
        tool: String,
        #[serde(default = "no_arguments")]
        arguments: Value,
    },
    /// The caller ends the session.
    End,
}

fn no_arguments() -> Value {
    json!({})
}

/// Opens a WebSocket on an active session: the caller sends messages, tool
/// calls and the end as JSON text frames, one turn at a time, and receives
/// the events of each turn as they happen, the same events as the streamed
/// reply of `POST /messages`, and `tool-result` for a tool call.
async fn converse(
    State(api): State<Api>,
    Path(id): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return error(
                rejection.status(),
                "bad-request",
                format!("this endpoint is a WebSocket: {}", rejection.body_text()),
            );
        }
    };
    let store = api.host.store().clone();
    let lookup = id.clone();
    let loaded = tokio::task::spawn_blocking(move || store.load(&lookup))
        .await
        .expect("loading a session panicked");
    match loaded {
        Ok(Some(record)) if record.status == crate::store::Status::Active => {
            upgrade.on_upgrade(move |socket| websocket(api.host, id, socket))
        }
        Ok(Some(_)) => error(
            StatusCode::CONFLICT,
            "ended",
            format!("session `{id}`: the session has ended"),
        ),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("session `{id}`: no such session"),
        ),
        Err(err) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            err.to_string(),
        ),
    }
}

/// Serves one WebSocket until the caller closes it or the session ends.
async fn websocket(host: Host, id: String, mut socket: WebSocket) {
    while let Some(Ok(frame)) = socket.recv().await {
        let text = match frame {
            Frame::Text(text) => text,
            Frame::Binary(_) => {
                let refusal = json!({ "event": "error", "kind": "bad-request", "message": "send JSON text frames, not binary ones" });
                if send(&mut socket, &refusal).await.is_err() {
                    return;
                }
                continue;
            }
            Frame::Close(_) => return,
            Frame::Ping(_) | Frame::Pong(_) => continue,
        };
        let inbound: Inbound = match serde_json::from_str(&text) {
            Ok(inbound) => inbound,
            Err(err) => {
                let refusal = json!({ "event": "error", "kind": "bad-request", "message": format!("a frame must be {{\"type\": \"message\", \"text\": ...}}, {{\"type\": \"tool\", \"tool\": ..., \"arguments\": {{...}}}} or {{\"type\": \"end\"}}: {err}") });
                if send(&mut socket, &refusal).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
        let said = events.clone();
        let sink: crate::Sink = Arc::new(move |text: &str| {
            let _ = said.send(event_json(Event::Say(text.to_owned())));
        });
        let (host, id) = (host.clone(), id.clone());
        tokio::spawn(async move {
            let done = match inbound {
                Inbound::Message { text } => {
                    event_json(Event::Done(host.send_message(&id, &text, Some(sink)).await))
                }
                Inbound::Tool { tool, arguments } => {
                    match host.call_tool(&id, &tool, arguments, Some(sink)).await {
                        Ok(report) => json!({
                            "event": "tool-result",
                            "tool": tool,
                            "result": report.result,
                            "cached": report.cached,
                            "turn": report.turn.turn,
                        }),
                        Err(err) => event_json(Event::Done(Err(err))),
                    }
                }
                Inbound::End => {
                    let ended = host.end_session(&id).await;
                    if let Ok(report) = &ended {
                        for text in &report.said {
                            let _ = events.send(event_json(Event::Say(text.clone())));
                        }
                    }
                    event_json(Event::Done(ended))
                }
            };
            let _ = events.send(done);
        });
        let mut ended = false;
        while let Some(event) = received.recv().await {
            ended |= event["outcome"]["outcome"] == "end";
            if send(&mut socket, &event).await.is_err() {
                return;
            }
        }
        if ended {
            let _ = socket.send(Frame::Close(None)).await;
            return;
        }
    }
}

async fn send(socket: &mut WebSocket, event: &Value) -> Result<(), axum::Error> {
    socket.send(Frame::Text(event.to_string().into())).await
}

async fn list_tools(State(api): State<Api>) -> Response {
    let tools: Vec<Value> = api
        .host
        .tools()
        .iter()
        .filter_map(|tool| {
            let spec = tool.plugin.tools.get(&tool.name)?;
            Some(json!({
                "address": format!("{}/{}", tool.plugin.name(), tool.name),
                "description": spec.description,
                "parameters": spec.parameters,
                "requires": spec.requires,
            }))
        })
        .collect();
    Json(tools).into_response()
}

/// The refusal of an admin request without the right bearer token, which
/// says nothing of what exists; `None` for a request with it.
fn refusal(api: &Api, headers: &HeaderMap) -> Option<Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match (&api.admin_token, presented) {
        (Some(token), Some(presented))
            if constant_time_eq(token.as_bytes(), presented.as_bytes()) =>
        {
            None
        }
        _ => Some(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the admin API needs `Authorization: Bearer TOKEN` with the server's admin token",
        )),
    }
}

/// Compares two byte strings in time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn describe(version: &PluginVersion) -> Value {
    json!({
        "name": version.name(),
        "version": version.manifest.version,
        "digest": version.digest.to_string(),
        "state_version": version.manifest.state_version,
    })
}

/// Every plugin: its active version, every loaded version, and its stats.
async fn list_plugins(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&api, &headers) {
        return refused;
    }
    let plugins: Vec<Value> = api
        .host
        .plugins()
        .iter()
        .map(|active| {
            let versions: Vec<Value> = api
                .host
                .plugin_versions(active.name())
                .iter()
                .map(|version| {
                    let mut described = describe(version);
                    described["active"] = json!(version.digest == active.digest);
                    described
                })
                .collect();
            json!({
                "name": active.name(),
                "active": describe(active),
                "versions": versions,
                "stats": api.host.metrics().stats(active.name()),
            })
        })
        .collect();
    Json(plugins).into_response()
}

#[derive(Deserialize)]
struct LoadQuery {
    /// Whether the loaded version becomes active (default: yes).
    activate: Option<bool>,
}

/// Loads the component in the body and, unless `?activate=false`, makes it
/// active; a version that fails to load changes nothing.
async fn load_plugin(
    State(api): State<Api>,
    headers: HeaderMap,
    query: Result<Query<LoadQuery>, QueryRejection>,
    body: Bytes,
) -> Response {
    if let Some(refused) = refusal(&api, &headers) {
        return refused;
    }
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return error(rejection.status(), "bad-request", rejection.body_text()),
    };
    let host = api.host.clone();
    let activate = query.activate.unwrap_or(true);
    match tokio::task::spawn_blocking(move || {
        if activate {
            host.load_plugin(&body)
        } else {
            host.stage_plugin(&body)
        }
    })
    .await
    .expect("loading a plugin panicked")
    {
        Ok(version) => (StatusCode::CREATED, Json(describe(&version))).into_response(),
        Err(err @ LoadError::Store(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            err.to_string(),
        ),
        Err(err) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-plugin",
            err.to_string(),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivateRequest {
    digest: String,
}

/// Makes a loaded version active.
async fn activate(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Json<ActivateRequest>, JsonRejection>,
) -> Response {
    if let Some(refused) = refusal(&api, &headers) {
        return refused;
    }
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => return rejected(&rejection),
    };
    let digest = request.digest.trim_start_matches("sha256:").to_owned();
    let host = api.host.clone();
    version_change(tokio::task::spawn_blocking(move || host.activate(&name, &digest)).await)
}

async fn roll_back(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Some(refused) = refusal(&api, &headers) {
        return refused;
    }
    let host = api.host.clone();
    version_change(tokio::task::spawn_blocking(move || host.roll_back(&name)).await)
}

/// The response to an activation or roll-back.
fn version_change(
    changed: Result<Result<Arc<PluginVersion>, ActivateError>, tokio::task::JoinError>,
) -> Response {
    let err = match changed.expect("activating a plugin version panicked") {
        Ok(version) => return Json(describe(&version)).into_response(),
        Err(err) => err,
    };
    let (code, kind) = match &err {
        ActivateError::Unknown { .. } => (StatusCode::NOT_FOUND, "not-found"),
        ActivateError::NoPrevious(_) => (StatusCode::CONFLICT, "no-previous-version"),
        ActivateError::Load { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-plugin"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    error(code, kind, err.to_string())
}
