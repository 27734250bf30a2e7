//! A message turn: the caller's text to `on-message` (and `on-end` when
//! the agent ends the conversation), or to the plugin the conversation was
//! handed to, committed with what the agent said. A turn its caller
//! interrupts commits no state, but records the message and what the agent
//! had said by then, marked interrupted ([`super::interrupt`]).

use std::sync::Arc;

use tracing::instrument;

use crate::capability::output::Sink;
use crate::session::answer::answer;
use crate::session::chain::Within;
use crate::session::error::{Cause, SessionError};
use crate::session::event::{EventKind, Input};
use crate::session::hand_off::{delegated, hand_off};
use crate::session::lifecycle;
use crate::session::parts::Parts;
use crate::session::report::{Outcome, TurnReport};
use crate::session::turns::Turn;

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
    let report = lifecycle::close(turn, ending);
    interrupted.map_or(Ok(report), Err)
}
