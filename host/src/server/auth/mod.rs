//! Who is calling. A caller of the session API presents an API key
//! ([`keys`]) or a JWT ([`jwt`]) as its bearer token and becomes a
//! [`Caller`]: a principal that owns the sessions it starts and reaches no
//! other, or the admin, who reaches all. A server with neither keys nor
//! JWT settings is open: every caller is [`Caller::Anyone`].

pub mod jwt;
pub mod keys;
mod principal;
pub mod rates;

pub use principal::Grant;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use tokio::sync::watch;

use crate::clock::Clock;

use crate::server::auth::jwt::JwtVerifier;
use crate::server::auth::keys::{KEY_PREFIX, KeyFile, KeyRing};
use crate::server::auth::principal::{Principal, Standing};
use crate::server::auth::rates::{Action, Limiter, Rates, Slow};
use crate::session::lifecycle::CHILD_PREFIX;
use crate::session::report::SessionStart;
use crate::store::SessionRecord;

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

impl Caller {
    /// Whether it may start sessions of `plugin` and call its tools.
    pub(crate) fn may_use(&self, plugin: &str) -> bool {
        match self {
            Caller::Anyone | Caller::Admin => true,
            Caller::Principal(principal) => principal.grant.allows(plugin),
        }
    }

    /// Why it may not use `plugin`, if it may not (answered 403).
    pub(crate) fn check_use(&self, plugin: &str) -> Result<(), String> {
        if self.may_use(plugin) {
            Ok(())
        } else {
            Err(format!(
                "this caller may not use plugin `{}`",
                plugin.escape_debug()
            ))
        }
    }

    /// Whose sessions of `plugin` it may follow: its own (`Some` owner), or
    /// every one (`None`) if it is the admin or the server is open; or why
    /// it may not (answered 403).
    pub(crate) fn feed_of(&self, plugin: &str) -> Result<Option<String>, String> {
        match self {
            Caller::Anyone | Caller::Admin => Ok(None),
            Caller::Principal(principal) => {
                self.check_use(plugin)?;
                Ok(Some(principal.owner.clone()))
            }
        }
    }

    /// Who it is, to tell whether two requests come from the same caller:
    /// a principal's owner, the admin, or anyone (an open server's callers
    /// are one party).
    pub(crate) fn identity(&self) -> String {
        match self {
            Caller::Anyone => "anyone".into(),
            Caller::Admin => "admin".into(),
            Caller::Principal(principal) => principal.owner.clone(),
        }
    }

    /// Whether the server must read a session's record to know if this
    /// caller reaches it: only a principal's reach is bounded.
    pub(crate) fn is_bounded(&self) -> bool {
        matches!(self, Caller::Principal(_))
    }

    /// Whether it may reach the session `record`: one it started, not a
    /// child session a plugin's call or hand-off made for it (the parent's
    /// plugin alone reaches that), unless it is the admin or the server is
    /// open.
    pub(crate) fn reaches(&self, record: &SessionRecord) -> bool {
        match self {
            Caller::Anyone | Caller::Admin => true,
            Caller::Principal(principal) => {
                record.owner.as_deref() == Some(&principal.owner)
                    && !record.id.starts_with(CHILD_PREFIX)
            }
        }
    }

    /// The id of a session it starts or forks, from the one it asked for:
    /// none (the host mints one); for a principal that may choose ids, the
    /// one asked for under its name, so that no one squats another's; for
    /// the admin and an open server's callers, the one asked for. None
    /// may take the prefix of the child sessions a plugin's calls make.
    pub(crate) fn session_id(&self, asked: Option<String>) -> Result<Option<String>, String> {
        let Some(id) = asked else {
            return Ok(None);
        };
        match self {
            Caller::Principal(principal) if principal.grant.choose_ids => {
                Ok(Some(format!("{}:{id}", principal.name)))
            }
            Caller::Principal(_) => Err(
                "this caller may not choose session ids; leave `id` out and the host mints one"
                    .into(),
            ),
            Caller::Anyone | Caller::Admin if id.starts_with(CHILD_PREFIX) => Err(format!(
                "session ids beginning `{CHILD_PREFIX}` are the host's, for the sessions a plugin's calls make; choose another"
            )),
            Caller::Anyone | Caller::Admin => Ok(Some(id)),
        }
    }

    /// The user the sessions it starts belong to, from the one it named:
    /// the user its token was issued to (naming another is refused), the
    /// one named by a key that may act for users or by the admin or an
    /// open server's caller; or why it may not name one (answered 403).
    pub(crate) fn user(&self, named: Option<String>) -> Result<Option<String>, String> {
        let Caller::Principal(principal) = self else {
            return Ok(named);
        };
        match (&principal.user, named) {
            (Some(token_user), Some(claimed)) if *token_user != claimed => Err(format!(
                "user id `{}` is not the user the token was issued to",
                claimed.escape_debug()
            )),
            (Some(token_user), _) => Ok(Some(token_user.clone())),
            (None, Some(_)) if !principal.grant.act_for_users => {
                Err("this API key may not act for users; leave `user_id` out".into())
            }
            (None, named) => Ok(named),
        }
    }

