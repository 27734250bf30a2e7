//! The `session` capability: a turn's view of its session's state.
//!
//! The view holds a working copy of the committed state. `set` and `delete`
//! change only the copy, after checking every rule a single write can break;
//! the copy is committed when the turn succeeds and dropped otherwise.

use std::sync::Arc;

use serde_json::{Map, Value};
use tracing::instrument;
use wasmtime::component::{HasSelf, Linker};

use crate::bindings::agentbox::plugin::session as wit;
use crate::bindings::{GuestError, Message as WitMessage, Role as WitRole};
use crate::policy::Limits;
use crate::store::{Role, SessionRecord, State, Store};

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 128;

/// Most history messages one `history` call returns: the guest chooses `last`,
/// and each message is copied into its memory.
const MAX_HISTORY: u32 = 1000;

/// A turn's view of its session.
pub(crate) struct SessionCtx {
    live: Option<Live>,
    state: State,
    /// Bytes of `state` as counted against [`Limits::state_bytes`]; measured
    /// at the first write, since most turns never need it.
    state_bytes: Option<usize>,
    limits: Arc<Limits>,
}

/// What a view of a real session has; absent while a plugin is described.
struct Live {
    id: String,
    user_id: Option<String>,
    variables: Map<String, Value>,
    turn: u64,
    store: Arc<dyn Store>,
}

/// The parts of a live session other capabilities of the turn use.
pub(crate) struct LiveSession<'a> {
    pub(crate) id: &'a str,
    pub(crate) user_id: Option<&'a str>,
    pub(crate) store: &'a Arc<dyn Store>,
}

impl SessionCtx {
    /// The view of `record` for running turn number `turn`, starting from `state`.
    pub(crate) fn new(
        record: &SessionRecord,
        turn: u64,
        state: State,
        store: Arc<dyn Store>,
        limits: Arc<Limits>,
    ) -> Self {
        SessionCtx {
            live: Some(Live {
                id: record.id.clone(),
                user_id: record.user_id.clone(),
                variables: record.variables.clone(),
                turn,
                store,
            }),
            state,
            state_bytes: None,
            limits,
        }
    }

    /// A view without a session, for calling `describe`: every function traps.
    pub(crate) fn detached(limits: Arc<Limits>) -> Self {
        SessionCtx {
            live: None,
            state: State::new(),
            state_bytes: None,
            limits,
        }
    }

    /// The working copy of the state, with this turn's writes.
    pub(crate) fn into_state(self) -> State {
        self.state
    }

    fn live(&self, function: &str) -> wasmtime::Result<&Live> {
        self.live.as_ref().ok_or_else(|| {
            wasmtime::format_err!("`session.{function}` was called outside a session (plugins must not use session state in `describe`)")
        })
    }

    /// The session this view serves (its id, user and store); `None` while
    /// a plugin is described.
    pub(crate) fn live_session(&self) -> Option<LiveSession<'_>> {
        self.live.as_ref().map(|live| LiveSession {
            id: &live.id,
            user_id: live.user_id.as_deref(),
            store: &live.store,
        })
    }

    /// The limits the turn runs under.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
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

/// Adds the `session` interface to `linker`, reaching the view through `get`.
pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut SessionCtx,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasSelf<SessionCtx>>(linker, get)
}

impl wit::Host for SessionCtx {
    fn id(&mut self) -> wasmtime::Result<String> {
        Ok(self.live("id")?.id.clone())
    }

