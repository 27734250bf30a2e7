//! The data of a wasmtime store serving one call of an export: the turn's
//! capabilities, WASI with nothing granted but the outbound HTTP and
//! configuration of the plugin's policy, and what the host counts.

use tokio_util::sync::CancellationToken;
use wasmtime::ResourceLimiter;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use crate::capability::bucket::Bucket;
use crate::capability::http::HttpCtx;
use crate::capability::kv::KvCtx;
use crate::capability::output::OutputCtx;
use crate::capability::registry::ToolHub;
use crate::capability::session::SessionCtx;
use crate::capability::stdio::GuestLog;
use crate::clock::Clock;
use crate::limits::{Limits, Tripped};
use crate::store::OutboundUse;

/// What a call inside a session may use: one context per capability.
pub(crate) struct Capabilities {
    pub(crate) session: SessionCtx,
    pub(crate) kv: KvCtx,
    pub(crate) output: OutputCtx,
    /// Answers the guest's registry calls.
    pub(crate) registry: Box<dyn ToolHub>,
}

/// The data of a wasmtime store serving one call.
pub(crate) struct TurnCtx {
    /// `None` while a plugin is described: no capability is live then.
    capabilities: Option<Capabilities>,
    wasi: WasiCtx,
    http: HttpCtx,
    table: ResourceTable,
    pub(super) memory: MemoryLimit,
    /// Calls from the guest into the host so far.
    pub(super) host_calls: u64,
    pub(super) log: GuestLog,
}

impl WasiView for TurnCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for TurnCtx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        self.http.view(&mut self.table)
    }
}

impl TurnCtx {
    /// The data of a call inside a session, under `limits`, sending
    /// requests through `http`.
    pub(crate) fn in_session(
        capabilities: Capabilities,
        http: HttpCtx,
        limits: &Limits,
        clock: &Clock,
    ) -> TurnCtx {
        TurnCtx::new(Some(capabilities), http, limits, clock)
    }

    /// The data of a call of `describe`, where nothing of a session exists
    /// (`http` grants nothing).
    pub(crate) fn describing(http: HttpCtx, limits: &Limits) -> TurnCtx {
        TurnCtx::new(None, http, limits, &Clock::system())
    }

    fn new(
        capabilities: Option<Capabilities>,
        http: HttpCtx,
        limits: &Limits,
        clock: &Clock,
    ) -> TurnCtx {
        let log = GuestLog::new(limits.output_bytes);
        // No arguments, environment, preopened directories or network: the
        // guest's stdout and stderr are its only way out besides the world,
        // and the time it reads is the host's.
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(log.clone()).stderr(log.clone());
        clock.serve_to(&mut wasi);
        let wasi = wasi.build();
        TurnCtx {
            capabilities,
            wasi,
            http,
            table: ResourceTable::new(),
            memory: MemoryLimit {
                limit: limits.memory_bytes,
            },
            host_calls: 0,
            log,
        }
    }

    /// The capabilities after the call, if it ran in a session.
    pub(crate) fn into_capabilities(self) -> Option<Capabilities> {
        self.capabilities
    }

    /// Logs what the guest wrote to stdout and stderr during the call.
    pub(crate) fn flush_log(&self, plugin: &str, session: &str) {
        self.log.flush_to_tracing(plugin, session);
    }

    /// The last `max` bytes of what the guest wrote, if anything.
    pub(crate) fn guest_output(&self, max: usize) -> Option<String> {
        self.log.tail(max)
    }

    /// What the call sent through outbound HTTP.
    pub(crate) fn outbound_use(&self) -> OutboundUse {
        self.http.usage()
    }

    /// What stops the call early: the caller's interrupt.
    pub(crate) fn stop(&self) -> &CancellationToken {
        self.http.stop()
    }

    /// Whether the call's deadline ended a wait of an outbound request.
    pub(crate) fn cut_by_deadline(&self) -> bool {
        self.http.cut_by_deadline()
    }

    /// The configuration `wasi:config/store` serves the plugin.
    pub(crate) fn config(&mut self) -> wasmtime_wasi_config::WasiConfig<'_> {
        wasmtime_wasi_config::WasiConfig::new(self.http.config())
    }

    /// What the world's host functions reach.
    pub(crate) fn world(&mut self) -> WorldView<'_> {
        WorldView {
            capabilities: self.capabilities.as_mut(),
            table: &mut self.table,
        }
    }
}

/// What the world's host functions reach: the turn's capabilities, if it
/// runs in a session, and the resource table its buckets live in.
pub(crate) struct WorldView<'a> {
    capabilities: Option<&'a mut Capabilities>,
    pub(crate) table: &'a mut ResourceTable,
}

impl WorldView<'_> {
    fn live(&mut self, interface: &str, function: &str) -> wasmtime::Result<&mut Capabilities> {
        self.capabilities
            .as_deref_mut()
            .ok_or_else(|| outside_a_session(interface, function))
    }

    /// The session capability, for running `function`.
    pub(crate) fn session(&mut self, function: &str) -> wasmtime::Result<&mut SessionCtx> {
        Ok(&mut self.live("session", function)?.session)
    }

    /// The output capability, for running `function`.
    pub(crate) fn output(&mut self, function: &str) -> wasmtime::Result<&mut OutputCtx> {
        Ok(&mut self.live("output", function)?.output)
    }

    /// The registry, with the session and output a call of the plugin's own
    /// tool runs on, for running `function`.
    pub(crate) fn registry(
        &mut self,
        function: &str,
    ) -> wasmtime::Result<(&dyn ToolHub, &mut SessionCtx, &mut OutputCtx)> {
        let capabilities = self.live("registry", function)?;
        Ok((
            capabilities.registry.as_ref(),
            &mut capabilities.session,
            &mut capabilities.output,
        ))
    }

    /// The KV capability, after counting a call of `function`.
    pub(crate) fn kv(&mut self, function: &'static str) -> wasmtime::Result<&mut KvCtx> {
        let kv = &mut self.live("kv", function)?.kv;
        kv.count(function);
        Ok(kv)
    }

    /// The KV capability and the bucket behind `bucket`, after counting a
    /// call of `function`.
    pub(crate) fn bucket(
        &mut self,
        bucket: &Resource<Bucket>,
        function: &'static str,
    ) -> wasmtime::Result<(&KvCtx, &Bucket)> {
        let capabilities = self
            .capabilities
            .as_deref()
            .ok_or_else(|| outside_a_session("kv", function))?;
        capabilities.kv.count(function);
        Ok((&capabilities.kv, self.table.get(bucket)?))
    }

    /// Notes that the guest dropped one of its buckets.
    pub(crate) fn close_bucket(&mut self) {
        if let Some(capabilities) = self.capabilities.as_deref_mut() {
            capabilities.kv.close();
        }
    }
}

/// The trap of a call of `interface.function` while a plugin is described.
fn outside_a_session(interface: &str, function: &str) -> wasmtime::Error {
    wasmtime::format_err!(
        "`{interface}.{function}` was called outside a session: `describe` gets no session state, KV, output or registry"
    )
}

/// Refuses memory growth past the plugin's limit, naming the limit.
pub(super) struct MemoryLimit {
    limit: usize,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(Tripped::Memory(self.limit).into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables are bounded by the pooling allocator's slots.
        Ok(true)
    }
}
