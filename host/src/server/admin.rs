//! The admin API: list, load, stage, activate and roll back plugin
//! versions, for callers with the server's admin token.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::plugin::{ActivateError, LoadError, PluginVersion};
use crate::server::api::{Api, error, rejected};

/// Lets an admin request through only with the server's admin token as
/// its bearer token, before anything of the request is read, and refuses
/// it otherwise saying nothing of what exists.
pub(super) async fn require_token(
    State(api): State<Api>,
    request: Request,
    next: Next,
) -> Response {
    if api.is_admin(request.headers()) {
        next.run(request).await
    } else {
        error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the admin API needs `Authorization: Bearer TOKEN` with the server's admin token",
        )
    }
}

fn describe(version: &PluginVersion) -> Value {
    json!({
        "name": version.name(),
        "version": version.manifest.version,
        "digest": version.digest.to_string(),
        "state_version": version.manifest.state_version,
    })
}

/// Every plugin: its active version, every loaded version, and its stats.
pub(super) async fn list_plugins(State(api): State<Api>) -> Response {
    let plugins: Vec<Value> = api
        .host
        .plugins()
        .iter()
        .map(|active| {
            let versions: Vec<Value> = api
                .host
                .plugin_versions(active.name())
                .iter()
                .map(|version| {
                    let mut described = describe(version);
                    described["active"] = json!(version.digest == active.digest);
                    described
                })
                .collect();
            json!({
                "name": active.name(),
                "active": describe(active),
                "versions": versions,
                "stats": api.host.metrics().stats(active.name()),
            })
        })
        .collect();
    Json(plugins).into_response()
}

#[derive(Deserialize)]
pub(super) struct LoadQuery {
    /// Whether the loaded version becomes active (default: yes).
    activate: Option<bool>,
}

/// Loads the component in the body and, unless `?activate=false`, makes it
/// active; a version that fails to load changes nothing.
pub(super) async fn load_plugin(
    State(api): State<Api>,
    query: Result<Query<LoadQuery>, QueryRejection>,
    body: Bytes,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return error(rejection.status(), "bad-request", rejection.body_text()),
    };
    let host = api.host.clone();
    let activate = query.activate.unwrap_or(true);
    match tokio::task::spawn_blocking(move || {
        if activate {
            host.load_plugin(&body)
        } else {
            host.stage_plugin(&body)
        }
    })
    .await
    .expect("loading a plugin panicked")
    {
        Ok(version) => (StatusCode::CREATED, Json(describe(&version))).into_response(),
        Err(err @ LoadError::Store(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            err.to_string(),
        ),
        Err(err) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-plugin",
            err.to_string(),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ActivateRequest {
    digest: String,
}

/// Makes a loaded version active.
pub(super) async fn activate(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: Result<Json<ActivateRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => return rejected(&rejection),
    };
    let digest = request.digest.trim_start_matches("sha256:").to_owned();
    let host = api.host.clone();
    version_change(tokio::task::spawn_blocking(move || host.activate(&name, &digest)).await)
}

pub(super) async fn roll_back(State(api): State<Api>, Path(name): Path<String>) -> Response {
    let host = api.host.clone();
    version_change(tokio::task::spawn_blocking(move || host.roll_back(&name)).await)
}

/// The response to an activation or roll-back.
fn version_change(
    changed: Result<Result<Arc<PluginVersion>, ActivateError>, tokio::task::JoinError>,
) -> Response {
    let err = match changed.expect("activating a plugin version panicked") {
        Ok(version) => return Json(describe(&version)).into_response(),
        Err(err) => err,
    };
    let (code, kind) = match &err {
        ActivateError::Unknown { .. } => (StatusCode::NOT_FOUND, "not-found"),
        ActivateError::NoPrevious(_) => (StatusCode::CONFLICT, "no-previous-version"),
        ActivateError::Load { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-plugin"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    error(code, kind, err.to_string())
}
