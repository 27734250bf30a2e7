//! The answers of refusals: every error of the server is JSON, `{"kind",
//! "message"}`, with the status its kind deserves; a caller going too fast
//! or holding too much is told when to come back.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::server::auth::rates::Slow;

/// A JSON error response.
pub(crate) fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({ "kind": kind, "message": message.into() });
    (status, Json(body)).into_response()
}

/// A caller without credentials that stand, answered 401 with
/// `WWW-Authenticate: Bearer`.
pub(crate) fn unauthorized(message: impl Into<String>) -> Response {
    let mut refusal = error(StatusCode::UNAUTHORIZED, "unauthorized", message);
    refusal
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    refusal
}

/// Why a caller may not do what it asked, answered 403.
pub(crate) fn forbidden(message: String) -> Response {
    error(StatusCode::FORBIDDEN, "forbidden", message)
}

/// A caller going faster than its rate, answered 429 with `Retry-After`.
pub(crate) fn too_fast(slow: &Slow) -> Response {
    let seconds = slow.retry_after_ms.div_ceil(1000).max(1);
    let mut refusal = error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        slow_message(slow),
    );
    refusal
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    refusal
}

/// What a caller going faster than its rate is told.
pub(crate) fn slow_message(slow: &Slow) -> String {
    format!(
        "this caller is over its rate of {}; retry in {} ms",
        slow.rate, slow.retry_after_ms
    )
}

/// How long a caller refused a place is asked to wait: places free as
/// streams close, which a caller cannot be told the time of.
const RETRY_AFTER_SECONDS: u32 = 1;

/// Why a caller may not open one more of something: it, a session, or the
/// server holds as many as it may. Answered 429 with `Retry-After`.
#[derive(Debug)]
pub(crate) struct NoRoom {
    kind: &'static str,
    message: String,
}

impl NoRoom {
    pub(crate) fn new(kind: &'static str, message: String) -> NoRoom {
        NoRoom { kind, message }
    }
}

impl IntoResponse for NoRoom {
    fn into_response(self) -> Response {
        let mut refusal = error(StatusCode::TOO_MANY_REQUESTS, self.kind, self.message);
        refusal
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        refusal
    }
}
