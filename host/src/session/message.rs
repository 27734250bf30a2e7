//! A message turn: the caller's text to `on-message` (and `on-end` when
//! the agent ends the conversation), or to the plugin the conversation was
//! handed to, committed with what the agent said. A turn its caller
//! interrupts commits no state, but records the message and what the agent
//! had said by then, marked interrupted ([`super::interrupt`]).

use tracing::instrument;

use crate::capability::output::Sink;
use crate::host::Host;
use crate::instance::world::{EndReason, GuestOutcome};
use crate::session::chain::Within;
use crate::session::error::{Cause, SessionError};
use crate::session::event::Input;
use crate::session::report::{Outcome, TurnReport};
use crate::session::turns::Turn;
use crate::store::State;

impl Host {
    #[instrument(skip_all, fields(session = id, plugin, version))]
    pub(crate) fn run_message(
        &self,
        id: &str,
        text: &str,
        sink: Option<Sink>,
        within: &Within,
    ) -> Result<TurnReport, SessionError> {
        let turn = self.open(id, true)?;
        let fail = turn.fail();
        if let Some(delegate) = turn.record.delegate.clone() {
            return self.run_delegated(turn, delegate, text, sink, within);
        }
        let (mut said, state, outcome) =
            self.message_turn(&turn, &turn.record.plugin, text, sink.clone(), within)?;
        let delegate = match &outcome {
            Outcome::HandOff(target) => {
                let (heard, delegate) = self.hand_off(&turn.record, target, text, sink, within)?;
                said.extend(heard);
                delegate
            }
            _ => None,
        };
        let input = Input::Message(text.to_owned());
        self.commit_delegating(&turn, &state, &outcome, input, &said, delegate)
            .map_err(fail)?;
        match outcome {
            Outcome::End => self.end_children(&turn.record),
            Outcome::Interrupted => return Err(fail(Cause::Interrupted)),
            _ => {}
        }
        Ok(turn.report(state, said, outcome))
    }

    /// Runs `on-message` with `text` in `turn`, and `on-end` after it when
    /// the agent ends the session: what it said, the state it left and how
    /// the conversation goes on. A hand-off goes to a loaded plugin the
    /// policy lets the turn's plugin hand to, or back to `home`, the
    /// plugin whose session the conversation is. An interrupted turn leaves
    /// the state as committed. Commits nothing.
    pub(crate) fn message_turn(
        &self,
        turn: &Turn,
        home: &str,
        text: &str,
        sink: Option<Sink>,
        within: &Within,
    ) -> Result<(Vec<String>, State, Outcome), SessionError> {
        let fail = turn.fail();
        let committed = turn.record.state.clone();
        let call = self.call_turn(turn, committed, sink.clone(), within, |agent, store| {
            agent.on_message(store, text)
        });
        let mut said = call.said;
        let mut state = call.session.into_state();
        let outcome = match call.result {
            Err(Cause::Interrupted) => return Ok(interrupted(turn, said)),
            result => result.map_err(|cause| fail(cause).with_guest_output(call.guest_output))?,
        };
        let outcome = match outcome {
            GuestOutcome::Continue => Outcome::Continue,
            GuestOutcome::HandOff(target) => {
                self.inner
                    .plugins
                    .active(&target)
                    .ok_or_else(|| fail(Cause::PluginNotLoaded(target.clone())))?;
                if target != home && !self.may_hand_off(&turn.record.plugin, &target) {
                    return Err(fail(Cause::HandOffDenied(target)));
                }
                Outcome::HandOff(target)
            }
            GuestOutcome::End => {
                let end = self.call_turn(turn, state, sink, within, |agent, store| {
                    agent.on_end(store, EndReason::Agent)
                });
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
        Ok((said, state, outcome))
    }
}

/// What an interrupted `turn` leaves: what had been said by then, the state
/// as committed, and the interrupt.
fn interrupted(turn: &Turn, said: Vec<String>) -> (Vec<String>, State, Outcome) {
    (said, turn.record.state.clone(), Outcome::Interrupted)
}
