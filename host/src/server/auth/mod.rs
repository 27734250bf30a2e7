//! Who is calling. A caller of the session API presents an API key
//! ([`keys`]) or a JWT ([`jwt`]) as its bearer token and becomes a
//! [`Caller`]: a principal that owns the sessions it starts and reaches no
//! other, or the admin, who reaches all. A server with neither keys nor
//! JWT settings is open: every caller is [`Caller::Anyone`].

pub mod jwt;
pub mod keys;
pub mod rates;

use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::names::check_plugin_name;
use crate::server::api::{Api, error};
use crate::server::auth::jwt::JwtVerifier;
use crate::server::auth::keys::{KEY_PREFIX, KeyFile, KeyRing};
use crate::server::auth::rates::{Action, Limiter, Rates, Slow};
use crate::session::report::SessionStart;
use crate::store::SessionRecord;

/// What a principal may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The plugins it may start sessions of and call: names, or `*` for
    /// every plugin.
    pub plugins: Vec<String>,
    /// Whether it may name the user of a session it starts: a trusted
    /// backend that has authenticated its users itself.
    #[serde(default)]
    pub act_for_users: bool,
    /// Whether it may choose the ids of the sessions it starts; they are
    /// kept under its name, `PRINCIPAL:ID`.
    #[serde(default)]
    pub choose_ids: bool,
}

impl Grant {
    /// Checks that every plugin named is `*` or a valid plugin name.
    pub fn check(&self) -> Result<(), String> {
        if self.plugins.is_empty() {
            return Err("`plugins` is empty: name the plugins it may use, or `*`".into());
        }
        self.plugins
            .iter()
            .filter(|plugin| *plugin != "*")
            .try_for_each(|plugin| check_plugin_name(plugin))
    }

    fn allows(&self, plugin: &str) -> bool {
        self.plugins
            .iter()
            .any(|allowed| allowed == "*" || allowed == plugin)
    }
}

/// An authenticated caller: the holder of an API key, or of a token for
/// one user.
#[derive(Debug)]
pub(crate) struct Principal {
    /// What its sessions record as their owner: `key:PRINCIPAL` or
    /// `jwt:USER`.
    owner: String,
    /// The name its chosen session ids are kept under.
    name: String,
    grant: Grant,
    /// The user a token was issued to; that user's sessions only.
    user: Option<String>,
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// Any caller of a server without authentication.
    Anyone,
    /// The holder of the admin token, who reaches every session.
    Admin,
    /// A principal, who reaches the sessions it started.
    Principal(Arc<Principal>),
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

impl Caller {
    /// Whether it may start sessions of `plugin` and call its tools.
    pub(crate) fn may_use(&self, plugin: &str) -> bool {
        match self {
            Caller::Anyone | Caller::Admin => true,
            Caller::Principal(principal) => principal.grant.allows(plugin),
        }
    }

    /// Whether it may reach the session `record`: one it started, unless it
    /// is the admin or the server is open.
    pub(crate) fn reaches(&self, record: &SessionRecord) -> bool {
        match self {
            Caller::Anyone | Caller::Admin => true,
            Caller::Principal(principal) => record.owner.as_deref() == Some(&principal.owner),
        }
    }

