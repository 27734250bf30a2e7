//! The turn, written once: open (load the session, or make a new one, and
//! pick the version to run it on) → call one export in a fresh instance →
//! validate the state it leaves → commit state, turn and history in one
//! store transaction. The entry points (start, message, end, and tool calls
//! in [`super::tool_call`]) differ only in the export they call and what
//! they make of its result.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

use tracing::instrument;

use crate::capability::http::HttpCtx;
use crate::capability::kv::{KvCtx, KvWrites, Scope};
use crate::capability::output::{OutputCtx, Sink};
use crate::capability::registry::RegistryCalls;
use crate::capability::session::{SessionCtx, Shaping};
use crate::clock::micros_since;
use crate::host::Host;
use crate::instance::agent::{Agent, Returned, Store};
use crate::instance::call::call;
use crate::instance::ctx::{Capabilities, TurnCtx};
use crate::instance::world::EndReason;
use crate::limits::{GUEST_OUTPUT_BYTES, Tripped};
use crate::plugin::PluginVersion;
use crate::session::calls::Caller;
use crate::session::chain::Within;
use crate::session::error::{Cause, SessionError, session_error, turn_error};
use crate::session::event::{Event, EventKind, Input, Migration, diff};
use crate::session::report::{Outcome, SessionStart, TurnReport};
use crate::session::serial::PluginSlot;
use crate::store::{
    BackendError, Commit, HistoryCap, LogEntry, OutboundUse, Quota, SessionRecord, State, Status,
};

/// An open turn: the session as last committed (or new, for a start), the
/// version that runs it, its number, and its place among the plugin's
/// turns at once.
pub(crate) struct Turn {
    pub(crate) record: SessionRecord,
    pub(crate) plugin: Arc<PluginVersion>,
    pub(crate) number: u64,
    /// The migration that ran as the turn opened, if one did.
    pub(crate) migration: Option<Migration>,
    /// When the turn opened.
    pub(crate) opened: Instant,
    /// The KV keys the turn's calls wrote.
    kv_writes: RefCell<KvWrites>,
    /// The registry calls the turn's calls made.
    calls: RefCell<RegistryCalls>,
    /// The notes and prune of the turn's calls that succeeded.
    shaping: RefCell<Shaping>,
    _slot: PluginSlot,
}

impl Turn {
    /// The error of this turn failing for a cause.
    pub(crate) fn fail(&self) -> impl Fn(Cause) -> SessionError + Copy + '_ {
        turn_error(&self.record, self.number)
    }

    /// The report of this turn, committed with `state` after saying `said`.
    pub(crate) fn report(self, state: State, said: Vec<String>, outcome: Outcome) -> TurnReport {
        TurnReport {
            session: self.record.id,
            plugin: self.record.plugin,
            turn: self.number,
            said,
            before: self.record.state,
            state,
            outcome,
        }
    }
}

/// What one call into an instance produced.
pub(crate) struct Call<R> {
    pub(crate) result: Result<R, Cause>,
    pub(crate) session: SessionCtx,
    pub(crate) said: Vec<String>,
    /// When the call failed and the plugin's limits say so, the tail of
    /// what the guest wrote.
    pub(crate) guest_output: Option<String>,
    /// What the call sent through outbound HTTP.
    pub(crate) outbound: OutboundUse,
    /// The KV keys the call wrote.
    pub(crate) kv_writes: KvWrites,
    /// The registry calls the call made.
    pub(crate) calls: RegistryCalls,
}

impl Host {
    /// Opens the next turn of active session `id` on the version it runs
    /// on (migrated if needed), taking a place among the plugin's turns at
    /// once when `counted`.
    pub(crate) fn open(&self, id: &str, counted: bool) -> Result<Turn, SessionError> {
        let fail = session_error(id, None, None);
        let record = self
            .inner
            .store
            .load(id)
            .map_err(|err| fail(err.into()))?
            .ok_or_else(|| fail(Cause::NotFound))?;
        let fail = session_error(id, Some(&record.plugin), None);
        if record.status == Status::Ended {
            return Err(fail(Cause::Ended));
        }
        // A full log takes no event: the turn is refused before it runs.
        self.log_room(&record, 0).map_err(fail)?;
        let plugin = self
            .inner
            .plugins
            .active(&record.plugin)
            .ok_or_else(|| fail(Cause::PluginNotLoaded(record.plugin.clone())))?;
        let slot = if counted {
            self.enter_turn(&record.plugin).map_err(fail)?
        } else {
            None
        };
        let plugin_name = record.plugin.clone();
        let opened = Instant::now();
        let (record, plugin, migration) =
            self.migrated(record, plugin)
                .map_err(session_error(id, Some(&plugin_name), None))?;
        record_version(&plugin);
        Ok(Turn {
            number: record.turn + 1,
            record,
            plugin,
            migration,
            opened,
            kv_writes: RefCell::default(),
            calls: RefCell::default(),
            shaping: RefCell::default(),
            _slot: slot,
        })
    }

