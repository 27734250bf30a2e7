//! The kv-probe plugin: every KV operation driven through a guest, on every
//! store: TTLs on the host clock, scoping, hostile keys, quotas, and
//! atomic counters under concurrency.

use std::sync::Arc;
use std::time::Duration;

use agentbox_host::policy::Grants;
use agentbox_host::store::{MemoryStore, Namespace, Store};
use agentbox_host::{Clock, Host, Limits, SessionStart};
use serde_json::{Value, json};

use crate::harness::{every_store, host_with_grants, load, start_for};
use crate::plugins::{KV_PROBE, PROFILE};

fn probe_host(store: Arc<dyn Store>, limits: Limits, clock: Clock, grants: Grants) -> Host {
    let host = host_with_grants(limits, store, clock, grants);
    load(&host, KV_PROBE);
    host
}

async fn session(host: &Host, user: Option<&str>) -> String {
    start_for(host, "kv-probe", user).await.session
}

/// Calls a tool that must succeed and returns its result.
/// The probe on `store` under default limits and a test clock, and a
/// session of it.
async fn on_a_test_clock(store: &Arc<dyn Store>) -> (Host, Clock, String) {
    let clock = Clock::manual(1_000_000);
    let host = probe_host(
        store.clone(),
        Limits::default(),
        clock.clone(),
        Grants::default(),
    );
    let id = session(&host, None).await;
    (host, clock, id)
}

async fn call(host: &Host, session: &str, tool: &str, arguments: Value) -> Value {
    host.call_tool(session, tool, arguments.clone(), None)
        .await
        .unwrap_or_else(|err| panic!("{tool} {arguments} failed: {err}"))
        .result
}

/// Calls a tool that must fail and returns the error's text.
async fn refused(host: &Host, session: &str, tool: &str, arguments: Value) -> String {
    match host.call_tool(session, tool, arguments.clone(), None).await {
        Ok(report) => panic!("{tool} {arguments} returned {}", report.result),
        Err(err) => err.to_string(),
    }
}

