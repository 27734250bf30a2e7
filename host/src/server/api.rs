//! What every handler shares: the host, the admin token and the callers'
//! authentication, and the JSON errors every refusal is answered with.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::host::Host;
use crate::limits::Tripped;
use crate::server::auth::rates::{Action, Slow};
use crate::server::auth::{Caller, Callers, bearer_token, constant_time_eq};
use crate::server::bounds::Open;
use crate::server::refusal::{error, forbidden, slow_message, too_fast};
use crate::server::sockets::Sockets;
use crate::session::error::{Cause, SessionError};
use crate::session::report::SessionStart;
use crate::store::SessionRecord;

/// Largest JSON request body, and WebSocket frame and message, in bytes.
pub(crate) const MAX_JSON_BODY: usize = 1 << 20;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) host: Host,
    /// The admin API's bearer token; `None` turns the admin API off.
    pub(crate) admin_token: Option<Arc<str>>,
    /// How callers of the session API authenticate.
    pub(crate) callers: Arc<Callers>,
    /// The WebSockets open on each session.
    pub(crate) sockets: Arc<Sockets>,
    /// What callers hold open: requests, streams, follows and MCP sessions.
    pub(crate) open: Arc<Open>,
}

/// Why a caller may not start a session.
pub(crate) enum StartRefused {
    /// Not its plugin, its user or its id namespace: 403.
    Forbidden(String),
    /// Over its rate of session starts: 429 with `Retry-After`.
    TooFast(Slow),
    /// It holds as many live sessions as it may (429), or they cannot be
    /// counted now (503): the status, kind and message.
    NoRoom(StatusCode, &'static str, String),
}

impl StartRefused {
    /// What the caller is told.
    pub(crate) fn message(&self) -> String {
        match self {
            StartRefused::Forbidden(message) | StartRefused::NoRoom(_, _, message) => {
                message.clone()
            }
            StartRefused::TooFast(slow) => slow_message(slow),
        }
    }
}

impl IntoResponse for StartRefused {
    fn into_response(self) -> Response {
        match self {
            StartRefused::Forbidden(message) => forbidden(message),
            StartRefused::TooFast(slow) => too_fast(&slow),
            StartRefused::NoRoom(status, kind, message) => error(status, kind, message),
        }
    }
}

impl Api {
    /// `start` as `caller` may make it (its plugin grant, its user, its id
    /// namespace, its rate of starts and its live sessions), or why not:
    /// the gate of `POST /v1/sessions`, `/v1/ws` and a plugin's first call
    /// over MCP. (A fork checks the rate and the room alone.)
    pub(crate) async fn admit_start(
        &self,
        caller: &Caller,
        start: SessionStart,
    ) -> Result<SessionStart, StartRefused> {
        let start = caller
            .session_start(start)
            .map_err(StartRefused::Forbidden)?;
        self.callers
            .admit(caller, Action::Start, self.host.clock().now_ms())
            .map_err(StartRefused::TooFast)?;
        self.room_for_a_session(caller)
            .await
            .map_err(|(status, kind, message)| StartRefused::NoRoom(status, kind, message))?;
        Ok(start)
    }

    /// Whether `caller` may start one more session under its bound of live
    /// sessions: else the status, kind and message of the refusal. Starts
    /// at the same moment may each see room for one more, as with a
    /// plugin's bound.
    pub(crate) async fn room_for_a_session(
        &self,
        caller: &Caller,
    ) -> Result<(), (StatusCode, &'static str, String)> {
        let Some((owner, most)) = self.callers.live_session_bound(caller) else {
            return Ok(());
        };
        match self.host.live_sessions_of(owner).await {
            Ok(live) if live >= most => Err((
                StatusCode::TOO_MANY_REQUESTS,
                "live-sessions",
                format!("`{owner}` has {live} live sessions, its limit of {most}: end one first"),
            )),
            Ok(_) => Ok(()),
            Err(err) => Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                err.to_string(),
            )),
        }
    }

    /// Whether `headers` present the server's admin token as their bearer
    /// token.
    pub(crate) fn is_admin(&self, headers: &HeaderMap) -> bool {
        matches!(
            (&self.admin_token, bearer_token(headers)),
            (Some(token), Some(bearer)) if constant_time_eq(token.as_bytes(), bearer.as_bytes())
        )
    }
}

/// A failed session operation is answered with the status its cause
/// deserves and the error as JSON.
impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let status = match &self.cause {
            Cause::NotFound | Cause::PluginNotLoaded(_) | Cause::UnknownTool { .. } => {
                StatusCode::NOT_FOUND
            }
            Cause::BadRequest(_) => StatusCode::BAD_REQUEST,
            // The plugin's own refusal (an error it returned) is the
            // caller's to handle, like arguments it cannot take; a plugin
            // that breaks (traps, limits) is a fault of the server side.
            Cause::InvalidArguments { .. } | Cause::Guest(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Cause::Precondition { .. } => StatusCode::PRECONDITION_FAILED,
            Cause::Ended
            | Cause::Exists
            | Cause::Conflict(_)
            | Cause::Busy(_)
            | Cause::Interrupted
            | Cause::Idle => StatusCode::CONFLICT,
            Cause::Limit(Tripped::LiveSessions(_) | Tripped::ConcurrentTurns(_)) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Cause::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Cause::LogFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::BAD_GATEWAY,
        };
        let mut body = json!({ "kind": self.cause.kind(), "message": self.to_string() });
        if let Some(output) = self.guest_output {
            body["guest_output"] = output.as_ref().into();
        }
        if let Cause::InvalidArguments { violations, .. } = &self.cause {
            body["violations"] = json!(violations);
        }
        (status, Json(body)).into_response()
    }
}

/// The response for a request body that is not the JSON expected.
pub(crate) fn rejected(rejection: &JsonRejection) -> Response {
    let kind = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        "too-large"
    } else {
        "bad-request"
    };
    error(rejection.status(), kind, rejection.body_text())
}

/// A query string, parsed; one that does not parse is answered 400
/// `bad-request` in JSON like every other refusal.
pub(crate) struct QueryOf<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryOf<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(query)| QueryOf(query))
            .map_err(|rejection| error(rejection.status(), "bad-request", rejection.body_text()))
    }
}

/// Session `id` as last committed, if `caller` may act on it; else the
/// answer for a caller who asked for one that does not exist or that it
/// does not reach (404, the same answer for both), one of a plugin its
/// grant does not name (403), or one that cannot be read now (503). The
/// one gate of every route that touches a session, on every action.
pub(crate) async fn reached_session(
    host: &Host,
    caller: &Caller,
    id: &str,
) -> Result<SessionRecord, Response> {
    match host.session(id).await {
        Ok(Some(record)) if caller.reaches(&record) => match caller.check_use(&record.plugin) {
            Ok(()) => Ok(record),
            Err(reason) => Err(forbidden(reason)),
        },
        Ok(_) => Err(error(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("session `{id}`: no such session"),
        )),
        Err(err) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            err.to_string(),
        )),
    }
}