    /// Calls one export in a fresh instance serving `record` as turn
    /// `turn`, starting from `state`, with what it says going to `sink`,
    /// `within` the registry calls it answers (if any).
    #[expect(clippy::too_many_arguments, reason = "one call's whole setting")]
    pub(crate) fn call_in_session<R>(
        &self,
        plugin: &Arc<PluginVersion>,
        record: &SessionRecord,
        turn: u64,
        state: State,
        sink: Option<Sink>,
        within: &Within,
        export: impl FnOnce(&Agent, &mut Store) -> Returned<R>,
    ) -> Call<R> {
        let limits = self.limits_for(plugin.name());
        let session = SessionCtx::new(
            record,
            turn,
            state,
            self.inner.store.clone(),
            limits.clone(),
        );
        self.call_on(plugin, session, record.owner.clone(), sink, within, export)
    }

    /// Calls one export of `plugin` in a fresh instance working on
    /// `session`, for a session started by `owner`.
    pub(crate) fn call_on<R>(
        &self,
        plugin: &Arc<PluginVersion>,
        session: SessionCtx,
        owner: Option<String>,
        sink: Option<Sink>,
        within: &Within,
        export: impl FnOnce(&Agent, &mut Store) -> Returned<R>,
    ) -> Call<R> {
        let inner = &self.inner;
        let (limits, deadline) = within.bound(self.limits_for(plugin.name()));
        let id = session.id().to_owned();
        let scope = Scope {
            plugin: plugin.name().to_owned(),
            session: id.clone(),
            user: session.user_id().map(str::to_owned),
        };
        let http = HttpCtx::new(
            inner.outbound.of(plugin.name()),
            plugin.name(),
            session.id(),
            inner.metrics.clone(),
            deadline,
            within.stop(),
        );
        let capabilities = Capabilities {
            session,
            kv: KvCtx::new(
                scope,
                inner.store.clone(),
                inner.clock.clone(),
                inner.grants.clone(),
                inner.metrics.clone(),
                Quota {
                    keys: limits.kv_keys,
                    bytes: limits.kv_bytes,
                    user_keys: limits.kv_user_keys,
                    user_bytes: limits.kv_user_bytes,
                },
                limits.value_bytes,
            ),
            output: OutputCtx::new(sink, limits.output_bytes),
            registry: Box::new(Caller::new(
                self.clone(),
                plugin.clone(),
                owner,
                within,
                deadline,
                limits.deadline,
            )),
        };
        let ctx = TurnCtx::in_session(capabilities, http, &limits, &inner.clock);
        let (result, ctx) = call(
            inner.plugins.engine(),
            &inner.metrics,
            &plugin.pre,
            ctx,
            &limits,
            export,
        );
        let guest_output = (result.is_err() && limits.guest_output)
            .then(|| ctx.guest_output(GUEST_OUTPUT_BYTES))
            .flatten();
        let outbound = ctx.outbound_use();
        ctx.flush_log(plugin.name(), &id);
        let capabilities = ctx
            .into_capabilities()
            .expect("a call in a session has its capabilities");
        Call {
            result: result.map_err(Cause::from),
            session: capabilities.session,
            said: capabilities.output.into_said(),
            guest_output,
            outbound,
            kv_writes: capabilities.kv.into_written(),
            calls: capabilities.registry.into_calls(),
        }
    }

    /// Calls one export in `turn`, starting from `state`, and notes the KV
    /// keys it wrote and the registry calls it made for the turn's event,
    /// and the notes and prune it asked for if it succeeded.
    pub(crate) fn call_turn<R>(
        &self,
        turn: &Turn,
        state: State,
        sink: Option<Sink>,
        within: &Within,
        export: impl FnOnce(&Agent, &mut Store) -> Returned<R>,
    ) -> Call<R> {
        let mut call = self.call_in_session(
            &turn.plugin,
            &turn.record,
            turn.number,
            state,
            sink,
            within,
            export,
        );
        turn.kv_writes
            .borrow_mut()
            .extend(std::mem::take(&mut call.kv_writes));
        turn.calls
            .borrow_mut()
            .extend(std::mem::take(&mut call.calls));
        if call.result.is_ok() {
            turn.shaping.borrow_mut().adopt(call.session.take_shaping());
        }
        call
    }

