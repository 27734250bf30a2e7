//! The one way to run an export: a fresh instance in a fresh store, armed
//! with the plugin's limits before it is instantiated, dropped after the call.

use wasmtime::{CallHook, Trap, UpdateDeadline};

use crate::capability::stdio::GuestLog;
use crate::engine::{EPOCH_TICK, Engine};
use crate::instance::agent::{Agent, AgentPre, Returned, Store};
use crate::instance::ctx::TurnCtx;
use crate::limits::{Limits, Tripped};
use crate::metrics::Metrics;

/// Why a call of an export failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Failure {
    /// The guest returned an error.
    #[error("plugin returned an error: {0}")]
    Guest(String),
    /// The guest trapped, with the reason and its last words.
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The call ran into a limit.
    #[error(transparent)]
    Limit(Tripped),
    /// The caller interrupted the call.
    #[error("interrupted by the caller")]
    Interrupted,
}

/// Instantiates `pre` with `ctx` under `limits` and runs `export`; returns
/// what it returned and the store's data, whatever happened.
pub(crate) fn call<R>(
    engine: &Engine,
    metrics: &Metrics,
    pre: &AgentPre,
    ctx: TurnCtx,
    limits: &Limits,
    export: impl FnOnce(&Agent, &mut Store) -> Returned<R>,
) -> (Result<R, Failure>, TurnCtx) {
    let mut store = wasmtime::Store::new(engine.wasmtime(), ctx);
    store.limiter(|ctx| &mut ctx.memory);
    let host_calls = limits.host_calls;
    store.call_hook(move |mut store, hook| {
        if matches!(hook, CallHook::CallingHost) {
            let calls = &mut store.data_mut().host_calls;
            *calls += 1;
            if *calls > host_calls {
                return Err(Tripped::HostCalls(host_calls).into());
            }
        }
        Ok(())
    });
    // The deadline must be armed before instantiating: it starts at 0.
    // Every tick looks at the stop as well, so an interrupt takes effect
    // within a tick of the guest's running code.
    let deadline = limits.deadline;
    let ticks = (deadline.as_nanos() / EPOCH_TICK.as_nanos()).max(1);
    let mut left = u64::try_from(ticks).unwrap_or(u64::MAX);
    let stop = store.data().stop().clone();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        left -= 1;
        if stop.is_cancelled() {
            Err(Failure::Interrupted.into())
        } else if left == 0 {
            Err(Tripped::Deadline(deadline).into())
        } else {
            Ok(UpdateDeadline::Continue(1))
        }
    });
    if engine.meters_fuel() {
        store
            .set_fuel(limits.fuel.unwrap_or(u64::MAX))
            .expect("the engine meters fuel");
    }
    let _in_use = metrics.instance();
    let result = pre
        .instantiate(&mut store)
        .and_then(|agent| export(&agent, &mut store));
    let ctx = store.into_data();
    let result = match result {
        // An interrupt stops the call whatever the guest made of it.
        _ if ctx.stop().is_cancelled() => Err(Failure::Interrupted),
        // The deadline ended a wait for an outbound request: the call is
        // past it, whatever the guest made of the error it was handed.
        _ if ctx.cut_by_deadline() => Err(Failure::Limit(Tripped::Deadline(limits.deadline))),
        Ok(Ok(value)) => Ok(value),
        Ok(Err(message)) => Err(Failure::Guest(message)),
        Err(err) => Err(failure(&err, limits, &ctx.log)),
    };
    (result, ctx)
}

/// Names the cause of a failed call: a tripped limit, or a trap with the last
/// line the guest wrote (a Rust panic message, for example).
fn failure(err: &wasmtime::Error, limits: &Limits, log: &GuestLog) -> Failure {
    if let Some(tripped) = err.downcast_ref::<Tripped>() {
        return Failure::Limit(*tripped);
    }
    if let Some(Trap::OutOfFuel) = err.downcast_ref::<Trap>() {
        return Failure::Limit(Tripped::Fuel(limits.fuel.unwrap_or(u64::MAX)));
    }
    let reason = err.root_cause().to_string();
    Failure::Trap(match log.last_words() {
        Some(line) => format!("{reason} (the plugin's last output: {line})"),
        None => reason,
    })
}
