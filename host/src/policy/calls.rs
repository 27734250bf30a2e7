//! `may_call`: the tools of other plugins a plugin may call through the
//! registry. A plugin may always call its own.

use std::collections::BTreeSet;

use crate::names::{check_plugin_name, check_tool_name};

/// The tools of other plugins one plugin may call: entries `plugin/tool`
/// or `plugin/*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MayCall {
    entries: Vec<(String, Option<String>)>,
}

impl MayCall {
    /// Reads the policy's entries, refusing one that names no plugin's tools
    /// in the form the registry addresses them.
    pub fn parse(entries: &[String]) -> Result<MayCall, String> {
        let entries = entries
            .iter()
            .map(|entry| {
                let mistake = |reason: String| format!("`{entry}`: {reason}");
                if entry.starts_with("mcp:") {
                    return Err(mistake(
                        "tools of remote MCP servers cannot be granted: this host declares no MCP servers".into(),
                    ));
                }
                let (plugin, tool) = entry.split_once('/').ok_or_else(|| {
                    mistake("an entry is `plugin/tool` or `plugin/*`".into())
                })?;
                check_plugin_name(plugin).map_err(|reason| mistake(format!("the plugin {reason}")))?;
                let tool = match tool {
                    "*" => None,
                    tool => {
                        check_tool_name(tool).map_err(|reason| mistake(format!("the tool {reason}")))?;
                        Some(tool.to_owned())
                    }
                };
                Ok((plugin.to_owned(), tool))
            })
            .collect::<Result<_, _>>()?;
        Ok(MayCall { entries })
    }

    /// Whether an entry grants `plugin`'s tool `tool`.
    pub fn allows(&self, plugin: &str, tool: &str) -> bool {
        self.entries.iter().any(|(granted, tools)| {
            granted == plugin && tools.as_deref().is_none_or(|one| one == tool)
        })
    }

    /// The entries as the policy writes them: `plugin/tool` or `plugin/*`.
    pub fn entries(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|(plugin, tool)| format!("{plugin}/{}", tool.as_deref().unwrap_or("*")))
            .collect()
    }

    /// The plugins the entries name, each once, by name.
    pub fn plugins(&self) -> BTreeSet<&str> {
        self.entries
            .iter()
            .map(|(plugin, _)| plugin.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_grant_one_tool_or_all_of_a_plugins() {
        let may = MayCall::parse(&["shop/*".into(), "intake/record_information".into()]).unwrap();
        assert!(may.allows("shop", "login"));
        assert!(may.allows("intake", "record_information"));
        assert!(!may.allows("intake", "other"));
        assert!(!may.allows("counter", "login"));
        assert_eq!(
            may.plugins().into_iter().collect::<Vec<_>>(),
            ["intake", "shop"]
        );
        assert!(!MayCall::default().allows("shop", "login"));
    }

    #[test]
    fn a_malformed_entry_is_refused_by_name() {
        for (entry, expected) in [
            ("shop", "`shop`: an entry is `plugin/tool` or `plugin/*`"),
            ("Shop/*", "`Shop/*`: the plugin `Shop` is not a valid name"),
            (
                "shop/Login",
                "`shop/Login`: the tool `Login` is not a valid name",
            ),
            ("mcp:weather/*", "this host declares no MCP servers"),
        ] {
            let err = MayCall::parse(&[entry.to_owned()]).unwrap_err();
            assert!(err.contains(expected), "{entry}: {err}");
        }
    }
}
