//! The capabilities a turn gives its guest, one context per capability.
//!
//! Each context is built for one turn with exactly what it needs (the KV
//! context gets its store, quota and [`kv::Scope`], never the session's
//! context) and knows nothing of WIT versions: the instance layer
//! ([`crate::instance`]) adapts each version's generated traits to it.

pub mod bucket;
pub mod error;
pub(crate) mod http;
pub mod kv;
pub mod output;
pub(crate) mod registry;
pub mod session;
pub mod stdio;