    fn user_id(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.live("user-id")?.user_id.clone())
    }

    fn initial_variables(&mut self) -> wasmtime::Result<String> {
        Ok(serde_json::to_string(
            &self.live("initial-variables")?.variables,
        )?)
    }

    fn turn(&mut self) -> wasmtime::Result<u64> {
        Ok(self.live("turn")?.turn)
    }

    #[instrument(skip_all, fields(session = self.live.as_ref().map(|live| live.id.as_str())))]
    fn history(&mut self, last: Option<u32>) -> wasmtime::Result<Vec<WitMessage>> {
        let live = self.live("history")?;
        let last = last.unwrap_or(MAX_HISTORY).min(MAX_HISTORY);
        // A store failure is the host's fault, not the guest's: trap.
        let messages = live.store.history(&live.id, last as usize)?;
        Ok(messages
            .into_iter()
            .map(|message| WitMessage {
                role: match message.role {
                    Role::System => WitRole::System,
                    Role::User => WitRole::User,
                    Role::Assistant => WitRole::Assistant,
                    Role::Tool => WitRole::Tool,
                },
                content: message.content,
            })
            .collect())
    }

    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.live("get")?;
        Ok(self.state.get(&key).map(Value::to_string))
    }

    fn set(&mut self, key: String, value: String) -> wasmtime::Result<Result<(), GuestError>> {
        self.live("set")?;
        if let Err(reason) = check_key(&key) {
            return Ok(Err(GuestError::Invalid(reason)));
        }
        let checked = serde_json::from_str::<Value>(&value)
            .map_err(|err| format!("is not valid JSON: {err}"))
            .and_then(|value| Ok((check_value(&value, &self.limits)?, value)));
        let (size, value) = match checked {
            Ok(checked) => checked,
            Err(reason) => {
                return Ok(Err(GuestError::Invalid(format!(
                    "value of `{key}` {reason}"
                ))));
            }
        };
        let added = key.len() + size;
        let removed = self.state.get(&key).map_or(0, |old| entry_bytes(&key, old));
        let total = self.state_bytes() - removed + added;
        if total > self.limits.state_bytes {
            return Ok(Err(GuestError::QuotaExceeded(format!(
                "setting `{key}` would make the session state {total} bytes, over the limit of {} bytes",
                self.limits.state_bytes
            ))));
        }
        self.state.insert(key, value);
        self.state_bytes = Some(total);
        Ok(Ok(()))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.live("delete")?;
        if let Some(old) = self.state.remove(&key) {
            let removed = entry_bytes(&key, &old);
            if let Some(total) = &mut self.state_bytes {
                *total -= removed;
            }
        }
        Ok(())
    }

    fn keys(&mut self, prefix: String) -> wasmtime::Result<Vec<String>> {
        self.live("keys")?;
        // The state is bounded by `Limits::state_bytes`, and so is this list.
        Ok(self
            .state
            .keys()
            .filter(|key| key.starts_with(&prefix))
            .cloned()
            .collect())
    }
}

/// Checks a session-state key: 1 to [`MAX_KEY_BYTES`] bytes of ASCII letters,
/// digits and `_ . : / -`.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("key is empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "key of {} bytes is longer than {MAX_KEY_BYTES}",
            key.len()
        ));
    }
    match key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.:/-".contains(*c)))
    {
        Some(bad) => Err(format!(
            "key `{}` contains {bad:?}; keys use A-Z, a-z, 0-9 and _ . : / -",
            key.escape_debug()
        )),
        None => Ok(()),
    }
}

/// Checks a JSON value's nesting depth and size, and returns its size: the
/// bytes of its compact form, which is what the limits count.
///
/// The error completes the phrase "value ...": "is 70000 bytes, ...".
pub fn check_value(value: &Value, limits: &Limits) -> Result<usize, String> {
    let depth = depth(value);
    if depth > limits.json_depth {
        return Err(format!(
            "is nested {depth} levels deep, over the limit of {}",
            limits.json_depth
        ));
    }
    let size = value.to_string().len();
    if size > limits.value_bytes {
        return Err(format!(
            "is {size} bytes, over the limit of {} bytes",
            limits.value_bytes
        ));
    }
    Ok(size)
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(entries) => 1 + entries.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Bytes an entry counts against the state-size limit: key plus compact value.
fn entry_bytes(key: &str, value: &Value) -> usize {
    key.len() + value.to_string().len()
}
