//! Which version of each plugin is active: loading, activation, roll-back,
//! and following the store's record of active versions.
//!
//! Every version a host loads is published in the store under its digest,
//! and every activation is recorded there before it takes effect here. Every
//! host on one store follows that record ([`Plugins::follow`]), loading
//! versions other hosts published, so an activation on one `serve` process
//! reaches all of them; on SQLite the record also outlives a restart.
//!
//! Between an activation and another host's next look at the record, that
//! host may meet a session the new version already migrated. It runs that
//! session on the version that committed it rather than migrating the state
//! back ([`Plugins::catch_up`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

use wasmtime::component::Linker;

use crate::capability::http::HttpCtx;
use crate::engine::Engine;
use crate::instance::agent::{AgentPre, linker};
use crate::instance::call::call;
use crate::instance::ctx::TurnCtx;
use crate::instance::world::Manifest;
use crate::limits::Limits;
use crate::metrics::{Metrics, NO_PLUGIN};
use crate::plugin::registry::Registry;
use crate::plugin::{ActivateError, LoadError, PluginVersion};
use crate::store::{BackendError, PluginStore, SessionRecord};

/// Serializes this host's changes of its active versions against its reading
/// of the store's record, and its loading of published versions.
#[derive(Debug, Default)]
struct VersionSync {
    /// Held while the store's record and this host's active versions are
    /// brought in line, so that a stale read never undoes a newer activation.
    activation: Mutex<()>,
    /// Held while a published version is loaded, so that it is compiled once.
    fetching: Mutex<()>,
    /// Published versions that failed to load here, by digest, with why:
    /// the bytes never change, so neither does the answer.
    refused: Mutex<HashMap<String, String>>,
}

impl VersionSync {
    fn activating(&self) -> std::sync::MutexGuard<'_, ()> {
        self.activation.lock().expect("activation lock poisoned")
    }
}

/// What one [`Plugins::follow`] did.
#[derive(Debug, Default)]
pub struct Followed {
    /// Versions made active here because the store records them active.
    pub activated: Vec<Arc<PluginVersion>>,
    /// Versions active here that the store had no record of for their
    /// plugin, now recorded active.
    pub recorded: Vec<Arc<PluginVersion>>,
    /// Recorded versions that could not be made active here; each of those
    /// plugins keeps its active version.
    pub failed: Vec<ActivateError>,
}

/// The plugins of a host: the engine and linker they run on, every
/// version loaded, which one of each plugin is active, and the store's
/// record of both, which every host on one store follows.
pub struct Plugins {
    engine: Engine,
    linker: Linker<TurnCtx>,
    registry: Registry,
    store: Arc<dyn PluginStore>,
    metrics: Arc<Metrics>,
    /// The limits `describe` runs under: the host's own.
    limits: Arc<Limits>,
    /// The memory limit of each plugin that has its own.
    memory_limits: BTreeMap<String, usize>,
    sync: VersionSync,
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugins")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl Plugins {
    /// No plugins yet, on `engine`, published in and following `store`,
    /// under the host's `limits` and the memory limits of the plugins that
    /// have their own.
    pub(crate) fn new(
        engine: Engine,
        store: Arc<dyn PluginStore>,
        metrics: Arc<Metrics>,
        limits: Arc<Limits>,
        memory_limits: BTreeMap<String, usize>,
    ) -> anyhow::Result<Plugins> {
        Ok(Plugins {
            linker: linker(&engine)?,
            engine,
            registry: Registry::default(),
            store,
            metrics,
            limits,
            memory_limits,
            sync: VersionSync::default(),
        })
    }

    /// The engine every plugin runs on.
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The active version of the plugin `name`.
    pub fn active(&self, name: &str) -> Option<Arc<PluginVersion>> {
        self.registry.active(name)
    }

    /// Every active plugin version, ordered by name.
    pub fn all(&self) -> Vec<Arc<PluginVersion>> {
        self.registry.all()
    }

    /// Every loaded version of the plugin `name`, active or not, oldest first.
    pub fn loaded(&self, name: &str) -> Vec<Arc<PluginVersion>> {
        self.registry.loaded(name)
    }

