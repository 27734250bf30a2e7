//! `agentbox serve`: its settings (flags, environment, a TOML file), the
//! plugins it loads, and the graceful stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;

use super::folder::{Folder, SETTLE, load_from_folder, watch};
use super::keys::{callers, default_keys, follow_keys};
use super::{HostArgs, REAP_EVERY, compilation_text, load};
use agentbox_host::server::Access;
use agentbox_host::server::ConnectionSettings;
use agentbox_host::server::auth::jwt::JwtSettings;
use agentbox_host::server::auth::rates::Rates;
use agentbox_host::server::bounds::Bounds;
use agentbox_host::server::sockets::WebSocketSettings;
use agentbox_host::store::StoreSpec;

/// Serve sessions and tools over HTTP and WebSocket, and plugins over an admin API.
///
/// Loads the plugins given with --plugin and every .wasm in the plugin folder, then listens
/// until SIGTERM or Ctrl-C, when it stops accepting, lets running turns finish and exits.
/// Sessions live in the store, so a restarted server goes on where it stopped. With --watch, a
/// .wasm written to the plugin folder is loaded and made active once it has stopped changing;
/// one that does not load is reported and the active version keeps serving.
///
/// The store records which version of each plugin is active. Servers sharing a store (Redis, or
/// one SQLite file) follow that record, so a version loaded or rolled back through any of them
/// is active on all within a second, and a restarted server comes back on the versions active
/// when it stopped. A file whose bytes the store has seen before therefore does not replace the
/// active version at startup; a file it has never seen is a new deployment and does.
///
/// Callers of the session API authenticate with an API key (see `agentbox keys`) or a JWT
/// ([jwt] in the --config file) once either is set up, and each reaches only the sessions it
/// started. Without either, the API is open to anyone who can connect: served on loopback only,
/// unless --insecure says otherwise, and only until a keys file appears. The keys file is read
/// again whenever it changes: a revoked key is refused, and its WebSockets and event streams
/// closed, within a second; a file that no longer reads leaves no key standing.
///
/// Settings come from flags, then environment variables (AGENTBOX_LISTEN, AGENTBOX_STORE,
/// AGENTBOX_PLUGIN_DIR, AGENTBOX_DATA_DIR, AGENTBOX_ADMIN_TOKEN, AGENTBOX_KEYS), then the
/// --config file, then the defaults. Keep tokens out of the command line, where other users of
/// the machine can read them. The API is described in docs/api.md and served at
/// /v1/openapi.json. Example:
///
///   export AGENTBOX_ADMIN_TOKEN=$(head -c 32 /dev/urandom | base64)
///   agentbox serve --plugin plugins/intake
///   curl localhost:8080/v1/sessions -H 'content-type: application/json' -d '{"plugin": "intake"}'
///   curl localhost:8080/v1/sessions/ID/messages -H 'content-type: application/json' \
///     -d '{"text": "my name is Ada"}'
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(super) struct ServeArgs {
    /// A TOML file of settings: any of listen, plugins, plugin_dir, watch, store, admin_token,
    /// keys, insecure, data_dir, deadline_ms, memory_mib, compile_timeout_ms,
    /// compile_memory_mib, policy, and [jwt], [rates],
    /// [websocket], [server] and [bounds] tables (see docs/api.md)
    #[arg(long, value_name = "FILE", env = "AGENTBOX_CONFIG")]
    config: Option<PathBuf>,

    /// Address to listen on; port 0 picks a free port, printed at start [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR", env = "AGENTBOX_LISTEN")]
    listen: Option<SocketAddr>,

    /// A plugin to load: a .wasm component or a plugin's cargo package folder (repeatable)
    #[arg(long = "plugin", value_name = "PLUGIN")]
    plugins: Vec<PathBuf>,

    /// A folder whose .wasm components are all loaded, created if missing
    /// [default: DATA_DIR/plugins]
    #[arg(long, value_name = "DIR", env = "AGENTBOX_PLUGIN_DIR")]
    plugin_dir: Option<PathBuf>,

    /// Load and activate a .wasm written to the plugin folder while serving
    #[arg(long)]
    watch: bool,

    /// Where sessions live: `memory`, `sqlite:PATH` or `redis://HOST:PORT`
    /// [default: sqlite:DATA_DIR/agentbox.db]
    #[arg(long, value_name = "SPEC", env = "AGENTBOX_STORE")]
    store: Option<StoreSpec>,

    /// Bearer token of the admin API; without one, the admin API refuses every request
    #[arg(
        long,
        value_name = "TOKEN",
        env = "AGENTBOX_ADMIN_TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,

    /// The API keys file callers authenticate against (see `agentbox keys`), followed while the
    /// server runs [default: DATA_DIR/keys.toml; until it exists, the API is open]
    #[arg(long, value_name = "FILE", env = "AGENTBOX_KEYS")]
    keys: Option<PathBuf>,

    /// Serve the session API without authentication on an address other than loopback
    #[arg(long)]
    insecure: bool,

    /// How JWT bearer tokens are verified: the --config file's [jwt] table
    #[arg(skip)]
    jwt: Option<Box<JwtSettings>>,

    /// How fast each principal may start sessions and run turns: the --config file's [rates]
    #[arg(skip)]
    rates: Rates,

    /// Which pages may open WebSockets, and how many per session: the --config file's
    /// [websocket]
    #[arg(skip)]
    websocket: WebSocketSettings,

    /// How many connections may be open at once, and how long a client may take to send a
    /// request: the --config file's [server]
    #[arg(skip)]
    connections: ConnectionSettings,

    /// How many follows, feeds, WebSockets and MCP sessions callers may hold open: the
    /// --config file's [bounds]
    #[arg(skip)]
    bounds: Bounds,

    /// How long a changed file must stay unchanged before --watch loads it
    #[arg(skip = SETTLE)]
    settle: Duration,

    #[command(flatten)]
    host: HostArgs,
}

