//! The session API: start a session, send it messages with the reply
//! streamed as it is said, call its tools, read it and its history, end it;
//! list the tools; and the server's metrics and OpenAPI document. Every
//! handler of a session acts for the [`Caller`] that authenticated, on the
//! sessions it reaches only.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::capability::output::Sink;

use crate::server::api::{Api, QueryOf, reached_session, rejected};
use crate::server::auth::Caller;
use crate::server::auth::rates::Action;
use crate::server::refusal::{error, too_fast, unauthorized};
use crate::session::error::SessionError;
use crate::session::report::{SessionStart, TurnEvent};
use crate::store::SessionRecord;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StartRequest {
    plugin: String,
    id: Option<String>,
    user_id: Option<String>,
    #[serde(default)]
    variables: Map<String, Value>,
}

pub(super) async fn start_session(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
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
        owner: None,
        variables: request.variables,
    };
    let start = match api.admit_start(&caller, start).await {
        Ok(start) => start,
        Err(refused) => return refused.into_response(),
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
        Err(err) => err.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MessageRequest {
    text: String,
}

/// Streams the reply as JSON lines: one `say` event per `say` as the plugin
/// says it, then `committed`, or `error` if the turn failed after it began
/// to speak. A turn that fails before saying anything (an unknown session,
/// an ended one, a trap) is answered with a plain JSON error and its status.
pub(super) async fn send_message(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<MessageRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => return rejected(&rejection),
    };
    if let Some(refusal) = turn_refused(&api, &caller, &id).await {
        return refusal;
    }
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let said = events.clone();
    let sink: Sink = Arc::new(move |text: &str| {
        let _ = said.send(Ok(TurnEvent::Say {
            text: text.to_owned(),
        }));
    });
    tokio::spawn(async move {
        let done = api.host.send_message(&id, &request.text, Some(sink)).await;
        let _ = events.send(done.map(|report| TurnEvent::committed(&report)));
    });
    let first = match received
        .recv()
        .await
        .expect("the turn always reports its end")
    {
        Ok(event) => event,
        Err(err) => return err.into_response(),
    };
    let rest = UnboundedReceiverStream::new(received)
        .map(|event| event.unwrap_or_else(|err: SessionError| TurnEvent::failed(&err)));
    let lines = tokio_stream::once(first)
        .chain(rest)
        .map(|event| Ok::<_, std::convert::Infallible>(line(&event)));
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// The answer to a turn `caller` may not run in session `id`: one it does
/// not reach ([`reached_session`]), or one over its rate (429). Only a
/// principal's reach is bounded, so only for a principal is the record
/// read; for any other caller the turn itself finds out whether the
/// session exists.
pub(super) async fn turn_refused(api: &Api, caller: &Caller, id: &str) -> Option<Response> {
    if caller.is_bounded()
        && let Err(refusal) = reached_session(&api.host, caller, id).await
    {
        return Some(refusal);
    }
    held_back(api, caller, Action::Turn)
}

/// Session `id` as last committed, for `caller` to read: one it reaches
/// ([`reached_session`]), within its rate of reads (429).
pub(super) async fn read_of(
    api: &Api,
    caller: &Caller,
    id: &str,
) -> Result<SessionRecord, Response> {
    let record = reached_session(&api.host, caller, id).await?;
    match held_back(api, caller, Action::Read) {
        Some(refusal) => Err(refusal),
        None => Ok(record),
    }
}

/// Counts `action` by `caller`; the 429 answer if it is going too fast.
pub(super) fn held_back(api: &Api, caller: &Caller, action: Action) -> Option<Response> {
    api.callers
        .admit(caller, action, api.host.clock().now_ms())
        .err()
        .map(|slow| too_fast(&slow))
}

/// One event as a line of JSON.
fn line(event: &TurnEvent) -> Bytes {
    let mut line = serde_json::to_vec(event).expect("an event is JSON");
    line.push(b'\n');
    Bytes::from(line)
}

pub(super) async fn call_tool(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path((id, tool)): Path<(String, String)>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let Json(arguments) = match body {
        Ok(body) => body,
        Err(rejection) => return rejected(&rejection),
    };
    if let Some(refusal) = turn_refused(&api, &caller, &id).await {
        return refusal;
    }
    match api.host.call_tool(&id, &tool, arguments, None).await {
        Ok(report) => Json(json!({
            "result": report.result,
            "cached": report.cached,
            "turn": report.turn.turn,
            "said": report.turn.said,
        }))
        .into_response(),
        Err(err) => err.into_response(),
    }
}

pub(super) async fn show_session(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match read_of(&api, &caller, &id).await {
        Ok(record) => Json(record).into_response(),
        Err(refusal) => refusal,
    }
}

/// Messages of history a reader gets unless it asks for fewer.
const HISTORY_PAGE: usize = 100;

/// Most messages of history one read returns.
const MAX_HISTORY_PAGE: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    last: Option<usize>,
}

/// The session's latest messages: the last 100, or `?last=N` up to 1000.
pub(super) async fn history(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    QueryOf(query): QueryOf<HistoryQuery>,
) -> Response {
    let last = query.last.unwrap_or(HISTORY_PAGE);
    if last > MAX_HISTORY_PAGE {
        return error(
            StatusCode::BAD_REQUEST,
            "bad-request",
            format!("`last` is {last}, over the most one read returns, {MAX_HISTORY_PAGE}"),
        );
    }
    if let Err(refusal) = read_of(&api, &caller, &id).await {
        return refusal;
    }
    match api.host.history(&id, last).await {
        Ok(messages) => Json(messages).into_response(),
        Err(err) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            err.to_string(),
        ),
    }
}

pub(super) async fn end_session(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    if let Some(refusal) = turn_refused(&api, &caller, &id).await {
        return refusal;
    }
    match api.host.end_session(&id).await {
        Ok(report) => Json(json!({ "turn": report.turn, "said": report.said })).into_response(),
        Err(err) => err.into_response(),
    }
}

/// Stops the session's running turn: it fails as `interrupted` and
/// commits no state; what the agent had said is recorded, marked
/// interrupted. 409 `idle` when no turn is running.
pub(super) async fn interrupt(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    if let Err(refusal) = reached_session(&api.host, &caller, &id).await {
        return refusal;
    }
    match api.host.interrupt(&id).await {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({ "interrupted": id }))).into_response(),
        Err(err) => err.into_response(),
    }
}

/// The server's metrics: anyone's on an open server; once it requires
/// credentials, the admin's alone, since they name every plugin and the
/// origins each may reach.
pub(super) async fn metrics(State(api): State<Api>, headers: HeaderMap) -> Response {
    if !api.callers.is_open() && !api.is_admin(&headers) {
        return unauthorized(
            "the metrics of a server that requires credentials take the admin token",
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        api.host.metrics_text().await,
    )
        .into_response()
}

pub(super) async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../openapi.json"),
    )
        .into_response()
}

/// The tools of the plugins the caller may use.
pub(super) async fn list_tools(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let tools: Vec<Value> = api
        .host
        .tools()
        .iter()
        .filter(|tool| caller.may_use(tool.plugin.name()))
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
