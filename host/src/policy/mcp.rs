//! `[mcp.NAME]`: the MCP servers an operator declares as tool sources.
//! Their tools join the registry as `mcp:NAME/tool`, for the plugins whose
//! `may_call` grants them. Header secrets are read when the policy is read
//! and never shown after.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::names::check_plugin_name;
use crate::policy::outbound::{ConfigEntry, SECRET_SHOWN};

/// How long a call of a remote tool may wait unless the policy says; a
/// caller's deadline bounds it too.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers rmcp's transport sets itself, which a declaration may not.
const TRANSPORT_HEADERS: [&str; 4] = [
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

/// One `[mcp.NAME]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct McpSection {
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, ConfigEntry>,
    command: Option<Vec<String>>,
    timeout_ms: Option<u64>,
    #[serde(default)]
    reexport: bool,
}

/// An MCP server the operator declared. Header values are marked
/// sensitive: `Debug` shows none of them.
#[derive(Debug, Clone)]
pub struct McpServer {
    /// Its name in the registry: `mcp:NAME/tool`.
    pub name: String,
    /// How the host reaches it.
    pub transport: McpTransport,
    /// The longest a call of one of its tools may wait.
    pub timeout: Duration,
    /// Whether this host's own MCP clients see its tools too
    /// (`server__mcp_tool`), as callers granted `mcp:NAME` may.
    pub reexport: bool,
}