/// The settings file of `agentbox serve`: the flags' names, in TOML.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeConfig {
    listen: Option<SocketAddr>,
    #[serde(default)]
    plugins: Vec<PathBuf>,
    plugin_dir: Option<PathBuf>,
    #[serde(default)]
    watch: bool,
    store: Option<String>,
    admin_token: Option<String>,
    keys: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    jwt: Option<JwtSettings>,
    #[serde(default)]
    rates: Rates,
    #[serde(default)]
    websocket: WebSocketSettings,
    #[serde(default)]
    server: ConnectionSettings,
    #[serde(default)]
    bounds: Bounds,
    data_dir: Option<PathBuf>,
    deadline_ms: Option<u64>,
    memory_mib: Option<usize>,
    compile_timeout_ms: Option<u64>,
    compile_memory_mib: Option<u64>,
    policy: Option<PathBuf>,
}

impl ServeArgs {
    /// These settings serving, and following, the plugins `agentbox dev`
    /// builds into the returned folder (DATA_DIR/dev), which it renames
    /// there whole, compiled with the functions of DATA_DIR/dev-functions.
    pub(super) fn for_dev(mut self) -> (ServeArgs, PathBuf, PathBuf) {
        let (folder, functions) = (
            self.host.data_dir().join("dev"),
            self.host.data_dir().join("dev-functions"),
        );
        self.plugin_dir = Some(folder.clone());
        self.watch = true;
        self.settle = Duration::ZERO;
        self.host.function_cache = Some(functions.clone());
        (self, folder, functions)
    }