fn global(plugin: &str) -> Namespace {
    Namespace {
        owner: plugin.into(),
        scope: "global".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_with_a_ttl_vanishes_when_the_host_clock_passes_it_on_every_store() {
    for store in every_store() {
        let (host, clock, id) = on_a_test_clock(&store.store).await;
        let key = json!({ "bucket": "global", "key": "weather:paris" });
        call(&host, &id, "put", json!({ "bucket": "global", "key": "weather:paris", "value": "sunny", "ttl_ms": 60_000 })).await;
        call(
            &host,
            &id,
            "put",
            json!({ "bucket": "global", "key": "weather:rome", "value": "warm" }),
        )
        .await;

        clock.advance(Duration::from_millis(59_999));
        assert_eq!(
            call(&host, &id, "get", key.clone()).await,
            json!("sunny"),
            "{}",
            store.name
        );
        clock.advance(Duration::from_millis(1));
        assert_eq!(
            call(&host, &id, "get", key.clone()).await,
            Value::Null,
            "{}",
            store.name
        );
        assert_eq!(
            call(&host, &id, "exists", key.clone()).await,
            json!(false),
            "{}",
            store.name
        );
        assert_eq!(
            call(
                &host,
                &id,
                "keys",
                json!({ "bucket": "global", "prefix": "weather:" })
            )
            .await,
            json!(["weather:rome"]),
            "{}",
            store.name
        );

        // Invisible at once; reclaimed by the reaper's sweep.
        assert_eq!(
            store.store.kv_usage("kv-probe").unwrap().keys,
            2,
            "{}",
            store.name
        );
        let reaped = host.reap(100).await.unwrap();
        assert_eq!(reaped.swept.kv_entries, 1, "{}", store.name);
        assert_eq!(
            store.store.kv_usage("kv-probe").unwrap().keys,
            1,
            "{}",
            store.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_without_a_ttl_keeps_the_keys_expiry_on_every_store() {
    for store in every_store() {
        let (host, clock, id) = on_a_test_clock(&store.store).await;
        let key = |key: &str| json!({ "bucket": "global", "key": key });
        let put = |key: &str, value: &str, ttl_ms: Option<u64>| json!({ "bucket": "global", "key": key, "value": value, "ttl_ms": ttl_ms });
        for name in ["set", "swapped", "updated"] {
            call(&host, &id, "put", put(name, "\"a\"", Some(60_000))).await;
        }
        clock.advance(Duration::from_millis(30_000));
        call(&host, &id, "put", put("set", "\"b\"", None)).await;
        let swap =
            json!({ "bucket": "global", "key": "swapped", "expected": "\"a\"", "value": "\"b\"" });
        assert_eq!(
            call(&host, &id, "compare_and_swap", swap).await,
            json!(true)
        );
        let append = json!({ "bucket": "global", "key": "updated", "suffix": "b" });
        assert_eq!(call(&host, &id, "append", append).await, json!("ab"));

        clock.advance(Duration::from_millis(29_999));
        for (name, value) in [
            ("set", "\"b\""),
            ("swapped", "\"b\""),
            ("updated", "\"ab\""),
        ] {
            assert_eq!(
                call(&host, &id, "get", key(name)).await,
                json!(value),
                "{} {name}",
                store.name
            );
        }
        clock.advance(Duration::from_millis(1));
        for name in ["set", "swapped", "updated"] {
            assert_eq!(
                call(&host, &id, "get", key(name)).await,
                Value::Null,
                "{}: a write without a TTL made `{name}` permanent",
                store.name
            );
        }
        // A key written again after it expired, without a TTL, is permanent.
        call(&host, &id, "put", put("set", "\"c\"", None)).await;
        clock.advance(Duration::from_millis(1_000_000_000));
        assert_eq!(
            call(&host, &id, "get", key("set")).await,
            json!("\"c\""),
            "{}",
            store.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_buckets_are_per_user_and_global_buckets_per_plugin() {
    for store in every_store() {
        let host = probe_host(
            store.store.clone(),
            Limits::default(),
            Clock::system(),
            Grants::default(),
        );
        load(&host, PROFILE);
        let ada = session(&host, Some("ada")).await;
        let alan = session(&host, Some("alan")).await;
        call(
            &host,
            &ada,
            "put",
            json!({ "bucket": "user", "key": "name", "value": "Ada" }),
        )
        .await;
        call(
            &host,
            &alan,
            "put",
            json!({ "bucket": "user", "key": "name", "value": "Alan" }),
        )
        .await;
        let name = json!({ "bucket": "user", "key": "name" });
        assert_eq!(
            call(&host, &ada, "get", name.clone()).await,
            json!("Ada"),
            "{}",
            store.name
        );
        assert_eq!(
            call(&host, &alan, "get", name.clone()).await,
            json!("Alan"),
            "{}",
            store.name
        );
        call(&host, &ada, "delete", name.clone()).await;
        assert_eq!(
            call(&host, &alan, "get", name.clone()).await,
            json!("Alan"),
            "{}",
            store.name
        );

        // The profile plugin's global counter is its own.
        call(
            &host,
            &ada,
            "put",
            json!({ "bucket": "global", "key": "lookups", "value": "999" }),
        )
        .await;
        let profile = host
            .start_session(
                SessionStart {
                    plugin: "profile".into(),
                    ..Default::default()
                },
                None,
            )
            .await
            .unwrap()
            .session;
        host.call_tool(&profile, "forecast", json!({ "city": "Paris" }), None)
            .await
            .unwrap();
        let lookups = |plugin| {
            store
                .store
                .kv_get(&global(plugin), "lookups", u64::MAX)
                .unwrap()
        };
        assert_eq!(
            lookups("profile").as_deref(),
            Some(&b"1"[..]),
            "{}",
            store.name
        );
        assert_eq!(
            lookups("kv-probe").as_deref(),
            Some(&b"999"[..]),
            "{}",
            store.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_the_policy_does_not_grant_are_denied() {
    let store: Arc<dyn Store> = Arc::new(agentbox_host::store::MemoryStore::default());
    let host = probe_host(
        store.clone(),
        Limits::default(),
        Clock::system(),
        Grants::default(),
    );
    let anonymous = session(&host, None).await;
    let err = refused(
        &host,
        &anonymous,
        "get",
        json!({ "bucket": "user", "key": "name" }),
    )
    .await;
    assert!(
        err.contains(&format!("denied: bucket `user` needs a session with a user id, and session `{anonymous}` was started without one")),
        "{err}"
    );
    let err = refused(
        &host,
        &anonymous,
        "put",
        json!({ "bucket": "crm", "key": "k", "value": "v" }),
    )
    .await;
    assert!(
        err.contains("denied: plugin `kv-probe` is not granted bucket `crm`"),
        "{err}"
    );
    let err = refused(
        &host,
        &anonymous,
        "get",
        json!({ "bucket": "../global", "key": "k" }),
    )
    .await;
    assert!(err.contains("invalid: bucket name"), "{err}");

    let mut grants = Grants::default();
    grants.grant("kv-probe", "crm").unwrap();
    let granted = probe_host(store.clone(), Limits::default(), Clock::system(), grants);
    let id = session(&granted, None).await;
    call(
        &granted,
        &id,
        "put",
        json!({ "bucket": "crm", "key": "k", "value": "shared" }),
    )
    .await;
    let crm = Namespace {
        owner: "@crm".into(),
        scope: "shared".into(),
    };
    assert_eq!(
        store.kv_get(&crm, "k", 0).unwrap().as_deref(),
        Some(&b"shared"[..])
    );
    assert_eq!(store.kv_get(&global("kv-probe"), "k", 0).unwrap(), None);
    assert!(Grants::default().grant("kv-probe", "global").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_are_refused_or_stay_in_their_namespace() {
    let store: Arc<dyn Store> = Arc::new(agentbox_host::store::MemoryStore::default());
    let host = probe_host(
        store.clone(),
        Limits::default(),
        Clock::system(),
        Grants::default(),
    );
    let ada = session(&host, Some("ada")).await;
    let long = "k".repeat(257);
    for (key, reason) in [
        ("", "key is empty"),
        ("two words", "contains ' '"),
        ("line\nbreak", "contains '\\n'"),
        ("nul\u{0}", "contains '\\0'"),
        ("caf\u{e9}", "contains 'é'"),
        (long.as_str(), "of 257 bytes is longer than 256"),
    ] {
        let err = refused(
            &host,
            &ada,
            "put",
            json!({ "bucket": "user", "key": key, "value": "x" }),
        )
        .await;
        assert!(
            err.contains("invalid: key") && err.contains(reason),
            "{key:?}: {err}"
        );
    }
    assert_eq!(store.kv_usage("kv-probe").unwrap().keys, 0);

    // Path-like keys are plain keys inside the caller's own namespace.
    for key in [
        "../global/x",
        "/user/alan/name",
        "..",
        "{kv/shop}:e:global/x",
    ] {
        call(
            &host,
            &ada,
            "put",
            json!({ "bucket": "user", "key": key, "value": "mine" }),
        )
        .await;
    }
    let alan = session(&host, Some("alan")).await;
    assert_eq!(
        call(
            &host,
            &alan,
            "keys",
            json!({ "bucket": "user", "prefix": "" })
        )
        .await,
        json!([])
    );
    assert_eq!(
        call(
            &host,
            &ada,
            "keys",
            json!({ "bucket": "global", "prefix": "" })
        )
        .await,
        json!([])
    );
    assert_eq!(
        call(
            &host,
            &ada,
            "keys",
            json!({ "bucket": "user", "prefix": "" })
        )
        .await,
        json!([
            "..",
            "../global/x",
            "/user/alan/name",
            "{kv/shop}:e:global/x"
        ])
    );
    assert_eq!(store.kv_usage("shop").unwrap().keys, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_sessions_incrementing_one_counter_end_exact_on_every_store() {
    for store in every_store() {
        let limits = Limits {
            deadline: Duration::from_secs(60),
            ..Limits::default()
        };
        let host = probe_host(
            store.store.clone(),
            limits,
            Clock::system(),
            Grants::default(),
        );
        let mut sessions = Vec::new();
        for _ in 0..8 {
            sessions.push(session(&host, None).await);
        }
        let bumps: Vec<_> = sessions
            .into_iter()
            .map(|id| {
                let host = host.clone();
                tokio::spawn(async move {
                    call(
                        &host,
                        &id,
                        "bump",
                        json!({ "bucket": "global", "key": "hits", "times": 1000 }),
                    )
                    .await
                })
            })
            .collect();
        let mut last = Vec::new();
        for bump in bumps {
            last.push(bump.await.unwrap().as_i64().unwrap());
        }
        let total = store
            .store
            .kv_get(&global("kv-probe"), "hits", u64::MAX)
            .unwrap();
        assert_eq!(total.as_deref(), Some(&b"8000"[..]), "{}", store.name);
        assert_eq!(last.iter().max(), Some(&8000), "{}", store.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compare_and_swap_with_a_stale_value_changes_nothing() {
    for store in every_store() {
        let host = probe_host(
            store.store.clone(),
            Limits::default(),
            Clock::system(),
            Grants::default(),
        );
        let id = session(&host, None).await;
        let cas = |expected: Value, value: &str| json!({ "bucket": "global", "key": "owner", "expected": expected, "value": value });
        assert_eq!(
            call(&host, &id, "compare_and_swap", cas(Value::Null, "ada")).await,
            json!(true)
        );
        assert_eq!(
            call(&host, &id, "compare_and_swap", cas(Value::Null, "alan")).await,
            json!(false)
        );
        assert_eq!(
            call(&host, &id, "compare_and_swap", cas(json!("grace"), "alan")).await,
            json!(false)
        );
        let owner = json!({ "bucket": "global", "key": "owner" });
        assert_eq!(
            call(&host, &id, "get", owner.clone()).await,
            json!("ada"),
            "{}",
            store.name
        );
        assert_eq!(
            call(&host, &id, "compare_and_swap", cas(json!("ada"), "alan")).await,
            json!(true)
        );
        assert_eq!(
            call(&host, &id, "get", owner).await,
            json!("alan"),
            "{}",
            store.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_and_value_limits_are_named_and_change_nothing() {
    for store in every_store() {
        let limits = Limits {
            kv_keys: 3,
            value_bytes: 100,
            ..Limits::default()
        };
        let host = probe_host(
            store.store.clone(),
            limits,
            Clock::system(),
            Grants::default(),
        );
        let id = session(&host, None).await;
        for key in ["a", "b", "c"] {
            call(
                &host,
                &id,
                "put",
                json!({ "bucket": "global", "key": key, "value": "v" }),
            )
            .await;
        }
        let err = refused(
            &host,
            &id,
            "put",
            json!({ "bucket": "global", "key": "d", "value": "v" }),
        )
        .await;
        assert!(
            err.contains("quota-exceeded: bucket `global`: the write would make `kv-probe` hold 4 keys, over its quota of 3"),
            "{}: {err}",
            store.name
        );
        let err = refused(
            &host,
            &id,
            "increment",
            json!({ "bucket": "global", "key": "d", "delta": 1 }),
        )
        .await;
        assert!(err.contains("quota-exceeded"), "{}: {err}", store.name);
        let err = refused(
            &host,
            &id,
            "put",
            json!({ "bucket": "global", "key": "a", "value": "x".repeat(101) }),
        )
        .await;
        assert!(
            err.contains("invalid: value is 101 bytes, over the limit of 100 bytes"),
            "{}: {err}",
            store.name
        );
        let err = refused(
            &host,
            &id,
            "put",
            json!({ "bucket": "global", "key": "a", "value": "v", "ttl_ms": 0 }),
        )
        .await;
        assert!(
            err.contains("invalid: ttl-ms is 0"),
            "{}: {err}",
            store.name
        );
        assert_eq!(
            call(
                &host,
                &id,
                "keys",
                json!({ "bucket": "global", "prefix": "" })
            )
            .await,
            json!(["a", "b", "c"]),
            "{}",
            store.name
        );
        assert_eq!(
            call(&host, &id, "get", json!({ "bucket": "global", "key": "a" })).await,
            json!("v")
        );
        let err = refused(
            &host,
            &id,
            "increment",
            json!({ "bucket": "global", "key": "a", "delta": 1 }),
        )
        .await;
        assert!(
            err.contains("invalid: bucket `global`: the value is not an integer"),
            "{}: {err}",
            store.name
        );

        // KV writes are not part of the turn: a turn that fails midway keeps
        // the writes it made before the failure.
        call(
            &host,
            &id,
            "delete",
            json!({ "bucket": "global", "key": "c" }),
        )
        .await;
        let fill = json!({ "bucket": "global", "prefix": "f", "count": 5, "value": "v" });
        let err = refused(&host, &id, "fill", fill).await;
        assert!(err.contains("quota-exceeded"), "{}: {err}", store.name);
        let keys = json!({ "bucket": "global", "prefix": "" });
        assert_eq!(
            call(&host, &id, "keys", keys).await,
            json!(["a", "b", "f0"]),
            "{}",
            store.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_holds_a_bounded_number_of_open_buckets() {
    let host = probe_host(
        Arc::new(agentbox_host::store::MemoryStore::default()),
        Limits::default(),
        Clock::system(),
        Grants::default(),
    );
    let id = session(&host, None).await;
    let limit = agentbox_host::capability::kv::MAX_OPEN_BUCKETS as u32;
    assert_eq!(
        call(
            &host,
            &id,
            "open_many",
            json!({ "bucket": "global", "times": limit })
        )
        .await,
        json!(limit)
    );
    let err = refused(
        &host,
        &id,
        "open_many",
        json!({ "bucket": "global", "times": limit + 1 }),
    )
    .await;
    assert!(
        err.contains(&format!(
            "quota-exceeded: {limit} buckets are open in this turn already"
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_listing_pages_through_more_keys_than_a_page() {
    let host = probe_host(
        Arc::new(agentbox_host::store::MemoryStore::default()),
        Limits::default(),
        Clock::system(),
        Grants::default(),
    );
    let id = session(&host, None).await;
    let count = agentbox_host::capability::kv::PAGE_SIZE * 2 + 5;
    for n in 0..count {
        call(
            &host,
            &id,
            "put",
            json!({ "bucket": "global", "key": format!("item:{n:04}"), "value": "v" }),
        )
        .await;
    }
    let keys = call(
        &host,
        &id,
        "keys",
        json!({ "bucket": "global", "prefix": "item:" }),
    )
    .await;
    let keys: Vec<String> = serde_json::from_value(keys).unwrap();
    let expected: Vec<String> = (0..count).map(|n| format!("item:{n:04}")).collect();
    assert_eq!(keys, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turns_event_names_the_keys_it_wrote_never_their_values() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let (host, _clock, id) = on_a_test_clock(&store).await;
    let last_event = || async {
        let events = host.timeline().events(&id, 0, 1_000).await.unwrap().events;
        serde_json::to_value(events.last().unwrap()).unwrap()
    };

    let put = json!({ "bucket": "global", "key": "secret", "value": "s3cr3t-value" });
    call(&host, &id, "put", put).await;
    // Bucket and key, no value (the tool's arguments are the caller's input).
    assert_eq!(
        last_event().await["kv_writes"],
        json!({ "keys": [{ "bucket": "global", "key": "secret" }], "more": 0 })
    );

    // A swap that does not store writes nothing; a read writes nothing.
    let cas = json!({ "bucket": "global", "key": "secret", "expected": "other", "value": "x" });
    assert_eq!(
        call(&host, &id, "compare_and_swap", cas).await,
        json!(false)
    );
    assert_eq!(last_event().await.get("kv_writes"), None);

    // Past the keys kept, writes are counted.
    let fill = json!({ "bucket": "global", "prefix": "k", "count": 130, "value": "v" });
    call(&host, &id, "fill", fill).await;
    let writes = &last_event().await["kv_writes"];
    assert_eq!(writes["keys"].as_array().unwrap().len(), 100);
    assert_eq!(
        (writes["keys"][99]["key"].clone(), writes["more"].clone()),
        (json!("k99"), json!(30))
    );
}
