//! `agentbox plugins` and `agentbox users`: the operator's commands,
//! through a running server's admin API.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{plugin_bytes, reach_parts};

/// Manage the plugins of a running `agentbox serve` through its admin API.
///
/// Every command needs the server's admin token (--admin-token or AGENTBOX_ADMIN_TOKEN).
/// A load, activation or roll-back through one server reaches every server on the same store
/// within a second. Examples:
///
///   agentbox plugins list
///   agentbox plugins load plugins/counter-v2           # build, upload and activate
///   agentbox plugins load counter.wasm --no-activate  # upload only
///   agentbox plugins activate counter sha256:4f2a...
///   agentbox plugins rollback counter
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(super) struct PluginsArgs {
    #[command(subcommand)]
    command: PluginsCommand,

    #[command(flatten)]
    server: ServerArgs,
}

/// Export or erase everything a running `agentbox serve` stores about one user, through its
/// admin API: the sessions started for the user with their history, and the user's bucket in
/// every plugin.
///
/// Every command needs the server's admin token (--admin-token or AGENTBOX_ADMIN_TOKEN).
/// Examples:
///
///   agentbox users export +15551234567 > grace.json
///   agentbox users erase ada@example.com
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(super) struct UsersArgs {
    #[command(subcommand)]
    command: UsersCommand,

    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Print everything stored about the user, as JSON
    Export {
        /// The user id
        user: String,
    },
    /// Delete everything stored about the user, on the server's store, and say how much
    Erase {
        /// The user id
        user: String,
    },
}

/// Which server, and its admin token.
#[derive(Debug, Args)]
struct ServerArgs {
    /// The server's address
    #[arg(
        long,
        value_name = "URL",
        env = "AGENTBOX_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,

    /// The server's admin token
    #[arg(
        long,
        value_name = "TOKEN",
        env = "AGENTBOX_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    admin_token: Option<String>,
}

#[derive(Debug, Subcommand)]
enum PluginsCommand {
    /// List each plugin's active version, its loaded versions and its stats
    List {
        /// Print the server's answer as JSON
        #[arg(long)]
        json: bool,
    },
    /// Upload a version (a .wasm, or a plugin's cargo package folder, built first); the server
    /// checks it and, unless --no-activate, makes it active
    Load {
        /// The plugin
        #[arg(value_name = "PLUGIN")]
        path: PathBuf,
        /// Keep the active version; activate this one later with `activate`
        #[arg(long)]
        no_activate: bool,
    },
    /// Make a loaded version active
    Activate {
        /// The plugin's name
        name: String,
        /// The version's digest, as `list` shows it
        digest: String,
    },
    /// Make the version active before the current one active again
    Rollback {
        /// The plugin's name
        name: String,
    },
    /// Show what a plugin reaches (its HTTP allow-list and the configuration
    /// it reads, secrets as [secret]), or set configuration over the policy
    /// file's on every server of the store: `KEY=VALUE`s replace all that
    /// operators set before, `--clear` removes it. Secrets come from the
    /// policy file only.
    Config {
        /// The plugin's name
        name: String,
        /// Values to set, replacing what operators set before
        #[arg(value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Remove what operators set, leaving the policy file's
        #[arg(long, conflicts_with = "set")]
        clear: bool,
    },
}

