//! A user's data as one thing: what the store holds for one user id,
//! erased at once.

use serde::Serialize;

use crate::store::error::BackendError;

/// What a store holds about one user, across sessions and KV.
pub trait UserStore: Send + Sync + std::fmt::Debug + 'static {
    /// Deletes, in one atomic step of the store, every session started for
    /// `user` with its history and lease, and the user's scope
    /// (`user/USER`) of every KV owner, expired entries too; returns how
    /// much went. A session or entry written for `user` concurrently is
    /// either erased with the rest or written after, never half of it.
    ///
    /// Tool-call records stay until their retention: they hold a session
    /// id, a tool and an outcome, never arguments or results.
    fn erase_user(&self, user: &str) -> Result<Erased, BackendError>;
}

/// What erasing a user deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Erased {
    /// Sessions deleted, with their history.
    pub sessions: u64,
    /// KV entries deleted, expired ones included.
    pub kv_entries: u64,
}
