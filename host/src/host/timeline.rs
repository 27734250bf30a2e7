//! Time travel: a session's log read a page at a time, its state as of
//! any turn rebuilt from the log, and forks and rewinds from a turn. Each
//! is a commit like a turn's, with the event that records it.

use std::time::Instant;

use json_patch::Patch;
use serde::Serialize;
use serde_json::{Value, json};

use crate::capability::kv::KvWrites;
use crate::capability::registry::RegistryCalls;
use crate::clock::micros_since;
use crate::host::Host;
use crate::session::error::{Cause, SessionError, session_error};
use crate::session::event::{Event, EventKind, diff, rebuild};
use crate::session::parts::Parts;
use crate::session::report::Outcome;
use crate::session::turns::log_entry;
use crate::store::{Commit, Message, Role, SessionRecord, State, Status};

/// Most events one page of a session's log holds.
pub const EVENTS_PAGE: usize = 1_000;

/// Most turns of a line a history's walk reads at a time.
const WALK_TURNS: u64 = 64;

/// Bytes of events past which a page of a session's log holds no more:
/// a page of large messages is cut short, whatever its count, so that a
/// reader (or a follower whose reader stalls) holds a bounded amount.
pub const EVENTS_PAGE_BYTES: usize = 2 << 20;

/// A page of a session's log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventPage {
    /// Its events, oldest first.
    pub events: Vec<Event>,
    /// The number to read the next page after, or `None` when the page
    /// was not full (by count or by bytes): the log had no more.
    pub next: Option<u64>,
}

/// A session's state as of one of its turns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateAt {
    /// The session.
    pub session: String,
    /// The turn.
    pub turn: u64,
    /// The number of the event that committed the turn.
    pub event: u64,
    /// The state the turn committed.
    pub state: State,
    /// The state layout version it is laid out for.
    pub state_version: u32,
    /// Hex sha256 of the plugin version that committed it.
    pub digest: String,
}

impl StateAt {
    /// `state`, the state of the turn of `event`, as session `session`'s
    /// event number `seq` has it.
    fn of(session: String, seq: u64, event: &Event, state: State) -> StateAt {
        StateAt {
            session,
            turn: event.turn,
            event: seq,
            state,
            state_version: event.state_version,
            digest: event.digest.clone(),
        }
    }
}

/// A turn as the log has it: its event, and its state rebuilt.
struct Rebuilt {
    event: Event,
    state: State,
}

impl Host {
    /// Sessions' logs: read, followed, and a session's state as of a turn,
    /// forked or rewound to.
    pub fn timeline(&self) -> Timeline<'_> {
        Timeline { host: self }
    }
}

/// Sessions' logs: read, followed, and a session's state as of a turn,
/// forked or rewound to ([`Host::timeline`]).
#[derive(Debug, Clone, Copy)]
pub struct Timeline<'a> {
    pub(super) host: &'a Host,
}