/// How the host reaches an MCP server.
#[derive(Debug, Clone)]
pub enum McpTransport {
    /// MCP's streamable HTTP transport at `url`, with `headers` on every
    /// request (their values may be secrets).
    Http {
        /// The endpoint, `http://` or `https://`.
        url: String,
        /// Headers sent with every request.
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    /// A child process the host starts, speaking MCP on its stdin and stdout.
    Command {
        /// The program.
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
}

impl McpServer {
    /// Where it is reached, as shown to operators: the URL and the names of
    /// the headers, or the command line.
    pub fn describe(&self) -> String {
        match &self.transport {
            McpTransport::Http { url, headers } if headers.is_empty() => url.clone(),
            McpTransport::Http { url, headers } => {
                let names: Vec<String> = headers
                    .iter()
                    .map(|(name, _)| format!("{name}: {SECRET_SHOWN}"))
                    .collect();
                format!("{url} ({})", names.join(", "))
            }
            McpTransport::Command { program, args } => std::iter::once(program.as_str())
                .chain(args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// The servers `sections` declare, each checked: a name the registry can
/// address, one way to reach it, headers HTTP can carry.
pub(super) fn servers(sections: &BTreeMap<String, McpSection>) -> Result<Vec<McpServer>, String> {
    sections
        .iter()
        .map(|(name, section)| {
            section
                .server(name)
                .map_err(|reason| format!("[mcp.{name}] {reason}"))
        })
        .collect()
}

impl McpSection {
    fn server(&self, name: &str) -> Result<McpServer, String> {
        check_plugin_name(name).map_err(|reason| format!("the server name {reason}"))?;
        if self.timeout_ms == Some(0) {
            return Err("timeout_ms must be at least 1".into());
        }
        let transport = match (&self.url, &self.command) {
            (Some(url), None) => McpTransport::Http {
                url: check_url(url)?,
                headers: self.headers()?,
            },
            (None, Some(command)) => {
                if !self.headers.is_empty() {
                    return Err("headers are sent over HTTP: a `command` server has none".into());
                }
                let (program, args) = command
                    .split_first()
                    .filter(|(program, _)| !program.is_empty())
                    .ok_or("command names no program: it is [\"program\", \"argument\", …]")?;
                McpTransport::Command {
                    program: program.clone(),
                    args: args.to_vec(),
                }
            }
            _ => {
                return Err(
                    "declares either `url` (streamable HTTP) or `command` (stdio), and not both"
                        .into(),
                );
            }
        };
        Ok(McpServer {
            name: name.to_owned(),
            transport,
            timeout: self
                .timeout_ms
                .map_or(DEFAULT_TIMEOUT, Duration::from_millis),
            reexport: self.reexport,
        })
    }

    fn headers(&self) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        self.headers
            .iter()
            .map(|(name, entry)| {
                let header = HeaderName::try_from(name.as_str())
                    .map_err(|_| format!("headers: `{name}` is not a header name"))?;
                if TRANSPORT_HEADERS.contains(&header.as_str()) {
                    return Err(format!(
                        "headers: `{name}` is set by the MCP transport itself"
                    ));
                }
                let text = entry
                    .value(name)
                    .map_err(|reason| format!("headers: {reason}"))?;
                let mut value = HeaderValue::try_from(text).map_err(|_| {
                    format!("headers: the value of `{name}` cannot be sent in a header")
                })?;
                value.set_sensitive(true);
                Ok((header, value))
            })
            .collect()
    }
}

/// `url` if it is an absolute `http` or `https` URL.
fn check_url(url: &str) -> Result<String, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|err| format!("url `{url}` is not a URL: {err}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(url.to_owned()),
        _ => Err(format!(
            "url `{url}` is not an http:// or https:// URL with a host"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<McpServer>, String> {
        servers(&toml::from_str(text).map_err(|err| err.to_string())?)
    }

    #[test]
    fn a_server_is_reached_by_url_with_secret_headers_or_by_a_command() {
        // SAFETY: no other thread of this test reads the environment.
        unsafe { std::env::set_var("AGENTBOX_TEST_MCP_TOKEN", "Bearer s3cret") };
        let servers = read(
            r#"
            [weather]
            url = "https://mcp.example.com/mcp"
            headers = { authorization = { env = "AGENTBOX_TEST_MCP_TOKEN" }, x-team = "blue" }
            timeout_ms = 5000
            reexport = true
            [files]
            command = ["files-mcp", "--stdio"]
            "#,
        )
        .unwrap();
        let [files, weather] = servers.as_slice() else {
            panic!("two servers: {servers:?}")
        };
        assert_eq!(files.describe(), "files-mcp --stdio");
        assert_eq!(files.timeout, DEFAULT_TIMEOUT);
        let McpTransport::Http { headers, .. } = &weather.transport else {
            panic!("weather is reached over HTTP")
        };
        assert_eq!(headers[0].1, "Bearer s3cret");
        assert!(headers[0].1.is_sensitive());
        assert_eq!(weather.timeout, Duration::from_millis(5000));
        assert!(weather.reexport && !files.reexport);
        let shown = format!("{weather:?} {}", weather.describe());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("authorization: [secret]"), "{shown}");
    }

    #[test]
    fn a_malformed_declaration_is_refused_by_name() {
        for (text, expected) in [
            (
                "[Weather]\nurl = \"http://a/mcp\"",
                "[mcp.Weather] the server name",
            ),
            ("[w]\n", "declares either `url`"),
            (
                "[w]\nurl = \"http://a/mcp\"\ncommand = [\"x\"]",
                "declares either `url`",
            ),
            (
                "[w]\nurl = \"ftp://a/mcp\"",
                "not an http:// or https:// URL",
            ),
            ("[w]\nurl = \"/mcp\"", "not an http:// or https:// URL"),
            ("[w]\ncommand = []", "command names no program"),
            (
                "[w]\ncommand = [\"x\"]\nheaders = { a = \"b\" }",
                "a `command` server has none",
            ),
            (
                "[w]\nurl = \"http://a/mcp\"\nheaders = { accept = \"x\" }",
                "`accept` is set by the MCP transport itself",
            ),
            (
                "[w]\nurl = \"http://a/mcp\"\nheaders = { a = { env = \"AGENTBOX_UNSET_VARIABLE\" } }",
                "`AGENTBOX_UNSET_VARIABLE` is not set",
            ),
            (
                "[w]\nurl = \"http://a/mcp\"\nheaders = { a = \"line\\nbreak\" }",
                "cannot be sent in a header",
            ),
            ("[w]\nurl = \"http://a/mcp\"\ntimeout_ms = 0", "at least 1"),
            (
                "[w]\nurl = \"http://a/mcp\"\nport = 1",
                "unknown field `port`",
            ),
        ] {
            let err = read(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
