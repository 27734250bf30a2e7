//! The wasmtime engine every plugin runs on, its compiled-artifact cache,
//! where components are compiled ([`compiler`]), and the size of its
//! instance pool ([`pool`]).

mod compiler;
mod functions;
pub mod pool;

pub use compiler::{CompileError, CompilerProcess, compile_from_stdin};

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cap_std::fs::Dir;
use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, InstanceAllocationStrategy};

use crate::hex::hex;
use crate::limits::Limits;

/// How often the epoch advances; turn deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The compiler and runtime shared by every plugin of a host.
///
/// Configured for many short-lived instances: a pooling allocator with
/// copy-on-write heap images, epoch interruption driven by a ticker thread, and
/// no component-model concurrency (which would make every call about 3× slower).
#[derive(Clone)]
pub struct Engine {
    inner: wasmtime::Engine,
    memory_bytes: usize,
    fuel: bool,
    cache: Option<Arc<Dir>>,
    compiler: Option<Arc<CompilerProcess>>,
    _ticker: Arc<Ticker>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("cache", &self.cache.is_some())
            .field("compiler", &self.compiler)
            .finish()
    }
}

/// The sha256 of a plugin's bytes, which identifies a plugin version.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{self}")
    }
}

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compilation {
    /// Compiled now from the `.wasm` bytes (and stored in the cache, if any).
    Compiled(Duration),
    /// Loaded from the on-disk artifact cache without compiling.
    Cached(Duration),
}

impl Engine {
    /// An engine whose instances may use up to `limits.memory_bytes` of linear
    /// memory, metering fuel if `limits.fuel` is set, caching compiled
    /// components in `cache` when given, and compiling them in `compiler`
    /// when given (else in this process, with no time budget).
    pub fn new(
        limits: &Limits,
        cache: Option<Dir>,
        compiler: Option<CompilerProcess>,
    ) -> anyhow::Result<Engine> {
        let fuel = limits.fuel.is_some();
        let inner = wasmtime::Engine::new(&config(pool::slots(limits), limits.memory_bytes, fuel))?;
        let ticker = Ticker::start(inner.clone());
        Ok(Engine {
            inner,
            memory_bytes: limits.memory_bytes,
            fuel,
            cache: cache.map(Arc::new),
            compiler: compiler.map(Arc::new),
            _ticker: ticker,
        })
    }

    /// The wasmtime engine.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner
    }

    /// The linear memory one instance may have: the largest limit of any
    /// plugin of the host, the size of a pool slot.
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// Whether calls burn fuel; each store then needs some.
    pub fn meters_fuel(&self) -> bool {
        self.fuel
    }

    /// The component for `bytes`: loaded from the artifact cache when this
    /// engine compiled the same bytes before, compiled otherwise (and kept
    /// in the cache only by [`Engine::keep`], once it is accepted).
    pub fn component(
        &self,
        bytes: &[u8],
        digest: Digest,
    ) -> Result<(Component, Compilation), CompileError> {
        let started = Instant::now();
        let Some(cache) = &self.cache else {
            let component = self.compile(bytes)?;
            return Ok((component, Compilation::Compiled(started.elapsed())));
        };
        let name = self.artifact_name(digest);
        if let Ok(artifact) = cache.read(&name) {
            // SAFETY: the cache directory belongs to this host and holds only
            // artifacts this code serialized; `deserialize` still checks that
            // the artifact matches this engine's configuration and refuses it
            // otherwise, in which case we fall through and recompile.
            match unsafe { Component::deserialize(&self.inner, &artifact) } {
                Ok(component) => return Ok((component, Compilation::Cached(started.elapsed()))),
                Err(err) => tracing::warn!(%digest, "discarding unusable cached artifact: {err:#}"),
            }
        }
        let component = self.compile(bytes)?;
        Ok((component, Compilation::Compiled(started.elapsed())))
    }

    /// Compiles `bytes`, in the compiler process if this engine has one.
    fn compile(&self, bytes: &[u8]) -> Result<Component, CompileError> {
        match &self.compiler {
            Some(compiler) => compiler.compile(&self.inner, self.memory_bytes, self.fuel, bytes),
            None => Component::new(&self.inner, bytes)
                .map_err(|err| CompileError::Invalid(format!("{err:#}"))),
        }
    }

    /// Keeps the artifact of `component`, compiled now from the bytes with
    /// `digest`, in the cache (if this engine has one), so that the next
    /// load of the same bytes does not compile them again.
    pub fn keep(&self, digest: Digest, component: &Component) -> anyhow::Result<()> {
        let Some(cache) = &self.cache else {
            return Ok(());
        };
        let name = self.artifact_name(digest);
        let artifact = component.serialize()?;
        // Write under a name of this write's own and rename, so a concurrent
        // reader never sees half an artifact and concurrent writers of the
        // same artifact do not collide.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let partial = format!(
            "{name}.partial-{}-{}",
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        );
        cache
            .write(&partial, &artifact)
            .and_then(|()| cache.rename(&partial, cache, &name))
            .with_context(|| format!("could not store compiled artifact {name}"))
    }

    /// The file name of the artifact for `digest`: the digest plus a hash of
    /// everything in the engine's configuration that artifacts depend on.
    fn artifact_name(&self, digest: Digest) -> String {
        let mut hasher = DefaultHasher::new();
        self.inner.precompile_compatibility_hash().hash(&mut hasher);
        format!("{digest}-{:016x}.cwasm", hasher.finish())
    }
}

/// The configuration of every engine with `slots` pool slots of
/// `memory_bytes` of linear memory each, metering fuel if `fuel`: the
/// host's, and its compiler process's, whose artifacts must match it.
fn config(slots: u32, memory_bytes: usize, fuel: bool) -> Config {
    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool::config(
            slots,
            memory_bytes,
        )))
        .epoch_interruption(true)
        .memory_init_cow(true)
        .concurrency_support(false)
        .consume_fuel(fuel)
        .wasm_component_model(true);
    config
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Ticker {
    fn start(engine: wasmtime::Engine) -> Arc<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("agentbox-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch ticker thread");
        Arc::new(Ticker { stop })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