    /// Commits `turn` with `state`, after checking `state` against the
    /// plugin's state schema, with the event that records it and the
    /// messages that event appends to the history: the new session of a
    /// start, or the next turn of an existing one, whose stored revision
    /// must still be the one the turn read. An end ends the session; the
    /// plugin it handed the conversation to, if any, stays as it was.
    pub(crate) fn commit(
        &self,
        turn: &Turn,
        state: &State,
        outcome: &Outcome,
        input: Input,
        said: &[String],
    ) -> Result<(), Cause> {
        let delegate = turn.record.delegate.clone();
        self.commit_delegating(turn, state, outcome, input, said, delegate)
    }

    /// [`Host::commit`], handing the conversation to `delegate`'s child
    /// session from now on (or back to the session's own plugin).
    pub(crate) fn commit_delegating(
        &self,
        turn: &Turn,
        state: &State,
        outcome: &Outcome,
        input: Input,
        said: &[String],
        delegate: Option<String>,
    ) -> Result<(), Cause> {
        let Turn { record, plugin, .. } = turn;
        check_state(plugin, state)?;
        let Shaping { notes, prune } = turn.shaping.take();
        let (kind, input, result) = input.into_parts();
        let at_ms = self.inner.clock.now_ms();
        let snapshot = (kind == EventKind::Start
            || turn.number.is_multiple_of(self.inner.limits.snapshot_turns))
        .then(|| state.clone());
        let mut event = Event {
            seq: record.revision + 1,
            session: record.id.clone(),
            turn: turn.number,
            kind,
            input,
            said: said.to_vec(),
            result,
            notes,
            prune,
            clipped: Vec::new(),
            outcome: outcome.clone(),
            migration: turn.migration.clone(),
            kv_writes: turn.kv_writes.take(),
            calls: turn.calls.take(),
            patch: diff(&record.state, state),
            snapshot,
            plugin: record.plugin.clone(),
            delegate: delegate.clone(),
            digest: plugin.digest.to_string(),
            state_version: plugin.manifest.state_version,
            at_ms,
            duration_us: micros_since(turn.opened),
            rewound: false,
        };
        let store = &self.inner.store;
        let (messages, dropped_messages) = match &event.prune {
            None => (event.messages(), 0),
            Some(prune) => {
                let history = if record.revision == 0 {
                    Vec::new()
                } else {
                    let cap = usize::try_from(self.history_cap().messages).unwrap_or(usize::MAX);
                    store.history(&record.id, cap).map_err(Cause::from)?
                };
                let mut history = prune.apply(history);
                history.extend(event.messages());
                // The pruned history replaces the stored one.
                (history, u64::MAX)
            }
        };
        event.clip(self.inner.limits.log_text_bytes);
        let mut entry = log_entry(&event)?;
        if event.snapshot.is_none() && self.snapshot_due(record, entry.body.len()) {
            event.snapshot = Some(state.clone());
            entry = log_entry(&event)?;
        }
        self.log_room(record, entry.body.len())?;
        if record.revision == 0 {
            let record = SessionRecord {
                state: state.clone(),
                revision: 1,
                delegate,
                ..record.clone()
            };
            store.create(&record, &messages, &entry)?;
            self.committed(&record, &entry, 1);
            return Ok(());
        }
        let commit = Commit {
            session: record.id.clone(),
            read_revision: record.revision,
            state: state.clone(),
            turn: turn.number,
            plugin: record.plugin.clone(),
            delegate,
            digest: plugin.digest.to_string(),
            state_version: plugin.manifest.state_version,
            status: if *outcome == Outcome::End {
                Status::Ended
            } else {
                Status::Active
            },
            dropped_messages,
            messages,
            history_cap: self.history_cap(),
            at_ms,
            event: entry,
        };
        store.commit(&commit)?;
        self.committed(record, &commit.event, commit.read_revision + 1);
        Ok(())
    }

