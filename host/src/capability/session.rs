//! The `session` capability: a turn's view of its session's state.
//!
//! The view holds a working copy of the committed state. `set` and `delete`
//! change only the copy, after checking every rule a single write can break;
//! the copy is committed when the turn succeeds and dropped otherwise.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::capability::error::GuestError;
use crate::limits::Limits;
use crate::names::{check_state_key, check_value};
use crate::store::{Message, Role, SessionRecord, SessionStore, SessionStoreError, State};

/// Most history messages one `history` call returns: the guest chooses `last`,
/// and each message is copied into its memory.
const MAX_HISTORY: u32 = 1000;

/// Most bytes of one note.
pub const NOTE_BYTES: usize = 4 << 10;

/// Most notes one turn adds.
pub const NOTES_PER_TURN: usize = 16;

/// Most bytes of a prune's summary.
pub const SUMMARY_BYTES: usize = 16 << 10;

/// How a turn shapes its session's history when it commits: the notes it
/// adds and the prune it asked for, applied to the history as committed
/// before the turn's own messages are added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shaping {
    /// System messages added after the caller's message.
    pub notes: Vec<String>,
    /// What the history is pruned to after the turn's messages.
    pub prune: Option<Prune>,
}

impl Shaping {
    /// Takes on what a call inside the turn asked for after this.
    pub(crate) fn adopt(&mut self, later: Shaping) {
        self.notes.extend(later.notes);
        if later.prune.is_some() {
            self.prune = later.prune;
        }
    }
}

/// A prune of the history: the newest `keep_last` messages, after one
/// system message holding `summary` if there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prune {
    /// How many of the newest messages are kept.
    pub keep_last: u32,
    /// What the dropped messages said, in a few words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

impl Prune {
    /// `history` (oldest first) pruned.
    pub(crate) fn apply(&self, mut history: Vec<Message>) -> Vec<Message> {
        let dropped = history.len().saturating_sub(self.keep_last as usize);
        history.drain(..dropped);
        if let Some(summary) = &self.summary {
            history.insert(
                0,
                Message {
                    role: Role::System,
                    content: summary.clone(),
                    interrupted: false,
                },
            );
        }
        history
    }
}

/// A turn's view of its session.
pub(crate) struct SessionCtx {
    id: String,
    user_id: Option<String>,
    variables: Map<String, Value>,
    turn: u64,
    store: Arc<dyn SessionStore>,
    state: State,
    /// Bytes of `state` as counted against [`Limits::state_bytes`]; measured
    /// at the first write, since most turns never need it.
    state_bytes: Option<usize>,
    limits: Arc<Limits>,
    shaping: Shaping,
}

impl SessionCtx {
    /// The view of `record` for running turn number `turn`, starting from `state`.
    pub(crate) fn new(
        record: &SessionRecord,
        turn: u64,
        state: State,
        store: Arc<dyn SessionStore>,
        limits: Arc<Limits>,
    ) -> Self {
        SessionCtx {
            id: record.id.clone(),
            user_id: record.user_id.clone(),
            variables: record.variables.clone(),
            turn,
            store,
            state,
            state_bytes: None,
            limits,
            shaping: Shaping::default(),
        }
    }

    /// The working copy of the state, with this turn's writes.
    pub(crate) fn into_state(self) -> State {
        self.state
    }

    /// The working copy as it is now.
    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// The caller's variables.
    pub(crate) fn variables(&self) -> &Map<String, Value> {
        &self.variables
    }

    /// A view of the same session and turn starting from this one's working
    /// copy, for a tool of the plugin that this turn calls through the
    /// registry.
    pub(crate) fn fork(&self) -> SessionCtx {
        SessionCtx {
            id: self.id.clone(),
            user_id: self.user_id.clone(),
            variables: self.variables.clone(),
            turn: self.turn,
            store: self.store.clone(),
            state: self.state.clone(),
            state_bytes: self.state_bytes,
            limits: self.limits.clone(),
            shaping: Shaping::default(),
        }
    }

    /// Takes the working copy a [`SessionCtx::fork`] of this view left: the
    /// writes (and notes and prune) of a call that succeeded become this
    /// turn's.
    pub(crate) fn adopt(&mut self, fork: SessionCtx) {
        self.state = fork.state;
        self.state_bytes = fork.state_bytes;
        self.shaping.adopt(fork.shaping);
    }

