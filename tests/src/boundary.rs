//! Property tests of what crosses the host boundary, from guests and from
//! callers: state keys and JSON values of any shape and depth, KV keys
//! built to escape their namespace, tool arguments against a schema, and
//! arbitrary HTTP request bodies. The host never panics, never answers a
//! caller's mistake with a 5xx, and what it refuses changes nothing.
//!
//! `PROPTEST_CASES` sets the cases per property (256 by default); CI runs
//! the default, longer runs are for by hand.

use std::sync::Arc;

use agentbox_host::store::{MemoryStore, Namespace, Store};
use agentbox_host::{Host, Limits, SessionStart};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::harness::{host_with, load};
use crate::plugins::{KV_PROBE, MISBEHAVE};

/// A JSON value of any shape: scalars, strings of any characters, and
/// arrays and objects nested up to 48 levels, past the host's limit of 32.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    let nested = leaf.clone().prop_recursive(8, 64, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    });
    let deep = (0..48usize, leaf.clone())
        .prop_map(|(depth, leaf)| (0..depth).fold(leaf, |inner, _| json!([inner])));
    prop_oneof![leaf, nested, deep]
}

/// A key as a hostile guest would build one: any text, path tricks,
/// separators, control characters, or too long.
fn hostile_key() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,20}",
        "[ -~]{0,300}",
        "(\\.\\./|/|\\\\|:|%2e|\\{|\\}|\\*)+[a-z]{0,4}",
        "[a-z]{0,4}[\\x00-\\x1f\\x7f][a-z]{0,4}",
    ]
}

/// A runtime, a host with the plugin built at `path` loaded, and a session
/// of it named `plugin`.
fn session(
    path: &str,
    plugin: &str,
    store: Arc<dyn Store>,
) -> (tokio::runtime::Runtime, Host, String) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let host = host_with(Limits::default(), store);
    load(&host, path);
    let start = SessionStart {
        plugin: plugin.into(),
        ..Default::default()
    };
    let id = runtime
        .block_on(host.start_session(start, None))
        .unwrap()
        .session;
    (runtime, host, id)
}

#[test]
fn any_state_key_and_value_is_stored_exactly_or_refused_changing_nothing() {
    let (runtime, host, id) = session(MISBEHAVE, "misbehave", Arc::new(MemoryStore::default()));
    proptest!(|(key in "[^ ]{0,140}", value in json_value())| {
        let before = runtime.block_on(host.session(&id)).unwrap().unwrap();
        let text = format!("set {key} {value}");
        match runtime.block_on(host.send_message(&id, &text, None)) {
            Ok(report) if report.said == [format!("set {key}")] => {
                prop_assert_eq!(&report.state[&key], &value);
            }
            Ok(report) => {
                prop_assert!(report.said[0].starts_with("refused: "), "{:?}", report.said);
                prop_assert_eq!(&report.state, &before.state);
            }
            // `mood` has a state schema: a value it refuses fails the turn.
            Err(err) => {
                prop_assert_eq!(err.cause.kind(), "invalid-state", "{}", err);
                prop_assert_eq!(&key, "mood");
                let after = runtime.block_on(host.session(&id)).unwrap().unwrap();
                prop_assert_eq!((after.turn, &after.state), (before.turn, &before.state));
            }
        }
    });
}

#[test]
fn any_kv_key_is_stored_in_its_namespace_or_refused_as_invalid() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let (runtime, host, id) = session(KV_PROBE, "kv-probe", store.clone());
    let global = Namespace {
        owner: "kv-probe".into(),
        scope: "global".into(),
    };
    proptest!(|(key in hostile_key())| {
        let put = json!({ "bucket": "global", "key": key, "value": "v" });
        match runtime.block_on(host.call_tool(&id, "put", put, None)) {
            Ok(_) => {
                // Stored exactly under that key, in the plugin's own bucket.
                let stored = store.kv_get(&global, &key, host.clock().now_ms()).unwrap();
                prop_assert_eq!(stored.as_deref(), Some(&b"v"[..]));
                store.kv_delete(&global, &key).unwrap();
            }
            Err(err) => {
                prop_assert!(err.to_string().contains("invalid: key"), "{}", err);
            }
        }
        prop_assert_eq!(store.kv_usage("kv-probe").unwrap().keys, 0);
    });
}

