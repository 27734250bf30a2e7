//! `agentbox serve`: the HTTP API for sessions and tools ([`sessions`],
//! [`timeline`] for time travel, and
//! [`websocket`] for a conversation on one socket), every tool over MCP
//! ([`mcp`]), and the admin API for plugins ([`admin`]), behind the
//! `server` feature.
//!
//! Every error is JSON, `{"kind": "...", "message": "..."}`, with a stable
//! `kind`, hyper's own answers to unreadable requests included ([`held`]):
//! the caller's mistakes (bad JSON, unknown plugin, session or tool,
//! invalid arguments, oversized bodies, and the plugin's own refusal) are
//! 4xx; a plugin that breaks in its turn is 502; the store failing is 503.
//! See `docs/api.md`.

mod access;
mod admin;
mod api;
pub mod auth;
pub mod bounds;
pub mod connections;
mod held;
pub mod mcp;
mod refusal;
mod sessions;
pub mod sockets;
mod timeline;
mod websocket;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any_service, get, post};

use crate::host::Host;
use crate::limits::MAX_COMPONENT_BYTES;
use crate::server::api::{Api, MAX_JSON_BODY};
use crate::server::auth::Callers;
use crate::server::bounds::{Bounds, Open};
use crate::server::connections::read_body_within;
pub use crate::server::connections::{ConnectionSettings, serve};
use crate::server::refusal::error;
use crate::server::sockets::{Sockets, WebSocketSettings};

/// Largest plugin upload, in bytes.
const MAX_PLUGIN_BODY: usize = MAX_COMPONENT_BYTES;

/// Who may reach a server, and how.
#[derive(Debug, Default)]
pub struct Access {
    /// The admin API's bearer token; without one every admin request is
    /// refused.
    pub admin_token: Option<String>,
    /// How callers of the session API authenticate, and their rates.
    pub callers: Arc<Callers>,
    /// Which pages may open WebSockets, and how many per session.
    pub websocket: WebSocketSettings,
    /// How many streams and MCP sessions callers may hold open.
    pub bounds: Bounds,
    /// How long a request's body may take to arrive (the rest of these
    /// settings are [`serve`]'s).
    pub connections: ConnectionSettings,
    /// Whether an open server (no keys, no JWT) serves a request whatever
    /// host its `Host` names: one listening beyond loopback (`--insecure`)
    /// does. Otherwise an open server serves loopback names only, so that
    /// a page that rebinds its own name to 127.0.0.1 reaches nothing.
    pub any_host: bool,
}