    /// The notes and prune the call asked for, taken out of the view.
    pub(crate) fn take_shaping(&mut self) -> Shaping {
        std::mem::take(&mut self.shaping)
    }

    /// Adds a note to the history when the turn commits.
    pub(crate) fn note(&mut self, text: String) -> Result<(), GuestError> {
        if text.is_empty() || text.len() > NOTE_BYTES {
            return Err(GuestError::Invalid(format!(
                "a note is 1 to {NOTE_BYTES} bytes; this one is {}",
                text.len()
            )));
        }
        if self.shaping.notes.len() >= NOTES_PER_TURN {
            return Err(GuestError::Invalid(format!(
                "a turn adds at most {NOTES_PER_TURN} notes"
            )));
        }
        self.shaping.notes.push(text);
        Ok(())
    }

    /// Prunes the history when the turn commits.
    pub(crate) fn prune(
        &mut self,
        keep_last: u32,
        summary: Option<String>,
    ) -> Result<(), GuestError> {
        if let Some(summary) = summary
            .as_ref()
            .filter(|summary| summary.is_empty() || summary.len() > SUMMARY_BYTES)
        {
            return Err(GuestError::Invalid(format!(
                "a summary is 1 to {SUMMARY_BYTES} bytes; this one is {}",
                summary.len()
            )));
        }
        self.shaping.prune = Some(Prune { keep_last, summary });
        Ok(())
    }

    /// The session's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The user the session belongs to.
    pub(crate) fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// The caller's variables, as JSON text.
    pub(crate) fn initial_variables(&self) -> serde_json::Result<String> {
        serde_json::to_string(&self.variables)
    }

    /// The turn being run.
    pub(crate) fn turn(&self) -> u64 {
        self.turn
    }

    /// The newest `last` messages (at most 1,000), oldest first.
    pub(crate) fn history(&self, last: Option<u32>) -> Result<Vec<Message>, SessionStoreError> {
        let last = last.unwrap_or(MAX_HISTORY).min(MAX_HISTORY);
        self.store.history(&self.id, last as usize)
    }

    /// The value of `key` in the working copy, as JSON text.
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        self.state.get(key).map(Value::to_string)
    }

    /// Sets `key` to the JSON text `value` in the working copy, if the key,
    /// the value and the state it makes keep every rule.
    pub(crate) fn set(&mut self, key: String, value: &str) -> Result<(), GuestError> {
        check_state_key(&key).map_err(GuestError::Invalid)?;
        let (size, value) = serde_json::from_str::<Value>(value)
            .map_err(|err| format!("is not valid JSON: {err}"))
            .and_then(|value| Ok((check_value(&value, &self.limits)?, value)))
            .map_err(|reason| GuestError::Invalid(format!("value of `{key}` {reason}")))?;
        let added = key.len() + size;
        let removed = self.state.get(&key).map_or(0, |old| entry_bytes(&key, old));
        let total = self.state_bytes() - removed + added;
        if total > self.limits.state_bytes {
            return Err(GuestError::QuotaExceeded(format!(
                "setting `{key}` would make the session state {total} bytes, over the limit of {} bytes",
                self.limits.state_bytes
            )));
        }
        self.state.insert(key, value);
        self.state_bytes = Some(total);
        Ok(())
    }

    /// Removes `key` from the working copy.
    pub(crate) fn delete(&mut self, key: &str) {
        if let Some(old) = self.state.remove(key) {
            let removed = entry_bytes(key, &old);
            if let Some(total) = &mut self.state_bytes {
                *total -= removed;
            }
        }
    }

    /// The keys of the working copy that start with `prefix`.
    pub(crate) fn keys(&self, prefix: &str) -> Vec<String> {
        // The state is bounded by `Limits::state_bytes`, and so is this list.
        self.state
            .keys()
            .filter(|key| key.starts_with(prefix))
            .cloned()
            .collect()
    }

    fn state_bytes(&mut self) -> usize {
        *self.state_bytes.get_or_insert_with(|| {
            self.state
                .iter()
                .map(|(key, value)| entry_bytes(key, value))
                .sum()
        })
    }
}

