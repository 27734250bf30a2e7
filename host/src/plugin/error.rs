//! Why a plugin version could not be loaded or made active.

use crate::instance::{PACKAGE, WORLD_VERSIONS};
use crate::store::BackendError;

/// Why a plugin could not be loaded. Each message says what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file: it does not start with the `\\0asm` magic number")]
    NotWasm,
    /// A core module was given where a component is needed.
    #[error(
        "this is a core WebAssembly module, not a component: build the plugin for the `wasm32-wasip2` target \
         (or wrap the module with `wasm-tools component new`)"
    )]
    CoreModule,
    /// The component does not compile or validate.
    #[error("invalid WebAssembly component: {0}")]
    Invalid(String),
    /// Compiling the component took longer than the host's budget.
    #[error(
        "the component was refused: compiling it took longer than the budget of {} ms",
        .0.as_millis()
    )]
    CompileBudget(std::time::Duration),
    /// Compiling the component needed more memory than the host's budget.
    #[error(
        "the component was refused: compiling it needed more memory than the budget of {} MiB",
        .0 >> 20
    )]
    CompileMemory(u64),
    /// The host's compiler process failed; the component may be fine.
    #[error("the component could not be compiled: {0}")]
    Compiler(String),
    /// The component targets no world this host serves.
    #[error(
        "not an agentbox plugin for world {PACKAGE}@{served}: {0}",
        served = WORLD_VERSIONS.join(" or @")
    )]
    WrongWorld(String),
    /// `describe()` trapped or ran out of time or memory.
    #[error("`describe()` failed: {0}")]
    Describe(String),
    /// The manifest breaks a rule.
    #[error("invalid manifest: {0}")]
    Manifest(String),
    /// One instance of the component would take more of the instance pool
    /// than a slot holds: what it needs, for each resource over.
    #[error(
        "one instance of the component needs {0}: more than a slot of this host's instance \
         pool holds (see docs/security.md)"
    )]
    Footprint(String),
    /// An instance would start with more memory than a limit allows.
    #[error(
        "{} needs at least {} of memory at start; {}",
        plugin.as_ref().map_or("the component".to_owned(), |name| format!("plugin `{name}`")),
        mib(*needs),
        plugin.as_ref().map_or(
            format!("the most any plugin of this host may have is {} (--memory-mib, or memory_mib in the policy)", mib(*limit as u64)),
            |name| format!("the limit for `{name}` is {}", mib(*limit as u64)),
        )
    )]
    Memory {
        /// The plugin, once its manifest named it; `None` for the most any
        /// plugin may have (a pool slot), checked before compiling.
        plugin: Option<String>,
        /// Bytes of memory it needs at start.
        needs: u64,
        /// Bytes the limit allows.
        limit: usize,
    },
    /// The version is valid, but the store could not keep it or record it active.
    #[error("the store failed: {0}")]
    Store(BackendError),
}

/// Why a version could not be made active. Nothing changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActivateError {
    /// No version with this digest is loaded here or published in the store.
    #[error(
        "plugin `{name}` has no version with digest `{digest}`, loaded here or published in the store"
    )]
    Unknown {
        /// The plugin.
        name: String,
        /// The digest asked for.
        digest: String,
    },
    /// The plugin has had no other active version.
    #[error("plugin `{0}` has no previous version to roll back to")]
    NoPrevious(String),
    /// The version published in the store does not load on this host.
    #[error(
        "version `{digest}` of plugin `{name}`, published in the store, does not load here: {reason}"
    )]
    Load {
        /// The plugin.
        name: String,
        /// The version's digest.
        digest: String,
        /// Why it does not load.
        reason: String,
    },
    /// The store failed.
    #[error("plugin `{name}`: {source}")]
    Store {
        /// The plugin.
        name: String,
        /// What failed.
        source: BackendError,
    },
}

/// `bytes` in MiB, to a tenth, rounded up: a need is never understated.
fn mib(bytes: u64) -> String {
    let tenths = bytes.saturating_mul(10).div_ceil(1 << 20);
    match tenths % 10 {
        0 => format!("{} MiB", tenths / 10),
        tenth => format!("{}.{tenth} MiB", tenths / 10),
    }
}
