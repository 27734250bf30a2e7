//! Loading plugins: checking a component against the world, its manifest,
//! and the registry of active versions.
//!
//! Loading a version compiles it (or loads it from the artifact cache),
//! checks its imports and exports against `agentbox:plugin@0.1.0`, calls
//! `describe()` in a trial instance, validates the manifest and only then
//! makes the version active. A version that fails any step never replaces
//! the active one.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use wasmtime::component::Linker;

use crate::bindings::{AGENT_EXPORT, Manifest, PluginPre, WORLD_VERSION};
use crate::engine::{Compilation, Digest, Engine};
use crate::session::TurnCtx;
use crate::store::StoreError;
use crate::tools::ToolSet;

/// The WIT package every agentbox interface belongs to.
const PACKAGE: &str = "agentbox:plugin";

/// The imports from [`PACKAGE`] a plugin may have.
const PACKAGE_IMPORTS: [&str; 4] = ["types", "session", "kv", "output"];

/// One loaded, checked version of a plugin.
pub struct PluginVersion {
    /// The sha256 of the component's bytes.
    pub digest: Digest,
    /// What the plugin said about itself.
    pub manifest: Manifest,
    /// The version of the `agentbox:plugin` world it targets.
    pub world: String,
    /// Whether it was compiled now or loaded from the artifact cache.
    pub compilation: Compilation,
    /// Its tools, with compiled schemas.
    pub tools: ToolSet,
    pub(crate) pre: PluginPre<TurnCtx>,
}

impl std::fmt::Debug for PluginVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginVersion")
            .field("name", &self.manifest.name)
            .field("version", &self.manifest.version)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

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
    /// The component targets another world than `agentbox:plugin@0.1.0`.
    #[error("not an agentbox plugin for world {PACKAGE}@{WORLD_VERSION}: {0}")]
    WrongWorld(String),
    /// `describe()` trapped or ran out of time or memory.
    #[error("`describe()` failed: {0}")]
    Describe(String),
    /// The manifest breaks a rule.
    #[error("invalid manifest: {0}")]
    Manifest(String),
    /// The version is valid, but the store could not keep it or record it active.
    #[error("the store failed: {0}")]
    Store(StoreError),
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
        source: StoreError,
    },
}

impl PluginVersion {
    /// Loads and checks `bytes`, calling `describe()` in a trial instance of
    /// `linker`, which provides the world's imports.
    pub(crate) fn load(
        engine: &Engine,
        linker: &Linker<TurnCtx>,
        bytes: &[u8],
        describe: impl FnOnce(&PluginPre<TurnCtx>) -> Result<Manifest, String>,
    ) -> Result<PluginVersion, LoadError> {
        match bytes.get(0..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => return Err(LoadError::CoreModule),
            Some([0, b'a', b's', b'm', ..]) => {}
            _ => return Err(LoadError::NotWasm),
        }
        let digest = Digest::of(bytes);
        let (component, compilation) = engine
            .component(bytes, digest)
            .map_err(|err| LoadError::Invalid(format!("{err:#}")))?;
        let world = check_world(engine, &component)?;
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|err| LoadError::WrongWorld(format!("{err:#}")))?;
        let pre = PluginPre::new(instance_pre)
            .map_err(|err| LoadError::WrongWorld(format!("{err:#}")))?;
        let manifest = describe(&pre).map_err(LoadError::Describe)?;
        check_manifest(&manifest)?;
        let tools = ToolSet::compile(&manifest).map_err(LoadError::Manifest)?;
        Ok(PluginVersion {
            digest,
            manifest,
            world,
            compilation,
            tools,
            pre,
        })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }
}

/// Checks the component's imports and exports against the world and returns
/// the world version it targets. Imports outside `agentbox:plugin` (WASI)
/// are checked by the linker, which names any it cannot provide.
fn check_world(
    engine: &Engine,
    component: &wasmtime::component::Component,
) -> Result<String, LoadError> {
    let ty = component.component_type();
    let exports: Vec<&str> = ty
        .exports(engine.wasmtime())
        .map(|(name, _)| name)
        .collect();
    let agent_prefix = format!("{PACKAGE}/agent@");
    let Some(world) = exports
        .iter()
        .find_map(|name| name.strip_prefix(&agent_prefix))
    else {
        let names = &exports;
        return Err(LoadError::WrongWorld(format!(
            "it does not export `{AGENT_EXPORT}` (its exports: {})",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        )));
    };
    if world != WORLD_VERSION {
        return Err(LoadError::WrongWorld(format!(
            "it targets {PACKAGE}@{world}, which this host does not support"
        )));
    }
    for (name, _) in ty.imports(engine.wasmtime()) {
        let Some(rest) = name
            .strip_prefix(PACKAGE)
            .and_then(|rest| rest.strip_prefix('/'))
        else {
            continue;
        };
        let known = rest.split_once('@').is_some_and(|(interface, version)| {
            version == WORLD_VERSION && PACKAGE_IMPORTS.contains(&interface)
        });
        if !known {
            return Err(LoadError::WrongWorld(format!(
                "it imports `{name}`, which the world does not provide"
            )));
        }
    }
    Ok(world.to_owned())
}

