//! A user's data, for the operator: everything stored about one user id
//! (the sessions started for it, with their history, and its `user`
//! bucket in every plugin), exported or erased.
//!
//! Named buckets shared between plugins are not reached: what they hold
//! is not tied to a user by the store.

use serde::Serialize;
use serde_json::Value;

use crate::host::Host;
use crate::names::check_user_id;
use crate::session::parts::Parts;
use crate::store::{
    Erased, KvStoreError, Message, Namespace, SessionRecord, SessionStoreError, Store,
};

/// Keys read per page when a user's bucket is walked.
const PAGE: usize = 1000;

/// Everything stored about one user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserData {
    /// The user id.
    pub user: String,
    /// Every session started for the user, with its whole history.
    pub sessions: Vec<UserSession>,
    /// Every live entry of the user's bucket, in every plugin.
    pub kv: Vec<UserEntry>,
}

/// One session of a user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserSession {
    /// The session as stored.
    pub session: SessionRecord,
    /// Its history, oldest first.
    pub history: Vec<Message>,
}

/// One entry of a user's bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserEntry {
    /// The plugin whose bucket it is.
    pub plugin: String,
    /// Its key.
    pub key: String,
    /// Its value: text when it is UTF-8 (JSON, for the SDK's values), else
    /// its bytes as numbers.
    pub value: Value,
}

/// Why a user's data could not be reached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserDataError {
    /// The id is not a user id.
    #[error("`{user}` is not a user id: {reason}")]
    InvalidUser {
        /// What was given.
        user: String,
        /// Why it is not one.
        reason: String,
    },
    /// The store failed.
    #[error("the store failed: {0}")]
    Sessions(#[from] SessionStoreError),
    /// The store failed.
    #[error("the store failed: {0}")]
    Kv(#[from] KvStoreError),
}

impl Host {
    /// Users' data, exported or erased.
    pub fn users(&self) -> Users<'_> {
        Users { host: self }
    }
}

/// Users' data, exported or erased ([`Host::users`]).
#[derive(Debug, Clone, Copy)]
pub struct Users<'a> {
    host: &'a Host,
}

impl Users<'_> {
    /// Everything stored about `user`.
    pub async fn export(&self, user: &str) -> Result<UserData, UserDataError> {
        with_user(&self.host.parts, user, |store, user, now_ms| {
            let mut sessions = Vec::new();
            for id in store.sessions_of_user(user)? {
                // One deleted since it was listed is no longer the user's data.
                if let Some(session) = store.load(&id)? {
                    let history = store.history(&id, usize::MAX)?;
                    sessions.push(UserSession { session, history });
                }
            }
            let mut kv = Vec::new();
            for (ns, key) in user_keys(store, user, now_ms)? {
                if let Some(value) = store.kv_get(&ns, &key, now_ms)? {
                    kv.push(UserEntry {
                        plugin: ns.owner,
                        key,
                        value: value_json(value),
                    });
                }
            }
            Ok(UserData {
                user: user.to_owned(),
                sessions,
                kv,
            })
        })
        .await
    }

    /// Deletes everything stored about `user`, in one atomic step of the
    /// store: its sessions with their history, and its bucket in every
    /// plugin (expired entries too).
    pub async fn erase(&self, user: &str) -> Result<Erased, UserDataError> {
        with_user(&self.host.parts, user, |store, user, _| {
            store
                .erase_user(user)
                .map_err(|err| UserDataError::Kv(err.into()))
        })
        .await
    }
}

/// Runs `f` on a blocking thread with the store, `user` once checked,
/// and the host clock's time.
async fn with_user<T: Send + 'static>(
    parts: &Parts,
    user: &str,
    f: impl FnOnce(&dyn Store, &str, u64) -> Result<T, UserDataError> + Send + 'static,
) -> Result<T, UserDataError> {
    check_user_id(user).map_err(|reason| UserDataError::InvalidUser {
        user: user.to_owned(),
        reason,
    })?;
    let (user, now_ms) = (user.to_owned(), parts.clock.now_ms());
    parts.on_store(move |store| f(store, &user, now_ms)).await
}

/// A KV value as JSON: its text when it is UTF-8, else its bytes as numbers.
pub fn value_json(value: Vec<u8>) -> Value {
    match String::from_utf8(value) {
        Ok(text) => Value::String(text),
        Err(bytes) => Value::from(bytes.into_bytes()),
    }
}

/// Every live key of `user`'s bucket in every KV owner.
fn user_keys(
    store: &dyn Store,
    user: &str,
    now_ms: u64,
) -> Result<Vec<(Namespace, String)>, KvStoreError> {
    let mut keys = Vec::new();
    let mut owners = store.kv_owners()?;
    owners.sort();
    for owner in owners {
        let ns = Namespace {
            owner,
            scope: format!("user/{user}"),
        };
        let mut after: Option<String> = None;
        loop {
            let page = store.kv_keys(&ns, "", after.as_deref(), PAGE, now_ms)?;
            let full = page.len() == PAGE;
            after = page.last().cloned();
            keys.extend(page.into_iter().map(|key| (ns.clone(), key)));
            if !full {
                break;
            }
        }
    }
    Ok(keys)
}
