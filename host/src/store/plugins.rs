//! Where plugin versions are published, and which one of each plugin is
//! active, for every host on the store.

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
}
