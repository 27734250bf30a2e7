//! What the tests share: hosts with a shared artifact cache, and shortcuts.

use std::sync::Arc;

use agentbox_host::store::{MemoryStore, Store};
use agentbox_host::{Clock, Host, Limits, PluginVersion, SessionStart, TurnReport};
use serde_json::{Map, Value};

use crate::plugin_bytes;

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
    let cache = std::env::temp_dir().join("agentbox-test-artifacts");
    std::fs::create_dir_all(&cache).expect("cannot create the test artifact cache");
    let cache = cap_std::fs::Dir::open_ambient_dir(&cache, cap_std::ambient_authority())
        .expect("cannot open the test artifact cache");
    Host::builder()
        .limits(limits)
        .store(store)
        .clock(clock)
        .artifact_cache(cache)
        .build()
        .expect("cannot build a host")
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

/// A JSON object as a state map.
pub fn state(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("{other} is not an object"),
    }
}
