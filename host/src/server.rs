//! `agentbox serve`: the HTTP API for sessions and tools, and the admin API
//! for plugins.
//!
//! Every error is JSON, `{"kind": "...", "message": "..."}`, with a stable
//! `kind`: the caller's mistakes (bad JSON, unknown plugin, session or tool,
//! invalid arguments, oversized bodies) are 4xx; a plugin that fails its turn
//! is 502; the store failing is 503. See `docs/api.md`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::session::{Cause, SessionError};
use crate::{Host, PluginVersion, SessionStart};

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

/// The routes of `agentbox serve`, serving `host`. Without `admin_token`
/// every admin request is refused.
pub fn router(host: Host, admin_token: Option<String>) -> Router {
    let api = Api {
        host,
        admin_token: admin_token.map(Into::into),
    };
    let admin = Router::new()
        .route("/v1/admin/plugins", get(list_plugins).post(load_plugin))
        .route("/v1/admin/plugins/{name}/rollback", post(roll_back))
        .layer(DefaultBodyLimit::max(MAX_PLUGIN_BODY))
        .layer(middleware::from_fn(|request, next| {
            refuse_declared_over(MAX_PLUGIN_BODY, request, next)
        }));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/tools", get(list_tools))
        .route("/v1/sessions", post(start_session))
        .route("/v1/sessions/{id}", get(show_session).delete(end_session))
        .route("/v1/sessions/{id}/history", get(history))
        .route("/v1/sessions/{id}/messages", post(send_message))
        .route("/v1/sessions/{id}/tools/{tool}", post(call_tool))
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
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, "store", err.to_string()),
    }
}

#[derive(Deserialize)]
struct HistoryQuery {
    last: Option<usize>,
}

async fn history(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Response {
    let store = api.host.store().clone();
    let last = query.last.unwrap_or(usize::MAX);
    match tokio::task::spawn_blocking(move || store.history(&id, last))
        .await
        .expect("reading history panicked")
    {
        Ok(messages) => Json(messages).into_response(),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, "store", err.to_string()),
    }
}

async fn end_session(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.host.end_session(&id).await {
        Ok(report) => Json(json!({ "turn": report.turn, "said": report.said })).into_response(),
        Err(err) => session_error(&err),
    }
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

async fn list_plugins(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&api, &headers) {
        return refused;
    }
    let plugins: Vec<Value> = api
        .host
        .plugins()
        .iter()
        .map(|plugin| describe(plugin))
        .collect();
    Json(plugins).into_response()
}

/// Loads the component in the body and activates it; a version that fails
/// to load changes nothing.
async fn load_plugin(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = refusal(&api, &headers) {
        return refused;
    }
    let host = api.host.clone();
    match tokio::task::spawn_blocking(move || host.load_plugin(&body))
        .await
        .expect("loading a plugin panicked")
    {
        Ok(version) => (StatusCode::CREATED, Json(describe(&version))).into_response(),
        Err(err) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-plugin",
            err.to_string(),
        ),
    }
}

async fn roll_back(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Some(refused) = refusal(&api, &headers) {
        return refused;
    }
    match api.host.roll_back(&name) {
        Some(version) => Json(describe(&version)).into_response(),
        None => error(
            StatusCode::CONFLICT,
            "no-previous-version",
            format!("plugin `{name}` has no previous version to roll back to"),
        ),
    }
}
