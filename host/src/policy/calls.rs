//! `may_call`: the tools of other plugins and of the operator's MCP
//! servers a plugin may call through the registry (a plugin may always
//! call its own), and `may_hand_off`: the plugins it may hand the
//! conversation to.

use std::collections::BTreeSet;

use crate::names::{REMOTE_PREFIX, check_plugin_name, check_remote_tool_name, check_tool_name};

/// What one entry grants: a plugin's tools or an MCP server's, one of them
/// or (`None`) all.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Plugin(String, Option<String>),
    Remote(String, Option<String>),
}

/// The tools of other plugins and MCP servers one plugin may call: entries
/// `plugin/tool`, `plugin/*`, `mcp:server/tool` or `mcp:server/*`; and the
/// plugins it may hand the conversation to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MayCall {
    entries: Vec<Entry>,
    hand_offs: BTreeSet<String>,
}

impl MayCall {
    /// Reads the policy's entries, refusing one that names no tools in the
    /// form the registry addresses them, or an MCP server not among
    /// `servers`, those the policy declares.
    pub fn parse(entries: &[String], servers: &BTreeSet<&str>) -> Result<MayCall, String> {
        let entries = entries
            .iter()
            .map(|entry| {
                let mistake = |reason: String| format!("`{entry}`: {reason}");
                let (source, tool) = entry.split_once('/').ok_or_else(|| {
                    mistake("an entry is `plugin/tool`, `plugin/*`, `mcp:server/tool` or `mcp:server/*`".into())
                })?;
                let tool = (tool != "*").then(|| tool.to_owned());
                match source.strip_prefix(REMOTE_PREFIX) {
                    Some(server) => {
                        if !servers.contains(server) {
                            let declared = if servers.is_empty() {
                                "the policy declares none".to_owned()
                            } else {
                                let names: Vec<&str> = servers.iter().copied().collect();
                                format!("it declares {}", names.join(", "))
                            };
                            return Err(mistake(format!(
                                "no [mcp.{server}] declares the MCP server `{server}`; {declared}"
                            )));
                        }
                        if let Some(tool) = &tool {
                            check_remote_tool_name(tool).map_err(mistake)?;
                        }
                        Ok(Entry::Remote(server.to_owned(), tool))
                    }
                    None => {
                        check_plugin_name(source)
                            .map_err(|reason| mistake(format!("the plugin {reason}")))?;
                        if let Some(tool) = &tool {
                            check_tool_name(tool)
                                .map_err(|reason| mistake(format!("the tool {reason}")))?;
                        }
                        Ok(Entry::Plugin(source.to_owned(), tool))
                    }
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(MayCall {
            entries,
            hand_offs: BTreeSet::new(),
        })
    }

    /// These grants, and hand-offs to each of `plugins`, refusing a name
    /// that is no plugin's.
    pub fn with_hand_offs(mut self, plugins: &[String]) -> Result<MayCall, String> {
        for plugin in plugins {
            check_plugin_name(plugin)
                .map_err(|reason| format!("`{plugin}`: the plugin {reason}"))?;
            self.hand_offs.insert(plugin.clone());
        }
        Ok(self)
    }

    /// Whether it may hand the conversation to `plugin`.
    pub fn hands_off_to(&self, plugin: &str) -> bool {
        self.hand_offs.contains(plugin)
    }

    /// Whether an entry grants `plugin`'s tool `tool`.
    pub fn allows(&self, plugin: &str, tool: &str) -> bool {
        self.entries.iter().any(|entry| {
            matches!(entry, Entry::Plugin(granted, tools)
                if granted == plugin && tools.as_deref().is_none_or(|one| one == tool))
        })
    }

    /// Whether an entry grants MCP server `server`'s tool `tool`.
    pub fn allows_remote(&self, server: &str, tool: &str) -> bool {
        self.entries.iter().any(|entry| {
            matches!(entry, Entry::Remote(granted, tools)
                if granted == server && tools.as_deref().is_none_or(|one| one == tool))
        })
    }

    /// The entries as the policy writes them.
    pub fn entries(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|entry| {
                let (prefix, source, tool) = match entry {
                    Entry::Plugin(plugin, tool) => ("", plugin, tool),
                    Entry::Remote(server, tool) => (REMOTE_PREFIX, server, tool),
                };
                format!("{prefix}{source}/{}", tool.as_deref().unwrap_or("*"))
            })
            .collect()
    }

    /// The plugins the entries name, each once, by name.
    pub fn plugins(&self) -> BTreeSet<&str> {
        self.entries
            .iter()
            .filter_map(|entry| match entry {
                Entry::Plugin(plugin, _) => Some(plugin.as_str()),
                Entry::Remote(..) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_grant_one_tool_or_all_of_a_plugins_or_servers() {
        let may = MayCall::parse(
            &[
                "shop/*".into(),
                "intake/record_information".into(),
                "mcp:weather/get.forecast".into(),
                "mcp:files/*".into(),
            ],
            &BTreeSet::from(["weather", "files"]),
        )
        .unwrap();
        assert!(may.allows("shop", "login"));
        assert!(may.allows("intake", "record_information"));
        assert!(!may.allows("intake", "other"));
        assert!(!may.allows("counter", "login"));
        assert_eq!(
            may.plugins().into_iter().collect::<Vec<_>>(),
            ["intake", "shop"]
        );
        assert!(may.allows_remote("weather", "get.forecast"));
        assert!(!may.allows_remote("weather", "alerts"));
        assert!(may.allows_remote("files", "read"));
        assert!(
            !may.allows("weather", "get.forecast"),
            "a server is no plugin"
        );
        assert_eq!(
            may.entries(),
            [
                "shop/*",
                "intake/record_information",
                "mcp:weather/get.forecast",
                "mcp:files/*"
            ]
        );
        assert!(!MayCall::default().allows("shop", "login"));
    }

    #[test]
    fn a_malformed_entry_is_refused_by_name() {
        for (entry, expected) in [
            ("shop", "`shop`: an entry is `plugin/tool`, `plugin/*`"),
            ("Shop/*", "`Shop/*`: the plugin `Shop` is not a valid name"),
            (
                "shop/Login",
                "`shop/Login`: the tool `Login` is not a valid name",
            ),
            (
                "mcp:weather/*",
                "no [mcp.weather] declares the MCP server `weather`; it declares files",
            ),
            (
                "mcp:files/read file",
                "`mcp:files/read file`: MCP tool name `read file` is invalid",
            ),
        ] {
            let err = MayCall::parse(&[entry.to_owned()], &BTreeSet::from(["files"])).unwrap_err();
            assert!(err.contains(expected), "{entry}: {err}");
        }
    }
}
