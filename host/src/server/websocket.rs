//! A conversation on one WebSocket: the caller sends messages, tool calls
//! and the end as JSON text frames, and receives each turn's events as they
//! happen. A socket opens on a session that exists, or starts its own (a
//! voice gateway's call in one step). A browser page may open one only from
//! an origin the operator allows, and a session has a bounded number of
//! sockets at once.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message as Frame, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::capability::output::Sink;

use crate::server::api::{Api, MAX_JSON_BODY, QueryOf, reached_session};
use crate::server::auth::Caller;
use crate::server::auth::rates::Action;
use crate::server::refusal::{NoRoom, error, slow_message};

use crate::session::error::SessionError;
use crate::session::report::{SessionStart, TurnEvent};
use crate::store::Status;

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
    /// The caller stops the running turn (barge-in).
    Interrupt,
}

fn no_arguments() -> Value {
    json!({})
}

/// Opens a WebSocket on an active session: the caller sends messages, tool
/// calls and the end as JSON text frames, one turn at a time, and receives
/// the events of each turn as they happen, the same events as the streamed
/// reply of `POST /messages`, and `tool-result` for a tool call.
pub(super) async fn converse(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Some(reason) = api.sockets.refuse_origin(&headers) {
        return error(StatusCode::FORBIDDEN, "forbidden", reason);
    }
    let record = match reached_session(&api.host, &caller, &id).await {
        Ok(record) => record,
        Err(refusal) => return refusal,
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return not_a_socket(&rejection),
    };
    if record.status != Status::Active {
        return error(
            StatusCode::CONFLICT,
            "ended",
            format!("session `{id}`: the session has ended"),
        );
    }
    let Some(open) = api.sockets.open(&id) else {
        return NoRoom::new(
            "too-many-sockets",
            format!(
                "session `{id}` has {} sockets open, as many as it may; close one first",
                api.sockets.settings.max_per_session
            ),
        )
        .into_response();
    };
    let stream = match api.open.stream(&caller) {
        Ok(stream) => stream,
        Err(refusal) => return refusal.into_response(),
    };
    upgrade
        .max_frame_size(MAX_JSON_BODY)
        .max_message_size(MAX_JSON_BODY)
        .on_upgrade(move |socket| async move {
            websocket(api, caller, id, socket).await;
            drop((open, stream));
        })
}

/// What a socket that starts its own session says in its query: what the
/// body of `POST /v1/sessions` says, the variables as a JSON object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StartQuery {
    plugin: String,
    id: Option<String>,
    user_id: Option<String>,
    variables: Option<String>,
}

/// Opens a WebSocket that starts a session, under the same checks as
/// `POST /v1/sessions`, made before the upgrade: the start's events come
/// first (its `committed` event names the session), then the socket serves
/// the session as [`converse`] does.
pub(super) async fn start_and_converse(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    query: Result<QueryOf<StartQuery>, Response>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Some(reason) = api.sockets.refuse_origin(&headers) {
        return error(StatusCode::FORBIDDEN, "forbidden", reason);
    }
    let QueryOf(query) = match query {
        Ok(query) => query,
        Err(refusal) => return refusal,
    };
    let variables = match query.variables.as_deref().map(serde_json::from_str) {
        None => Map::new(),
        Some(Ok(variables)) => variables,
        Some(Err(err)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad-request",
                format!("`variables` must be a JSON object: {err}"),
            );
        }
    };
    let start = SessionStart {
        plugin: query.plugin,
        id: query.id,
        user_id: query.user_id,
        owner: None,
        variables,
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return not_a_socket(&rejection),
    };
    let stream = match api.open.stream(&caller) {
        Ok(stream) => stream,
        Err(refusal) => return refusal.into_response(),
    };
    let start = match api.admit_start(&caller, start).await {
        Ok(start) => start,
        Err(refused) => return refused.into_response(),
    };
    upgrade
        .max_frame_size(MAX_JSON_BODY)
        .max_message_size(MAX_JSON_BODY)
        .on_upgrade(move |mut socket| async move {
            let host = api.host.clone();
            let mut received = spawn_turn(move |sink, _| async move {
                host.start_session(start, Some(sink))
                    .await
                    .map(|report| TurnEvent::committed(&report))
            });
            let mut started = None;
            while let Some(event) = received.recv().await {
                if let TurnEvent::Committed { session, .. } = &event {
                    started = (!event.ends_session()).then(|| session.clone());
                }
                if send(&mut socket, &event).await.is_err() {
                    return;
                }
            }
            // A new session has no socket yet, so this one always fits.
            match started.and_then(|id| Some((api.sockets.open(&id)?, id))) {
                Some((open, id)) => {
                    websocket(api, caller, id, socket).await;
                    drop(open);
                }
                None => {
                    let _ = socket.send(Frame::Close(None)).await;
                }
            }
            drop(stream);
        })
}