impl Timeline<'_> {
    /// Up to `limit` (at most [`EVENTS_PAGE`]) events of session `id`'s log
    /// numbered after `after`, oldest first, and no more once they reach
    /// [`EVENTS_PAGE_BYTES`].
    pub async fn events(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<EventPage, SessionError> {
        let fail = session_error(id, None, None);
        let owned = id.to_owned();
        let limit = limit.min(EVENTS_PAGE);
        let logged = self
            .host
            .parts
            .on_store(move |store| store.events(&owned, after, limit, EVENTS_PAGE_BYTES))
            .await
            .map_err(|err| fail(err.into()))?;
        let bytes: usize = logged.iter().map(|logged| logged.body.len()).sum();
        let full = logged.len() == limit || bytes >= EVENTS_PAGE_BYTES;
        let next = logged.last().filter(|_| full).map(|last| last.seq);
        let events = logged
            .iter()
            .map(|logged| Event::parse(logged).map_err(&fail))
            .collect::<Result<_, _>>()?;
        Ok(EventPage { events, next })
    }

    /// Session `id`'s state as of `turn`, rebuilt from its log.
    pub async fn state_at(&self, id: &str, turn: u64) -> Result<StateAt, SessionError> {
        let (parts, owned) = (self.host.parts.clone(), id.to_owned());
        let rebuilt = tokio::task::spawn_blocking(move || {
            let fail = session_error(&owned, None, Some(turn));
            let record = load_record(&parts, &owned)?;
            rebuild_turn(&parts, &record, turn).map_err(fail)
        })
        .await
        .expect("rebuilding a state panicked")?;
        Ok(StateAt::of(
            id.to_owned(),
            rebuilt.event.seq,
            &rebuilt.event,
            rebuilt.state,
        ))
    }

    /// Makes a new session, `new_id` (a random id if `None`), with active
    /// session `id`'s state and history as of `turn`, for the same user
    /// and owner; its first event names where it came from. The new session's next
    /// turn is `turn + 1`, and it migrates the state if the plugin version
    /// has moved on since.
    pub async fn fork(
        &self,
        id: &str,
        turn: u64,
        new_id: Option<String>,
    ) -> Result<StateAt, SessionError> {
        let (parts, id) = (self.host.parts.clone(), id.to_owned());
        tokio::task::spawn_blocking(move || run_fork(&parts, &id, turn, new_id))
            .await
            .expect("a fork panicked")
    }

    /// Sets active session `id` back to `turn`: its state, history and
    /// version are those of that turn again, and its next turn is `turn +
    /// 1`. The events of the turns it goes back past stay in the log, marked
    /// rewound, after the rewind's own event.
    pub async fn rewind(&self, id: &str, turn: u64) -> Result<StateAt, SessionError> {
        self.host
            .serialized(id, move |parts, id, _| run_rewind(parts, id, turn))
            .await
    }
}

/// Session `id` as last committed.
fn load_record(parts: &Parts, id: &str) -> Result<SessionRecord, SessionError> {
    let fail = session_error(id, None, None);
    parts
        .store
        .load(id)
        .map_err(|err| fail(err.into()))?
        .ok_or_else(|| fail(Cause::NotFound))
}

/// Forks session `id` at `turn` into `new_id` ([`Timeline::fork`]).
fn run_fork(
    parts: &Parts,
    id: &str,
    turn: u64,
    new_id: Option<String>,
) -> Result<StateAt, SessionError> {
    let opened = Instant::now();
    let record = load_record(parts, id)?;
    let fail = session_error(id, Some(&record.plugin), Some(turn));
    if record.status == Status::Ended {
        return Err(fail(Cause::Ended));
    }
    let new_id = new_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    crate::names::check_session_id(&new_id).map_err(|reason| fail(Cause::BadRequest(reason)))?;
    let Rebuilt { event: from, state } = rebuild_turn(parts, &record, turn).map_err(fail)?;
    let history = history_at(parts, id, &from).map_err(fail)?;
    let now = parts.clock.now_ms();
    let forked = SessionRecord {
        id: new_id.clone(),
        digest: from.digest.clone(),
        state: state.clone(),
        state_version: from.state_version,
        revision: 1,
        turn,
        status: Status::Active,
        created_at_ms: now,
        updated_at_ms: now,
        delegate: from.delegate.clone(),
        log_bytes: 0,
        ..record
    };
    let input = json!({ "from": id, "turn": turn, "event": from.seq });
    let event = Event {
        seq: 1,
        session: new_id.clone(),
        patch: diff(&State::new(), &state),
        snapshot: Some(state),
        at_ms: now,
        duration_us: micros_since(opened),
        ..back_to(&from, EventKind::Fork, input)
    };
    let fail_new = session_error(&new_id, Some(&forked.plugin), Some(turn));
    let entry = log_entry(&event).map_err(fail_new)?;
    parts
        .store
        .create(&forked, &history, &entry)
        .map_err(|err| fail_new(err.into()))?;
    parts.committed(&forked, &entry, 1);
    Ok(StateAt::of(new_id, 1, &from, forked.state))
}

