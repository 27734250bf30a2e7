//! What each plugin may reach outside the host: the policy file's outbound
//! grant and configuration, with the values operators set through the
//! admin API over it. Those are kept in the store, so every host on one
//! store serves the same, and followed from there with the plugins' active
//! versions.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::host::Host;
use crate::names::check_plugin_name;
use crate::policy::Outbound;
use crate::store::BackendError;

/// Every plugin's reach: the policy's, and the one in force.
#[derive(Debug)]
pub(crate) struct Reach {
    /// What the policy file gives each plugin it names.
    policy: BTreeMap<String, Arc<Outbound>>,
    /// What each plugin reaches now: the policy's, with the operators'
    /// configuration over it.
    current: RwLock<BTreeMap<String, Arc<Outbound>>>,
    /// What a plugin no one configured reaches: nothing.
    nothing: Arc<Outbound>,
}

impl Reach {
    pub(crate) fn new(policy: BTreeMap<String, Arc<Outbound>>) -> Reach {
        Reach {
            current: RwLock::new(policy.clone()),
            policy,
            nothing: Arc::default(),
        }
    }

    /// What `plugin` reaches now.
    pub(crate) fn of(&self, plugin: &str) -> Arc<Outbound> {
        self.current
            .read()
            .expect("reach poisoned")
            .get(plugin)
            .unwrap_or(&self.nothing)
            .clone()
    }

    /// The policy's reach of `plugin` with `set` over it.
    fn with(&self, plugin: &str, set: &BTreeMap<String, String>) -> Result<Outbound, String> {
        self.policy
            .get(plugin)
            .unwrap_or(&self.nothing)
            .with_operator_config(set)
    }
}

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
        self.inner.outbound.of(plugin)
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
            self.inner
                .outbound
                .with(plugin, &config)
                .map_err(ConfigError::Invalid)?,
        );
        let name = plugin.to_owned();
        self.on_store(move |store| store.set_plugin_config(&name, &config))
            .await?;
        self.inner
            .outbound
            .current
            .write()
            .expect("reach poisoned")
            .insert(plugin.to_owned(), reach.clone());
        Ok(reach)
    }

    /// Takes the operators' configuration from the store. A stored value
    /// this host's policy does not allow (another host's policy may have)
    /// leaves that plugin at its policy's reach, with a warning.
    pub(crate) fn follow_config(&self) -> Result<(), BackendError> {
        let stored = self.inner.store.plugin_configs()?;
        let reach = &self.inner.outbound;
        let mut current = reach.policy.clone();
        for (plugin, set) in stored {
            match reach.with(&plugin, &set) {
                Ok(outbound) => {
                    current.insert(plugin, Arc::new(outbound));
                }
                Err(reason) => tracing::warn!(
                    plugin,
                    "the configuration operators set is not this host's to serve: {reason}"
                ),
            }
        }
        *reach.current.write().expect("reach poisoned") = current;
        Ok(())
    }
}
