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
//! The rooms: `parts` (what every turn runs with), [`turns`] (the turn as
//! a value, once for every kind), `lifecycle` (start, end, and child
//! sessions), `message`, `answer` (on-message, and on-end after it),
//! `hand_off`, [`tool_call`], `call` (one export's call), [`calls`] (a
//! guest's registry calls) and `chain` (how deep they run), `migrate` and
//! `pinned`, [`event`] (what each commit logs), [`clip`], `serial` (locks,
//! leases, turns at once), `interrupt`, [`error`] and [`report`]. The front
//! door that starts turns is [`Host`](crate::Host).

mod answer;
pub(crate) mod call;
pub mod calls;
pub(crate) mod chain;
pub mod clip;
pub mod error;
pub mod event;
mod hand_off;
pub(crate) mod interrupt;
pub(crate) mod lifecycle;
pub(crate) mod message;
pub(crate) mod migrate;
pub(crate) mod parts;
pub(crate) mod pinned;
pub mod report;
pub(crate) mod serial;
pub mod tool_call;
pub(crate) mod turns;
