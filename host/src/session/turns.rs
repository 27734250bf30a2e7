//! The turn, written once: a value that opens (loads the session, or makes
//! a new one, and picks the version to run it on), calls exports in fresh
//! instances, and commits the state it is left with, its number and its
//! history in one store transaction, or is dropped having committed
//! nothing. Every kind of turn (start and end in `lifecycle`, `message`,
//! `hand_off`, `tool_call`) is this value with a different export.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

use crate::capability::kv::KvWrites;
use crate::capability::output::Sink;
use crate::capability::registry::RegistryCalls;
use crate::capability::session::Shaping;
use crate::clock::micros_since;
use crate::instance::agent::{Agent, Returned, Store};
use crate::limits::Tripped;
use crate::plugin::PluginVersion;
use crate::session::call::{Call, call_on, session_ctx};
use crate::session::chain::Within;
use crate::session::error::{Cause, SessionError, session_error, turn_error};
use crate::session::event::{Event, EventKind, Input, Migration, diff};
use crate::session::migrate::{check_state, migrated};
use crate::session::parts::Parts;
use crate::session::report::{Outcome, SessionStart, TurnReport};
use crate::session::serial::PluginSlot;
use crate::store::{BackendError, Commit, LogEntry, SessionRecord, State, Status};

/// An open turn: the session as last committed (or new, for a start), the
/// version that runs it, its number, its place among the plugin's turns at
/// once, where what it says goes and the chain of calls it runs in; and
/// what its calls did, for its event.
pub(crate) struct Turn<'a> {
    parts: &'a Arc<Parts>,
    pub(crate) record: SessionRecord,
    pub(crate) plugin: Arc<PluginVersion>,
    pub(crate) number: u64,
    /// Where what the turn's calls say goes.
    pub(crate) sink: Option<Sink>,
    pub(crate) within: &'a Within,
    /// The migration that ran as the turn opened, if one did.
    migration: Option<Migration>,
    /// When the turn opened.
    opened: Instant,
    /// The KV keys the turn's calls wrote.
    kv_writes: RefCell<KvWrites>,
    /// The registry calls the turn's calls made.
    calls: RefCell<RegistryCalls>,
    /// The notes and prune of the turn's calls that succeeded.
    shaping: RefCell<Shaping>,
    _slot: PluginSlot,
}

/// How a turn ends: what it said, the state it leaves, how the
/// conversation goes on, and which plugin answers the next message
/// (`None`: the session's own).
pub(crate) struct Ending {
    pub(crate) said: Vec<String>,
    pub(crate) state: State,
    pub(crate) outcome: Outcome,
    pub(crate) delegate: Option<String>,
}

