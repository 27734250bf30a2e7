//! A message turn: the caller's text to `on-message` (and `on-end` when
//! the agent ends the conversation), or to the plugin the conversation was
//! handed to, committed with what the agent said. A turn its caller
//! interrupts commits no state, but records the message and what the agent
//! had said by then, marked interrupted ([`super::interrupt`]).

use std::sync::Arc;

use tracing::instrument;

use crate::capability::output::Sink;
use crate::instance::world::{EndReason, GuestOutcome};
use crate::session::chain::Within;
use crate::session::error::{Cause, SessionError};
use crate::session::event::{EventKind, Input};
use crate::session::hand_off::{delegated, hand_off};
use crate::session::parts::Parts;
use crate::session::report::{Outcome, TurnReport};
use crate::session::turns::{Ending, Turn};

/// Sends the caller's `text` to session `id`'s plugin, or to the plugin
/// the conversation was handed to, and commits the turn.
#[instrument(skip_all, fields(session = id, plugin, version))]
pub(crate) fn message(
    parts: &Arc<Parts>,
    id: &str,
    text: &str,
    sink: Option<Sink>,
    within: &Within,
) -> Result<TurnReport, SessionError> {
    let turn = Turn::open(parts, id, EventKind::Message, sink, within)?;
    let fail = turn.fail();
    if let Some(delegate) = turn.record.delegate.clone() {
        return delegated(turn, delegate, text);
    }
    let mut ending = answer(&turn, &turn.record.plugin, text)?;
    if let Outcome::HandOff(target) = &ending.outcome {
        let (heard, delegate) = hand_off(&turn, target, text)?;
        ending.said.extend(heard);
        ending.delegate = delegate;
    }
    turn.commit(Input::Message(text.to_owned()), &ending)
        .map_err(fail)?;
    let interrupted = (ending.outcome == Outcome::Interrupted).then(|| fail(Cause::Interrupted));
    let report = turn.close(ending);
    interrupted.map_or(Ok(report), Err)
}

/// Runs `on-message` with `text` in `turn`, and `on-end` after it when
/// the agent ends the session: how the turn ends. A hand-off goes to a
/// loaded plugin the policy lets the turn's plugin hand to, or back to
/// `home`, the plugin whose session the conversation is. An interrupted
/// turn leaves the state as committed. Commits nothing.
pub(crate) fn answer(turn: &Turn, home: &str, text: &str) -> Result<Ending, SessionError> {
    let fail = turn.fail();
    let committed = turn.record.state.clone();
    let call = turn.call(committed, |agent, store| agent.on_message(store, text));
    let mut said = call.said;
    let mut state = call.session.into_state();
    let outcome = match call.result {
        Err(Cause::Interrupted) => return Ok(interrupted(turn, said)),
        result => result.map_err(|cause| fail(cause).with_guest_output(call.guest_output))?,
    };
    let outcome = match outcome {
        GuestOutcome::Continue => Outcome::Continue,
        GuestOutcome::HandOff(target) => {
            let parts = turn.parts();
            parts
                .plugins
                .active(&target)
                .ok_or_else(|| fail(Cause::PluginNotLoaded(target.clone())))?;
            if target != home && !parts.may_hand_off(&turn.record.plugin, &target) {
                return Err(fail(Cause::HandOffDenied(target)));
            }
            Outcome::HandOff(target)
        }
        GuestOutcome::End => {
            let end = turn.call(state, |agent, store| agent.on_end(store, EndReason::Agent));
            said.extend(end.said);
            match end.result {
                Err(Cause::Interrupted) => return Ok(interrupted(turn, said)),
                result => {
                    result.map_err(|cause| fail(cause).with_guest_output(end.guest_output))?;
                }
            }
            state = end.session.into_state();
            Outcome::End
        }
    };
    Ok(turn.ending(said, state, outcome))
}

/// How an interrupted `turn` ends: with what had been said by then, and
/// the state as committed.
fn interrupted(turn: &Turn, said: Vec<String>) -> Ending {
    turn.ending(said, turn.record.state.clone(), Outcome::Interrupted)
}
