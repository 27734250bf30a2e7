//! Host bindings of `agentbox:plugin@0.2.0` (`wit/v0.2`): the generated
//! traits implemented on the turn's capabilities, and conversions between
//! its types and the host's ([`super::world`]).
#![expect(
    missing_docs,
    reason = "generated items; the WIT documents each of them"
)]

use crate::instance::world;

wasmtime::component::bindgen!({
    path: "../wit/v0.2",
    // The host binds the core; it links `wasi:http` and `wasi:config`,
    // which the `plugin` world adds, from their own crates.
    world: "core",
    imports: { default: trappable },
    with: { "agentbox:plugin/kv.bucket": crate::capability::bucket::Bucket },
});

use agentbox::plugin::registry::{self, CallError, ToolInfo};
use agentbox::plugin::types::{CacheScope, ToolSpec};

use crate::capability::registry as hub;

/// The version of the WIT package these bindings implement.
pub const WORLD_VERSION: &str = "0.2.0";

/// The name of the agent export as it appears in a component's exports.
pub const AGENT_EXPORT: &str = "agentbox:plugin/agent@0.2.0";

crate::instance::imports::serve_shared_imports! {
    fn note(&mut self, text: String) -> wasmtime::Result<Result<(), WitError>> {
        Ok(self.session("note")?.note(text).map_err(Into::into))
    }

    fn prune(
        &mut self,
        keep_last: u32,
        summary: Option<String>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        Ok(self
            .session("prune")?
            .prune(keep_last, summary)
            .map_err(Into::into))
    }
}

impl From<ToolSpec> for world::ToolSpec {
    fn from(spec: ToolSpec) -> world::ToolSpec {
        world::ToolSpec {
            name: spec.name,
            description: spec.description,
            parameters: spec.parameters,
            result_schema: spec.result_schema,
            requires: spec.requires,
            cache_ttl_ms: spec.cache_ttl_ms,
            cache_scope: match spec.cache_scope {
                CacheScope::Session => world::CacheScope::Session,
                CacheScope::User => world::CacheScope::User,
                CacheScope::Global => world::CacheScope::Global,
            },
        }
    }
}

/// Adds `registry`, which only this version of the world has, to `linker`.
pub(crate) fn add_registry_to_linker(linker: &mut Linker<TurnCtx>) -> wasmtime::Result<()> {
    registry::add_to_linker::<TurnCtx, HasWorld>(linker, TurnCtx::world)
}

impl registry::Host for WorldView<'_> {
    fn list(&mut self, prefix: String) -> wasmtime::Result<Vec<ToolInfo>> {
        let (tools, _, _) = self.registry("list")?;
        Ok(tools
            .list(&prefix)
            .into_iter()
            .map(|tool| ToolInfo {
                name: tool.name,
                description: tool.description,
                parameters: tool.parameters,
                result_schema: tool.result_schema,
            })
            .collect())
    }

    fn call(&mut self, name: String, args: String) -> wasmtime::Result<Result<String, CallError>> {
        let (tools, session, output) = self.registry("call")?;
        Ok(tools
            .call(&name, &args, session, output)?
            .map_err(|err| match err {
                hub::CallError::NotFound(text) => CallError::NotFound(text),
                hub::CallError::Denied(text) => CallError::Denied(text),
                hub::CallError::InvalidArguments(text) => CallError::InvalidArguments(text),
                hub::CallError::Precondition(text) => CallError::Precondition(text),
                hub::CallError::Failed(text) => CallError::Failed(text),
                hub::CallError::Limit(text) => CallError::Limit(text),
                hub::CallError::Unavailable(text) => CallError::Unavailable(text),
            }))
    }
}
