//! The server's connections: HTTP/1.1 (HTTP/2 comes through a proxy in
//! front), how many may be open at once, how long a client may take to
//! send a request's head (and, on a kept-alive connection, to start the
//! next one) and its body, and how they end when the server stops.
//!
//! A connection past the cap is closed as soon as it is accepted, so that
//! idle or stalled clients cannot take the process's file descriptors and
//! memory from everyone else; the cap is kept below the process's limit of
//! open files, so `/healthz` and the store keep answering. A WebSocket
//! keeps its connection's place for as long as it is open.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{Semaphore, watch};

use crate::server::held::Held;
use crate::server::refusal::error;

/// How long a stopping server waits for the requests under way to finish.
const DRAIN: Duration = Duration::from_secs(5);

/// How many connections a server holds open and how long it waits for a
/// client, as the `[server]` table of the settings file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionSettings {
    /// Connections open at once; one more is closed as soon as it is
    /// accepted.
    pub max_connections: usize,
    /// Milliseconds a client may take to send a request's head, and a
    /// kept-alive connection may wait for the next request.
    pub header_timeout_ms: u64,
    /// Milliseconds a client may take to send a request's body.
    pub body_timeout_ms: u64,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            max_connections: 4096,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
        }
    }
}

/// The most connections a server may be set to hold open.
const MAX_CONNECTIONS: usize = 1 << 20;

impl ConnectionSettings {
    /// Refuses settings that would stop the server from serving anyone.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(format!(
                "max_connections must be from 1 to {MAX_CONNECTIONS}, not {}",
                self.max_connections
            ));
        }
        for (name, value) in [
            ("header_timeout_ms", self.header_timeout_ms),
            ("body_timeout_ms", self.body_timeout_ms),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Serves `router` over HTTP/1.1 on `listener` as `settings` say until
/// `stop` resolves, then lets the requests under way finish (a WebSocket,
/// once upgraded, is no longer the server's request). Every connection
/// writes without delay (`TCP_NODELAY`): a streamed reply is several small
/// writes, and Nagle's algorithm would hold each one after the first until
/// the client's delayed ACK, some 40 ms.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    settings: ConnectionSettings,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(settings.header_timeout_ms));
    let open = Arc::new(Semaphore::new(settings.max_connections));
    let (stopping, stopped) = watch::channel(());
    let mut stop = pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors or memory for a moment: the
                // connections already open go on; wait before accepting more.
                tracing::warn!(error = %err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(place) = open.clone().try_acquire_owned() else {
            tracing::debug!(
                max_connections = settings.max_connections,
                "closed a connection past the cap"
            );
            continue;
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::warn!(error = %err, "cannot set TCP_NODELAY on a connection");
        }
        // The socket holds the place, so a WebSocket keeps it once upgraded.
        let connection = builder
            .serve_connection(
                TokioIo::new(Held::new(stream, place)),
                TowerToHyperService::new(router.clone()),
            )
            .with_upgrades();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let mut connection = pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = stopped.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = ended {
                tracing::debug!(error = %err, "a connection ended in an error");
            }
            drop(stopped);
        });
    }
    drop(listener);
    // Each connection finishes its request under way and closes; when the
    // last one lets go of its receiver, all have. (An upgraded WebSocket
    // no longer is one: it ends with the process.) A response that never
    // ends, such as an MCP client's event stream, is cut at the bound.
    drop(stopped);
    let _ = stopping.send(());
    if tokio::time::timeout(DRAIN, stopping.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open = stopping.receiver_count(),
            "connections still open {} s after the server began stopping are closed",
            DRAIN.as_secs()
        );
    }
    Ok(())
}

/// Reads a request's body, at most `limit` bytes, within `timeout`,
/// before the handler runs: a client that sends its body slowly is
/// answered 408 instead of holding the request open.
pub(super) async fn read_body_within(
    timeout: Duration,
    limit: usize,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(err)) => {
            let over = std::error::Error::source(&err)
                .is_some_and(|cause| cause.is::<http_body_util::LengthLimitError>());
            return if over {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too-large",
                    format!("the request body is over the limit of {limit} bytes"),
                )
            } else {
                error(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    format!("the request body could not be read: {err}"),
                )
            };
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "the request body did not arrive within {} ms",
                    timeout.as_millis()
                ),
            );
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
