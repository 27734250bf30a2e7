//! The calling session's state, identity and history.
//!
//! Writes are buffered by the host and committed when the turn succeeds.
//! Reads see the committed state plus this turn's writes.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::bindings::agentbox::plugin::session as wit;
use crate::{Error, Message};

/// The value stored under `key`, deserialized as `T`.
///
/// `None` when the key is absent or its value does not have the shape of `T`.
pub fn get<T: DeserializeOwned>(key: &str) -> Option<T> {
    wit::get(key).and_then(|json| serde_json::from_str(&json).ok())
}

/// Stores `value` under `key`.
///
/// The host refuses an invalid key, a value over its size or depth limit,
/// or a state over its size limit, with [`Error::Invalid`] or
/// [`Error::QuotaExceeded`] saying which rule was broken.
pub fn set<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), Error> {
    let json = serde_json::to_string(value).map_err(|err| Error::Invalid(err.to_string()))?;
    wit::set(key, &json)
}

/// Removes `key`; removing an absent key does nothing.
pub fn delete(key: &str) {
    wit::delete(key);
}

/// The keys that start with `prefix`, in ascending order.
pub fn keys(prefix: &str) -> Vec<String> {
    wit::keys(prefix)
}

/// The session's id.
pub fn id() -> String {
    wit::id()
}

/// The user the caller named when it started the session, if any.
pub fn user_id() -> Option<String> {
    wit::user_id()
}

/// The number of this turn: 0 in `on_start`, then 1, 2, ...
pub fn turn() -> u64 {
    wit::turn()
}

/// The variables the caller passed when it started the session.
pub fn initial_variables() -> Map<String, Value> {
    serde_json::from_str(&wit::initial_variables()).unwrap_or_default()
}

/// The initial variable `name`, deserialized as `T`; `None` when absent or
/// of another shape.
pub fn initial_variable<T: DeserializeOwned>(name: &str) -> Option<T> {
    initial_variables()
        .remove(name)
        .and_then(|value| serde_json::from_value(value).ok())
}

/// The conversation so far, oldest first; with `last`, only the newest `last` messages.
pub fn history(last: Option<u32>) -> Vec<Message> {
    wit::history(last)
}

/// The whole committed state plus this turn's writes, as a JSON object.
pub fn state() -> Map<String, Value> {
    keys("")
        .into_iter()
        .filter_map(|key| {
            let value = wit::get(&key)?;
            Some((key, serde_json::from_str(&value).ok()?))
        })
        .collect()
}
