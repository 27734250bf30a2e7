//! The event each commit appends to its session's log: what started the
//! turn, what the agent said, how the state changed (a JSON Patch, RFC
//! 6902, and every so often the whole state), and which version ran it.
//! Stores keep it as JSON text ([`crate::store::timeline`]).

use json_patch::jsonptr::PointerBuf;
use json_patch::{
    AddOperation, CopyOperation, MoveOperation, Patch, PatchOperation, RemoveOperation,
    ReplaceOperation, TestOperation,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::capability::kv::KvWrites;
use crate::capability::registry::RegistryCalls;
use crate::capability::session::Prune;
use crate::session::clip::{Clip, clip_said, clip_text, clip_value};
use crate::session::error::Cause;
use crate::session::report::{Outcome, assistant_message};
use crate::store::{BackendError, LoggedEvent, Message, Role, State};

/// What kind of commit an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// The session started (`on-start`).
    Start,
    /// A message of the caller (`on-message`, and `on-end` when the agent
    /// ended the conversation; or the plugin it was handed to answered).
    Message,
    /// A tool call.
    Tool,
    /// The caller ended the session (`on-end`).
    End,
    /// The session was made as a copy of another one at one of its turns.
    Fork,
    /// The session was set back to one of its earlier turns.
    Rewind,
}

impl EventKind {
    /// The kind's name, as events carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::Message => "message",
            EventKind::Tool => "tool",
            EventKind::End => "end",
            EventKind::Fork => "fork",
            EventKind::Rewind => "rewind",
        }
    }
}

/// A state migration that ran before the turn, from the layout the state was
/// committed in to the running version's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migration {
    /// The `state-version` migrated from.
    pub from: u32,
    /// The `state-version` migrated to.
    pub to: u32,
    /// What the migration changed.
    pub patch: Patch,
}

/// One event of a session's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Its number in the session's log: the revision its commit made.
    pub seq: u64,
    /// The session.
    pub session: String,
    /// The turn it records.
    pub turn: u64,
    /// What kind of commit it records.
    pub kind: EventKind,
    /// What the caller sent: `{"text"}` for a message, `{"tool",
    /// "arguments"}` for a tool call (with its sensitive arguments
    /// redacted), `{"from", "turn", "event"}` for a fork, `{"turn"}` for a
    /// rewind, else `{}`.
    pub input: Value,
    /// What the agent said, one entry per `say`.
    pub said: Vec<String>,
    /// What a tool call returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The notes the turn added to the history (`session.note`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The prune the turn asked for (`session.prune`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<Prune>,
    /// The texts the event keeps only the start of, each with the size and
    /// digest of the whole ([`Limits::log_text_bytes`]).
    ///
    /// [`Limits::log_text_bytes`]: crate::Limits::log_text_bytes
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clipped: Vec<Clip>,
    /// How the conversation goes on.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The migration that ran before the turn, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<Migration>,
    /// The KV keys the turn wrote (KV writes are not part of the turn's
    /// transaction: they stand even if the turn fails).
    #[serde(default, skip_serializing_if = "KvWrites::is_empty")]
    pub kv_writes: KvWrites,
    /// The registry calls the turn made; their tool records hold the rest.
    #[serde(default, skip_serializing_if = "RegistryCalls::is_empty")]
    pub calls: RegistryCalls,
    /// What the turn changed in the state (after the migration, if any).
    pub patch: Patch,
    /// The whole state after the turn, every so many turns and at a start,
    /// fork or rewind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<State>,
    /// The plugin that serves the session.
    pub plugin: String,
    /// The plugin the session's conversation was handed to, after the turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<String>,
    /// Hex sha256 of the plugin version that ran the turn.
    pub digest: String,
    /// The state layout version after the turn.
    pub state_version: u32,
    /// When it committed, in milliseconds of the host clock.
    pub at_ms: u64,
    /// How long the turn took, from opening it to committing it.
    pub duration_us: u64,
    /// Whether a rewind has since taken the session back past it.
    #[serde(default)]
    pub rewound: bool,
}

impl Event {
    /// The messages the event's commit appended to the history.
    pub(crate) fn messages(&self) -> Vec<Message> {
        let asked = match self.kind {
            EventKind::Message => Some(Message {
                role: Role::User,
                content: self.input["text"].as_str().unwrap_or_default().to_owned(),
                interrupted: false,
            }),
            EventKind::Tool => Some(Message {
                role: Role::Tool,
                content: json!({
                    "tool": self.input["tool"],
                    "arguments": self.input["arguments"],
                    "result": self.result,
                })
                .to_string(),
                interrupted: false,
            }),
            EventKind::Start | EventKind::End | EventKind::Fork | EventKind::Rewind => None,
        };
        let notes = self.notes.iter().map(|note| Message {
            role: Role::System,
            content: note.clone(),
            interrupted: false,
        });
        asked
            .into_iter()
            .chain(notes)
            .chain(assistant_message(
                &self.said,
                self.outcome == Outcome::Interrupted,
            ))
            .collect()
    }

    /// Cuts each of the event's texts past `keep` bytes to its first `keep`
    /// (what was said counts in all, a byte more for each entry), recording
    /// each cut in `clipped`.
    pub(crate) fn clip(&mut self, keep: usize) {
        if let Some(Value::String(text)) = self.input.get_mut("text") {
            clip_text(text, "/input/text", keep, &mut self.clipped);
        }
        if let Some(arguments) = self.input.get_mut("arguments") {
            clip_value(arguments, "/input/arguments", keep, &mut self.clipped);
        }
        if let Some(result) = &mut self.result {
            clip_value(result, "/result", keep, &mut self.clipped);
        }
        clip_said(&mut self.said, keep, &mut self.clipped);
    }