impl<'a> Turn<'a> {
    /// Opens the next turn of active session `id`, a turn of `kind`, on
    /// the version it runs on (migrated if needed), with what it says going
    /// to `sink`, `within` a chain of calls.
    pub(crate) fn open(
        parts: &'a Arc<Parts>,
        id: &str,
        kind: EventKind,
        sink: Option<Sink>,
        within: &'a Within,
    ) -> Result<Turn<'a>, SessionError> {
        let fail = session_error(id, None, None);
        let record = parts
            .store
            .load(id)
            .map_err(|err| fail(err.into()))?
            .ok_or_else(|| fail(Cause::NotFound))?;
        let fail = session_error(id, Some(&record.plugin), None);
        if record.status == Status::Ended {
            return Err(fail(Cause::Ended));
        }
        // A full log takes no event: the turn is refused before it runs.
        parts.log_room(&record, 0).map_err(fail)?;
        let plugin = parts
            .plugins
            .active(&record.plugin)
            .ok_or_else(|| fail(Cause::PluginNotLoaded(record.plugin.clone())))?;
        // Ending is never refused for the plugin being busy.
        let slot = if kind == EventKind::End {
            None
        } else {
            parts.enter_turn(&record.plugin).map_err(fail)?
        };
        let plugin_name = record.plugin.clone();
        let opened = Instant::now();
        let (record, plugin, migration) =
            migrated(parts, record, plugin).map_err(session_error(id, Some(&plugin_name), None))?;
        record_version(&plugin);
        Ok(Turn {
            parts,
            number: record.turn + 1,
            record,
            plugin,
            sink,
            within,
            migration,
            opened,
            kv_writes: RefCell::default(),
            calls: RefCell::default(),
            shaping: RefCell::default(),
            _slot: slot,
        })
    }

    /// Opens turn 0 of a new session `id` as `start` asks, on the active
    /// version of its plugin.
    pub(crate) fn start(
        parts: &'a Arc<Parts>,
        id: &str,
        start: SessionStart,
        sink: Option<Sink>,
        within: &'a Within,
    ) -> Result<Turn<'a>, SessionError> {
        let fail = session_error(id, Some(&start.plugin), Some(0));
        let plugin = parts
            .plugins
            .active(&start.plugin)
            .ok_or_else(|| fail(Cause::PluginNotLoaded(start.plugin.clone())))?;
        record_version(&plugin);
        let slot = parts.enter_turn(&start.plugin).map_err(fail)?;
        let store = &parts.store;
        if store.load(id).map_err(|err| fail(err.into()))?.is_some() {
            return Err(fail(Cause::Exists));
        }
        // Sessions starting at once may each see room for one more: the
        // bound can be passed by as many starts as run concurrently.
        if let Some(most) = parts.limits_for(&start.plugin).live_sessions {
            let live = store
                .live_sessions(&start.plugin)
                .map_err(|err| fail(err.into()))?;
            if live >= most {
                return Err(fail(Cause::Limit(Tripped::LiveSessions(most))));
            }
        }
        let now = parts.clock.now_ms();
        Ok(Turn {
            parts,
            record: SessionRecord {
                id: id.to_owned(),
                plugin: start.plugin,
                digest: plugin.digest_hex().to_owned(),
                user_id: start.user_id,
                owner: start.owner,
                variables: start.variables,
                state: State::new(),
                state_version: plugin.manifest.state_version,
                revision: 0,
                turn: 0,
                status: Status::Active,
                created_at_ms: now,
                updated_at_ms: now,
                delegate: None,
                log_bytes: 0,
            },
            plugin,
            number: 0,
            sink,
            within,
            migration: None,
            opened: Instant::now(),
            kv_writes: RefCell::default(),
            calls: RefCell::default(),
            shaping: RefCell::default(),
            _slot: slot,
        })
    }

    /// The error of this turn failing for a cause.
    pub(crate) fn fail(&self) -> impl Fn(Cause) -> SessionError + Copy + '_ {
        turn_error(&self.record, self.number)
    }

    /// The parts the turn runs with.
    pub(crate) fn parts(&self) -> &'a Arc<Parts> {
        self.parts
    }

    /// Calls one export in a fresh instance, starting from `state`, and
    /// notes the KV keys it wrote and the registry calls it made for the
    /// turn's event, and the notes and prune it asked for if it succeeded.
    pub(crate) fn call<R>(
        &self,
        state: State,
        export: impl FnOnce(&Agent, &mut Store) -> Returned<R>,
    ) -> Call<R> {
        let session = session_ctx(self.parts, &self.plugin, &self.record, self.number, state);
        let owner = self.record.owner.clone();
        let sink = self.sink.clone();
        let mut call = call_on(
            self.parts,
            &self.plugin,
            session,
            owner,
            sink,
            self.within,
            export,
        );
        self.kv_writes
            .borrow_mut()
            .extend(std::mem::take(&mut call.kv_writes));
        self.calls
            .borrow_mut()
            .extend(std::mem::take(&mut call.calls));
        if call.result.is_ok() {
            self.shaping.borrow_mut().adopt(call.session.take_shaping());
        }
        call
    }

    /// How this turn ends when it leaves `state` after saying `said`, the
    /// conversation going on as `outcome` says with the plugin that
    /// answered it so far.
    pub(crate) fn ending(&self, said: Vec<String>, state: State, outcome: Outcome) -> Ending {
        Ending {
            said,
            state,
            outcome,
            delegate: self.record.delegate.clone(),
        }
    }

    /// Commits the turn as `ending` says, after checking its state against
    /// the plugin's state schema, with the event that records it (of
    /// `input`) and the messages that event appends to the history: the new
    /// session of a start, or the next turn of an existing one, whose
    /// stored revision must still be the one the turn read. An end ends
    /// the session.
    pub(crate) fn commit(&self, input: Input, ending: &Ending) -> Result<(), Cause> {
        let Turn {
            parts,
            record,
            plugin,
            ..
        } = self;
        let Ending {
            said,
            state,
            outcome,
            delegate,
        } = ending;
        check_state(plugin, state)?;
        let Shaping { notes, prune } = self.shaping.take();
        let (kind, input, result) = input.into_parts();
        let at_ms = parts.clock.now_ms();
        let snapshot = (kind == EventKind::Start
            || self.number.is_multiple_of(parts.limits.snapshot_turns))
        .then(|| state.clone());
        let mut event = Event {
            seq: record.revision + 1,
            session: record.id.clone(),
            turn: self.number,
            kind,
            input,
            said: said.clone(),
            result,
            notes,
            prune,
            clipped: Vec::new(),
            outcome: outcome.clone(),
            migration: self.migration.clone(),
            kv_writes: self.kv_writes.take(),
            calls: self.calls.take(),
            patch: diff(&record.state, state),
            snapshot,
            plugin: record.plugin.clone(),
            delegate: delegate.clone(),
            digest: plugin.digest_hex().to_owned(),
            state_version: plugin.manifest.state_version,
            at_ms,
            duration_us: micros_since(self.opened),
            rewound: false,
        };
        let store = &parts.store;
        let (messages, dropped_messages) = match &event.prune {
            None => (event.messages(), 0),
            Some(prune) => {
                let history = if record.revision == 0 {
                    Vec::new()
                } else {
                    let cap = usize::try_from(parts.history_cap().messages).unwrap_or(usize::MAX);
                    store.history(&record.id, cap).map_err(Cause::from)?
                };
                let mut history = prune.apply(history);
                history.extend(event.messages());
                // The pruned history replaces the stored one.
                (history, u64::MAX)
            }
        };
        event.clip(parts.limits.log_text_bytes);
        let mut entry = log_entry(&event)?;
        if event.snapshot.is_none() && snapshot_due(parts, record, entry.body.len()) {
            event.snapshot = Some(state.clone());
            entry = log_entry(&event)?;
        }
        parts.log_room(record, entry.body.len())?;
        if record.revision == 0 {
            let record = SessionRecord {
                state: state.clone(),
                revision: 1,
                delegate: delegate.clone(),
                ..record.clone()
            };
            store.create(&record, &messages, &entry)?;
            parts.committed(&record, &entry, 1);
            return Ok(());
        }
        let commit = Commit {
            session: record.id.clone(),
            read_revision: record.revision,
            state: state.clone(),
            turn: self.number,
            plugin: record.plugin.clone(),
            delegate: delegate.clone(),
            digest: plugin.digest_hex().to_owned(),
            state_version: plugin.manifest.state_version,
            status: if *outcome == Outcome::End {
                Status::Ended
            } else {
                Status::Active
            },
            dropped_messages,
            messages,
            history_cap: parts.history_cap(),
            at_ms,
            event: entry,
        };
        store.commit(&commit)?;
        parts.committed(record, &commit.event, commit.read_revision + 1);
        Ok(())
    }

    /// Closes this turn, committed as `ending` says: its report. Every kind
    /// of turn closes through `lifecycle::close`, which first ends the
    /// children of a session the turn ended.
    pub(crate) fn close(self, ending: Ending) -> TurnReport {
        TurnReport {
            session: self.record.id,
            plugin: self.record.plugin,
            turn: self.number,
            said: ending.said,
            before: self.record.state,
            state: ending.state,
            outcome: ending.outcome,
        }
    }
}

/// Whether an event of `adding` bytes takes `record`'s log past another
/// multiple of [`Limits::snapshot_bytes`](crate::Limits::snapshot_bytes),
/// and so should hold the whole state.
fn snapshot_due(parts: &Parts, record: &SessionRecord, adding: usize) -> bool {
    let every = parts.limits.snapshot_bytes;
    (record.log_bytes + adding as u64) / every > record.log_bytes / every
}

/// `event` as the store keeps it.
pub(crate) fn log_entry(event: &Event) -> Result<LogEntry, Cause> {
    Ok(LogEntry {
        turn: event.turn,
        snapshot: event.snapshot.is_some(),
        rewind: event.kind == EventKind::Rewind,
        body: serde_json::to_string(event)
            .map_err(|err| Cause::Store(BackendError::caused("an event is not JSON", err)))?,
    })
}

/// Names the plugin version serving the current turn on its tracing span.
pub(crate) fn record_version(plugin: &PluginVersion) {
    let span = tracing::Span::current();
    span.record("plugin", plugin.name());
    span.record("version", plugin.manifest.version.as_str());
}