    /// The session to start for a caller that asked for `start`: the user a
    /// token names, an id under the principal's name, and the principal as
    /// the owner; or why the caller may not start it (answered 403).
    pub(crate) fn session_start(&self, mut start: SessionStart) -> Result<SessionStart, String> {
        self.check_use(&start.plugin)?;
        start.id = self.session_id(start.id.take())?;
        start.user_id = self.user(start.user_id.take())?;
        if let Caller::Principal(principal) = self {
            start.owner = Some(principal.owner.clone());
        }
        Ok(start)
    }
}

/// How the server authenticates callers of the session API; by default,
/// not at all: every caller reaches every session.
#[derive(Debug, Default)]
pub struct Callers {
    /// The API keys, once a keys file has been read: a server without
    /// them (and without JWT settings) is open until one is.
    keys: watch::Sender<Option<Arc<KeyRing>>>,
    jwt: Option<JwtVerifier>,
    limiter: Limiter,
}

impl Callers {
    /// Callers authenticate with a key of `keys` or a token `jwt` verifies.
    pub fn new(keys: Option<&KeyFile>, jwt: Option<JwtVerifier>) -> Callers {
        Callers {
            keys: watch::Sender::new(keys.map(|file| Arc::new(KeyRing::new(file)))),
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

    /// The owner whose live sessions are bounded when `caller` starts one,
    /// and the bound; `None` for callers who are not held to one.
    pub(crate) fn live_session_bound<'c>(&self, caller: &'c Caller) -> Option<(&'c str, u64)> {
        match caller {
            Caller::Principal(principal) => self
                .limiter
                .live_sessions()
                .map(|most| (principal.owner.as_str(), most)),
            Caller::Anyone | Caller::Admin => None,
        }
    }

    /// Whether callers go unauthenticated: no keys file has been read and
    /// there are no JWT settings.
    pub fn is_open(&self) -> bool {
        self.keys.borrow().is_none() && self.jwt.is_none()
    }

    /// Replaces the API keys with those of `file`; on an open server, makes
    /// them required. A revoked key is refused from the next request on,
    /// and what it holds open is closed (see [`Callers::lapse`]).
    pub fn reload_keys(&self, file: &KeyFile) {
        self.keys.send_replace(Some(Arc::new(KeyRing::new(file))));
    }

    /// Waits until `caller` no longer stands, and says why: its key was
    /// revoked (or its grant changed), its token expired by `clock`, or,
    /// for a caller of an open server, the server now requires keys. Never
    /// for the admin. A WebSocket or stream the caller holds open ends
    /// then, so that revocation reaches what was opened before it.
    pub(crate) fn lapse(
        &self,
        caller: &Caller,
        clock: Clock,
    ) -> impl Future<Output = String> + Send + 'static {
        let mut keys = self.keys.subscribe();
        let caller = caller.clone();
        async move {
            match &caller {
                Caller::Admin => std::future::pending().await,
                Caller::Anyone => {
                    lasts_while(&mut keys, Option::is_none).await;
                    "the server now requires an API key".into()
                }
                Caller::Principal(principal) => match principal.standing {
                    Standing::Key { .. } => {
                        lasts_while(&mut keys, |ring| {
                            ring.as_ref().is_some_and(|ring| ring.holds(principal))
                        })
                        .await;
                        "the API key was revoked, or its grant changed".into()
                    }
                    Standing::Token { until_ms } => {
                        let mut ticks = tokio::time::interval(LAPSE_TICK);
                        while clock.now_ms() < until_ms {
                            ticks.tick().await;
                        }
                        "the token has expired".into()
                    }
                },
            }
        }
    }

    /// The caller presenting `bearer` at `now_ms`, or why it is refused.
    pub(crate) fn authenticate(&self, bearer: Option<&str>, now_ms: u64) -> Result<Caller, String> {
        if self.is_open() {
            return Ok(Caller::Anyone);
        }
        let Some(bearer) = bearer else {
            return Err(
                "the session API needs `Authorization: Bearer ...` with an API key or a JWT".into(),
            );
        };
        if bearer.starts_with(KEY_PREFIX) {
            let ring = self
                .keys
                .borrow()
                .clone()
                .ok_or("this server takes no API keys")?;
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

/// How often a token's expiry is checked against the host's clock while
/// its holder keeps a connection open.
const LAPSE_TICK: Duration = Duration::from_millis(250);

/// Returns once the keys no longer pass `stands`; never if they always do
/// (the server lives as long as its callers).
async fn lasts_while(
    keys: &mut watch::Receiver<Option<Arc<KeyRing>>>,
    mut stands: impl FnMut(&Option<Arc<KeyRing>>) -> bool,
) {
    if keys.wait_for(|ring| !stands(ring)).await.is_err() {
        std::future::pending::<()>().await;
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