    /// The event as the log holds it, with its number and mark.
    pub(crate) fn parse(logged: &LoggedEvent) -> Result<Event, Cause> {
        let mut event: Event = serde_json::from_str(&logged.body).map_err(|err| {
            Cause::Store(BackendError::new(format!(
                "event {} of the session's log is malformed: {err}",
                logged.seq
            )))
        })?;
        event.rewound = logged.rewound;
        Ok(event)
    }
}

/// The state after the last of `line`'s events, rebuilt from the snapshot
/// of the first and the patches of the others.
pub(crate) fn rebuild(line: &[Event]) -> Result<State, Cause> {
    let corrupt = |seq: u64, what: String| {
        Cause::Store(BackendError::new(format!(
            "event {seq} of the session's log {what}"
        )))
    };
    let (first, rest) = line
        .split_first()
        .ok_or_else(|| Cause::Store(BackendError::new("the session's log holds no snapshot")))?;
    let snapshot = first
        .snapshot
        .clone()
        .ok_or_else(|| corrupt(first.seq, "holds no snapshot".into()))?;
    let mut state = Value::Object(snapshot);
    for event in rest {
        let patches = event.migration.iter().map(|migration| &migration.patch);
        for patch in patches.chain([&event.patch]) {
            json_patch::patch(&mut state, patch)
                .map_err(|err| corrupt(event.seq, format!("does not apply: {err}")))?;
        }
    }
    match state {
        Value::Object(state) => Ok(state),
        _ => Err(Cause::Store(BackendError::new(
            "the session's log rebuilds a state that is no object",
        ))),
    }
}

/// What changed from `before` to `after`, key by key, with no copy of the
/// keys that stayed as they were.
pub(crate) fn diff(before: &State, after: &State) -> Patch {
    let at = |key: &str| PointerBuf::from_tokens([key]);
    let mut operations = Vec::new();
    for (key, value) in after {
        match before.get(key) {
            Some(old) => operations.extend(
                json_patch::diff(old, value)
                    .0
                    .into_iter()
                    .map(|operation| under(key, operation)),
            ),
            None => operations.push(PatchOperation::Add(AddOperation {
                path: at(key),
                value: value.clone(),
            })),
        }
    }
    operations.extend(
        before
            .keys()
            .filter(|key| !after.contains_key(*key))
            .map(|key| PatchOperation::Remove(RemoveOperation { path: at(key) })),
    );
    Patch(operations)
}

/// `operation`, on a value that is the state's `key`, as one on the state.
fn under(key: &str, mut operation: PatchOperation) -> PatchOperation {
    match &mut operation {
        PatchOperation::Add(AddOperation { path, .. })
        | PatchOperation::Remove(RemoveOperation { path })
        | PatchOperation::Replace(ReplaceOperation { path, .. })
        | PatchOperation::Test(TestOperation { path, .. }) => path.push_front(key),
        PatchOperation::Move(MoveOperation { from, path })
        | PatchOperation::Copy(CopyOperation { from, path }) => {
            from.push_front(key);
            path.push_front(key);
        }
    }
    operation
}

/// What started a turn, as its event records it.
#[derive(Debug)]
pub(crate) enum Input {
    /// `on-start`.
    Start,
    /// A message of the caller.
    Message(String),
    /// A tool call: the tool, its arguments with the sensitive ones
    /// redacted, and what it returned.
    Tool {
        tool: String,
        arguments: Value,
        result: Value,
    },
    /// The caller ended the session.
    End,
}

impl Input {
    /// The event's kind, input and result.
    pub(crate) fn into_parts(self) -> (EventKind, Value, Option<Value>) {
        match self {
            Input::Start => (EventKind::Start, json!({}), None),
            Input::Message(text) => (EventKind::Message, json!({ "text": text }), None),
            Input::Tool {
                tool,
                arguments,
                result,
            } => (
                EventKind::Tool,
                json!({ "tool": tool, "arguments": arguments }),
                Some(result),
            ),
            Input::End => (EventKind::End, json!({}), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> State {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("an object"),
        }
    }

    #[test]
    fn a_diff_applied_to_the_state_before_gives_the_state_after_touching_only_what_changed() {
        let before = object(json!({
            "kept": { "deep": [1, 2, 3] },
            "gone": 1,
            "a/b": { "x": 1, "y": 2 },
            "same": { "big": [1, 2, 3] },
        }));
        let after = object(json!({
            "kept": { "deep": [1, 3] },
            "a/b": { "x": 2 },
            "same": { "big": [1, 2, 3] },
            "new~": "v",
        }));
        let patch = diff(&before, &after);
        let paths: Vec<String> = patch.0.iter().map(|op| op.path().to_string()).collect();
        assert_eq!(
            paths,
            [
                "/a~1b/x",
                "/a~1b/y",
                "/kept/deep/1",
                "/kept/deep/2",
                "/new~0",
                "/gone"
            ]
        );
        let mut state = Value::Object(before);
        json_patch::patch(&mut state, &patch).unwrap();
        assert_eq!(state, Value::Object(after));
    }
}