pub(super) fn users(args: UsersArgs) -> anyhow::Result<ExitCode> {
    let admin = Client::admin(args.server)?;
    match args.command {
        UsersCommand::Export { user } => {
            let data = admin.call("GET", &format!("/v1/admin/users/{user}/export"), None)?;
            println!("{data:#}");
        }
        UsersCommand::Erase { user } => {
            let answer = admin.call("DELETE", &format!("/v1/admin/users/{user}"), None)?;
            let erased = &answer["erased"];
            println!(
                "erased user {user}: {} sessions with their history, {} KV entries",
                erased["sessions"], erased["kv_entries"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn plugins(args: PluginsArgs) -> anyhow::Result<ExitCode> {
    let admin = Client::admin(args.server)?;
    match args.command {
        PluginsCommand::List { json } => {
            let plugins = admin.call("GET", "/v1/admin/plugins", None)?;
            if json {
                println!("{plugins}");
            } else {
                print_plugins(&plugins);
            }
        }
        PluginsCommand::Load { path, no_activate } => {
            let bytes = plugin_bytes(&path)?;
            let query = if no_activate { "?activate=false" } else { "" };
            let version = admin.call(
                "POST",
                &format!("/v1/admin/plugins{query}"),
                Some(("application/wasm", bytes)),
            )?;
            let done = if no_activate { "loaded" } else { "active" };
            println!("{} {}", described(&version), done);
        }
        PluginsCommand::Activate { name, digest } => {
            let body = json!({ "digest": digest }).to_string().into_bytes();
            let version = admin.call(
                "POST",
                &format!("/v1/admin/plugins/{name}/activate"),
                Some(("application/json", body)),
            )?;
            println!("{} active", described(&version));
        }
        PluginsCommand::Rollback { name } => {
            let version =
                admin.call("POST", &format!("/v1/admin/plugins/{name}/rollback"), None)?;
            println!("{} active again", described(&version));
        }
        PluginsCommand::Config { name, set, clear } => {
            let path = format!("/v1/admin/plugins/{name}/config");
            let reach = if set.is_empty() && !clear {
                admin.call("GET", &path, None)?
            } else {
                let mut values = serde_json::Map::new();
                for pair in &set {
                    let (key, value) = pair
                        .split_once('=')
                        .with_context(|| format!("`{pair}` is not KEY=VALUE"))?;
                    values.insert(key.to_owned(), Value::String(value.to_owned()));
                }
                let body = Value::Object(values).to_string().into_bytes();
                admin.call("PUT", &path, Some(("application/json", body)))?
            };
            print_reach(&name, &reach);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `plugins config` shows: the allow-list, then a line per value.
fn print_reach(name: &str, reach: &Value) {
    let (allow, config) = reach_parts(reach);
    if allow.is_empty() {
        println!("{name} sends no HTTP request");
    } else {
        println!("{name} may send requests to {}", allow.join(", "));
    }
    if config.is_empty() {
        println!("{name} has no configuration");
    }
    for (key, value) in config {
        println!("  {key} = {value}");
    }
}

/// A client of a running server's API, with the token it sends, if any.
pub(super) struct Client {
    server: String,
    token: Option<String>,
}

impl Client {
    /// A client of the server at `server`, sending `token` as a bearer token.
    pub(super) fn new(server: &str, token: Option<String>) -> Client {
        Client {
            server: server.trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// A client of the admin API, which needs its token.
    fn admin(args: ServerArgs) -> anyhow::Result<Client> {
        let token = args.admin_token.context(
            "the admin API needs its token: set AGENTBOX_ADMIN_TOKEN (or pass --admin-token)",
        )?;
        Ok(Client::new(&args.server, Some(token)))
    }

    /// Follows the server-sent events of `path`, handing each event's JSON
    /// to `each`, until the stream ends; an `error` event or a refused
    /// request is an error.
    pub(super) fn follow(&self, path: &str, mut each: impl FnMut(&Value)) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.server);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut request = agent.get(&url);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let mut response = request
            .call()
            .with_context(|| format!("cannot reach the server at {}", self.server))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.body_mut().read_to_string().unwrap_or_default();
            let answer: Value = serde_json::from_str(&text).unwrap_or_default();
            bail!(
                "the server refused: {} ({status}, {})",
                answer["message"].as_str().unwrap_or(&text),
                answer["kind"].as_str().unwrap_or("unknown")
            );
        }
        let (mut name, mut data) = (String::new(), String::new());
        for line in BufReader::new(response.into_body().into_reader()).lines() {
            let line = line.with_context(|| format!("the stream of {url} broke off"))?;
            match line.split_once(':') {
                Some(("event", value)) => name = value.trim().to_owned(),
                Some(("data", value)) => data.push_str(value.trim_start()),
                _ if line.is_empty() && !data.is_empty() => {
                    let event: Value = serde_json::from_str(&std::mem::take(&mut data))
                        .with_context(|| format!("{url} sent an event that is not JSON"))?;
                    if std::mem::take(&mut name) == "error" {
                        bail!(
                            "{} ({})",
                            event["message"].as_str().unwrap_or("the stream failed"),
                            event["kind"].as_str().unwrap_or("unknown")
                        );
                    }
                    each(&event);
                }
                // An id, or a comment that keeps the connection alive.
                _ => {}
            }
        }
        Ok(())
    }

    /// Sends a request to the API and returns its JSON answer, or the
    /// server's error as an error.
    pub(super) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.server);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some((content_type, _)) = &body {
            request = request.header("content-type", *content_type);
        }
        let request = request
            .body(body.map(|(_, bytes)| bytes).unwrap_or_default())
            .with_context(|| format!("`{url}` is not a valid address"))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent
            .run(request)
            .with_context(|| format!("cannot reach the server at {}", self.server))?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .with_context(|| format!("cannot read the answer of {url}"))?;
        let answer: Value = serde_json::from_str(&text)
            .with_context(|| format!("{url} answered {status} with something that is not JSON"))?;
        if !status.is_success() {
            bail!(
                "the server refused: {} ({status}, {})",
                answer["message"].as_str().unwrap_or(&text),
                answer["kind"].as_str().unwrap_or("unknown")
            );
        }
        Ok(answer)
    }
}

/// `name version (sha256:digest…, state version N)`.
fn described(version: &Value) -> String {
    format!(
        "{} {} (sha256:{:.12}, state version {})",
        version["name"].as_str().unwrap_or("?"),
        version["version"].as_str().unwrap_or("?"),
        version["digest"].as_str().unwrap_or("?"),
        version["state_version"]
    )
}

fn print_plugins(plugins: &Value) {
    let plugins = plugins.as_array().map(Vec::as_slice).unwrap_or_default();
    if plugins.is_empty() {
        println!("no plugins loaded");
        return;
    }
    for plugin in plugins {
        let stats = &plugin["stats"];
        println!(
            "{}  turns {} ok, {} failed; migrations {} ok, {} failed; {} swaps; {} limit trips",
            plugin["name"].as_str().unwrap_or("?"),
            stats["turns_ok"],
            stats["turns_failed"],
            stats["migrations_ok"],
            stats["migrations_failed"],
            stats["swaps"],
            stats["limit_trips"],
        );
        for version in plugin["versions"].as_array().into_iter().flatten() {
            let mark = if version["active"] == true { "*" } else { " " };
            println!(
                "  {mark} {}  sha256:{}",
                described(version),
                version["digest"].as_str().unwrap_or("?")
            );
        }
    }
}