/// Checks a plugin or tool name: 1 to 64 characters of `a-z`, `0-9` and
/// `separator`, starting with a letter and not ending with the separator.
pub(crate) fn check_name(name: &str, separator: char) -> Result<(), String> {
    let valid = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with(separator)
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == separator);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid name: use 1 to 64 characters of a-z, 0-9 and `{separator}`, starting with a letter and not ending with `{separator}`",
            name.escape_debug()
        ))
    }
}

fn check_manifest(manifest: &Manifest) -> Result<(), LoadError> {
    check_name(&manifest.name, '-')
        .map_err(|reason| LoadError::Manifest(format!("plugin name {reason}")))?;
    semver::Version::parse(&manifest.version).map_err(|err| {
        LoadError::Manifest(format!(
            "plugin `{}` has version `{}`, which is not a semantic version such as 1.2.0: {err}",
            manifest.name,
            manifest.version.escape_debug()
        ))
    })?;
    Ok(())
}

/// The versions of each plugin loaded in this host, by name: which one is
/// active here, and which one was before it, for a roll-back.
///
/// Every loaded version stays loaded: a session whose state a newer version
/// cannot migrate keeps running on the version that last committed it.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    plugins: RwLock<HashMap<String, Versions>>,
}

#[derive(Debug)]
struct Versions {
    loaded: Vec<Arc<PluginVersion>>,
    active: Arc<PluginVersion>,
    previous: Option<Arc<PluginVersion>>,
}

impl Registry {
    /// Adds `version` to the loaded versions of its plugin, or returns the
    /// loaded version with the same digest. The first version of a plugin
    /// becomes its active version; later ones wait for [`Registry::activate`].
    pub(crate) fn add(&self, version: Arc<PluginVersion>) -> Arc<PluginVersion> {
        let mut plugins = self.plugins.write().expect("plugin registry poisoned");
        let Some(versions) = plugins.get_mut(version.name()) else {
            plugins.insert(
                version.name().to_owned(),
                Versions {
                    loaded: vec![version.clone()],
                    active: version.clone(),
                    previous: None,
                },
            );
            return version;
        };
        match versions
            .loaded
            .iter()
            .find(|loaded| loaded.digest == version.digest)
        {
            Some(loaded) => loaded.clone(),
            None => {
                versions.loaded.push(version.clone());
                version
            }
        }
    }

    /// Makes the loaded version of plugin `name` with digest `digest` (hex)
    /// the active one, atomically, and returns it; `None` if no such version
    /// is loaded. Activating the active version changes nothing.
    pub(crate) fn activate(&self, name: &str, digest: &str) -> Option<Arc<PluginVersion>> {
        let mut plugins = self.plugins.write().expect("plugin registry poisoned");
        let versions = plugins.get_mut(name)?;
        let version = versions
            .loaded
            .iter()
            .find(|loaded| loaded.digest.to_string() == digest)?
            .clone();
        if versions.active.digest != version.digest {
            versions.previous = Some(std::mem::replace(&mut versions.active, version.clone()));
        }
        Some(version)
    }

    /// The version that was active before the current one of plugin `name`.
    pub(crate) fn previous(&self, name: &str) -> Option<Arc<PluginVersion>> {
        self.plugins
            .read()
            .expect("plugin registry poisoned")
            .get(name)?
            .previous
            .clone()
    }

    /// The active version of the plugin `name`.
    pub(crate) fn active(&self, name: &str) -> Option<Arc<PluginVersion>> {
        self.plugins
            .read()
            .expect("plugin registry poisoned")
            .get(name)
            .map(|versions| versions.active.clone())
    }

    /// The loaded version of the plugin `name` whose digest is `digest` (hex).
    pub(crate) fn version(&self, name: &str, digest: &str) -> Option<Arc<PluginVersion>> {
        self.plugins
            .read()
            .expect("plugin registry poisoned")
            .get(name)?
            .loaded
            .iter()
            .find(|version| version.digest.to_string() == digest)
            .cloned()
    }

    /// Every loaded version of the plugin `name`, oldest first.
    pub(crate) fn loaded(&self, name: &str) -> Vec<Arc<PluginVersion>> {
        self.plugins
            .read()
            .expect("plugin registry poisoned")
            .get(name)
            .map(|versions| versions.loaded.clone())
            .unwrap_or_default()
    }

    /// Every active version, ordered by name.
    pub(crate) fn all(&self) -> Vec<Arc<PluginVersion>> {
        let mut all: Vec<_> = self
            .plugins
            .read()
            .expect("plugin registry poisoned")
            .values()
            .map(|versions| versions.active.clone())
            .collect();
        all.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
        all
    }
}