/// The routes of `agentbox serve`, serving `host` as `access` says.
pub fn router(host: Host, access: Access) -> Router {
    let any_host = access.any_host;
    let api = Api {
        host,
        admin_token: access.admin_token.map(Into::into),
        callers: access.callers,
        sockets: Arc::new(Sockets::new(access.websocket)),
        open: Arc::new(Open::new(access.bounds, access.connections.max_connections)),
    };
    let body_timeout = Duration::from_millis(access.connections.body_timeout_ms);
    let admin = Router::new()
        .route(
            "/v1/admin/plugins",
            get(admin::list_plugins).post(admin::load_plugin),
        )
        .route("/v1/admin/plugins/{name}/activate", post(admin::activate))
        .route("/v1/admin/plugins/{name}/rollback", post(admin::roll_back))
        .route(
            "/v1/admin/plugins/{name}/migrations",
            get(admin::list_pinned),
        )
        .route(
            "/v1/admin/plugins/{name}/migrations/retry",
            post(admin::retry_migrations),
        )
        .route(
            "/v1/admin/plugins/{name}/config",
            get(admin::get_config).put(admin::put_config),
        )
        .route(
            "/v1/admin/users/{user}",
            axum::routing::delete(admin::erase_user),
        )
        .route("/v1/admin/users/{user}/export", get(admin::export_user))
        .route("/v1/admin/sessions", get(admin::list_sessions))
        .route("/v1/admin/mcp", get(admin::list_mcp_servers))
        .route("/v1/admin/plugins/{name}/kv/{bucket}", get(admin::list_kv))
        .route(
            "/v1/admin/plugins/{name}/kv/{bucket}/{key}",
            get(admin::get_kv)
                .put(admin::put_kv)
                .delete(admin::delete_kv),
        )
        // Inside the token check: nobody's body is read before it passes.
        .route_layer(middleware::from_fn(move |request, next| {
            read_body_within(body_timeout, MAX_PLUGIN_BODY, request, next)
        }))
        .route_layer(middleware::from_fn_with_state(
            api.clone(),
            admin::require_token,
        ))
        .layer(DefaultBodyLimit::max(MAX_PLUGIN_BODY))
        .layer(middleware::from_fn(|request, next| {
            refuse_declared_over(MAX_PLUGIN_BODY, request, next)
        }));
    let open = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(sessions::metrics))
        .route("/v1/openapi.json", get(sessions::openapi));
    let router = Router::new()
        .route("/v1/tools", get(sessions::list_tools))
        .route("/v1/sessions", post(sessions::start_session))
        .route(
            "/v1/sessions/{id}",
            get(sessions::show_session).delete(sessions::end_session),
        )
        .route("/v1/sessions/{id}/history", get(sessions::history))
        .route("/v1/sessions/{id}/events", get(timeline::events))
        .route("/v1/sessions/{id}/state", get(timeline::state))
        .route("/v1/sessions/{id}/fork", post(timeline::fork))
        .route("/v1/sessions/{id}/rewind", post(timeline::rewind))
        .route("/v1/sessions/{id}/interrupt", post(sessions::interrupt))
        .route("/v1/events", get(timeline::feed))
        .route("/v1/sessions/{id}/messages", post(sessions::send_message))
        .route("/v1/sessions/{id}/tools/{tool}", post(sessions::call_tool))
        .route("/v1/sessions/{id}/ws", get(websocket::converse))
        .route("/v1/ws", get(websocket::start_and_converse))
        .route(
            "/mcp",
            any_service(mcp::service(api.clone()))
                .layer(middleware::map_response(mcp::json_errors))
                .layer(middleware::from_fn_with_state(
                    (api.clone(), Arc::new(mcp::McpOwners::default())),
                    mcp::admit,
                )),
        )
        .route_layer(middleware::from_fn(move |request, next| {
            read_body_within(body_timeout, MAX_JSON_BODY, request, next)
        }))
        .route_layer(middleware::from_fn_with_state(
            api.clone(),
            access::authenticate,
        ))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(middleware::from_fn(|request, next| {
            refuse_declared_over(MAX_JSON_BODY, request, next)
        }))
        .merge(open)
        .merge(admin)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not-found", "no such endpoint") })
        .layer(middleware::from_fn(close_after_refusing_a_body));
    let router = if any_host {
        router
    } else {
        router.layer(middleware::from_fn_with_state(
            api.clone(),
            refuse_other_hosts,
        ))
    };
    router.with_state(api)
}

/// Refuses a request whose `Host` is not a loopback name (403) while the
/// server is open, which it is until a keys file appears: on an open
/// server, a page whose name was rebound to 127.0.0.1 presents its own.
async fn refuse_other_hosts(State(api): State<Api>, request: Request, next: Next) -> Response {
    if !api.callers.is_open() {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .and_then(|host| host.parse::<axum::http::uri::Authority>().ok());
    let loopback = host.as_ref().is_some_and(|authority| {
        let name = authority.host();
        name.eq_ignore_ascii_case("localhost")
            || name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|address| address.is_loopback())
    });
    if loopback {
        return next.run(request).await;
    }
    error(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "this server is open to loopback only, and `Host: {}` names another host",
            host.map_or_else(|| "(none)".to_owned(), |authority| authority.to_string())
                .escape_debug()
        ),
    )
}

/// Answers a request that sent a body and was refused (4xx) with
/// `Connection: close`: it may have been refused before its body was read
/// (for its credentials, its declared size), and hyper then closes the
/// connection, which a client would otherwise take for one it can reuse.
async fn close_after_refusing_a_body(request: Request, next: Next) -> Response {
    let sends_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length != "0");
    let mut response = next.run(request).await;
    if sends_body && response.status().is_client_error() {
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
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
