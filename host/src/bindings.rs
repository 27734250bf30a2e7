//! Host bindings of the WIT package `agentbox:plugin@0.1.0`.
//!
//! The package folder is frozen once released; a later version gets its own
//! `bindgen!` in its own module next to this one.
#![expect(
    missing_docs,
    reason = "generated items; the WIT documents each of them"
)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: { default: trappable },
    with: { "agentbox:plugin/kv.bucket": crate::kv::Bucket },
});

pub use agentbox::plugin::types::{
    EndReason, Error as GuestError, Manifest, Message, Outcome, Role, ToolSpec,
};
pub use exports::agentbox::plugin::agent::Guest as Agent;

/// The name of the agent export as it appears in a component's exports.
pub const AGENT_EXPORT: &str = "agentbox:plugin/agent@0.1.0";

/// The version of the WIT package these bindings implement.
pub const WORLD_VERSION: &str = "0.1.0";
