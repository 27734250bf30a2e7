//! The calling session's state, identity and history.
//!
//! Writes are buffered by the host and committed when the turn succeeds.
//! Reads see the committed state plus this turn's writes.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::bindings::agentbox::plugin::session as wit;
use crate::{Error, Message, Role};

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
///
/// It is the history as committed before this turn: this turn's message,
/// notes and words join it when the turn commits.
pub fn history(last: Option<u32>) -> Vec<Message> {
    wit::history(last)
}

/// Adds `text` to the history as a system message when this turn commits,
/// after the caller's message and before what the agent says: what the
/// agent learned that the next turns (or the model it prompts) should see.
///
/// The host refuses an empty note, one over 4 KiB, or a 17th note in a
/// turn, with [`Error::Invalid`].
pub fn note(text: &str) -> Result<(), Error> {
    wit::note(text)
}

/// When this turn commits, keeps only the newest `keep_last` messages of
/// the history as [`history`] shows it now and, with `summary`, one system
/// message holding it before them; then this turn's own messages are
/// added. The dropped messages stay in the session's event log. A later
/// call in the same turn replaces this one.
///
/// The host refuses an empty summary or one over 16 KiB with
/// [`Error::Invalid`]. [`keep_last`] is the running-summary idiom built on it.
pub fn prune(keep_last: u32, summary: Option<&str>) -> Result<(), Error> {
    wit::prune(keep_last, summary)
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

/// Keeps the history to its newest `keep` messages, folding older ones into
/// a running summary that heads it: the bounded memory of a long
/// conversation, as one call in `on_message`.
///
/// `summarize(summary so far, messages dropped)` writes the new summary
/// (with a model call, or a digest of its own) and runs only when messages
/// are dropped. The summary so far is the history's leading system
/// message, if it has one. What this turn says is added after.
///
/// ```ignore
/// session::keep_last(20, |summary, dropped| {
///     let mut lines: Vec<String> = summary.map(str::to_owned).into_iter().collect();
///     lines.extend(dropped.iter().map(|message| format!("{:?}: {}", message.role, message.content)));
///     lines.join("\n")
/// })?;
/// ```
pub fn keep_last(
    keep: u32,
    summarize: impl FnOnce(Option<&str>, &[Message]) -> String,
) -> Result<(), Error> {
    let history = history(None);
    let (summary, rest) = match history.split_first() {
        Some((first, rest)) if first.role == Role::System => (Some(first.content.as_str()), rest),
        _ => (None, history.as_slice()),
    };
    let dropped = rest.len().saturating_sub(keep as usize);
    if dropped == 0 {
        return Ok(());
    }
    prune(keep, Some(&summarize(summary, &rest[..dropped])))
}
