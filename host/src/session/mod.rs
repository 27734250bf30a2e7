//! Sessions and the turn transaction.
//!
//! A session is a record in the store; an instance serves one turn of one
//! session and is dropped. A turn loads the session, instantiates the active
//! version of its plugin, calls one export, and on success commits the new
//! state, revision, turn number and history in one store transaction. On a
//! trap, a tripped limit, a guest error or a refused state, nothing is
//! committed. Turns of one session run one at a time; turns of different
//! sessions run concurrently.
//!
//! The rooms: [`turns`] (the turn, once for every entry point),
//! `message`, [`tool_call`], [`calls`] (a guest's registry calls) and
//! `chain` (how deep they run), `hand_off`, `migrate`, [`event`] (what each
//! commit logs), [`clip`], `serial` (locks, leases, turns at once),
//! `interrupt`, [`error`] and [`report`]. The front door that starts turns
//! is [`Host`](crate::Host).

pub(crate) mod call;
pub mod calls;
pub(crate) mod chain;
pub mod clip;
pub mod error;
pub mod event;
mod hand_off;
pub(crate) mod interrupt;
pub(crate) mod message;
pub(crate) mod migrate;
pub(crate) mod parts;
pub mod report;
pub(crate) mod serial;
pub mod tool_call;
pub(crate) mod turns;