    /// The session to start for a caller that asked for `start`: the user a
    /// token names, an id under the principal's name, and the principal as
    /// the owner; or why the caller may not start it (answered 403).
    pub(crate) fn session_start(&self, mut start: SessionStart) -> Result<SessionStart, String> {
        let Caller::Principal(principal) = self else {
            return Ok(start);
        };
        if !principal.grant.allows(&start.plugin) {
            return Err(format!(
                "this caller may not use plugin `{}`",
                start.plugin.escape_debug()
            ));
        }
        if let Some(id) = start.id.take() {
            if !principal.grant.choose_ids {
                return Err(
                    "this caller may not choose session ids; leave `id` out and the host mints one"
                        .into(),
                );
            }
            start.id = Some(format!("{}:{id}", principal.name));
        }
        match (&principal.user, &start.user_id) {
            (Some(token_user), Some(claimed)) if token_user != claimed => {
                return Err(format!(
                    "user id `{}` is not the user the token was issued to",
                    claimed.escape_debug()
                ));
            }
            (Some(token_user), _) => start.user_id = Some(token_user.clone()),
            (None, Some(_)) if !principal.grant.act_for_users => {
                return Err("this API key may not act for users; leave `user_id` out".into());
            }
            (None, _) => {}
        }
        start.owner = Some(principal.owner.clone());
        Ok(start)
    }
}

/// How the server authenticates callers of the session API; by default,
/// not at all: every caller reaches every session.
#[derive(Debug, Default)]
pub struct Callers {
    keys: Option<RwLock<Arc<KeyRing>>>,
    jwt: Option<JwtVerifier>,
    limiter: Limiter,
}

impl Callers {
    /// Callers authenticate with a key of `keys` or a token `jwt` verifies.
    pub fn new(keys: Option<&KeyFile>, jwt: Option<JwtVerifier>) -> Callers {
        Callers {
            keys: keys.map(|file| RwLock::new(Arc::new(KeyRing::new(file)))),
            jwt,
            limiter: Limiter::default(),
        }
    }

    /// Bounds how fast each principal starts sessions and runs turns; the
    /// admin and the callers of an open server are not bounded.
    pub fn with_rates(mut self, rates: Rates) -> Callers {
        self.limiter = Limiter::new(rates);
        self
    }

    /// Counts `action` by `caller` at `now_ms`, or says how long it must
    /// wait.
    pub(crate) fn admit(&self, caller: &Caller, action: Action, now_ms: u64) -> Result<(), Slow> {
        match caller {
            Caller::Anyone | Caller::Admin => Ok(()),
            Caller::Principal(principal) => self.limiter.admit(&principal.owner, action, now_ms),
        }
    }

    /// Whether callers go unauthenticated.
    pub fn is_open(&self) -> bool {
        self.keys.is_none() && self.jwt.is_none()
    }

    /// Replaces the API keys with those of `file`: a revoked key is refused
    /// from the next request on.
    pub fn reload_keys(&self, file: &KeyFile) {
        if let Some(keys) = &self.keys {
            *keys.write().expect("key ring poisoned") = Arc::new(KeyRing::new(file));
        }
    }

    /// The caller presenting `bearer` at `now_ms`, or why it is refused.
    fn authenticate(&self, bearer: Option<&str>, now_ms: u64) -> Result<Caller, String> {
        if self.is_open() {
            return Ok(Caller::Anyone);
        }
        let Some(bearer) = bearer else {
            return Err(
                "the session API needs `Authorization: Bearer ...` with an API key or a JWT".into(),
            );
        };
        if bearer.starts_with(KEY_PREFIX) {
            let keys = self.keys.as_ref().ok_or("this server takes no API keys")?;
            let ring = Arc::clone(&keys.read().expect("key ring poisoned"));
            return ring
                .principal(bearer)
                .map(Caller::Principal)
                .ok_or_else(|| "the API key is unknown or revoked".into());
        }
        let jwt = self
            .jwt
            .as_ref()
            .ok_or("this server takes API keys only, and that is not one")?;
        jwt.verify(bearer, now_ms)
            .map(Caller::Principal)
            .map_err(|reason| format!("the token is refused: {reason}"))
    }
}

/// The bearer token of `headers`, the scheme matched in any case.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Compares two byte strings in time that depends on their lengths only.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Authenticates a request of the session API before anything of it is
/// read, and hands the handlers its [`Caller`]; refuses it with 401
/// otherwise.
pub(crate) async fn authenticate(
    State(api): State<Api>,
    mut request: Request,
    next: Next,
) -> Response {
    let bearer = bearer_token(request.headers());
    let is_admin = matches!(
        (&api.admin_token, bearer),
        (Some(token), Some(bearer)) if constant_time_eq(token.as_bytes(), bearer.as_bytes())
    );
    let caller = if is_admin {
        Ok(Caller::Admin)
    } else {
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