#[test]
fn any_tool_arguments_are_checked_before_the_guest_is_entered() {
    let (runtime, host, id) = session(MISBEHAVE, "misbehave", Arc::new(MemoryStore::default()));
    let arguments = prop_oneof![
        json_value(),
        (json_value(), json_value())
            .prop_map(|(count, label)| json!({ "count": count, "label": label })),
        (0..12u64, ".{0,8}").prop_map(|(count, label)| json!({ "count": count, "label": label })),
    ];
    proptest!(|(arguments in arguments)| {
        let before = runtime.block_on(host.session(&id)).unwrap().unwrap();
        let valid = arguments.as_object().is_some_and(|fields| {
            fields.len() == 2
                && fields.get("label").is_some_and(Value::is_string)
                && fields
                    .get("count")
                    .and_then(Value::as_u64)
                    .is_some_and(|count| (1..=10).contains(&count))
        });
        match runtime.block_on(host.call_tool(&id, "record", arguments.clone(), None)) {
            Ok(report) => {
                prop_assert!(valid, "accepted {}", arguments);
                let entries = before.state.get("entries").and_then(Value::as_u64).unwrap_or(0);
                prop_assert_eq!(report.result, json!(entries + arguments["count"].as_u64().unwrap()));
            }
            Err(err) => {
                prop_assert!(!valid, "refused {}: {}", arguments, err);
                prop_assert_eq!(err.cause.kind(), "invalid-arguments");
                let after = runtime.block_on(host.session(&id)).unwrap().unwrap();
                prop_assert_eq!(after.turn, before.turn, "the guest was not entered");
            }
        }
    });
}

#[test]
fn any_request_body_gets_an_answer_below_500() {
    let (runtime, host, id) = session(MISBEHAVE, "misbehave", Arc::new(MemoryStore::default()));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = agentbox_host::server::router(
        host.clone(),
        agentbox_host::server::Access {
            admin_token: Some("token".into()),
            ..Default::default()
        },
    );
    runtime.spawn(agentbox_host::server::serve(
        listener,
        router,
        Default::default(),
        std::future::pending(),
    ));
    // One pooling client for every request: a request refused before its
    // body is read is answered `Connection: close`, so the client never
    // picks the connection the server closes for the next one.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let paths = [
        "/v1/sessions".to_owned(),
        format!("/v1/sessions/{id}/messages"),
        format!("/v1/sessions/{id}/tools/record"),
        "/v1/admin/plugins/misbehave/activate".to_owned(),
    ];
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|value| value.to_string().into_bytes()),
        json_value().prop_map(|value| {
            json!({ "plugin": "misbehave", "variables": value, "text": value })
                .to_string()
                .into_bytes()
        }),
    ];
    proptest!(|(path in 0..paths.len(), body in body)| {
        let sent_a_body = !body.is_empty();
        let request = ureq::http::Request::builder()
            .method("POST")
            .uri(format!("{base}{}", paths[path]))
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        let mut response = agent.run(request).unwrap();
        let status = response.status().as_u16();
        if status == 401 && sent_a_body {
            prop_assert_eq!(
                response.headers().get("connection").map(|value| value.as_bytes()),
                Some(&b"close"[..]),
                "a body refused unread closes the connection"
            );
        }
        let text = response.body_mut().read_to_string().unwrap();
        prop_assert!(status < 500, "{}: {} {}", paths[path], status, text);
        if status >= 400 {
            let error: Value = serde_json::from_str(&text).unwrap();
            prop_assert!(error["kind"].is_string(), "{}", text);
        }
    });
}
