//! The versions of each plugin loaded in this host.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::plugin::PluginVersion;

/// The versions of each plugin loaded in this host, by name: which one is
/// active here, and which one was before it, for a roll-back.
///
/// Every loaded version stays loaded: a session whose state a newer version
/// cannot migrate keeps running on the version that last committed it.
#[derive(Debug)]
pub(crate) struct Registry {
    plugins: RwLock<HashMap<String, Versions>>,
    /// Counts the changes of the active versions, for those who follow them.
    changes: watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            plugins: RwLock::default(),
            changes: watch::Sender::new(0),
        }
    }
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
            self.changed();
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
            .find(|loaded| loaded.digest_hex() == digest)?
            .clone();
        if versions.active.digest != version.digest {
            versions.previous = Some(std::mem::replace(&mut versions.active, version.clone()));
            self.changed();
        }
        Some(version)
    }

    /// Follows the changes of the active versions: the receiver sees a new
    /// value after each plugin added or version activated.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|changes| *changes += 1);
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
            .find(|version| version.digest_hex() == digest)
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
