//! Callers of `agentbox serve`: the `agentbox keys` command that manages
//! their API keys, and the authentication `serve` runs with, following the
//! keys file as it changes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

use super::DATA_DIR;
use agentbox_host::server::auth::jwt::{JwtSettings, JwtVerifier};
use agentbox_host::server::auth::keys::KeyFile;
use agentbox_host::server::auth::{Callers, Grant};

/// Create, list and revoke the API keys callers of `agentbox serve` authenticate with.
///
/// Keys live in a TOML file, DATA_DIR/keys.toml unless --keys names another, which keeps each
/// key's SHA-256 digest, never the key. Once the file exists, `agentbox serve` requires every
/// caller of the session API to present a key (or a JWT, with [jwt] settings) as
/// `Authorization: Bearer KEY`, and follows changes to the file within a second: a revoked key
/// is refused from then on. Each key names a principal, which owns the sessions started with
/// it; no other principal reaches them. Example:
///
///   KEY=$(agentbox keys create shop-backend --plugin shop --act-for-users)
///   curl localhost:8080/v1/sessions -H "authorization: Bearer $KEY" \
///     -H 'content-type: application/json' -d '{"plugin": "shop", "user_id": "+15551234567"}'
#[derive(Debug, Subcommand)]
#[command(verbatim_doc_comment)]
pub(super) enum KeysCommand {
    Create(CreateArgs),
    /// List the keys: names, principals, grants and plugins, never a key
    List(FileArgs),
    Revoke(RevokeArgs),
}

/// Where the keys file is.
#[derive(Debug, Args)]
pub(super) struct FileArgs {
    /// The API keys file [default: DATA_DIR/keys.toml]
    #[arg(long, value_name = "FILE", env = "AGENTBOX_KEYS")]
    keys: Option<PathBuf>,

    /// Folder of the default keys file [default: agentbox-data]
    #[arg(long, value_name = "DIR", env = "AGENTBOX_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl FileArgs {
    fn path(&self) -> PathBuf {
        self.keys.clone().unwrap_or_else(|| {
            default_keys(
                &self
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DATA_DIR)),
            )
        })
    }
}

/// The keys file in the data folder `data_dir`.
pub(super) fn default_keys(data_dir: &Path) -> PathBuf {
    data_dir.join("keys.toml")
}

/// Create a key and print it on stdout, once: only its digest is kept.
#[derive(Debug, Args)]
pub(super) struct CreateArgs {
    /// The key's name, to list and revoke it by (a-z, 0-9 and -)
    name: String,

    /// The principal the key authenticates, owner of the sessions started with it; keys of one
    /// principal share its sessions [default: the key's name]
    #[arg(long)]
    principal: Option<String>,

    /// A plugin the key may use, `mcp:NAME` for the tools of an MCP server the
    /// policy re-exports, or `*` for every plugin and re-exported server
    /// (repeatable; at least one)
    #[arg(long = "plugin", value_name = "PLUGIN", required = true)]
    plugins: Vec<String>,

    /// Let the key name the user of the sessions it starts: a backend that has authenticated
    /// its users itself
    #[arg(long)]
    act_for_users: bool,

    /// Let the key choose the ids of the sessions it starts, kept as PRINCIPAL:ID
    #[arg(long)]
    choose_ids: bool,

    #[command(flatten)]
    file: FileArgs,
}

/// Revoke a key: a running server refuses it within a second.
#[derive(Debug, Args)]
pub(super) struct RevokeArgs {
    /// The key's name
    name: String,

    #[command(flatten)]
    file: FileArgs,
}

pub(super) fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create(args) => create(args),
        KeysCommand::List(args) => list(&args),
        KeysCommand::Revoke(args) => revoke(args),
    }
}

fn read_or_empty(path: &Path) -> anyhow::Result<KeyFile> {
    if path.exists() {
        KeyFile::read(path).map_err(anyhow::Error::msg)
    } else {
        Ok(KeyFile::default())
    }
}

fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let path = args.file.path();
    let mut file = read_or_empty(&path)?;
    let principal = args.principal.unwrap_or_else(|| args.name.clone());
    let grant = Grant {
        plugins: args.plugins,
        act_for_users: args.act_for_users,
        choose_ids: args.choose_ids,
    };
    let key = file
        .create(&args.name, &principal, grant)
        .map_err(anyhow::Error::msg)?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the folder {}", dir.display()))?;
    }
    file.write(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("{key}");
    eprintln!(
        "agentbox: created key {} for principal {principal} in {}; it is shown this once, keep it secret",
        args.name,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn list(args: &FileArgs) -> anyhow::Result<ExitCode> {
    let path = args.path();
    let file = read_or_empty(&path)?;
    if file.keys.is_empty() {
        eprintln!("agentbox: no API keys in {}", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<24} {:<8} {:<8} PLUGINS",
        "NAME", "PRINCIPAL", "USERS", "IDS"
    );
    for (name, entry) in &file.keys {
        let yes = |granted: bool| if granted { "yes" } else { "no" };
        println!(
            "{name:<24} {:<24} {:<8} {:<8} {}",
            entry.principal,
            yes(entry.grant.act_for_users),
            yes(entry.grant.choose_ids),
            entry.grant.plugins.join(",")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    let path = args.file.path();
    let mut file = read_or_empty(&path)?;
    if !file.revoke(&args.name) {
        bail!("no key named `{}` in {}", args.name, path.display());
    }
    file.write(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "agentbox: revoked key {}; a running server refuses it, and closes what it holds open, within a second",
        args.name
    );
    Ok(ExitCode::SUCCESS)
}

/// How often `serve` looks at the keys file: a revoked key's connections
/// close within this and a moment.
const FOLLOW_KEYS_EVERY: Duration = Duration::from_millis(500);

/// The authentication `serve` runs with: the keys of `keys` (which must
/// exist when named) and tokens as `jwt` says, or none.
pub(super) fn callers(keys: Option<&Path>, jwt: Option<&JwtSettings>) -> anyhow::Result<Callers> {
    let file = keys
        .map(KeyFile::read)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let verifier = jwt
        .map(JwtVerifier::new)
        .transpose()
        .map_err(|reason| anyhow::anyhow!("the [jwt] settings are invalid: {reason}"))?;
    Ok(Callers::new(file.as_ref(), verifier))
}

/// Reloads the keys of `callers` whenever the file at `path` changes: an
/// open server that sees one appear requires keys from then on, and a file
/// that no longer reads (deleted, or invalid) leaves no key standing until
/// it reads again, so that a mistake never opens the API.
pub(super) async fn follow_keys(callers: Arc<Callers>, path: PathBuf) {
    let stamp = |path: &Path| -> Option<(SystemTime, u64)> {
        let metadata = std::fs::metadata(path).ok()?;
        Some((metadata.modified().ok()?, metadata.len()))
    };
    let mut seen = stamp(&path);
    let mut ticks = tokio::time::interval(FOLLOW_KEYS_EVERY);
    loop {
        ticks.tick().await;
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        let was_open = callers.is_open();
        match KeyFile::read(&path) {
            Ok(file) => {
                callers.reload_keys(&file);
                eprintln!(
                    "agentbox: {} changed: {} API keys{}",
                    path.display(),
                    file.keys.len(),
                    if was_open {
                        "; the session API requires one from now on"
                    } else {
                        ""
                    }
                );
            }
            Err(reason) => {
                callers.reload_keys(&KeyFile::default());
                eprintln!(
                    "agentbox: {reason}; every API key is refused until the file reads again"
                );
            }
        }
    }
}
