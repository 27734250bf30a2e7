//! Hand-offs: a plugin that answers `hand-off(target)` hands the
//! conversation to `target`, which answers in its own child session of the
//! conversation: started (`on-start`) at the first hand-off, it gets the
//! message that triggered it, and the caller's next messages after that,
//! until it hands back or ends. Each plugin keeps its own state; the
//! session's history keeps the whole conversation.

use crate::capability::output::Sink;
use crate::host::Host;
use crate::session::calls::child_session_id;
use crate::session::chain::Within;
use crate::session::error::{Cause, SessionError, session_error};
use crate::session::event::Input;
use crate::session::report::{Outcome, SessionStart, TurnReport};
use crate::session::turns::Turn;
use crate::store::{SessionRecord, Status};

impl Host {
    /// Runs a message of a session whose plugin handed the conversation to
    /// `delegate`: the delegate's child session answers, and the session
    /// records the message, what was said and who answers next.
    pub(crate) fn run_delegated(
        &self,
        turn: Turn,
        delegate: String,
        text: &str,
        sink: Option<Sink>,
        within: &Within,
    ) -> Result<TurnReport, SessionError> {
        let fail = turn.fail();
        let (said, next) = self.hand_off(&turn.record, &delegate, text, sink, within)?;
        let state = turn.record.state.clone();
        let input = Input::Message(text.to_owned());
        self.commit_delegating(
            &turn,
            &state,
            &Outcome::Continue,
            input,
            &said,
            next.clone(),
        )
        .map_err(fail)?;
        let outcome = match next {
            Some(next) if next == delegate => Outcome::Continue,
            Some(next) => Outcome::HandOff(next),
            None => Outcome::HandOff(turn.record.plugin.clone()),
        };
        Ok(turn.report(state, said, outcome))
    }

    /// Hands `text` to `target`'s child session of `parent`, and on to the
    /// plugin it hands to in turn: what they said, and the plugin that
    /// answers the next message (`None`: the session's own). An interrupt
    /// of a plugin handed to fails the hand-off.
    pub(crate) fn hand_off(
        &self,
        parent: &SessionRecord,
        target: &str,
        text: &str,
        sink: Option<Sink>,
        within: &Within,
    ) -> Result<(Vec<String>, Option<String>), SessionError> {
        let mut said = Vec::new();
        let mut target = target.to_owned();
        // A chain of hand-offs is bounded like a chain of calls.
        for _ in 0..self.inner.limits.call_depth {
            if target == parent.plugin {
                return Ok((said, None));
            }
            let child = child_session_id(&parent.id, &target);
            let (heard, outcome) = self.in_child(&child, |id| {
                self.answer_in_child(parent, &target, id, text, sink.clone(), within)
            })?;
            said.extend(heard);
            match outcome {
                Outcome::Continue => return Ok((said, Some(target))),
                Outcome::End => return Ok((said, None)),
                Outcome::HandOff(next) => target = next,
                Outcome::Interrupted => {
                    return Err(session_error(&parent.id, Some(&parent.plugin), None)(
                        Cause::Interrupted,
                    ));
                }
            }
        }
        Err(session_error(&parent.id, Some(&parent.plugin), None)(
            Cause::BadRequest(format!(
                "the conversation was handed on more than {} times in one message",
                self.inner.limits.call_depth
            )),
        ))
    }

    /// Runs message `text` in `plugin`'s child session `id` of `parent`,
    /// starting it first if there is none (or it has ended), and commits it.
    fn answer_in_child(
        &self,
        parent: &SessionRecord,
        plugin: &str,
        id: &str,
        text: &str,
        sink: Option<Sink>,
        within: &Within,
    ) -> Result<(Vec<String>, Outcome), SessionError> {
        let start = SessionStart {
            plugin: plugin.to_owned(),
            id: Some(id.to_owned()),
            user_id: parent.user_id.clone(),
            owner: parent.owner.clone(),
            variables: parent.variables.clone(),
        };
        let mut said = Vec::new();
        let found = self.child_record(&start)?;
        if found
            .as_ref()
            .is_none_or(|record| record.status == Status::Ended)
        {
            if found.is_some() {
                // It ended its part earlier: handed to again, it starts afresh.
                let fail = session_error(id, Some(plugin), None);
                self.inner
                    .store
                    .delete_session(id)
                    .map_err(|err| fail(err.into()))?;
            }
            said.extend(self.run_start(id, start, sink.clone(), within)?.said);
        }
        let turn = self.open(id, true)?;
        let (heard, state, outcome) =
            self.message_turn(&turn, &parent.plugin, text, sink, within)?;
        let input = Input::Message(text.to_owned());
        self.commit(&turn, &state, &outcome, input, &heard)
            .map_err(turn.fail())?;
        if outcome == Outcome::End {
            self.end_children(&turn.record);
        }
        said.extend(heard);
        Ok((said, outcome))
    }
}
