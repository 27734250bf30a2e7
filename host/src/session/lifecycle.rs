//! A session's beginning and end: the start turn, the end turn, and the
//! child sessions (of the plugins its plugin calls, and of the plugin it
//! handed the conversation to), whose ids derive from their parent's and
//! which end with it.

use std::collections::BTreeSet;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use tracing::instrument;

use crate::capability::output::Sink;
use crate::instance::world::EndReason;
use crate::policy::MayCall;
use crate::session::chain::Within;
use crate::session::error::{Cause, SessionError, session_error};
use crate::session::event::{EventKind, Input};
use crate::session::parts::Parts;
use crate::session::report::{Outcome, SessionStart, TurnReport};
use crate::session::turns::{Ending, Turn};
use crate::store::{SessionRecord, State, Status};

/// How the id of every child session begins, and no other's.
pub const CHILD_PREFIX: &str = "child-";

/// The id of `parent`'s child session of `plugin`: derived, so that every
/// host finds the same one, and as hard to guess as its parent's id.
pub fn child_session_id(parent: &str, plugin: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [parent, plugin] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    format!("{CHILD_PREFIX}{}", crate::hex::hex(&digest[..16]))
}

/// Starts session `id` as `start` asks: runs the plugin's `on-start` (turn
/// 0) and stores the session with what it wrote and said, or nothing if it
/// fails.
#[instrument(skip_all, fields(session = id, plugin = start.plugin, version))]
pub(crate) fn start(
    parts: &Arc<Parts>,
    id: &str,
    start: SessionStart,
    sink: Option<Sink>,
    within: &Within,
) -> Result<TurnReport, SessionError> {
    let turn = Turn::start(parts, id, start, sink, within)?;
    let fail = turn.fail();
    let call = turn.call(State::new(), |agent, store| agent.on_start(store));
    let state = call.session.into_state();
    call.result
        .map_err(|cause| fail(cause).with_guest_output(call.guest_output))?;
    let ending = turn.ending(call.said, state, Outcome::Continue);
    turn.commit(Input::Start, &ending).map_err(fail)?;
    Ok(close(turn, ending))
}

/// Ends session `id` at the caller's request: runs `on-end` and commits
/// its writes with the end. If `on-end` fails, the session still ends,
/// with its state as last committed, and the failure is returned.
#[instrument(skip_all, fields(session = id, plugin, version))]
pub(crate) fn end(parts: &Arc<Parts>, id: &str) -> Result<TurnReport, SessionError> {
    let top = Within::TOP;
    let turn = Turn::open(parts, id, EventKind::End, None, &top)?;
    let committed = turn.record.state.clone();
    let call = turn.call(committed, |agent, store| {
        agent.on_end(store, EndReason::Caller)
    });
    // The session ends either way; on-end's writes count only if it succeeded.
    let (ending, failure) = match call.result {
        Ok(()) => (
            turn.ending(call.said, call.session.into_state(), Outcome::End),
            None,
        ),
        Err(cause) => (
            turn.ending(Vec::new(), turn.record.state.clone(), Outcome::End),
            Some(cause),
        ),
    };
    turn.commit(Input::End, &ending).map_err(turn.fail())?;
    let failed = failure.map(|cause| turn.fail()(cause).with_guest_output(call.guest_output));
    let report = close(turn, ending);
    failed.map_or(Ok(report), Err)
}

/// Closes `turn`, committed as `ending` says, whatever its kind: a turn
/// that ended its session ends the session's children first. Its report.
pub(crate) fn close(turn: Turn, ending: Ending) -> TurnReport {
    if ending.outcome == Outcome::End {
        end_children(turn.parts(), &turn.record);
    }
    turn.close(ending)
}

/// The child session `start` names (its `id`), if it exists; a session
/// someone else made under the id (another plugin, owner or user than
/// the parent's) is refused, never taken for the child.
pub(crate) fn child_record(
    parts: &Parts,
    start: &SessionStart,
) -> Result<Option<SessionRecord>, SessionError> {
    let id = start.id.as_deref().expect("a child's start names its id");
    let fail = session_error(id, Some(&start.plugin), None);
    let found = parts.store.load(id).map_err(|err| fail(err.into()))?;
    match found {
        Some(record)
            if record.plugin != start.plugin
                || record.owner != start.owner
                || record.user_id != start.user_id =>
        {
            Err(fail(Cause::BadRequest(format!(
                "the session `{id}` is not the child of this session for `{}`",
                start.plugin
            ))))
        }
        found => Ok(found),
    }
}

/// Ends the child sessions of `parent`, a session that has just ended:
/// those of the plugins its plugin may call, and that of the plugin it
/// handed the conversation to; closes its connections to MCP servers,
/// and forgets that it was pinned to an older version.
pub(crate) fn end_children(parts: &Arc<Parts>, parent: &SessionRecord) {
    parts.remotes.end_conversation(&parent.id);
    parts.pinned.forget(&parent.id, &parts.metrics);
    let granted = parts.calls.get(&parent.plugin).map(MayCall::plugins);
    let callees = granted
        .into_iter()
        .flatten()
        .chain(parent.delegate.as_deref())
        .collect::<BTreeSet<_>>();
    for callee in callees {
        let child = child_session_id(&parent.id, callee);
        let active = matches!(
            parts.store.load(&child),
            Ok(Some(record)) if record.status == Status::Active
        );
        if !active {
            continue;
        }
        let ended = parts.in_child(&child, |id| end(parts, id));
        if let Err(err) = ended {
            tracing::warn!(session = parent.id, child = child, error = %err, "a child session's on-end failed; it ended all the same");
        }
    }
}
