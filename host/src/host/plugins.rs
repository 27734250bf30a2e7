//! The host's plugins, as its users see them: loading, staging,
//! activating and rolling back versions, following the store's record of
//! active versions, and the tools the active versions offer.

use std::sync::Arc;
use std::time::Duration;

use crate::host::Host;
use crate::plugin::versions::Followed;
use crate::plugin::{ActivateError, LoadError, PluginVersion};
use crate::policy::MayCall;
use crate::session::tool_call::ToolRef;
use crate::store::BackendError;

impl Host {
    /// Loads a plugin version from its bytes and makes it the active version
    /// of its name, here and in the store's record, atomically: turns
    /// already running finish on the version they started on, and every
    /// later turn uses this one. A version that fails to load changes
    /// nothing. Sessions whose state was written under another
    /// `state-version` get `migrate` before their first turn on it.
    pub fn load_plugin(&self, bytes: &[u8]) -> Result<Arc<PluginVersion>, LoadError> {
        self.parts.plugins.load_plugin(bytes)
    }

    /// Loads and checks a plugin version from its bytes and publishes it in
    /// the store, without making it active, unless it is the first version
    /// of its plugin here; [`Host::activate`] does. Staging the bytes of a
    /// loaded version returns that version.
    pub fn stage_plugin(&self, bytes: &[u8]) -> Result<Arc<PluginVersion>, LoadError> {
        self.parts.plugins.stage_plugin(bytes)
    }

    /// Loads a plugin version deployed with the host, such as a file named
    /// when `serve` starts: staged as by [`Host::stage_plugin`], and made
    /// active everywhere if the store has never seen these bytes. Bytes it
    /// has seen mean a restart, not a deployment: the version the store
    /// records active stays active, and [`Host::follow_store`] makes it
    /// active here.
    pub fn deploy_plugin(&self, bytes: &[u8]) -> Result<Arc<PluginVersion>, LoadError> {
        self.parts.plugins.deploy_plugin(bytes)
    }

    /// Makes the version of plugin `name` whose digest is `digest` (hex)
    /// active, here and in the store's record, atomically, and returns it.
    /// A version another host published is loaded first. Turns running on
    /// the version active before finish there.
    pub fn activate(&self, name: &str, digest: &str) -> Result<Arc<PluginVersion>, ActivateError> {
        self.parts.plugins.activate(name, digest)
    }

    /// Makes the version that was active here before the current one of
    /// plugin `name` active again, here and in the store's record, and
    /// returns it. Turns running on the current version finish there.
    pub fn roll_back(&self, name: &str) -> Result<Arc<PluginVersion>, ActivateError> {
        self.parts.plugins.roll_back(name)
    }

    /// Makes this host's active versions the ones the store records,
    /// loading versions other hosts published, and records this host's
    /// active version of each plugin the store has no record of; takes the
    /// configuration operators set for plugins from it too. A recorded
    /// version that cannot be loaded leaves its plugin's active version as
    /// it is, and is reported in [`Followed::failed`].
    pub async fn follow_store(&self) -> Result<Followed, BackendError> {
        let host = self.clone();
        tokio::task::spawn_blocking(move || {
            let followed = host.parts.plugins.follow()?;
            let stored = host.parts.store.plugin_configs()?;
            host.parts.http.reach.follow(stored);
            Ok(followed)
        })
        .await
        .expect("following the store panicked")
    }

    /// Runs [`Host::follow_store`] every `every` until the host is dropped
    /// by everyone else, logging what changed and each new failure once.
    pub fn spawn_follower(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let host = Arc::downgrade(&self.parts);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            let mut reported = String::new();
            loop {
                ticks.tick().await;
                let Some(parts) = host.upgrade() else { return };
                let followed = Host { parts }.follow_store().await;
                let failures = match &followed {
                    Ok(followed) => followed
                        .failed
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                    Err(err) => err.to_string(),
                };
                if failures != reported && !failures.is_empty() {
                    tracing::warn!(
                        error = failures,
                        "cannot follow the store's active plugin versions"
                    );
                }
                reported = failures;
            }
        })
    }

    /// Every loaded version of the plugin `name`, active or not, oldest first.
    pub fn plugin_versions(&self, name: &str) -> Vec<Arc<PluginVersion>> {
        self.parts.plugins.loaded(name)
    }

    /// The active version of the plugin `name`.
    pub fn plugin(&self, name: &str) -> Option<Arc<PluginVersion>> {
        self.parts.plugins.active(name)
    }

    /// Follows the changes of the active plugin versions: a new value after
    /// each plugin added or version activated or rolled back.
    pub fn watch_plugins(&self) -> tokio::sync::watch::Receiver<u64> {
        self.parts.plugins.watch()
    }

    /// Every active plugin version, ordered by name.
    pub fn plugins(&self) -> Vec<Arc<PluginVersion>> {
        self.parts.plugins.all()
    }

    /// The tools of other plugins that plugin `plugin` may call, as the
    /// policy's `may_call` entries (`plugin/tool`, `plugin/*`).
    pub fn may_call(&self, plugin: &str) -> Vec<String> {
        self.parts
            .calls
            .get(plugin)
            .map(MayCall::entries)
            .unwrap_or_default()
    }

    /// Every tool of every active plugin, ordered by address.
    pub fn tools(&self) -> Vec<ToolRef> {
        self.plugins()
            .into_iter()
            .flat_map(|plugin| {
                let names: Vec<String> =
                    plugin.tools.iter().map(|tool| tool.name.clone()).collect();
                names.into_iter().map(move |name| ToolRef {
                    plugin: plugin.clone(),
                    name,
                })
            })
            .collect()
    }

    /// The tool at `address` (`plugin/tool`), if its plugin is active and has it.
    pub fn tool(&self, address: &str) -> Option<ToolRef> {
        let (plugin, name) = address.split_once('/')?;
        let plugin = self.plugin(plugin)?;
        plugin.tools.get(name)?;
        Some(ToolRef {
            plugin,
            name: name.to_owned(),
        })
    }
}
