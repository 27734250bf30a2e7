//! Who a caller is once authenticated, and what it may do.

use serde::{Deserialize, Serialize};

use crate::names::check_plugin_name;

/// What a principal may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The plugins it may start sessions of and call: names, or `*` for
    /// every plugin.
    pub plugins: Vec<String>,
    /// Whether it may name the user of a session it starts: a trusted
    /// backend that has authenticated its users itself.
    #[serde(default)]
    pub act_for_users: bool,
    /// Whether it may choose the ids of the sessions it starts; they are
    /// kept under its name, `PRINCIPAL:ID`.
    #[serde(default)]
    pub choose_ids: bool,
}

impl Grant {
    /// Checks that every plugin named is `*` or a valid plugin name.
    pub fn check(&self) -> Result<(), String> {
        if self.plugins.is_empty() {
            return Err("`plugins` is empty: name the plugins it may use, or `*`".into());
        }
        self.plugins
            .iter()
            .filter(|plugin| *plugin != "*")
            .try_for_each(|plugin| check_plugin_name(plugin))
    }

    pub(crate) fn allows(&self, plugin: &str) -> bool {
        self.plugins
            .iter()
            .any(|allowed| allowed == "*" || allowed == plugin)
    }
}

/// An authenticated caller: the holder of an API key, or of a token for
/// one user.
#[derive(Debug)]
pub(crate) struct Principal {
    /// What its sessions record as their owner: `key:PRINCIPAL` or
    /// `jwt:USER`.
    pub(crate) owner: String,
    /// The name its chosen session ids are kept under.
    pub(crate) name: String,
    pub(crate) grant: Grant,
    /// The user a token was issued to; that user's sessions only.
    pub(crate) user: Option<String>,
}
