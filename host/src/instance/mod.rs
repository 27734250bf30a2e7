//! The instance layer: the data of the wasmtime store serving one call
//! ([`ctx::TurnCtx`]), the linker that gives a guest its capabilities, one
//! `bindgen!` per version of the world ([`v0_1`], [`v0_2`], sharing the
//! imports both have through [`imports`]), and the one way to run
//! an export in a fresh instance under a plugin's limits ([`call`]).
//!
//! Everything above this layer speaks the version-independent types of
//! [`world`]; each versioned module converts its generated types to them.

pub(crate) mod agent;
pub(crate) mod call;
pub(crate) mod ctx;
mod imports;
pub mod v0_1;
pub mod v0_2;
pub mod world;

/// The WIT package every agentbox interface belongs to.
pub const PACKAGE: &str = "agentbox:plugin";

/// The versions of the world this host serves, oldest first.
pub const WORLD_VERSIONS: [&str; 2] = [v0_1::WORLD_VERSION, v0_2::WORLD_VERSION];
