//! One call of an export in a fresh instance: each capability's context
//! made for the call, the call under the plugin's limits and the chain's
//! deadline, and what the capabilities hold after it.

use std::sync::Arc;

use crate::capability::kv::{KvWrites, Scope};
use crate::capability::output::{OutputCtx, Sink};
use crate::capability::registry::RegistryCalls;
use crate::capability::session::SessionCtx;
use crate::instance::agent::{Agent, Returned, Store};
use crate::instance::call::call;
use crate::instance::ctx::{Capabilities, TurnCtx};
use crate::limits::GUEST_OUTPUT_BYTES;
use crate::plugin::PluginVersion;
use crate::session::chain::Within;
use crate::session::error::Cause;
use crate::session::parts::Parts;
use crate::store::{OutboundUse, SessionRecord, State};

/// What one call into an instance produced.
pub(crate) struct Call<R> {
    pub(crate) result: Result<R, Cause>,
    pub(crate) session: SessionCtx,
    pub(crate) said: Vec<String>,
    /// When the call failed and the plugin's limits say so, the tail of
    /// what the guest wrote.
    pub(crate) guest_output: Option<String>,
    /// What the call sent through outbound HTTP.
    pub(crate) outbound: OutboundUse,
    /// The KV keys the call wrote.
    pub(crate) kv_writes: KvWrites,
    /// The registry calls the call made.
    pub(crate) calls: RegistryCalls,
}

/// The session context of a call of `plugin` serving `record` as turn
/// `turn`, starting from `state`.
pub(crate) fn session_ctx(
    parts: &Parts,
    plugin: &PluginVersion,
    record: &SessionRecord,
    turn: u64,
    state: State,
) -> SessionCtx {
    let limits = parts.limits_for(plugin.name()).clone();
    SessionCtx::new(record, turn, state, parts.store.clone(), limits)
}

/// Calls one export of `plugin` in a fresh instance serving `record` as
/// turn `turn`, starting from `state`, outside any turn's chain of calls
/// and saying nothing to anyone: a migration, or an expired session's end.
pub(crate) fn call_alone<R>(
    parts: &Arc<Parts>,
    plugin: &Arc<PluginVersion>,
    record: &SessionRecord,
    turn: u64,
    state: State,
    export: impl FnOnce(&Agent, &mut Store) -> Returned<R>,
) -> Call<R> {
    let session = session_ctx(parts, plugin, record, turn, state);
    let owner = record.owner.clone();
    call_on(parts, plugin, session, owner, None, &Within::TOP, export)
}

/// Calls one export of `plugin` in a fresh instance working on `session`,
/// for a session started by `owner`, with what it says going to `sink`,
/// `within` the registry calls it answers (if any).
pub(crate) fn call_on<R>(
    parts: &Arc<Parts>,
    plugin: &Arc<PluginVersion>,
    session: SessionCtx,
    owner: Option<String>,
    sink: Option<Sink>,
    within: &Within,
    export: impl FnOnce(&Agent, &mut Store) -> Returned<R>,
) -> Call<R> {
    let (limits, deadline) = within.bound(parts.limits_for(plugin.name()));
    let id = session.id().to_owned();
    let scope = Scope {
        plugin: plugin.name().to_owned(),
        session: id.clone(),
        user: session.user_id().map(str::to_owned),
    };
    let http = parts
        .http
        .for_call(plugin.name(), session.id(), deadline, within.stop());
    let capabilities = Capabilities {
        session,
        kv: parts.kv.for_call(scope, &limits),
        output: OutputCtx::new(sink, limits.output_bytes),
        registry: (parts.registry)(
            parts.clone(),
            plugin.clone(),
            owner,
            within,
            deadline,
            limits.deadline,
        ),
    };
    let ctx = TurnCtx::in_session(capabilities, http, &limits, &parts.clock);
    let (result, ctx) = call(
        parts.plugins.engine(),
        &parts.metrics,
        &plugin.pre,
        ctx,
        &limits,
        export,
    );
    let guest_output = (result.is_err() && limits.guest_output)
        .then(|| ctx.guest_output(GUEST_OUTPUT_BYTES))
        .flatten();
    let outbound = ctx.outbound_use();
    ctx.flush_log(plugin.name(), &id);
    let capabilities = ctx
        .into_capabilities()
        .expect("a call in a session has its capabilities");
    Call {
        result: result.map_err(Cause::from),
        session: capabilities.session,
        said: capabilities.output.into_said(),
        guest_output,
        outbound,
        kv_writes: capabilities.kv.into_written(),
        calls: capabilities.registry.into_calls(),
    }
}
