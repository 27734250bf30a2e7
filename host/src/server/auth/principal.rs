//! Who a caller is once authenticated, and what it may do.

use serde::{Deserialize, Serialize};

use crate::names::{REMOTE_PREFIX, check_plugin_name};

/// What a principal may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The plugins it may start sessions of and call: names, `mcp:NAME` for
    /// the tools of an MCP server the host re-exports over `/mcp`, or `*`
    /// for every plugin and re-exported server.
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
    /// Checks that every entry is `*`, a valid plugin name, or `mcp:` and
    /// the name of an MCP server the host may re-export.
    pub fn check(&self) -> Result<(), String> {
        if self.plugins.is_empty() {
            return Err("`plugins` is empty: name the plugins it may use, or `*`".into());
        }
        self.plugins
            .iter()
            .filter(|plugin| *plugin != "*")
            .try_for_each(|plugin| {
                check_plugin_name(plugin.strip_prefix(REMOTE_PREFIX).unwrap_or(plugin))
            })
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
    /// What keeps it standing once authenticated.
    pub(crate) standing: Standing,
}

/// What keeps an authenticated principal standing: a connection it holds
/// open is closed once this lapses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Its key, by digest, while the keys file holds it with this grant.
    Key { sha256: String },
    /// Its token, until the host's clock reaches this time (its `exp`
    /// with the leeway).
    Token { until_ms: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(plugins: &[&str]) -> Grant {
        Grant {
            plugins: plugins.iter().map(|plugin| (*plugin).to_owned()).collect(),
            act_for_users: false,
            choose_ids: false,
        }
    }

    #[test]
    fn a_grant_names_plugins_reexported_servers_or_everything() {
        let some = grant(&["shop", "mcp:weather"]);
        assert_eq!(some.check(), Ok(()));
        assert!(some.allows("shop") && some.allows("mcp:weather"));
        assert!(!some.allows("weather") && !some.allows("mcp:shop"));
        assert!(grant(&["*"]).allows("mcp:weather"));
        for bad in [&[][..], &["mcp:"], &["mcp:Weather"], &["Shop"]] {
            assert!(grant(bad).check().is_err(), "{bad:?}");
        }
    }
}
