//! Two host processes sharing one store: the session lease keeps their turns
//! of one session one at a time, each sees what the other committed, and an
//! activation on one reaches the other through the store's record of active
//! versions (which also outlives a restart).

use std::sync::Arc;

use agentbox_host::store::{PluginStore as _, RedisStore, SqliteStore, Store};
use agentbox_host::{Host, Limits, SessionStart};
use serde_json::json;

use crate::harness::{RedisServer, counter_session, host_with, load, said, send};
use crate::plugin_bytes;
use crate::plugins::{COUNTER, COUNTER_V2};

fn redis_host(server: &RedisServer) -> Host {
    let store: Arc<dyn Store> = Arc::new(RedisStore::open(server.url()).unwrap());
    host_with(Limits::default(), store)
}

fn active_version(host: &Host) -> String {
    host.plugin("counter").unwrap().manifest.version.clone()
}

fn counter_host(server: &RedisServer) -> Host {
    let host = redis_host(server);
    load(&host, COUNTER);
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hosts_never_run_turns_of_one_session_at_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (counter_host(&server), counter_host(&server));
    let start = SessionStart {
        plugin: "counter".into(),
        ..Default::default()
    };
    let id = a.start_session(start, None).await.unwrap().session;

    // A turn committed on one host is what the other reads next.
    assert_eq!(send(&a, &id, "tick").await.state["count"], json!(1));
    assert_eq!(send(&b, &id, "tick").await.state["count"], json!(2));

    // Both hosts send to the session at once: every turn waits for the
    // other host's lease instead of failing on a conflict.
    let turns = 100;
    let senders: Vec<_> = [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .map(|host| {
            let id = id.clone();
            tokio::spawn(async move {
                for _ in 0..turns {
                    send(&host, &id, "tick").await;
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    let record = b.session(&id).await.unwrap().unwrap();
    let total = 2 + 4 * turns;
    assert_eq!(
        (record.turn, &record.state["count"]),
        (total, &json!(total))
    );
    assert_eq!(b.history(&id, 10_000).await.unwrap().len() as u64, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_on_one_host_reaches_the_other_through_redis() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (counter_host(&server), redis_host(&server));

    // A plugin loaded on one host reaches a host that never loaded it.
    assert!(b.plugin("counter").is_none());
    let followed = b.follow_store().await.unwrap();
    let names: Vec<_> = followed
        .activated
        .iter()
        .map(|v| v.manifest.version.clone())
        .collect();
    assert_eq!(names, ["0.1.0"]);
    assert!(followed.failed.is_empty() && followed.recorded.is_empty());
    let id = counter_session(&b, 3).await;

    // Version 2 is activated on `a`, which migrates the session at its next turn.
    let v2 = load(&a, COUNTER_V2);
    assert_eq!(said(&send(&a, &id, "tick").await), "total 4");
    // `b` has not looked at the record yet, and still runs version 1; it
    // runs the migrated session on version 2 instead of migrating it back.
    assert_eq!(active_version(&b), "0.1.0");
    assert_eq!(said(&send(&b, &id, "tick").await), "total 5");
    let record = b.session(&id).await.unwrap().unwrap();
    assert_eq!(
        (record.state_version, &record.digest),
        (2, &v2.digest.to_string())
    );

    // Once it looks, `b` runs version 2, and looking again changes nothing.
    let followed = b.follow_store().await.unwrap();
    assert_eq!(followed.activated.len(), 1);
    assert_eq!(active_version(&b), "0.2.0");
    assert!(b.follow_store().await.unwrap().activated.is_empty());
    assert_eq!(
        said(&send(&b, &counter_session(&b, 1).await, "tick").await),
        "total 2"
    );

    // A roll-back on `b` reaches `a` the same way.
    assert_eq!(b.roll_back("counter").unwrap().manifest.version, "0.1.0");
    a.follow_store().await.unwrap();
    assert_eq!(active_version(&a), "0.1.0");
    assert_eq!(counter_stats_swaps(&a), 2, "activated, then followed back");
    assert_eq!(
        counter_stats_swaps(&b),
        3,
        "followed twice, rolled back once"
    );
}

fn counter_stats_swaps(host: &Host) -> u64 {
    host.metrics().stats("counter").swaps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_version_that_does_not_load_leaves_the_active_one_serving() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = counter_host(&server);
    let store = RedisStore::open(server.url()).unwrap();
    let v1 = a.plugin("counter").unwrap().digest.to_string();
    let b = redis_host(&server);
    b.follow_store().await.unwrap();
    let id = counter_session(&b, 1).await;

    let follow_fails = |expected: String| {
        let b = b.clone();
        async move {
            let followed = b.follow_store().await.unwrap();
            let failed: Vec<String> = followed.failed.iter().map(ToString::to_string).collect();
            assert_eq!(failed, [expected]);
            assert!(followed.activated.is_empty());
            assert_eq!(active_version(&b), "0.1.0");
        }
    };
    // A digest nobody published.
    let unknown = "ab".repeat(32);
    store.set_active_plugin("counter", &unknown).unwrap();
    follow_fails(format!(
        "plugin `counter` has no version with digest `{unknown}`, loaded here or published in the store"
    ))
    .await;
    // Bytes that are not a component, published under a digest they do not have.
    let junk = "cd".repeat(32);
    store.publish_plugin(&junk, b"not wasm").unwrap();
    store.set_active_plugin("counter", &junk).unwrap();
    let not_wasm = format!(
        "version `{junk}` of plugin `counter`, published in the store, does not load here: not a WebAssembly file: it does not start with the `\\0asm` magic number"
    );
    follow_fails(not_wasm.clone()).await;
    // The refusal is remembered: the bytes are not loaded again.
    follow_fails(not_wasm).await;
    // Another plugin's version recorded as this plugin's.
    store.set_active_plugin("counter", &v1).unwrap();
    store.set_active_plugin("shop", &v1).unwrap();
    follow_fails(format!(
        "version `{v1}` of plugin `shop`, published in the store, does not load here: it is a version of plugin `counter`"
    ))
    .await;
    assert!(b.plugin("shop").is_none());

    // The session ran on throughout.
    assert_eq!(send(&b, &id, "tick").await.state["count"], json!(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_activated_version_and_a_new_file_deploys() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite_host = || {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("agentbox.db")).unwrap());
        host_with(Limits::default(), store)
    };
    let deploy = |host: &Host, path: &str| host.deploy_plugin(&plugin_bytes(path)).unwrap();
    let id = {
        let host = sqlite_host();
        deploy(&host, COUNTER);
        let id = counter_session(&host, 2).await;
        load(&host, COUNTER_V2);
        assert_eq!(said(&send(&host, &id, "tick").await), "total 3");
        id
    };
    {
        // Restarted with version 1's file, which the store has seen: the
        // version activated before the restart stays active.
        let host = sqlite_host();
        deploy(&host, COUNTER);
        let followed = host.follow_store().await.unwrap();
        assert_eq!(followed.activated.len(), 1);
        assert_eq!(active_version(&host), "0.2.0");
        assert_eq!(said(&send(&host, &id, "tick").await), "total 4");
        // Rolling back goes to the version active here before: version 1.
        assert_eq!(host.roll_back("counter").unwrap().manifest.version, "0.1.0");
    }
    // Restarted with version 2's file after version 1 was activated: seen
    // before, so version 1 stays.
    let host = sqlite_host();
    deploy(&host, COUNTER_V2);
    host.follow_store().await.unwrap();
    assert_eq!(active_version(&host), "0.1.0");

    // A file the store has never seen is a deployment.
    let fresh = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&fresh.path().join("agentbox.db")).unwrap());
    let host = host_with(Limits::default(), store.clone());
    deploy(&host, COUNTER);
    deploy(&host, COUNTER_V2);
    assert_eq!(active_version(&host), "0.2.0");
    let recorded = store.active_plugins().unwrap();
    assert_eq!(
        recorded["counter"],
        host.plugin("counter").unwrap().digest.to_string()
    );
}