    /// Follows the changes of the active versions: a new value after each
    /// plugin added or version activated, here or followed from the store.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.registry.watch()
    }

    /// Loads and checks a version from its bytes: against the world, its
    /// manifest, and the memory limit of the plugin it names.
    fn load(&self, bytes: &[u8]) -> Result<PluginVersion, LoadError> {
        let version =
            PluginVersion::load(&self.engine, &self.linker, bytes, |pre| self.describe(pre))?;
        let limit = self
            .memory_limits
            .get(version.name())
            .copied()
            .unwrap_or(self.limits.memory_bytes);
        if version.initial_memory > limit as u64 {
            return Err(LoadError::Memory {
                plugin: Some(version.name().to_owned()),
                needs: version.initial_memory,
                limit,
            });
        }
        Ok(version)
    }

    /// Calls `describe` of a plugin being loaded, in a trial instance in
    /// which no capability is live.
    fn describe(&self, pre: &AgentPre) -> Result<Manifest, String> {
        let nothing = HttpCtx::new(
            Arc::default(),
            NO_PLUGIN,
            "-",
            self.metrics.clone(),
            Instant::now() + self.limits.deadline,
            CancellationToken::new(),
        );
        let ctx = TurnCtx::describing(nothing, &self.limits);
        let (result, _) = call(
            &self.engine,
            &self.metrics,
            pre,
            ctx,
            &self.limits,
            |agent, store| agent.describe(store),
        );
        result.map_err(|failure| failure.to_string())
    }

    /// Loads a plugin version from its bytes and makes it the active version
    /// of its name, here and in the store's record, atomically: turns
    /// already running finish on the version they started on, and every
    /// later turn uses this one. A version that fails to load changes
    /// nothing. Sessions whose state was written under another
    /// `state-version` get `migrate` before their first turn on it.
    pub fn load_plugin(&self, bytes: &[u8]) -> Result<Arc<PluginVersion>, LoadError> {
        let (version, _) = self.stage(bytes)?;
        self.activate_staged(&version)
    }

    /// Loads and checks a plugin version from its bytes and publishes it in
    /// the store, without making it active, unless it is the first version
    /// of its plugin here; [`Plugins::activate`] does. Staging the bytes of a
    /// loaded version returns that version.
    pub fn stage_plugin(&self, bytes: &[u8]) -> Result<Arc<PluginVersion>, LoadError> {
        self.stage(bytes).map(|(version, _)| version)
    }

    /// Loads a plugin version deployed with the host, such as a file named
    /// when `serve` starts: staged as by [`Plugins::stage_plugin`], and made
    /// active everywhere if the store has never seen these bytes. Bytes it
    /// has seen mean a restart, not a deployment: the version the store
    /// records active stays active, and [`Plugins::follow`] makes it
    /// active here.
    pub fn deploy_plugin(&self, bytes: &[u8]) -> Result<Arc<PluginVersion>, LoadError> {
        let (version, new) = self.stage(bytes)?;
        if new {
            self.activate_staged(&version)
        } else {
            Ok(version)
        }
    }

    fn activate_staged(
        &self,
        version: &Arc<PluginVersion>,
    ) -> Result<Arc<PluginVersion>, LoadError> {
        self.make_active(version, "activate")
            .map_err(|err| match err {
                ActivateError::Store { source, .. } => LoadError::Store(source),
                other => unreachable!("a staged version is loaded: {other}"),
            })
    }

    /// Loads, checks and publishes a version; returns it and whether the
    /// store had not seen its bytes.
    fn stage(&self, bytes: &[u8]) -> Result<(Arc<PluginVersion>, bool), LoadError> {
        let version = self.load(bytes)?;
        let new = self
            .store
            .publish_plugin(version.digest_hex(), bytes)
            .map_err(LoadError::Store)?;
        let version = self.registry.add(Arc::new(version));
        tracing::info!(plugin = version.name(), version = version.manifest.version, digest = %version.digest, "plugin version loaded");
        Ok((version, new))
    }

    /// Makes the version of plugin `name` whose digest is `digest` (hex)
    /// active, here and in the store's record, atomically, and returns it.
    /// A version another host published is loaded first. Turns running on
    /// the version active before finish there.
    pub fn activate(&self, name: &str, digest: &str) -> Result<Arc<PluginVersion>, ActivateError> {
        let version = self.version(name, digest)?;
        self.make_active(&version, "activate")
    }

    /// Makes the version that was active here before the current one of
    /// plugin `name` active again, here and in the store's record, and
    /// returns it. Turns running on the current version finish there.
    pub fn roll_back(&self, name: &str) -> Result<Arc<PluginVersion>, ActivateError> {
        let previous = self
            .registry
            .previous(name)
            .ok_or_else(|| ActivateError::NoPrevious(name.to_owned()))?;
        self.make_active(&previous, "roll-back")
    }

    pub(crate) fn follow(&self) -> Result<Followed, BackendError> {
        let store = &self.store;
        let mut followed = Followed::default();
        let behind = |recorded: &BTreeMap<String, String>| {
            let stale = recorded
                .iter()
                .any(|(name, digest)| !self.is_active(name, digest));
            let unrecorded = self
                .all()
                .iter()
                .any(|version| !recorded.contains_key(version.name()));
            stale || unrecorded
        };
        let recorded = store.active_plugins()?;
        if !behind(&recorded) {
            return Ok(followed);
        }
        // The first version of a plugin loaded below is active at once.
        let before: Vec<String> = self
            .all()
            .iter()
            .map(|version| version.name().to_owned())
            .collect();
        // Compiling takes a while: load what is missing before taking the lock.
        for (name, digest) in &recorded {
            if !self.is_active(name, digest)
                && let Err(err) = self.version(name, digest)
            {
                followed.failed.push(err);
            }
        }
        let _activation = self.sync.activating();
        let recorded = store.active_plugins()?;
        for (name, digest) in &recorded {
            let Some(version) = self.registry.version(name, digest) else {
                continue;
            };
            let changed = self.switch(&version);
            if changed || !before.contains(name) {
                self.metrics.swap(name, "follow");
                tracing::info!(plugin = name, version = version.manifest.version, digest = %version.digest, "plugin version active, as the store records");
                followed.activated.push(version);
            }
        }
        for version in self.all() {
            if !recorded.contains_key(version.name()) {
                store.set_active_plugin(version.name(), version.digest_hex())?;
                followed.recorded.push(version);
            }
        }
        Ok(followed)
    }

    /// Whether the version of `name` with digest `digest` is active here.
    fn is_active(&self, name: &str, digest: &str) -> bool {
        self.active(name)
            .is_some_and(|active| active.digest_hex() == digest)
    }

    /// Records `version` active in the store, then makes it active here.
    fn make_active(
        &self,
        version: &Arc<PluginVersion>,
        action: &'static str,
    ) -> Result<Arc<PluginVersion>, ActivateError> {
        let name = version.name();
        let _activation = self.sync.activating();
        self.store
            .set_active_plugin(name, version.digest_hex())
            .map_err(|source| ActivateError::Store {
                name: name.to_owned(),
                source,
            })?;
        if self.switch(version) {
            self.metrics.swap(name, action);
            tracing::info!(plugin = name, version = version.manifest.version, digest = %version.digest, action, "plugin version active");
        }
        Ok(version.clone())
    }

    /// Makes the loaded `version` active here; returns whether that changed
    /// the active version.
    fn switch(&self, version: &PluginVersion) -> bool {
        let digest = version.digest_hex();
        let changed = !self.is_active(version.name(), digest);
        self.registry
            .activate(version.name(), digest)
            .expect("the version is loaded");
        changed
    }

    /// The version of plugin `name` whose digest is `digest`: loaded here,
    /// or loaded now from the bytes published in the store.
    pub(crate) fn version(
        &self,
        name: &str,
        digest: &str,
    ) -> Result<Arc<PluginVersion>, ActivateError> {
        if let Some(version) = self.registry.version(name, digest) {
            return Ok(version);
        }
        let sync = &self.sync;
        let _fetching = sync.fetching.lock().expect("fetch lock poisoned");
        if let Some(version) = self.registry.version(name, digest) {
            return Ok(version);
        }
        let refuse = |reason: String| ActivateError::Load {
            name: name.to_owned(),
            digest: digest.to_owned(),
            reason,
        };
        if let Some(reason) = sync.refused.lock().expect("refusals poisoned").get(digest) {
            return Err(refuse(reason.clone()));
        }
        let bytes = self
            .store
            .published_plugin(digest)
            .map_err(|source| ActivateError::Store {
                name: name.to_owned(),
                source,
            })?
            .ok_or_else(|| ActivateError::Unknown {
                name: name.to_owned(),
                digest: digest.to_owned(),
            })?;
        let loaded = self
            .load(&bytes)
            .map_err(|err| err.to_string())
            .and_then(|version| {
                if version.digest_hex() != digest {
                    Err(format!(
                        "the bytes published under it have digest {}",
                        version.digest
                    ))
                } else if version.name() != name {
                    Err(format!("it is a version of plugin `{}`", version.name()))
                } else {
                    Ok(version)
                }
            });
        match loaded {
            Ok(version) => {
                let version = self.registry.add(Arc::new(version));
                tracing::info!(
                    plugin = name,
                    version = version.manifest.version,
                    digest,
                    "plugin version loaded from the store"
                );
                Ok(version)
            }
            Err(reason) => {
                sync.refused
                    .lock()
                    .expect("refusals poisoned")
                    .insert(digest.to_owned(), reason.clone());
                Err(refuse(reason))
            }
        }
    }

    /// The version to run the next turn of `record` on, before migration:
    /// `active`, unless the record was committed by another version whose
    /// state layout differs and which the store records active; then this
    /// host has not followed the store yet, and the session stays on the
    /// version that committed it instead of being migrated back.
    pub(crate) fn catch_up(
        &self,
        record: &SessionRecord,
        active: Arc<PluginVersion>,
    ) -> Arc<PluginVersion> {
        if record.state_version == active.manifest.state_version
            || record.digest == active.digest_hex()
        {
            return active;
        }
        let recorded = match self.store.active_plugins() {
            Ok(recorded) => recorded,
            Err(err) => {
                tracing::warn!(plugin = record.plugin, error = %err, "cannot read the store's active versions");
                return active;
            }
        };
        if recorded.get(&record.plugin) != Some(&record.digest) {
            return active;
        }
        match self.version(&record.plugin, &record.digest) {
            Ok(committed) => committed,
            Err(err) => {
                tracing::warn!(plugin = record.plugin, session = record.id, error = %err, "cannot load the version the store records active");
                active
            }
        }
    }
}
