//! `/mcp` over HTTP around rmcp's service: a new MCP session counted
//! against its caller's bounds and rates before it opens, a request of an
//! open one served only to the caller it belongs to, and the transport's
//! own refusals answered in JSON like every other error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use axum::extract::{Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use serde::Deserialize;

use crate::names::check_user_id;
use crate::server::api::Api;
use crate::server::auth::Caller;
use crate::server::auth::rates::Action;
use crate::server::bounds::Place;
use crate::server::held::HeldBody;
use crate::server::refusal::{error, too_fast};

/// An MCP session as its opening request admitted it: its place among its
/// caller's and the server's, and whose it is. The session holds it until
/// it closes.
pub(super) struct Opened {
    _place: Place,
    owner: String,
    /// The user its sessions belong to, as its opening request named it
    /// (`/mcp?user_id=`) or its caller's token does.
    pub(super) user: Option<String>,
}

/// What the request that opens an MCP session may ask in its query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenQuery {
    user_id: Option<String>,
}

/// Handed by the request that opens an MCP session to the session.
#[derive(Clone)]
pub(super) struct NewSession(pub(super) Arc<Opened>);

/// Whose each open MCP session is, by its id.
#[derive(Default)]
pub(crate) struct McpOwners(Mutex<HashMap<String, Weak<Opened>>>);

impl McpOwners {
    /// Whether the open MCP session `id` is another caller's than `who`.
    fn is_others(&self, id: &str, who: &str) -> bool {
        let owners = self.0.lock().expect("MCP owners poisoned");
        owners
            .get(id)
            .and_then(Weak::upgrade)
            .is_some_and(|opened| opened.owner != who)
    }

    /// Records that MCP session `id` is `opened`'s, forgetting the closed.
    fn record(&self, id: &str, opened: &Arc<Opened>) {
        let mut owners = self.0.lock().expect("MCP owners poisoned");
        owners.retain(|_, opened| opened.strong_count() > 0);
        owners.insert(id.to_owned(), Arc::downgrade(opened));
    }
}

/// Admits a request of `/mcp`. One that names an open MCP session
/// (`Mcp-Session-Id`) is served only to the caller that opened it: to any
/// other, whatever it asks (its stream, its `DELETE`), the session is
/// unknown (404); its answer ends once the caller lapses, and a `DELETE`
/// that closed it is answered 204. One that would open a session (a POST
/// without it: an `initialize`) may name the user its sessions belong to
/// (`?user_id=`, under the rule of a start's), and is counted against its
/// caller's rate of session starts and bounds of MCP sessions, or refused
/// (429); the place goes back when the session closes, or at once if none
/// opens.
pub(crate) async fn admit(
    State((api, owners)): State<(Api, Arc<McpOwners>)>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Anyone);
    let who = caller.identity();
    if let Some(id) = request.headers().get("mcp-session-id") {
        if owners.is_others(id.to_str().unwrap_or_default(), &who) {
            return error(
                StatusCode::NOT_FOUND,
                "not-found",
                "no MCP session of this caller has this `Mcp-Session-Id`; initialize a new one",
            );
        }
        let lapsed = api.callers.lapse(&caller, api.host.clock().clone());
        let closing = request.method() == Method::DELETE;
        let response = next.run(request).await;
        // MCP clients take 200 or 204 for a closed session; rmcp says 202.
        if closing && response.status() == StatusCode::ACCEPTED {
            return StatusCode::NO_CONTENT.into_response();
        }
        return HeldBody::ending_on(response, lapsed);
    }
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let user = match Query::<OpenQuery>::try_from_uri(request.uri()) {
        Ok(Query(query)) => query.user_id,
        Err(err) => return error(StatusCode::BAD_REQUEST, "bad-request", err.body_text()),
    };
    if let Some(Err(reason)) = user.as_deref().map(check_user_id) {
        return error(StatusCode::BAD_REQUEST, "bad-request", reason);
    }
    let user = match caller.user(user) {
        Ok(user) => user,
        Err(reason) => return error(StatusCode::FORBIDDEN, "forbidden", reason),
    };
    if let Err(slow) = api
        .callers
        .admit(&caller, Action::Start, api.host.clock().now_ms())
    {
        return too_fast(&slow);
    }
    let opened = match api.open.mcp_session(&caller) {
        Ok(place) => Arc::new(Opened {
            _place: place,
            owner: who,
            user,
        }),
        Err(refusal) => return refusal.into_response(),
    };
    request
        .extensions_mut()
        .insert(NewSession(Arc::clone(&opened)));
    let response = next.run(request).await;
    if let Some(id) = response
        .headers()
        .get("mcp-session-id")
        .and_then(|id| id.to_str().ok())
    {
        owners.record(id, &opened);
    }
    response
}

/// Most bytes of an MCP transport error's text kept in its JSON answer.
const MAX_TRANSPORT_ERROR: usize = 4 << 10;

/// Answers a refusal of rmcp's transport (406 without the right `Accept`,
/// 415 for a body that is no JSON-RPC, 400 or 404 for a missing or unknown
/// `Mcp-Session-Id`) as every error of the server is: JSON with a `kind`.
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let typed = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || typed {
        return response;
    }
    let kind = match status {
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::NOT_ACCEPTABLE => "not-acceptable",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::PAYLOAD_TOO_LARGE => "too-large",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::FORBIDDEN => "forbidden",
        status if status.is_server_error() => "unavailable",
        _ => "bad-request",
    };
    let text = match axum::body::to_bytes(response.into_body(), MAX_TRANSPORT_ERROR).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => format!("the MCP transport refused the request ({status})"),
    };
    error(status, kind, text)
}
