//! The timeline API: a session's event log a page at a time or followed as
//! server-sent events, its state as of any turn, and forks and rewinds from
//! a turn, for the caller that reaches the session.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, State};
use std::convert::Infallible;

use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::host::timeline::EVENTS_PAGE;
use crate::server::api::{Api, QueryOf, reached_session, rejected};
use crate::server::auth::Caller;
use crate::server::auth::rates::Action;
use crate::server::refusal::{error, forbidden};
use crate::server::sessions::{held_back, read_of, turn_refused};
use crate::session::error::SessionError;
use crate::session::event::Event;
use crate::session::report::TurnEvent;

/// Events one page holds unless the reader asks for fewer.
const EVENTS_DEFAULT: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    after: Option<u64>,
    limit: Option<usize>,
    #[serde(default)]
    follow: bool,
}

/// The session's events numbered after `?after=N` (0: from the first),
/// oldest first: 100, or `?limit=` up to 1000, and fewer once they reach
/// 2 MiB. `next` is the `after` of the next page, or null once the page is
/// not full. With `?follow=true`, a
/// stream of server-sent events instead: each event from there on as it
/// commits, until the session ends, resumed after the `Last-Event-ID` a
/// reconnecting reader sends.
pub(super) async fn events(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    QueryOf(query): QueryOf<EventsQuery>,
    headers: HeaderMap,
) -> Response {
    if query.follow {
        return follow(&api, &caller, &id, query.after.unwrap_or(0), &headers).await;
    }
    let limit = query.limit.unwrap_or(EVENTS_DEFAULT);
    if limit == 0 || limit > EVENTS_PAGE {
        return error(
            StatusCode::BAD_REQUEST,
            "bad-request",
            format!("`limit` is {limit}; a page holds 1 to {EVENTS_PAGE} events"),
        );
    }
    if let Err(refusal) = read_of(&api, &caller, &id).await {
        return refusal;
    }
    match api
        .host
        .timeline()
        .events(&id, query.after.unwrap_or(0), limit)
        .await
    {
        Ok(page) => Json(page).into_response(),
        Err(err) => err.into_response(),
    }
}

/// The stream of `?follow=true`: each event as `id: SEQ`, `event: KIND`
/// and its JSON, after `after` or the `Last-Event-ID` header, which wins.
async fn follow(api: &Api, caller: &Caller, id: &str, after: u64, headers: &HeaderMap) -> Response {
    let after = match headers.get("last-event-id") {
        None => after,
        Some(value) => match value
            .to_str()
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
        {
            Some(seq) => seq,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    "`Last-Event-ID` is not the number of an event",
                );
            }
        },
    };
    if let Err(refusal) = read_of(api, caller, id).await {
        return refusal;
    }
    match api.open.follow(caller, id) {
        Ok(places) => sse(api, caller, api.host.timeline().follow(id, after), places),
        Err(refusal) => refusal.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FeedQuery {
    plugin: String,
    #[serde(default)]
    follow: bool,
}

/// `GET /v1/events?plugin=NAME&follow=true`: each event of the plugin's
/// sessions as it commits, as server-sent events; the caller's sessions
/// only, unless it is the admin. Live only, so `follow=true` is required.
pub(super) async fn feed(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    QueryOf(query): QueryOf<FeedQuery>,
) -> Response {
    if !query.follow {
        return error(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "a plugin's feed is live only: ask with `follow=true`, and read a session's past events at /v1/sessions/ID/events",
        );
    }
    let owner = match caller.feed_of(&query.plugin) {
        Ok(owner) => owner,
        Err(reason) => return forbidden(reason),
    };
    if api.host.plugin(&query.plugin).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "plugin-not-loaded",
            format!("plugin `{}` is not loaded", query.plugin.escape_debug()),
        );
    }
    match api.open.stream(&caller) {
        Ok(place) => sse(
            &api,
            &caller,
            api.host.timeline().follow_plugin(&query.plugin, owner),
            place,
        ),
        Err(refusal) => refusal.into_response(),
    }
}

/// `events` as server-sent events: each as `id: SEQ`, `event: KIND` and
/// its JSON, or `event: error` and the error, until they end or `caller`
/// no longer stands (its key revoked, its token expired), which a last
/// `error` event of kind `unauthorized` says; `places` are held until the
/// stream ends.
fn sse(
    api: &Api,
    caller: &Caller,
    events: mpsc::Receiver<Result<Event, SessionError>>,
    places: impl Send + Sync + 'static,
) -> Response {
    let lapse = Box::pin(api.callers.lapse(caller, api.host.clock().clone()));
    let stream = stream::unfold(Some((events, lapse, places)), |open| async move {
        let (mut events, mut lapse, places) = open?;
        tokio::select! {
            event = events.recv() => {
                let event = match event? {
                    Ok(event) => SseEvent::default()
                        .id(event.seq.to_string())
                        .event(event.kind.as_str())
                        .json_data(&event)
                        .expect("an event is JSON"),
                    Err(err) => SseEvent::default()
                        .event("error")
                        .json_data(TurnEvent::failed(&err))
                        .expect("an error is JSON"),
                };
                Some((Ok::<_, Infallible>(event), Some((events, lapse, places))))
            }
            reason = &mut lapse => {
                let lapsed = SseEvent::default()
                    .event("error")
                    .json_data(TurnEvent::refused("unauthorized", reason))
                    .expect("an error is JSON");
                Some((Ok(lapsed), None))
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StateQuery {
    turn: Option<u64>,
}

/// The session's state as of `?turn=N`, rebuilt from its log (the latest
/// turn without it).
pub(super) async fn state(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    QueryOf(query): QueryOf<StateQuery>,
) -> Response {
    let record = match read_of(&api, &caller, &id).await {
        Ok(record) => record,
        Err(refusal) => return refusal,
    };
    match api
        .host
        .timeline()
        .state_at(&id, query.turn.unwrap_or(record.turn))
        .await
    {
        Ok(state) => Json(state).into_response(),
        Err(err) => err.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ForkRequest {
    turn: u64,
    id: Option<String>,
}

/// A new session with the session's state and history as of `turn`, owned
/// by the same caller and user (201), its `id` chosen as a start's is.
pub(super) async fn fork(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<ForkRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => return rejected(&rejection),
    };
    if let Err(refusal) = reached_session(&api.host, &caller, &id).await {
        return refusal;
    }
    let new_id = match caller.session_id(request.id) {
        Ok(new_id) => new_id,
        Err(reason) => return forbidden(reason),
    };
    if let Some(refusal) = held_back(&api, &caller, Action::Start) {
        return refusal;
    }
    if let Err((status, kind, message)) = api.room_for_a_session(&caller).await {
        return error(status, kind, message);
    }
    match api.host.timeline().fork(&id, request.turn, new_id).await {
        Ok(forked) => (StatusCode::CREATED, Json(forked)).into_response(),
        Err(err) => err.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RewindRequest {
    turn: u64,
}

/// Sets the session back to `turn`.
pub(super) async fn rewind(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<RewindRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => return rejected(&rejection),
    };
    if let Some(refusal) = turn_refused(&api, &caller, &id).await {
        return refusal;
    }
    match api.host.timeline().rewind(&id, request.turn).await {
        Ok(state) => Json(state).into_response(),
        Err(err) => err.into_response(),
    }
}
