//! The admin API, for callers with the server's admin token: list, load,
//! stage, activate and roll back plugin versions; export and erase a
//! user's data.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::host::config::ConfigError;
use crate::host::operator_kv::{BucketRef, OperatorKvError};
use crate::host::users::{UserDataError, value_json};
use crate::plugin::{ActivateError, LoadError, PluginVersion};
use crate::server::api::{Api, QueryOf, rejected};
use crate::server::refusal::error;
use crate::store::{SessionFilter, SessionStoreError, Status};

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
        "digest": version.digest_hex(),
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
            let outbound = api.host.outbound(active.name());
            json!({
                "name": active.name(),
                "active": describe(active),
                "versions": versions,
                "stats": api.host.metrics().stats(active.name()),
                "outbound": outbound.describe(),
                "may_call": api.host.may_call(active.name()),
            })
        })
        .collect();
    Json(plugins).into_response()
}

/// The policy's MCP servers: where each is reached (header values never
/// shown), whether it is connected or why not, and its tools.
pub(super) async fn list_mcp_servers(State(api): State<Api>) -> Response {
    Json(api.host.mcp().servers()).into_response()
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
    QueryOf(query): QueryOf<LoadQuery>,
    body: Bytes,
) -> Response {
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
        Err(err @ (LoadError::Store(_) | LoadError::Compiler(_))) => error(
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

/// The sessions of plugin `name` pinned to an older version because the
/// active version could not migrate them.
pub(super) async fn list_pinned(State(api): State<Api>, Path(name): Path<String>) -> Response {
    if let Some(missing) = not_loaded(&api, &name) {
        return missing;
    }
    Json(json!({ "pinned": api.host.pinned().sessions(&name) })).into_response()
}

/// Has each pinned session of plugin `name` try its migration again at its
/// next turn, after a fixed version was loaded.
pub(super) async fn retry_migrations(State(api): State<Api>, Path(name): Path<String>) -> Response {
    if let Some(missing) = not_loaded(&api, &name) {
        return missing;
    }
    Json(json!({ "retried": api.host.pinned().retry(&name) })).into_response()
}

/// The 404 for a plugin this server has not loaded, if it has not.
fn not_loaded(api: &Api, name: &str) -> Option<Response> {
    api.host.plugin(name).is_none().then(|| {
        error(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("plugin `{}` is not loaded", name.escape_debug()),
        )
    })
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

/// The answer to a user-data request that failed.
fn user_data_error(err: &UserDataError) -> Response {
    match err {
        UserDataError::InvalidUser { .. } => {
            error(StatusCode::BAD_REQUEST, "bad-request", err.to_string())
        }
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            err.to_string(),
        ),
    }
}

/// Everything stored about a user: its sessions with their history, and
/// its bucket in every plugin.
pub(super) async fn export_user(State(api): State<Api>, Path(user): Path<String>) -> Response {
    match api.host.users().export(&user).await {
        Ok(data) => Json(data).into_response(),
        Err(err) => user_data_error(&err),
    }
}

/// Erases everything stored about a user and says how much there was.
pub(super) async fn erase_user(State(api): State<Api>, Path(user): Path<String>) -> Response {
    match api.host.users().erase(&user).await {
        Ok(erased) => {
            tracing::info!(
                sessions = erased.sessions,
                kv_entries = erased.kv_entries,
                "erased a user's data"
            );
            Json(json!({ "user": user, "erased": erased })).into_response()
        }
        Err(err) => user_data_error(&err),
    }
}

/// Keys a KV listing returns unless it asks for fewer, and at most.
const KV_PAGE: usize = 100;
const MAX_KV_PAGE: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KvQuery {
    user: Option<String>,
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
    ttl_ms: Option<u64>,
}

impl KvQuery {
    fn bucket(&self, plugin: String, bucket: String) -> BucketRef {
        BucketRef {
            plugin,
            bucket,
            user: self.user.clone(),
        }
    }
}

/// What plugin `name` reaches: its allow-list and configuration, with the
/// policy's secrets shown as `[secret]`.
pub(super) async fn get_config(State(api): State<Api>, Path(name): Path<String>) -> Response {
    Json(api.host.outbound(&name).describe()).into_response()
}

/// Sets the configuration operators give plugin `name` over its policy's
/// (a JSON object of strings, replacing what was set before; `{}` removes
/// it), here and on every server of the store; answers what it reaches now.
pub(super) async fn put_config(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: Result<Json<BTreeMap<String, String>>, JsonRejection>,
) -> Response {
    let Json(config) = match body {
        Ok(body) => body,
        Err(rejection) => return rejected(&rejection),
    };
    match api.host.set_plugin_config(&name, config).await {
        Ok(outbound) => Json(outbound.describe()).into_response(),
        Err(err @ ConfigError::Invalid(_)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-config",
            err.to_string(),
        ),
        Err(err @ ConfigError::Store(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            err.to_string(),
        ),
    }
}

/// The answer to an operator's KV request that failed.
fn kv_error(err: &OperatorKvError) -> Response {
    match err {
        OperatorKvError::Invalid(_) => {
            error(StatusCode::BAD_REQUEST, "bad-request", err.to_string())
        }
        OperatorKvError::QuotaExceeded(_) => {
            error(StatusCode::CONFLICT, "quota-exceeded", err.to_string())
        }
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            err.to_string(),
        ),
    }
}

/// A page of a bucket's live keys: `?prefix=`, `?after=` (the last key of
/// the page before), `?limit=` (100, at most 1000), and `?user=` for the
/// `user` bucket.
pub(super) async fn list_kv(
    State(api): State<Api>,
    Path((plugin, bucket)): Path<(String, String)>,
    QueryOf(query): QueryOf<KvQuery>,
) -> Response {
    let limit = query.limit.unwrap_or(KV_PAGE).clamp(1, MAX_KV_PAGE);
    let keys = api
        .host
        .operator_kv()
        .keys(
            &query.bucket(plugin, bucket),
            query.prefix.as_deref().unwrap_or(""),
            query.after.as_deref(),
            limit,
        )
        .await;
    match keys {
        Ok(keys) => {
            let next = (keys.len() == limit)
                .then(|| keys.last().cloned())
                .flatten();
            Json(json!({ "keys": keys, "next": next })).into_response()
        }
        Err(err) => kv_error(&err),
    }
}

/// The value under a key: text when it is UTF-8, else its bytes.
pub(super) async fn get_kv(
    State(api): State<Api>,
    Path((plugin, bucket, key)): Path<(String, String, String)>,
    QueryOf(query): QueryOf<KvQuery>,
) -> Response {
    match api
        .host
        .operator_kv()
        .get(&query.bucket(plugin, bucket), &key)
        .await
    {
        Ok(Some(value)) => Json(json!({ "key": key, "value": value_json(value) })).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no key `{key}` in this bucket"),
        ),
        Err(err) => kv_error(&err),
    }
}

/// Stores the request's body under a key, for `?ttl_ms=` if given.
pub(super) async fn put_kv(
    State(api): State<Api>,
    Path((plugin, bucket, key)): Path<(String, String, String)>,
    QueryOf(query): QueryOf<KvQuery>,
    value: Bytes,
) -> Response {
    let bucket = query.bucket(plugin, bucket);
    match api
        .host
        .operator_kv()
        .put(&bucket, &key, value.to_vec(), query.ttl_ms)
        .await
    {
        Ok(()) => Json(json!({ "key": key, "stored": true })).into_response(),
        Err(err) => kv_error(&err),
    }
}

/// Removes a key; removing an absent key does nothing.
pub(super) async fn delete_kv(
    State(api): State<Api>,
    Path((plugin, bucket, key)): Path<(String, String, String)>,
    QueryOf(query): QueryOf<KvQuery>,
) -> Response {
    match api
        .host
        .operator_kv()
        .delete(&query.bucket(plugin, bucket), &key)
        .await
    {
        Ok(()) => Json(json!({ "key": key, "deleted": true })).into_response(),
        Err(err) => kv_error(&err),
    }
}

/// Sessions a listing returns unless it asks for fewer, and at most.
const SESSIONS_PAGE: usize = 100;
const MAX_SESSIONS_PAGE: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SessionsQuery {
    plugin: Option<String>,
    user: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// A page of every caller's sessions, filtered by `?plugin=`, `?user=` and
/// `?status=` (`active`, `ended`), from `?cursor=` (the `next` of the page
/// before), without their state.
pub(super) async fn list_sessions(
    State(api): State<Api>,
    QueryOf(query): QueryOf<SessionsQuery>,
) -> Response {
    let status = match query
        .status
        .as_deref()
        .map(|name| Status::parse(name).ok_or(name))
    {
        None => None,
        Some(Ok(status)) => Some(status),
        Some(Err(name)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad-request",
                format!("`{name}` is not a status: use `active` or `ended`"),
            );
        }
    };
    let filter = SessionFilter {
        plugin: query.plugin,
        user: query.user,
        status,
    };
    let limit = query
        .limit
        .unwrap_or(SESSIONS_PAGE)
        .clamp(1, MAX_SESSIONS_PAGE);
    match api.host.list_sessions(filter, query.cursor, limit).await {
        Ok(page) => {
            let sessions: Vec<Value> = page
                .sessions
                .iter()
                .map(|record| {
                    json!({
                        "id": record.id,
                        "plugin": record.plugin,
                        "user_id": record.user_id,
                        "owner": record.owner,
                        "status": record.status,
                        "turn": record.turn,
                        "created_at_ms": record.created_at_ms,
                        "updated_at_ms": record.updated_at_ms,
                    })
                })
                .collect();
            Json(json!({ "sessions": sessions, "next": page.next })).into_response()
        }
        Err(err @ SessionStoreError::BadCursor(_)) => {
            error(StatusCode::BAD_REQUEST, "bad-request", err.to_string())
        }
        Err(err) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            err.to_string(),
        ),
    }
}