/// The answer to a request for a socket that is not a WebSocket upgrade.
fn not_a_socket(rejection: &WebSocketUpgradeRejection) -> Response {
    error(
        rejection.status(),
        "bad-request",
        format!("this endpoint is a WebSocket: {}", rejection.body_text()),
    )
}

/// Frames a client may send while a turn runs, taken in order after it.
const QUEUED_FRAMES: usize = 16;

/// Serves one WebSocket for `caller` until it closes it or the session
/// ends; each message, tool call and end counts as a turn of its rate.
/// While a turn runs, the socket keeps reading: an interrupt stops the
/// turn, and other frames wait their turn.
async fn websocket(api: Api, caller: Caller, id: String, mut socket: WebSocket) {
    let lapse = api.callers.lapse(&caller, api.host.clock().clone());
    tokio::pin!(lapse);
    let mut queued = VecDeque::new();
    loop {
        let inbound = match queued.pop_front() {
            Some(inbound) => inbound,
            None => match tokio::select! {
                read = read(&mut socket) => read,
                reason = &mut lapse => return close_lapsed(&mut socket, reason).await,
            } {
                Read::Frame(inbound) => inbound,
                Read::Refused(refusal) => {
                    if send(&mut socket, &refusal).await.is_err() {
                        return;
                    }
                    continue;
                }
                Read::Closed => return,
            },
        };
        if matches!(inbound, Inbound::Interrupt) {
            let idle = api
                .host
                .interrupt(&id)
                .await
                .err()
                .map(|err| TurnEvent::failed(&err));
            if let Some(idle) = idle
                && send(&mut socket, &idle).await.is_err()
            {
                return;
            }
            continue;
        }
        if let Err(slow) = api
            .callers
            .admit(&caller, Action::Turn, api.host.clock().now_ms())
        {
            let refusal = TurnEvent::refused("rate-limited", slow_message(&slow));
            if send(&mut socket, &refusal).await.is_err() {
                return;
            }
            continue;
        }
        let mut received = turn(&api, &id, inbound);
        let mut ended = false;
        loop {
            let event = tokio::select! {
                event = received.recv() => match event {
                    Some(event) => event,
                    None => break,
                },
                read = read(&mut socket) => match read {
                    // The turn's own failure answers an interrupt; one that
                    // finds the turn just over is answered `idle`.
                    Read::Frame(Inbound::Interrupt) => match api.host.interrupt(&id).await {
                        Ok(()) => continue,
                        Err(err) => TurnEvent::failed(&err),
                    },
                    Read::Frame(inbound) if queued.len() < QUEUED_FRAMES => {
                        queued.push_back(inbound);
                        continue;
                    }
                    Read::Frame(_) => TurnEvent::refused(
                        "too-many-frames",
                        format!("{QUEUED_FRAMES} frames already wait for the running turn; this one was dropped"),
                    ),
                    Read::Refused(refusal) => refusal,
                    Read::Closed => return,
                },
                // The running turn goes on and commits: it was admitted
                // while the caller stood.
                reason = &mut lapse => return close_lapsed(&mut socket, reason).await,
            };
            ended |= event.ends_session();
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

/// Closes the socket of a caller that no longer stands, saying why in a
/// last `error` event of kind `unauthorized`.
async fn close_lapsed(socket: &mut WebSocket, reason: String) {
    let lapsed = TurnEvent::refused("unauthorized", reason);
    if send(socket, &lapsed).await.is_ok() {
        let close = CloseFrame {
            code: close_code::POLICY,
            reason: "unauthorized".into(),
        };
        let _ = socket.send(Frame::Close(Some(close))).await;
    }
}

/// What reading the socket gave.
enum Read {
    Frame(Inbound),
    /// A frame the socket cannot take, with its refusal.
    Refused(TurnEvent),
    Closed,
}

/// The next frame the client sent, skipping pings.
async fn read(socket: &mut WebSocket) -> Read {
    loop {
        let text = match socket.recv().await {
            Some(Ok(Frame::Text(text))) => text,
            Some(Ok(Frame::Binary(_))) => {
                return Read::Refused(bad_request("send JSON text frames, not binary ones".into()));
            }
            Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => continue,
            Some(Ok(Frame::Close(_)) | Err(_)) | None => return Read::Closed,
        };
        return match serde_json::from_str(&text) {
            Ok(inbound) => Read::Frame(inbound),
            Err(err) => Read::Refused(bad_request(format!(
                "a frame must be {{\"type\": \"message\", \"text\": ...}}, {{\"type\": \"tool\", \"tool\": ..., \"arguments\": {{...}}}}, {{\"type\": \"interrupt\"}} or {{\"type\": \"end\"}}: {err}"
            ))),
        };
    }
}

/// Starts the turn `inbound` asks for: its events as they happen, the last
/// one its outcome.
fn turn(api: &Api, id: &str, inbound: Inbound) -> mpsc::UnboundedReceiver<TurnEvent> {
    let (host, id) = (api.host.clone(), id.to_owned());
    spawn_turn(move |sink, events| async move {
        match inbound {
            Inbound::Message { text } => host
                .send_message(&id, &text, Some(sink))
                .await
                .map(|report| TurnEvent::committed(&report)),
            Inbound::Tool { tool, arguments } => host
                .call_tool(&id, &tool, arguments, Some(sink))
                .await
                .map(|report| TurnEvent::tool_result(&tool, &report)),
            Inbound::End => host.end_session(&id).await.map(|report| {
                for text in &report.said {
                    let _ = events.send(TurnEvent::Say { text: text.clone() });
                }
                TurnEvent::committed(&report)
            }),
            Inbound::Interrupt => unreachable!("an interrupt is no turn"),
        }
    })
}

/// Runs `work` on its own task with a sink that sends each `say` as an
/// event: the events as they happen, the last one the outcome `work`
/// answers (which may send events of its own first).
fn spawn_turn<F, Work>(work: F) -> mpsc::UnboundedReceiver<TurnEvent>
where
    F: FnOnce(Sink, mpsc::UnboundedSender<TurnEvent>) -> Work,
    Work: Future<Output = Result<TurnEvent, SessionError>> + Send + 'static,
{
    let (events, received) = mpsc::unbounded_channel();
    let said = events.clone();
    let sink: Sink = Arc::new(move |text: &str| {
        let _ = said.send(TurnEvent::Say {
            text: text.to_owned(),
        });
    });
    let done = work(sink, events.clone());
    tokio::spawn(async move {
        let done = done.await;
        let _ = events.send(done.unwrap_or_else(|err| TurnEvent::failed(&err)));
    });
    received
}

/// The refusal of a frame the socket cannot take.
fn bad_request(message: String) -> TurnEvent {
    TurnEvent::refused("bad-request", message)
}

async fn send(socket: &mut WebSocket, event: &TurnEvent) -> Result<(), axum::Error> {
    let text = serde_json::to_string(event).expect("an event is JSON");
    socket.send(Frame::Text(text.into())).await
}