/// Rewinds session `id` to `turn` ([`Timeline::rewind`]).
fn run_rewind(parts: &Parts, id: &str, turn: u64) -> Result<StateAt, SessionError> {
    let opened = Instant::now();
    let record = load_record(parts, id)?;
    let fail = session_error(id, Some(&record.plugin), Some(turn));
    if record.status == Status::Ended {
        return Err(fail(Cause::Ended));
    }
    if turn >= record.turn {
        return Err(fail(Cause::BadRequest(format!(
            "session `{id}` is at turn {}; a rewind goes back to an earlier one",
            record.turn
        ))));
    }
    let Rebuilt { event: to, state } = rebuild_turn(parts, &record, turn).map_err(fail)?;
    let history = history_at(parts, id, &to).map_err(fail)?;
    let at_ms = parts.clock.now_ms();
    let input = json!({ "turn": turn, "from_turn": record.turn });
    let event = Event {
        seq: record.revision + 1,
        session: id.to_owned(),
        patch: diff(&record.state, &state),
        at_ms,
        duration_us: micros_since(opened),
        ..back_to(&to, EventKind::Rewind, input)
    };
    let commit = Commit {
        session: id.to_owned(),
        read_revision: record.revision,
        state: state.clone(),
        turn,
        plugin: record.plugin.clone(),
        delegate: to.delegate.clone(),
        digest: to.digest.clone(),
        state_version: to.state_version,
        status: Status::Active,
        dropped_messages: u64::MAX,
        messages: history,
        history_cap: parts.history_cap(),
        at_ms,
        event: log_entry(&event).map_err(fail)?,
    };
    parts
        .log_room(&record, commit.event.body.len())
        .map_err(fail)?;
    parts
        .store
        .commit(&commit)
        .map_err(|err| fail(err.into()))?;
    parts.committed(&record, &commit.event, event.seq);
    Ok(StateAt::of(id.to_owned(), event.seq, &to, state))
}

/// `record`'s turn `turn` as its log has it.
fn rebuild_turn(parts: &Parts, record: &SessionRecord, turn: u64) -> Result<Rebuilt, Cause> {
    if turn > record.turn {
        return Err(Cause::BadRequest(format!(
            "session `{}` is at turn {}; turn {turn} has not happened",
            record.id, record.turn
        )));
    }
    let line = line(parts, &record.id, turn)?;
    let Some(event) = line.last().filter(|event| event.turn == turn).cloned() else {
        return Err(Cause::BadRequest(format!(
            "turn {turn} of session `{}` is not in its log: the log starts {}",
            record.id,
            log_start(parts, &record.id)?
        )));
    };
    let state = rebuild(&line)?;
    Ok(Rebuilt { event, state })
}

/// The events of session `id`'s line from the latest snapshot at or
/// before `turn` through `turn`.
fn line(parts: &Parts, id: &str, turn: u64) -> Result<Vec<Event>, Cause> {
    parts
        .store
        .line(id, turn)?
        .iter()
        .map(Event::parse)
        .collect()
}

/// The events of session `id`'s line, as it stood at `event`, for the
/// turns before `event`'s, [`WALK_TURNS`] of them at most.
fn line_before(parts: &Parts, id: &str, event: &Event) -> Result<Vec<Event>, Cause> {
    parts
        .store
        .line_before(id, event.seq, event.turn, WALK_TURNS)?
        .iter()
        .map(Event::parse)
        .collect()
}

/// The event fork `fork` was made at, in its source session; `None`
/// once that session is gone (deleted, or its id since reused), and
/// the fork's history then starts with the fork.
fn forked_from(parts: &Parts, fork: &Event) -> Result<Option<Event>, Cause> {
    let (Some(source), Some(seq)) = (fork.input["from"].as_str(), fork.input["event"].as_u64())
    else {
        return Ok(None);
    };
    let store = &parts.store;
    if !store
        .load(source)?
        .is_some_and(|record| record.created_at_ms <= fork.at_ms)
    {
        return Ok(None);
    }
    let found = store.events(source, seq.saturating_sub(1), 1, EVENTS_PAGE_BYTES)?;
    Ok(match found.first().map(Event::parse).transpose()? {
        Some(event) if event.seq == seq && event.turn == fork.turn => Some(event),
        _ => None,
    })
}