    /// Refuses an event of `adding` bytes that would take `record`'s log
    /// past its limit (or, of none yet, any event: a full log has no room).
    pub(crate) fn log_room(&self, record: &SessionRecord, adding: usize) -> Result<(), Cause> {
        let (held, limit) = (record.log_bytes, self.inner.limits.log_bytes);
        if held + (adding as u64).max(1) > limit {
            return Err(Cause::LogFull { held, limit });
        }
        Ok(())
    }

    /// Whether an event of `adding` bytes takes `record`'s log past another
    /// multiple of [`Limits::snapshot_bytes`](crate::Limits::snapshot_bytes),
    /// and so should hold the whole state.
    fn snapshot_due(&self, record: &SessionRecord, adding: usize) -> bool {
        let every = self.inner.limits.snapshot_bytes;
        (record.log_bytes + adding as u64) / every > record.log_bytes / every
    }

    /// What each commit trims a session's history to.
    pub(crate) fn history_cap(&self) -> HistoryCap {
        HistoryCap {
            messages: self.inner.limits.history_messages,
            bytes: self.inner.limits.history_bytes,
        }
    }

    #[instrument(skip_all, fields(session = id, plugin = start.plugin, version))]
    pub(crate) fn run_start(
        &self,
        id: &str,
        start: SessionStart,
        sink: Option<Sink>,
        within: &Within,
    ) -> Result<TurnReport, SessionError> {
        let name = start.plugin.clone();
        let fail = session_error(id, Some(&name), Some(0));
        let plugin = self
            .inner
            .plugins
            .active(&start.plugin)
            .ok_or_else(|| fail(Cause::PluginNotLoaded(start.plugin.clone())))?;
        record_version(&plugin);
        let slot = self.enter_turn(&start.plugin).map_err(fail)?;
        let store = &self.inner.store;
        if store.load(id).map_err(|err| fail(err.into()))?.is_some() {
            return Err(fail(Cause::Exists));
        }
        // Sessions starting at once may each see room for one more: the
        // bound can be passed by as many starts as run concurrently.
        if let Some(most) = self.limits_for(&start.plugin).live_sessions {
            let live = store
                .live_sessions(&start.plugin)
                .map_err(|err| fail(err.into()))?;
            if live >= most {
                return Err(fail(Cause::Limit(Tripped::LiveSessions(most))));
            }
        }
        let now = self.inner.clock.now_ms();
        let opened = Instant::now();
        let turn = Turn {
            record: SessionRecord {
                id: id.to_owned(),
                plugin: start.plugin,
                digest: plugin.digest.to_string(),
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
            migration: None,
            opened,
            kv_writes: RefCell::default(),
            calls: RefCell::default(),
            shaping: RefCell::default(),
            _slot: slot,
        };
        let call = self.call_turn(&turn, State::new(), sink, within, |agent, store| {
            agent.on_start(store)
        });
        let state = call.session.into_state();
        call.result
            .map_err(|cause| fail(cause).with_guest_output(call.guest_output))?;
        self.commit(&turn, &state, &Outcome::Continue, Input::Start, &call.said)
            .map_err(fail)?;
        Ok(turn.report(state, call.said, Outcome::Continue))
    }

    #[instrument(skip_all, fields(session = id, plugin, version))]
    pub(crate) fn run_end(&self, id: &str) -> Result<TurnReport, SessionError> {
        // Ending is never refused for the plugin being busy.
        let turn = self.open(id, false)?;
        let committed = turn.record.state.clone();
        let call = self.call_turn(&turn, committed, None, &Within::TOP, |agent, store| {
            agent.on_end(store, EndReason::Caller)
        });
        // The session ends either way; on-end's writes count only if it succeeded.
        let (state, said, failure) = match call.result {
            Ok(()) => (call.session.into_state(), call.said, None),
            Err(cause) => (turn.record.state.clone(), Vec::new(), Some(cause)),
        };
        let guest_output = call.guest_output;
        self.commit(&turn, &state, &Outcome::End, Input::End, &said)
            .map_err(turn.fail())?;
        self.end_children(&turn.record);
        if let Some(cause) = failure {
            return Err(turn.fail()(cause).with_guest_output(guest_output));
        }
        Ok(turn.report(state, said, Outcome::End))
    }
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

/// Checks a state about to be committed against the plugin's state schema.
/// (Every rule a single write can break was checked at the write.)
pub(crate) fn check_state(plugin: &PluginVersion, state: &State) -> Result<(), Cause> {
    plugin.tools.check_state(state).map_err(|violations| {
        Cause::InvalidState(format!(
            "breaks the state schema of `{}`: {}",
            plugin.name(),
            violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))
    })
}
