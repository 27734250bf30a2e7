//! The session API's door: each request is authenticated before anything
//! of it is read.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use crate::server::api::Api;
use crate::server::auth::{Caller, bearer_token};
use crate::server::held::HeldBody;
use crate::server::refusal::unauthorized;

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
            let place = match api.open.request(&caller) {
                Ok(place) => place,
                Err(refused) => return refused.into_response(),
            };
            request.extensions_mut().insert(caller);
            let response = next.run(request).await;
            match place {
                Some(place) => HeldBody::holding(response, place),
                None => response,
            }
        }
        Err(reason) => unauthorized(reason),
    }
}