/// Where session `id`'s log starts, in words.
fn log_start(parts: &Parts, id: &str) -> Result<String, Cause> {
    let first = parts.store.events(id, 0, 1, EVENTS_PAGE_BYTES)?;
    Ok(match first.first().map(Event::parse).transpose()? {
        Some(event) if event.kind == EventKind::Fork => format!(
            "at turn {}, where it was forked from session {} (ask that session for earlier turns)",
            event.turn, event.input["from"]
        ),
        Some(event) => format!("at turn {}", event.turn),
        None => "nowhere: the session predates event logs".to_owned(),
    })
}

/// Session `id`'s history as of `event` (on its line), rebuilt from the
/// messages the line's events appended, newest first, to the history's
/// cap. A prune's event holds only what it asked for, so the walk keeps
/// from the turns before a prune only its newest `keep_last`, behind
/// its summary. A fork's history is its source's as of the event it
/// was forked at, so the walk goes on there.
fn history_at(parts: &Parts, id: &str, event: &Event) -> Result<Vec<Message>, Cause> {
    let cap = parts.history_cap();
    let mut newest_first: Vec<Message> = Vec::new();
    let mut bytes = 0;
    // How many messages older than the walk's place the history keeps.
    let mut room = usize::MAX;
    let mut pruned: Vec<Pruned> = Vec::new();
    // The sessions walked through, the one the line is of last.
    let mut walked = vec![id.to_owned()];
    let mut line = vec![event.clone()];
    'line: loop {
        for event in line.iter().rev() {
            for message in event.messages().into_iter().rev() {
                if room == 0 {
                    break 'line;
                }
                room -= 1;
                bytes += message.content.len() as u64;
                newest_first.push(message);
            }
            if let Some(prune) = &event.prune {
                pruned.push(Pruned {
                    summary: prune.summary.clone(),
                    room,
                    taken: newest_first.len(),
                });
                room = room.min(prune.keep_last as usize);
            }
            if room == 0 || newest_first.len() as u64 >= cap.messages || bytes >= cap.bytes {
                break 'line;
            }
        }
        let Some(first) = line.first() else { break };
        line = match first.kind {
            EventKind::Fork => match forked_from(parts, first)? {
                // A session made again under an id the walk has been
                // through is not the one it was forked from.
                Some(source) if !walked.contains(&source.session) => {
                    walked.push(source.session.clone());
                    vec![source]
                }
                _ => break,
            },
            _ if first.turn == 0 => break,
            _ => line_before(
                parts,
                walked.last().expect("the walk starts somewhere"),
                first,
            )?,
        };
    }
    // The oldest prune's summary is the newest of them.
    for prune in pruned.iter().rev() {
        if let Some(summary) = &prune.summary
            && newest_first.len() - prune.taken < prune.room
        {
            newest_first.push(Message {
                role: Role::System,
                content: summary.clone(),
                interrupted: false,
            });
        }
    }
    let kept = cap.kept(
        newest_first
            .iter()
            .map(|message| message.content.len() as u64),
    );
    newest_first.truncate(kept as usize);
    newest_first.reverse();
    Ok(newest_first)
}

/// A prune met on the walk back through a line: its summary goes before
/// the messages taken from earlier turns, if the room left when it was met
/// still holds it.
struct Pruned {
    summary: Option<String>,
    room: usize,
    taken: usize,
}

/// An event that takes a session back to the turn of `to`: that turn's
/// plugin, delegate and version, nothing said, no change; the caller names
/// the rest.
fn back_to(to: &Event, kind: EventKind, input: Value) -> Event {
    Event {
        seq: 0,
        session: String::new(),
        turn: to.turn,
        kind,
        input,
        said: Vec::new(),
        result: None,
        notes: Vec::new(),
        prune: None,
        clipped: Vec::new(),
        outcome: Outcome::Continue,
        migration: None,
        kv_writes: KvWrites::default(),
        calls: RegistryCalls::default(),
        patch: Patch::default(),
        snapshot: None,
        plugin: to.plugin.clone(),
        delegate: to.delegate.clone(),
        digest: to.digest.clone(),
        state_version: to.state_version,
        at_ms: 0,
        duration_us: 0,
        rewound: false,
    }
}
