//! The session API's door: each request is authenticated before anything
//! of it is read, and refusals of callers that may not, or not yet, do what
//! they ask.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::server::api::{Api, error};
use crate::server::auth::rates::Slow;
use crate::server::auth::{Caller, bearer_token};

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

/// Authenticates a request of the session API before anything of it is
/// read, and hands the handlers its [`Caller`]; refuses it with 401
/// otherwise.
pub(crate) async fn authenticate(
    State(api): State<Api>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = if api.is_admin(request.headers()) {
        Ok(Caller::Admin)
    } else {
        let bearer = bearer_token(request.headers());
        api.callers.authenticate(bearer, api.host.clock().now_ms())
    };
    match caller {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(reason) => {
            let mut refusal = error(StatusCode::UNAUTHORIZED, "unauthorized", reason);
            refusal
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            refusal
        }
    }
}