    /// Fills what the flags and the environment left out from the `--config` file.
    fn with_config(mut self) -> anyhow::Result<ServeArgs> {
        let Some(path) = &self.config else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        let config: ServeConfig = toml::from_str(&text).map_err(|err| {
            anyhow::anyhow!("the config file {} is invalid: {err}", path.display())
        })?;
        let store = config
            .store
            .map(|spec| spec.parse::<StoreSpec>())
            .transpose()
            .map_err(|reason| {
                anyhow::anyhow!(
                    "the config file {} is invalid: store: {reason}",
                    path.display()
                )
            })?;
        if config.compile_timeout_ms == Some(0) {
            bail!(
                "the config file {} is invalid: compile_timeout_ms must be at least 1",
                path.display()
            );
        }
        let budgets = crate::COMPILE_MEMORY_MIB_RANGE;
        if config
            .compile_memory_mib
            .is_some_and(|mib| !budgets.contains(&mib))
        {
            bail!(
                "the config file {} is invalid: compile_memory_mib must be {} to {}",
                path.display(),
                budgets.start(),
                budgets.end()
            );
        }
        self.listen = self.listen.or(config.listen);
        self.plugins.extend(config.plugins);
        self.plugin_dir = self.plugin_dir.or(config.plugin_dir);
        self.watch |= config.watch;
        self.store = self.store.or(store);
        self.admin_token = self.admin_token.or(config.admin_token);
        self.keys = self.keys.or(config.keys);
        self.insecure |= config.insecure;
        self.jwt = config.jwt.map(Box::new);
        self.rates = config.rates;
        self.websocket = config.websocket;
        self.connections = config.server;
        self.bounds = config.bounds;
        let host = &mut self.host;
        host.data_dir = host.data_dir.take().or(config.data_dir);
        host.deadline_ms = host.deadline_ms.or(config.deadline_ms);
        host.memory_mib = host.memory_mib.or(config.memory_mib);
        host.compile_timeout_ms = host.compile_timeout_ms.or(config.compile_timeout_ms);
        host.compile_memory_mib = host.compile_memory_mib.or(config.compile_memory_mib);
        host.policy = host.policy.take().or(config.policy);
        Ok(self)
    }
}

/// Files the process keeps beside its connections: the store, the plugin
/// folder, the artifact cache, and room for `/healthz` when every
/// connection is taken.
const FILES_BESIDE_CONNECTIONS: u64 = 256;

/// Raises the process's limit of open files to the most it may have, and
/// lowers the connection cap of `settings` to fit under it, saying so.
fn fit_to_open_files(settings: ConnectionSettings) -> ConnectionSettings {
    use rustix::process::{Resource, getrlimit, setrlimit};

    let mut files = getrlimit(Resource::Nofile);
    if files.current < files.maximum {
        let raised = rustix::process::Rlimit {
            current: files.maximum,
            ..files
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            files = raised;
        }
    }
    let Some(open_files) = files.current else {
        return settings;
    };
    let room = open_files.saturating_sub(FILES_BESIDE_CONNECTIONS).max(1);
    if settings.max_connections as u64 <= room {
        return settings;
    }
    eprintln!(
        "agentbox: serving at most {room} connections at once, not {}: the process may open {open_files} files (raise `ulimit -n` for more)",
        settings.max_connections
    );
    ConnectionSettings {
        max_connections: usize::try_from(room).unwrap_or(usize::MAX),
        ..settings
    }
}

/// How often the server looks at the store's record of active plugin
/// versions, to follow activations made through other servers.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// The fewest characters of an admin token: it opens every session.
const MIN_ADMIN_TOKEN: usize = 32;