/// Bytes an entry counts against the state-size limit: key plus compact value.
fn entry_bytes(key: &str, value: &Value) -> usize {
    key.len() + value.to_string().len()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::{MemoryStore, Status};

    /// The view of session `s1` at turn 3, starting from `state`, under
    /// `limits`.
    fn view(state: Value, limits: Limits) -> SessionCtx {
        let Value::Object(state) = state else {
            panic!("a state is an object");
        };
        let record = SessionRecord {
            id: "s1".to_owned(),
            plugin: "shop".to_owned(),
            digest: String::new(),
            user_id: Some("ann".to_owned()),
            owner: None,
            variables: Map::new(),
            state: State::new(),
            state_version: 1,
            revision: 2,
            turn: 2,
            status: Status::Active,
            created_at_ms: 0,
            updated_at_ms: 0,
            delegate: None,
            log_bytes: 0,
        };
        let store = Arc::new(MemoryStore::default());
        SessionCtx::new(&record, 3, state, store, Arc::new(limits))
    }

    #[test]
    fn a_write_past_the_state_bound_is_refused_and_changes_nothing() {
        // An entry counts its key and its compact JSON: `name` and `"ann"`
        // are 9 bytes, `city` and `"Oslo"` 10.
        let limits = Limits {
            state_bytes: 24,
            ..Limits::default()
        };
        let mut session = view(json!({ "name": "ann" }), limits);
        session.set("city".into(), "\"Oslo\"").unwrap();
        let err = session.set("note".into(), "\"far too long\"").unwrap_err();
        assert!(
            matches!(&err, GuestError::QuotaExceeded(reason) if reason.contains("over the limit of 24 bytes")),
            "{err:?}"
        );
        assert_eq!(session.get("note"), None);
        // Deleting makes room again.
        session.delete("city");
        session.set("note".into(), "\"far too\"").unwrap();
        assert_eq!(session.keys(""), ["name", "note"]);
    }

    #[test]
    fn a_key_or_value_that_breaks_a_rule_is_refused() {
        let mut session = view(json!({}), Limits::default());
        for (key, value) in [("", "1"), ("no spaces", "1"), ("count", "{not json")] {
            let err = session.set(key.into(), value).unwrap_err();
            assert!(matches!(err, GuestError::Invalid(_)), "{key}: {err:?}");
        }
        assert!(session.state().is_empty());
    }

    #[test]
    fn a_fork_works_on_a_copy_that_becomes_the_turns_only_when_adopted() {
        let mut session = view(json!({ "count": 1 }), Limits::default());
        let mut fork = session.fork();
        fork.set("count".into(), "2").unwrap();
        fork.note("counted".into()).unwrap();
        assert_eq!(session.get("count").as_deref(), Some("1"));
        // A failed call's fork is dropped: nothing of it stays.
        drop(session.fork());
        session.adopt(fork);
        assert_eq!(session.get("count").as_deref(), Some("2"));
        assert_eq!(session.take_shaping().notes, ["counted"]);
    }

    #[test]
    fn notes_and_a_prunes_summary_are_bounded() {
        let mut session = view(json!({}), Limits::default());
        for text in [String::new(), "n".repeat(NOTE_BYTES + 1)] {
            assert!(matches!(session.note(text), Err(GuestError::Invalid(_))));
        }
        for n in 0..NOTES_PER_TURN {
            session.note(format!("note {n}")).unwrap();
        }
        assert!(matches!(
            session.note("one more".into()),
            Err(GuestError::Invalid(_))
        ));
        let long = "s".repeat(SUMMARY_BYTES + 1);
        assert!(matches!(
            session.prune(2, Some(long)),
            Err(GuestError::Invalid(_))
        ));
        session.prune(2, Some("they talked".into())).unwrap();
        let shaping = session.take_shaping();
        assert_eq!(shaping.notes.len(), NOTES_PER_TURN);
        assert_eq!(shaping.prune.unwrap().keep_last, 2);
    }

    #[test]
    fn a_prune_keeps_the_newest_messages_behind_its_summary() {
        let said = |content: &str| Message {
            role: Role::User,
            content: content.to_owned(),
            interrupted: false,
        };
        let history = ["one", "two", "three"].map(said).to_vec();
        let prune = Prune {
            keep_last: 2,
            summary: Some("counting".to_owned()),
        };
        let pruned: Vec<(Role, String)> = prune
            .apply(history)
            .into_iter()
            .map(|message| (message.role, message.content))
            .collect();
        assert_eq!(
            pruned,
            [
                (Role::System, "counting".to_owned()),
                (Role::User, "two".to_owned()),
                (Role::User, "three".to_owned()),
            ]
        );
    }
}
