//! What each plugin may reach outside the host: the policy file's outbound
//! grant and configuration, with the values operators set through the
//! admin API over it. Those are kept in the store, so every host on one
//! store serves the same, and followed from there with the plugins' active
//! versions.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::host::Host;
use crate::names::check_plugin_name;
use crate::policy::Outbound;
use crate::store::BackendError;

/// Why an operator's configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It breaks a rule; nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// The store failed; nothing changed.
    #[error("{0}")]
    Store(#[from] BackendError),
}

impl Host {
    /// What plugin `plugin` may reach outside the host now: its outbound
    /// HTTP grant and configuration (nothing for a plugin no one
    /// configured).
    pub fn outbound(&self, plugin: &str) -> Arc<Outbound> {
        self.parts.http.reach.of(plugin)
    }

    /// Sets the configuration operators give plugin `plugin` over its
    /// policy's, replacing what they set before (an empty one removes it),
    /// here at once and, through the store, on every host that follows it.
    /// A value may not replace a secret of the policy.
    pub async fn set_plugin_config(
        &self,
        plugin: &str,
        config: BTreeMap<String, String>,
    ) -> Result<Arc<Outbound>, ConfigError> {
        check_plugin_name(plugin)
            .map_err(|reason| ConfigError::Invalid(format!("the plugin name {reason}")))?;
        let reach = Arc::new(
            self.parts
                .http
                .reach
                .with(plugin, &config)
                .map_err(ConfigError::Invalid)?,
        );
        let name = plugin.to_owned();
        self.parts
            .on_store(move |store| store.set_plugin_config(&name, &config))
            .await?;
        self.parts.http.reach.set(plugin, reach.clone());
        Ok(reach)
    }
}