pub(super) async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let args = args.with_config()?;
    let token_length = args
        .admin_token
        .as_deref()
        .map(|token| token.trim().chars().count());
    if let Some(length) = token_length.filter(|length| *length < MIN_ADMIN_TOKEN) {
        bail!(
            "the admin token is shorter than {MIN_ADMIN_TOKEN} characters (it has {length}); give a random one (`openssl rand -hex 24` makes one) in AGENTBOX_ADMIN_TOKEN, or none to turn the admin API off"
        );
    }
    args.connections.check().map_err(|reason| {
        anyhow::anyhow!("the config file's [server] table is invalid: {reason}")
    })?;
    args.bounds.check().map_err(|reason| {
        anyhow::anyhow!("the config file's [bounds] table is invalid: {reason}")
    })?;
    let connections = fit_to_open_files(args.connections);
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    // The keys file is followed even when it does not exist yet: an open
    // server requires keys from the moment `agentbox keys create` writes it.
    let keys_file = args
        .keys
        .clone()
        .unwrap_or_else(|| default_keys(&args.host.data_dir()));
    let keys = (args.keys.is_some() || keys_file.exists()).then(|| keys_file.clone());
    let callers = Arc::new(callers(keys.as_deref(), args.jwt.as_deref())?.with_rates(args.rates));
    if callers.is_open() && !listen.ip().is_loopback() && !args.insecure {
        bail!(
            "refusing to serve the session API on {listen} without authentication: create an API key with `agentbox keys create`, set up [jwt] in the --config file, or pass --insecure to serve it open"
        );
    }
    let spec = args
        .store
        .clone()
        .unwrap_or_else(|| args.host.default_store());
    let host = args.host.host(&spec, false)?;
    let plugin_dir = args
        .plugin_dir
        .clone()
        .unwrap_or_else(|| args.host.data_dir().join("plugins"));
    std::fs::create_dir_all(&plugin_dir)
        .with_context(|| format!("cannot create the plugin folder {}", plugin_dir.display()))?;
    let mut folder = Folder::new(plugin_dir.clone());
    let watched = folder.components()?;
    let mut in_dir: Vec<&PathBuf> = watched.keys().collect();
    in_dir.sort();
    let given = args
        .plugins
        .iter()
        .map(|path| load(path, |bytes| host.deploy_plugin(bytes)));
    let found = in_dir
        .into_iter()
        .map(|path| load_from_folder(path, |bytes| host.deploy_plugin(bytes)));
    for plugin in given.chain(found) {
        let plugin = plugin?;
        eprintln!(
            "agentbox: plugin {} {} (sha256:{:.12}, {})",
            plugin.name(),
            plugin.manifest.version,
            plugin.digest_hex(),
            compilation_text(plugin.compilation)
        );
    }
    let followed = host
        .follow_store()
        .await
        .with_context(|| format!("cannot read the active plugin versions from {spec}"))?;
    for plugin in &followed.activated {
        eprintln!(
            "agentbox: plugin {} {} (sha256:{:.12}) is active, as the store records: it was activated earlier or by another server",
            plugin.name(),
            plugin.manifest.version,
            plugin.digest_hex(),
        );
    }
    for err in &followed.failed {
        eprintln!(
            "agentbox: {err}; the version loaded from the command line or plugin folder serves instead"
        );
    }
    let _reaper = host.spawn_reaper(REAP_EVERY);
    let _follower = host.spawn_follower(FOLLOW_EVERY);
    crate::announce_mcp_servers(&host);
    let watcher = args
        .watch
        .then(|| tokio::spawn(watch(host.clone(), folder, watched, args.settle)));
    let _keys_follower = tokio::spawn(follow_keys(callers.clone(), keys_file.clone()));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    if args.admin_token.is_none() {
        eprintln!(
            "agentbox: no admin token (AGENTBOX_ADMIN_TOKEN, or admin_token in the --config file): the admin API refuses every request"
        );
    }
    let address = listener.local_addr()?;
    eprintln!("agentbox: listening on http://{address} (store {spec})");
    match (&keys, &args.jwt) {
        (None, None) => eprintln!(
            "agentbox: the session API is open: any caller that reaches {address} reaches every session; create an API key with `agentbox keys create` to require one from then on (this server reads {})",
            keys_file.display()
        ),
        (Some(path), _) => eprintln!(
            "agentbox: callers authenticate with an API key from {}{}",
            path.display(),
            if args.jwt.is_some() { " or a JWT" } else { "" }
        ),
        (None, Some(_)) => eprintln!("agentbox: callers authenticate with a JWT"),
    }
    if let Some(plugin) = host.plugins().first() {
        eprintln!(
            "agentbox: try: curl http://{address}/v1/sessions -H 'content-type: application/json' -d '{{\"plugin\": \"{}\"}}'",
            plugin.name()
        );
        eprintln!(
            "agentbox:      curl http://{address}/v1/sessions/SESSION/messages -H 'content-type: application/json' -d '{{\"text\": \"hello\"}}'"
        );
    } else {
        eprintln!(
            "agentbox: no plugins loaded: add --plugin PLUGIN, or put .wasm files in {}{}",
            plugin_dir.display(),
            if args.watch { "" } else { " and restart" }
        );
    }
    agentbox_host::server::serve(
        listener,
        agentbox_host::server::router(
            host,
            Access {
                admin_token: args.admin_token,
                callers,
                websocket: args.websocket,
                bounds: args.bounds,
                connections,
                any_host: !listen.ip().is_loopback(),
            },
        ),
        connections,
        shutdown(),
    )
    .await
    .context("the server failed")?;
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    eprintln!("agentbox: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("cannot listen for SIGTERM");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("agentbox: shutting down: finishing running turns");
}
