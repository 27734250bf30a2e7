//! `/mcp` over HTTP around rmcp's service: a new MCP session counted
//! against its caller's bounds and rates before it opens, and the
//! transport's own refusals answered in JSON like every other error.

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use crate::server::api::Api;
use crate::server::auth::Caller;
use crate::server::auth::rates::Action;
use crate::server::bounds::Place;
use crate::server::refusal::{error, too_fast};

/// The place a new MCP session takes among its caller's and the server's,
/// handed by the request that opens it to the session, which holds it
/// until it closes.
#[derive(Clone)]
pub(super) struct NewSessionPlace(pub(super) Arc<Mutex<Option<Place>>>);

/// Counts the MCP session a request would open (a POST without
/// `Mcp-Session-Id`: an `initialize`) against its caller's rate of session
/// starts and bounds of MCP sessions, or refuses it (429). The place goes
/// back when the session closes, or at once if none opens.
pub(crate) async fn admit_new_session(
    State(api): State<Api>,
    mut request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST || request.headers().contains_key("mcp-session-id") {
        return next.run(request).await;
    }
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Anyone);
    if let Err(slow) = api
        .callers
        .admit(&caller, Action::Start, api.host.clock().now_ms())
    {
        return too_fast(&slow);
    }
    match api.open.mcp_session(&caller) {
        Ok(place) => {
            request
                .extensions_mut()
                .insert(NewSessionPlace(Arc::new(Mutex::new(Some(place)))));
            next.run(request).await
        }
        Err(refusal) => refusal.into_response(),
    }
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
