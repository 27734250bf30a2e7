//! The agent's answer to a message: `on-message`, and `on-end` after it
//! when the agent ends the conversation, made the turn's [`Ending`]. The
//! session's own plugin answers this way (`message`), and so does a plugin
//! the conversation was handed to (`hand_off`).

use crate::instance::world::{EndReason, GuestOutcome};
use crate::session::error::{Cause, SessionError};
use crate::session::report::Outcome;
use crate::session::turns::{Ending, Turn};

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
