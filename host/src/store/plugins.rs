//! Where plugin versions are published, which one of each plugin is
//! active, and the configuration operators set for each, for every host on
//! the store.

use std::collections::BTreeMap;

use crate::store::error::BackendError;

/// The published plugin versions and the record of active ones.
pub trait PluginStore: Send + Sync + std::fmt::Debug + 'static {
    /// Keeps a plugin version's component bytes under their digest (hex),
    /// for every host on this store to load; returns whether they are new
    /// to the store. Publishing the same bytes again changes nothing.
    fn publish_plugin(&self, digest: &str, bytes: &[u8]) -> Result<bool, BackendError>;

    /// The component bytes published under `digest`.
    fn published_plugin(&self, digest: &str) -> Result<Option<Vec<u8>>, BackendError>;

    /// Records the version with digest `digest` as plugin `name`'s active
    /// version, for every host on this store.
    fn set_active_plugin(&self, name: &str, digest: &str) -> Result<(), BackendError>;

    /// The active version of each plugin the store has a record of: name → digest.
    fn active_plugins(&self) -> Result<BTreeMap<String, String>, BackendError>;

    /// Replaces the configuration an operator set for plugin `name` (key →
    /// value), for every host on this store; an empty one removes it.
    fn set_plugin_config(
        &self,
        name: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<(), BackendError>;

    /// The configuration operators set, of each plugin that has one.
    fn plugin_configs(&self) -> Result<BTreeMap<String, BTreeMap<String, String>>, BackendError>;
}
