//! The shop plugin: tools with required session fields, a cached tool, and
//! the statistics of every call.

use std::sync::Arc;
use std::time::Duration;

use agentbox_host::plugin::tools::stats;
use agentbox_host::store::{MemoryStore, Store, ToolOutcome};
use agentbox_host::{Cause, Clock, Host, Limits, ToolReport};
use serde_json::{Value, json};

use crate::harness::{host, host_with_clock, load, start, state};
use crate::plugin_bytes;
use crate::plugins::SHOP;

async fn call(host: &Host, session: &str, tool: &str, arguments: Value) -> ToolReport {
    host.call_tool(session, tool, arguments, None)
        .await
        .unwrap_or_else(|err| panic!("{tool} failed: {err}"))
}

fn login() -> Value {
    json!({ "username": "ada", "password": "lovelace" })
}

/// The shop's bytes with a custom section appended: the same behaviour
/// under a new digest, as a new build of the plugin would have.
fn rebuilt_shop() -> Vec<u8> {
    let mut bytes = plugin_bytes(SHOP);
    let name = b"rebuilt";
    bytes.extend_from_slice(&[0, (1 + name.len() + 1) as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.push(1);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cart_tools_are_refused_until_login_and_again_after_logout() {
    let host = host();
    load(&host, SHOP);
    let id = start(&host, "shop", json!({})).await.session;
    let add_book = json!({ "product_id": "book", "quantity": 2 });

    let refused = host
        .call_tool(&id, "add_to_cart", add_book.clone(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused.cause, Cause::Precondition { missing, .. } if missing == &["authenticated"]),
        "{refused}"
    );
    assert!(
        refused
            .to_string()
            .ends_with("tool `add_to_cart` requires session state that is not set: authenticated"),
        "{refused}"
    );

    let wrong = host
        .call_tool(
            &id,
            "login",
            json!({ "username": "ada", "password": "babbage" }),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&wrong.cause, Cause::Guest(message) if message == "wrong username or password"),
        "{wrong}"
    );

    let logged_in = call(&host, &id, "login", login()).await;
    assert_eq!(logged_in.result, json!({ "user_id": "u-1001" }));
    assert_eq!(logged_in.turn.state["authenticated"], json!(true));

    let added = call(&host, &id, "add_to_cart", add_book.clone()).await;
    assert_eq!(
        added.result,
        json!({ "product_id": "book", "quantity": 2, "line_total_cents": 2598 })
    );
    call(
        &host,
        &id,
        "add_to_cart",
        json!({ "product_id": "apple", "quantity": 3 }),
    )
    .await;
    let total = call(&host, &id, "get_cart_total", json!({})).await;
    assert_eq!(total.result["total_cents"], json!(2598 + 150));

    let cart = host.send_message(&id, "show my cart", None).await.unwrap();
    assert_eq!(
        cart.said,
        ["3 × Apple: $1.50", "2 × Book: $25.98", "Total: $27.48"]
    );

    let logged_out = call(&host, &id, "logout", json!({})).await;
    assert_eq!(logged_out.turn.state, state(json!({ "cart": {} })));
    let again = host
        .call_tool(&id, "get_cart_total", json!({}), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&again.cause, Cause::Precondition { missing, .. } if missing == &["authenticated"]),
        "{again}"
    );

    let history = host.history(&id, 100).await.unwrap();
    let tools: Vec<Value> = history
        .iter()
        .filter_map(|m| serde_json::from_str::<Value>(&m.content).ok())
        .collect();
    assert_eq!(
        tools
            .iter()
            .map(|call| call["tool"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [
            "login",
            "add_to_cart",
            "add_to_cart",
            "get_cart_total",
            "logout"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_results_hit_within_the_ttl_and_miss_after_it_or_a_new_version() {
    let clock = Clock::manual(1_000_000);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let host = host_with_clock(Limits::default(), store.clone(), clock.clone());
    let first_version = load(&host, SHOP);
    let id = start(&host, "shop", json!({})).await.session;
    let lamp = json!({ "product_id": "lamp" });
    let expected =
        json!({ "product_id": "lamp", "description": "a desk lamp", "price_cents": 2499 });

    let miss = call(&host, &id, "get_product", lamp.clone()).await;
    assert_eq!((miss.cached, &miss.result), (false, &expected));
    clock.advance(Duration::from_millis(59_999));
    let hit = call(&host, &id, "get_product", lamp.clone()).await;
    assert_eq!((hit.cached, &hit.result), (true, &expected));
    assert_eq!(hit.turn.turn, miss.turn.turn, "a cache hit commits no turn");
    let other_arguments = call(&host, &id, "get_product", json!({ "product_id": "book" })).await;
    assert!(!other_arguments.cached);

    clock.advance(Duration::from_millis(1));
    let expired = call(&host, &id, "get_product", lamp.clone()).await;
    assert!(
        !expired.cached,
        "the entry expired when the clock reached its TTL"
    );
    let cached_again = call(&host, &id, "get_product", lamp.clone()).await;
    assert!(cached_again.cached);

    let second_version = host.load_plugin(&rebuilt_shop()).unwrap();
    assert_ne!(second_version.digest, first_version.digest);
    let new_version = call(&host, &id, "get_product", lamp.clone()).await;
    assert!(
        !new_version.cached,
        "a new version never serves the old version's results"
    );
    assert!(call(&host, &id, "get_product", lamp).await.cached);

    let outcomes: Vec<ToolOutcome> = store
        .executions()
        .unwrap()
        .iter()
        .map(|execution| execution.outcome)
        .collect();
    use ToolOutcome::{CacheHit, Ok};
    assert_eq!(outcomes, [Ok, CacheHit, Ok, Ok, CacheHit, Ok, CacheHit]);
    let stats = stats(&store.executions().unwrap());
    assert_eq!(stats.len(), 1);
    let product = &stats[0];
    assert_eq!(
        (
            product.plugin.as_str(),
            product.tool.as_str(),
            product.calls
        ),
        ("shop", "get_product", 7)
    );
    assert_eq!(product.outcomes, [(Ok, 4), (CacheHit, 3)]);
    assert_eq!(product.success_rate, 1.0);
    assert!(
        (product.cache_hit_rate - 3.0 / 7.0).abs() < 1e-9,
        "{}",
        product.cache_hit_rate
    );
    assert!(product.p50_us <= product.p95_us);
}

/// A tool that reads session or user state may declare a TTL: its cached
/// result is never another session's, whoever asks with the same arguments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_result_is_never_served_to_another_session() {
    let host = host();
    load(&host, SHOP);
    let lamp = json!({ "product_id": "lamp" });
    let ada = start(&host, "shop", json!({})).await.session;
    let grace = start(&host, "shop", json!({})).await.session;
    assert!(!call(&host, &ada, "get_product", lamp.clone()).await.cached);
    assert!(call(&host, &ada, "get_product", lamp.clone()).await.cached);
    assert!(
        !call(&host, &grace, "get_product", lamp.clone())
            .await
            .cached,
        "Ada's cached result reached Grace's session"
    );
    assert!(call(&host, &grace, "get_product", lamp).await.cached);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_every_outcome_per_tool() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let host = host_with_clock(Limits::default(), store.clone(), Clock::system());
    load(&host, SHOP);
    let id = start(&host, "shop", json!({})).await.session;
    let add = json!({ "product_id": "lamp", "quantity": 1 });
    host.call_tool(&id, "add_to_cart", add.clone(), None)
        .await
        .unwrap_err();
    call(&host, &id, "login", login()).await;
    host.call_tool(&id, "add_to_cart", json!({ "product_id": "lamp" }), None)
        .await
        .unwrap_err();
    call(&host, &id, "add_to_cart", add).await;
    host.call_tool(
        &id,
        "login",
        json!({ "username": "x", "password": "y" }),
        None,
    )
    .await
    .unwrap_err();

    let stats = stats(&store.executions().unwrap());
    let summary = |tool: &str| {
        let tool = stats.iter().find(|s| s.tool == tool).unwrap();
        (tool.calls, tool.success_rate, tool.outcomes.clone())
    };
    use ToolOutcome::{GuestError, InvalidArgs, Ok, Precondition};
    assert_eq!(stats.len(), 2);
    assert_eq!(
        summary("add_to_cart"),
        (
            3,
            1.0 / 3.0,
            vec![(Ok, 1), (InvalidArgs, 1), (Precondition, 1)]
        )
    );
    assert_eq!(summary("login"), (2, 0.5, vec![(Ok, 1), (GuestError, 1)]));
}

#[test]
fn the_registry_addresses_tools_as_plugin_slash_tool() {
    let host = host();
    load(&host, SHOP);
    let addresses: Vec<String> = host.tools().iter().map(|tool| tool.address()).collect();
    assert_eq!(
        addresses,
        [
            "shop/add_to_cart",
            "shop/get_cart_total",
            "shop/get_product",
            "shop/login",
            "shop/logout"
        ]
    );
    let add = host.tool("shop/add_to_cart").unwrap();
    assert_eq!(add.tool().description, "Adds a product to the cart.");
    assert_eq!(add.tool().requires, ["authenticated"]);
    assert_eq!(
        add.tool().parameters["properties"]["quantity"]["minimum"],
        json!(1)
    );
    assert_eq!(
        add.tool().parameters["properties"]["quantity"]["description"],
        json!("How many to add, at least 1.")
    );
    assert_eq!(
        host.tool("shop/get_product").unwrap().tool().cache_ttl,
        Some(Duration::from_secs(60))
    );
    assert!(host.tool("shop/nope").is_none());
    assert!(host.tool("nobody/login").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_deletes_ended_sessions_and_tool_records_after_their_retention() {
    let clock = Clock::manual(1_000_000);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let limits = Limits {
        retain_ended: Duration::from_secs(3_600),
        retain_records: Duration::from_secs(7_200),
        ..Limits::default()
    };
    let host = host_with_clock(limits, store.clone(), clock.clone());
    load(&host, SHOP);
    let ended = start(&host, "shop", json!({})).await.session;
    // A refused call leaves a record as well as the one that ran.
    host.call_tool(&ended, "login", json!({ "username": 1 }), None)
        .await
        .unwrap_err();
    call(&host, &ended, "login", login()).await;
    host.end_session(&ended).await.unwrap();
    let active = start(&host, "shop", json!({})).await.session;
    assert_eq!(store.executions().unwrap().len(), 2);

    clock.advance(Duration::from_secs(3_599));
    // Keep the active one from expiring by idleness meanwhile.
    call(&host, &active, "logout", json!({})).await;
    let reaped = host.reap(100).await.unwrap();
    assert_eq!(
        (reaped.swept.ended_sessions, reaped.swept.executions),
        (0, 0)
    );
    assert!(
        host.session(&ended).await.unwrap().is_some(),
        "kept for its hour"
    );

    clock.advance(Duration::from_secs(1));
    let reaped = host.reap(100).await.unwrap();
    assert_eq!(reaped.swept.ended_sessions, 1);
    assert!(
        host.session(&ended).await.unwrap().is_none(),
        "an hour after it ended it is gone"
    );
    assert!(store.history(&ended, 1_000).unwrap().is_empty());
    assert!(host.session(&active).await.unwrap().is_some());
    assert_eq!(
        store.executions().unwrap().len(),
        3,
        "records last two hours"
    );

    clock.advance(Duration::from_secs(3_600));
    let reaped = host.reap(100).await.unwrap();
    assert_eq!(reaped.swept.executions, 2);
    assert_eq!(
        store.executions().unwrap().len(),
        1,
        "the logout, made later, stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_history_keeps_its_newest_messages_within_the_cap() {
    let limits = Limits {
        history_messages: 5,
        ..Limits::default()
    };
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let host = host_with_clock(limits, store.clone(), Clock::system());
    load(&host, SHOP);
    let id = start(&host, "shop", json!({})).await.session;
    for n in 0..10 {
        host.send_message(&id, &format!("catalog {n}"), None)
            .await
            .unwrap();
    }
    let history = store.history(&id, 1_000).unwrap();
    assert_eq!(history.len(), 5);
    assert!(
        history.last().unwrap().content.contains("Book"),
        "{history:?}"
    );
    assert_eq!(history[history.len() - 2].content, "catalog 9");
}
