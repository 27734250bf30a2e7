//! Hand-offs: a plugin that answers `hand-off(target)` hands the
//! conversation to `target`, which answers in its own child session of the
//! conversation: started (`on-start`) at the first hand-off, it gets the
//! message that triggered it, and the caller's next messages after that,
//! until it hands back or ends. Each plugin keeps its own state; the
//! session's history keeps the whole conversation.

use crate::session::answer::answer;
use crate::session::error::{Cause, SessionError, session_error};
use crate::session::event::{EventKind, Input};
use crate::session::lifecycle::{self, child_record, child_session_id, start};
use crate::session::report::{Outcome, SessionStart, TurnReport};
use crate::session::turns::{Ending, Turn};
use crate::store::Status;

/// Runs a message of a session whose plugin handed the conversation to
/// `delegate`: the delegate's child session answers, and the session
/// records the message, what was said and who answers next.
pub(crate) fn delegated(
    turn: Turn,
    delegate: String,
    text: &str,
) -> Result<TurnReport, SessionError> {
    let (said, next) = hand_off(&turn, &delegate, text)?;
    let mut ending = Ending {
        said,
        state: turn.record.state.clone(),
        outcome: Outcome::Continue,
        delegate: next,
    };
    turn.commit(Input::Message(text.to_owned()), &ending)
        .map_err(turn.fail())?;
    // The session's own plugin goes on as it was; the caller hears who answers.
    ending.outcome = match &ending.delegate {
        Some(next) if *next == delegate => Outcome::Continue,
        Some(next) => Outcome::HandOff(next.clone()),
        None => Outcome::HandOff(turn.record.plugin.clone()),
    };
    Ok(lifecycle::close(turn, ending))
}

/// Hands `text` to `target`'s child session of `parent`'s session, and on
/// to the plugin it hands to in turn: what they said, and the plugin that
/// answers the next message (`None`: the session's own). An interrupt of
/// a plugin handed to fails the hand-off.
pub(crate) fn hand_off(
    parent: &Turn,
    target: &str,
    text: &str,
) -> Result<(Vec<String>, Option<String>), SessionError> {
    let record = &parent.record;
    let fail = session_error(&record.id, Some(&record.plugin), None);
    let parts = parent.parts();
    let mut said = Vec::new();
    let mut target = target.to_owned();
    // A chain of hand-offs is bounded like a chain of calls.
    for _ in 0..parts.limits.call_depth {
        if target == record.plugin {
            return Ok((said, None));
        }
        let child = child_session_id(&record.id, &target);
        let (heard, outcome) =
            parts.in_child(&child, |id| answer_in_child(parent, &target, id, text))?;
        said.extend(heard);
        match outcome {
            Outcome::Continue => return Ok((said, Some(target))),
            Outcome::End => return Ok((said, None)),
            Outcome::HandOff(next) => target = next,
            Outcome::Interrupted => return Err(fail(Cause::Interrupted)),
        }
    }
    Err(fail(Cause::BadRequest(format!(
        "the conversation was handed on more than {} times in one message",
        parts.limits.call_depth
    ))))
}

/// Runs message `text` in `plugin`'s child session `id` of `parent`'s
/// session, starting it first if there is none (or it has ended), and
/// commits it.
fn answer_in_child(
    parent: &Turn,
    plugin: &str,
    id: &str,
    text: &str,
) -> Result<(Vec<String>, Outcome), SessionError> {
    let (parts, record) = (parent.parts(), &parent.record);
    let (sink, within) = (parent.sink.clone(), parent.within);
    let begin = SessionStart {
        plugin: plugin.to_owned(),
        id: Some(id.to_owned()),
        user_id: record.user_id.clone(),
        owner: record.owner.clone(),
        variables: record.variables.clone(),
    };
    let mut said = Vec::new();
    let found = child_record(parts, &begin)?;
    if found
        .as_ref()
        .is_none_or(|record| record.status == Status::Ended)
    {
        if found.is_some() {
            // It ended its part earlier: handed to again, it starts afresh.
            let fail = session_error(id, Some(plugin), None);
            parts
                .store
                .delete_session(id)
                .map_err(|err| fail(err.into()))?;
        }
        said.extend(start(parts, id, begin, sink.clone(), within)?.said);
    }
    let turn = Turn::open(parts, id, EventKind::Message, sink, within)?;
    let ending = answer(&turn, &record.plugin, text)?;
    turn.commit(Input::Message(text.to_owned()), &ending)
        .map_err(turn.fail())?;
    let report = lifecycle::close(turn, ending);
    said.extend(report.said);
    Ok((said, report.outcome))
}
