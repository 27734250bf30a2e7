//! A plugin's exports, whatever version of the world it targets: the
//! linker that serves every version, a compiled plugin ready to
//! instantiate ([`AgentPre`]), and its exports on a live instance ([`Agent`]).

use wasmtime::component::{Component, Linker};

use crate::engine::Engine;
use crate::instance::ctx::TurnCtx;
use crate::instance::world::{EndReason, GuestOutcome, Manifest};
use crate::instance::{v0_1, v0_2};

/// The store of one call.
pub(crate) type Store = wasmtime::Store<TurnCtx>;

/// The linker every plugin is instantiated with: WASI with an empty
/// context, `wasi:http`'s outgoing handler and `wasi:config/store` (which
/// [`TurnCtx`] serves under the plugin's policy; shape checks that only a
/// plugin of world 0.2.0 or later imports them), plus the imports of every
/// version of the world.
pub(crate) fn linker(engine: &Engine) -> anyhow::Result<Linker<TurnCtx>> {
    let mut linker: Linker<TurnCtx> = Linker::new(engine.wasmtime());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)?;
    wasmtime_wasi_config::add_to_linker(&mut linker, TurnCtx::config)?;
    v0_1::add_to_linker(&mut linker)?;
    v0_2::add_to_linker(&mut linker)?;
    v0_2::add_registry_to_linker(&mut linker)?;
    Ok(linker)
}

/// A checked plugin component, linked and ready to instantiate.
pub(crate) enum AgentPre {
    /// A plugin of `agentbox:plugin@0.1.0`.
    V0_1(v0_1::PluginPre<TurnCtx>),
    /// A plugin of `agentbox:plugin@0.2.0`.
    V0_2(v0_2::CorePre<TurnCtx>),
}

impl AgentPre {
    /// Links `component`, which targets world version `world`.
    pub(crate) fn new(
        linker: &Linker<TurnCtx>,
        component: &Component,
        world: &str,
    ) -> anyhow::Result<AgentPre> {
        let pre = linker.instantiate_pre(component)?;
        match world {
            v0_1::WORLD_VERSION => Ok(AgentPre::V0_1(v0_1::PluginPre::new(pre)?)),
            v0_2::WORLD_VERSION => Ok(AgentPre::V0_2(v0_2::CorePre::new(pre)?)),
            other => anyhow::bail!("world version {other} is not served by this host"),
        }
    }

    /// A fresh instance in `store`.
    pub(crate) fn instantiate(&self, store: &mut Store) -> wasmtime::Result<Agent> {
        match self {
            AgentPre::V0_1(pre) => pre.instantiate(&mut *store).map(Agent::V0_1),
            AgentPre::V0_2(pre) => pre.instantiate(&mut *store).map(Agent::V0_2),
        }
    }
}

/// A plugin instance's exports.
pub(crate) enum Agent {
    /// A plugin of `agentbox:plugin@0.1.0`.
    V0_1(v0_1::Plugin),
    /// A plugin of `agentbox:plugin@0.2.0`.
    V0_2(v0_2::Core),
}

/// What an export returns: a trap, or the guest's own result.
pub(crate) type Returned<R> = wasmtime::Result<Result<R, String>>;

/// `$body` with `$plugin` bound to the bindings `$agent` holds, whatever
/// its version: the generated types differ by version, the calls do not.
macro_rules! on_every_version {
    ($agent:expr, |$plugin:ident| $body:expr) => {
        match $agent {
            Agent::V0_1($plugin) => $body,
            Agent::V0_2($plugin) => $body,
        }
    };
}

impl Agent {
    pub(crate) fn describe(&self, store: &mut Store) -> Returned<Manifest> {
        on_every_version!(self, |plugin| plugin
            .agentbox_plugin_agent()
            .call_describe(store)
            .map(|manifest| Ok(manifest.into())))
    }

    pub(crate) fn on_start(&self, store: &mut Store) -> Returned<()> {
        on_every_version!(self, |plugin| plugin
            .agentbox_plugin_agent()
            .call_on_start(store))
    }

    pub(crate) fn on_message(&self, store: &mut Store, text: &str) -> Returned<GuestOutcome> {
        on_every_version!(self, |plugin| plugin
            .agentbox_plugin_agent()
            .call_on_message(store, text)
            .map(|result| result.map(Into::into)))
    }

    pub(crate) fn call_tool(
        &self,
        store: &mut Store,
        name: &str,
        arguments: String,
    ) -> Returned<String> {
        on_every_version!(self, |plugin| plugin
            .agentbox_plugin_agent()
            .call_call_tool(store, name, &arguments))
    }

    pub(crate) fn on_end(&self, store: &mut Store, reason: EndReason) -> Returned<()> {
        on_every_version!(self, |plugin| plugin
            .agentbox_plugin_agent()
            .call_on_end(store, reason.into()))
    }

    pub(crate) fn migrate(&self, store: &mut Store, from: u32, state: String) -> Returned<String> {
        on_every_version!(self, |plugin| plugin
            .agentbox_plugin_agent()
            .call_migrate(store, from, &state))
    }
}
