//! What each plugin may reach outside the host now: the policy file's
//! outbound grant and configuration, with the values operators set through
//! the admin API over it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::policy::Outbound;

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
    pub(crate) fn with(
        &self,
        plugin: &str,
        set: &BTreeMap<String, String>,
    ) -> Result<Outbound, String> {
        self.policy
            .get(plugin)
            .unwrap_or(&self.nothing)
            .with_operator_config(set)
    }

    /// Has `plugin` reach `reach` from now on.
    pub(crate) fn set(&self, plugin: &str, reach: Arc<Outbound>) {
        self.current
            .write()
            .expect("reach poisoned")
            .insert(plugin.to_owned(), reach);
    }

    /// Has every plugin reach the policy's, with the configuration in
    /// `stored` over it. A value this policy does not allow (another
    /// host's policy may have) leaves that plugin at its policy's reach,
    /// with a warning.
    pub(crate) fn follow(&self, stored: BTreeMap<String, BTreeMap<String, String>>) {
        let mut current = self.policy.clone();
        for (plugin, set) in stored {
            match self.with(&plugin, &set) {
                Ok(outbound) => {
                    current.insert(plugin, Arc::new(outbound));
                }
                Err(reason) => tracing::warn!(
                    plugin,
                    "the configuration operators set is not this host's to serve: {reason}"
                ),
            }
        }
        *self.current.write().expect("reach poisoned") = current;
    }
}
