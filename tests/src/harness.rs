//! What the tests share: hosts with a shared artifact cache, and shortcuts.

use std::sync::Arc;

use agentbox_host::policy::{Grants, PolicyFile};
use agentbox_host::store::{LogEntry, MemoryStore, Store};
use agentbox_host::{Clock, Host, HostBuilder, Limits, PluginVersion, SessionStart, TurnReport};
use serde_json::{Map, Value};

use crate::plugin_bytes;
pub use crate::redis_server::RedisServer;

/// A host with an in-memory store and default limits.
pub fn host() -> Host {
    host_with(Limits::default(), Arc::new(MemoryStore::default()))
}

/// A host with these limits and this store. Compiled plugins are cached in
/// one folder for all tests, so each plugin compiles once per run.
pub fn host_with(limits: Limits, store: Arc<dyn Store>) -> Host {
    host_with_clock(limits, store, Clock::system())
}

/// A host with these limits, this store and this clock.
pub fn host_with_clock(limits: Limits, store: Arc<dyn Store>, clock: Clock) -> Host {
    host_with_grants(limits, store, clock, Grants::default())
}

/// A host with these limits, this store, this clock and these bucket grants.
pub fn host_with_grants(
    limits: Limits,
    store: Arc<dyn Store>,
    clock: Clock,
    grants: Grants,
) -> Host {
    host_builder(clock)
        .limits(limits)
        .store(store)
        .grants(grants)
        .build()
        .expect("cannot build a host")
}

/// A host builder with this clock and the tests' artifact cache (and an
/// in-memory store, default limits and no grants unless set).
pub fn host_builder(clock: Clock) -> HostBuilder {
    let cache = std::env::temp_dir().join("agentbox-test-artifacts");
    std::fs::create_dir_all(&cache).expect("cannot create the test artifact cache");
    let cache = cap_std::fs::Dir::open_ambient_dir(&cache, cap_std::ambient_authority())
        .expect("cannot open the test artifact cache");
    Host::builder().clock(clock).artifact_cache(cache)
}

/// A host under the policy file `text`, with the plugins built at `paths`.
pub fn host_with_policy(text: &str, paths: &[&str]) -> Host {
    let policy = PolicyFile::parse(text)
        .and_then(|file| file.apply(Limits::default()))
        .unwrap_or_else(|err| panic!("the test policy is invalid: {err}"));
    let host = host_builder(Clock::system())
        .policy(policy)
        .build()
        .expect("cannot build a host");
    for path in paths {
        load(&host, path);
    }
    host
}

/// Loads the plugin built at `path`.
pub fn load(host: &Host, path: &str) -> Arc<PluginVersion> {
    host.load_plugin(&plugin_bytes(path))
        .unwrap_or_else(|err| panic!("cannot load {path}: {err}"))
}

/// Starts a session of `plugin` with these initial variables.
pub async fn start(host: &Host, plugin: &str, variables: Value) -> TurnReport {
    let Value::Object(variables) = variables else {
        panic!("initial variables must be an object")
    };
    let start = SessionStart {
        plugin: plugin.to_owned(),
        variables,
        ..Default::default()
    };
    host.start_session(start, None)
        .await
        .unwrap_or_else(|err| panic!("cannot start a session of {plugin}: {err}"))
}

/// Starts a session of `plugin` for `user` (or for no user), without
/// initial variables.
pub async fn start_for(host: &Host, plugin: &str, user: Option<&str>) -> TurnReport {
    let start = SessionStart {
        plugin: plugin.to_owned(),
        user_id: user.map(str::to_owned),
        ..Default::default()
    };
    host.start_session(start, None)
        .await
        .unwrap_or_else(|err| panic!("cannot start a session of {plugin}: {err}"))
}

/// Starts a session of the counter plugin and sends it `ticks` ticks; returns its id.
pub async fn counter_session(host: &Host, ticks: u64) -> String {
    let start = SessionStart {
        plugin: "counter".into(),
        ..Default::default()
    };
    let id = host.start_session(start, None).await.unwrap().session;
    for _ in 0..ticks {
        send(host, &id, "tick").await;
    }
    id
}

/// Sends a message that must commit.
pub async fn send(host: &Host, session: &str, text: &str) -> TurnReport {
    host.send_message(session, text, None)
        .await
        .unwrap_or_else(|err| panic!("turn `{text}` failed: {err}"))
}

/// Everything said in a turn, one line per `say`.
pub fn said(report: &TurnReport) -> String {
    report.said.join("\n")
}

/// The first event of a session a test stores directly: its start.
pub fn start_event() -> LogEntry {
    LogEntry {
        turn: 0,
        snapshot: true,
        rewind: false,
        body: "{}".to_owned(),
    }
}

/// A JSON object as a state map.
pub fn state(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("{other} is not an object"),
    }
}

/// One store a test runs against, with whatever keeps it alive.
pub struct TestStore {
    /// `memory`, `sqlite` or `redis`.
    pub name: &'static str,
    /// The store.
    pub store: Arc<dyn Store>,
    /// How to open the same store again, as a restarted host would.
    pub spec: agentbox_host::store::StoreSpec,
    _keep: Box<dyn std::any::Any>,
}

/// A memory store, a SQLite file, and a Redis server when one is installed
/// (see [`RedisServer::start`]).
pub fn every_store() -> Vec<TestStore> {
    use agentbox_host::store::StoreSpec;

    let dir = tempfile::tempdir().expect("cannot create a folder for SQLite");
    let sqlite = StoreSpec::Sqlite(dir.path().join("agentbox.db"));
    let mut stores = vec![
        TestStore {
            name: "memory",
            store: Arc::new(MemoryStore::default()),
            spec: StoreSpec::Memory,
            _keep: Box::new(()),
        },
        TestStore {
            name: "sqlite",
            store: sqlite.open().expect("cannot open SQLite"),
            spec: sqlite,
            _keep: Box::new(dir),
        },
    ];
    if let Some(server) = RedisServer::start() {
        let spec = StoreSpec::Redis(server.url().to_owned());
        stores.push(TestStore {
            name: "redis",
            store: spec.open().expect("cannot open Redis"),
            spec,
            _keep: Box::new(server),
        });
    }
    stores
}

/// The durable stores of [`every_store`]: those a restarted host finds again.
pub fn durable_stores() -> Vec<TestStore> {
    every_store()
        .into_iter()
        .filter(|store| store.name != "memory")
        .collect()
}

/// An HTTP client for a server a test started: it answers every status
/// as a response, and waits 20 s at most.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(20)))
        .build()
        .into()
}
