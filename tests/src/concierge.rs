//! The concierge plugin: a guest that finds and calls other plugins' tools
//! through the registry. The shop's cart lives in the shop's own child
//! session of the conversation, which the concierge never reads; the policy
//! decides what it may call; a call of its own tool works on its turn.

use agentbox_host::store::ToolOutcome;
use agentbox_host::{Host, child_session_id};
use serde_json::{Value, json};

use crate::harness::{host_with_policy, said, send, start_for};
use crate::plugins::{CONCIERGE, COUNTER, SHOP};

const POLICY: &str = r#"
[plugins.concierge]
may_call = ["shop/*"]
"#;

/// Calls the concierge's `relay` tool: the registry's answer for `name`.
pub(crate) async fn relay(host: &Host, session: &str, name: &str, args: Value) -> Value {
    host.call_tool(
        session,
        "relay",
        json!({ "name": name, "args": args }),
        None,
    )
    .await
    .unwrap_or_else(|err| panic!("relaying {name} failed: {err}"))
    .result
}

/// Every tool the concierge of session `session` may call, by address.
async fn discover(host: &Host, session: &str) -> Value {
    host.call_tool(session, "discover", json!({ "prefix": "" }), None)
        .await
        .unwrap_or_else(|err| panic!("discover failed: {err}"))
        .result
}

#[tokio::test]
async fn a_concierge_shops_through_the_registry_and_never_holds_the_cart() {
    let host = host_with_policy(POLICY, &[CONCIERGE, SHOP, COUNTER]);
    let id = start_for(&host, "concierge", Some("+15551234567"))
        .await
        .session;

    let hello = send(&host, &id, "hello").await;
    assert_eq!(
        said(&hello),
        "I can reach shop/add_to_cart, shop/get_cart_total, shop/get_product, shop/login, shop/logout."
    );
    assert_eq!(
        said(&send(&host, &id, "login ada lovelace").await),
        "You are logged in as ada."
    );
    assert_eq!(
        said(&send(&host, &id, "add book 2").await),
        "Added 2 × book."
    );
    assert_eq!(
        said(&send(&host, &id, "total").await),
        "Your cart comes to 2598 cents."
    );

    // The concierge's state holds its own count, and nothing of the shop's.
    let parent = host.session(&id).await.unwrap().unwrap();
    assert_eq!(Value::Object(parent.state), json!({ "handled": 4 }));
    // The shop's child session: same user and owner, the shop's state.
    let child_id = child_session_id(&id, "shop");
    let child = host.session(&child_id).await.unwrap().unwrap();
    assert_eq!(
        (child.plugin.as_str(), child.user_id.as_deref()),
        ("shop", Some("+15551234567"))
    );
    assert_eq!(child.owner, parent.owner);
    assert_eq!(child.state["cart"], json!({ "book": 2 }));
    assert_eq!(child.state["authenticated"], json!(true));
    // Its history keeps the calls, the password redacted as for any caller.
    let history = host.history(&child_id, 100).await.unwrap();
    let login = history
        .iter()
        .find(|message| message.content.contains("\"login\""))
        .expect("the login is in the shop's history");
    assert!(login.content.contains("[redacted]") && !login.content.contains("lovelace"));

    // What it may call: its own tools and the shop's, not the counter's
    // or anything else loaded.
    let tools = discover(&host, &id).await;
    assert_eq!(
        tools,
        json!([
            "concierge/discover",
            "concierge/note",
            "concierge/relay",
            "shop/add_to_cart",
            "shop/get_cart_total",
            "shop/get_product",
            "shop/login",
            "shop/logout"
        ])
    );

    // Ending the conversation ends the shop's session with it.
    host.end_session(&id).await.unwrap();
    let child = host.session(&child_id).await.unwrap().unwrap();
    assert_eq!(child.status, agentbox_host::store::Status::Ended);
}

#[tokio::test]
async fn every_refusal_reaches_the_calling_guest_and_its_turn_goes_on() {
    let host = host_with_policy(POLICY, &[CONCIERGE, SHOP, COUNTER]);
    let id = start_for(&host, "concierge", Some("ada")).await.session;
    // The registry's error for a call of `name`: its kind and detail.
    let refusal = async |name: &str, args: Value| {
        let answer = relay(&host, &id, name, args).await;
        (
            answer["error"]["kind"].clone(),
            answer["error"]["detail"].clone(),
        )
    };

    // The counter is loaded, but the policy does not grant it.
    let (kind, detail) = refusal("counter/count", json!({})).await;
    assert_eq!(kind, "denied");
    assert!(
        detail
            .as_str()
            .unwrap()
            .contains("may not call `counter/count`"),
        "{detail}"
    );
    // An address nothing offers, and no address at all.
    assert_eq!(
        refusal("shop/refund", json!({})).await,
        (
            json!("not-found"),
            json!("no loaded plugin offers the tool `shop/refund`")
        )
    );
    assert_eq!(refusal("login", json!({})).await.0, "not-found");

    // Arguments that break the schema: the guest gets every violation with
    // its pointer, and the shop is never entered.
    let bad = json!({ "product_id": "car", "quantity": 0 });
    let (kind, detail) = refusal("shop/add_to_cart", bad).await;
    assert_eq!(kind, "invalid-arguments");
    let pointers: Vec<&str> = detail
        .as_array()
        .unwrap()
        .iter()
        .map(|violation| violation["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/product_id", "/quantity"]);
    // A call the shop's `requires` refuses before anyone logged in.
    let book = json!({ "product_id": "book", "quantity": 1 });
    assert_eq!(
        refusal("shop/add_to_cart", book).await,
        (json!("precondition"), json!(["authenticated"]))
    );
    // A tool's own error.
    let wrong = json!({ "username": "ada", "password": "wrong" });
    let (kind, detail) = refusal("shop/login", wrong).await;
    assert_eq!(kind, "failed");
    assert!(
        detail
            .as_str()
            .unwrap()
            .contains("plugin returned an error"),
        "{detail}"
    );

    // Each relay committed as a turn of the concierge; the shop's child
    // session was started once and has run one tool turn, the failed login
    // committing nothing.
    let child = host
        .session(&child_session_id(&id, "shop"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((child.turn, child.state.get("authenticated")), (0, None));
    let records = host.executions().await.unwrap();
    let shop: Vec<ToolOutcome> = records
        .iter()
        .filter(|record| record.plugin == "shop")
        .map(|record| record.outcome)
        .collect();
    assert_eq!(
        shop,
        [
            ToolOutcome::InvalidArgs,
            ToolOutcome::Precondition,
            ToolOutcome::GuestError
        ]
    );
}

#[tokio::test]
async fn the_childs_commit_is_its_own_and_a_cached_result_is_served_to_the_registry() {
    let host = host_with_policy(POLICY, &[CONCIERGE, SHOP]);
    let id = start_for(&host, "concierge", None).await.session;
    let failed = host
        .send_message(&id, "login ada lovelace and fail", None)
        .await
        .unwrap_err();
    assert!(failed.to_string().contains("failing as asked"), "{failed}");
    // The concierge's turn committed nothing; the shop's login stands.
    let parent = host.session(&id).await.unwrap().unwrap();
    assert_eq!(
        (parent.turn, Value::Object(parent.state)),
        (0, json!({ "handled": 0 }))
    );
    let child = host
        .session(&child_session_id(&id, "shop"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(child.state["authenticated"], json!(true));

    // The shop caches its products per session: the second call through
    // the registry is served from the cache without entering the shop.
    let book = json!({ "product_id": "book" });
    let first = relay(&host, &id, "shop/get_product", book.clone()).await;
    let second = relay(&host, &id, "shop/get_product", book).await;
    assert_eq!(first, second);
    assert_eq!(first["ok"]["price_cents"], 1299);
    let outcomes: Vec<ToolOutcome> = host
        .executions()
        .await
        .unwrap()
        .iter()
        .filter(|record| record.tool == "get_product")
        .map(|record| record.outcome)
        .collect();
    assert_eq!(outcomes, [ToolOutcome::Ok, ToolOutcome::CacheHit]);
}

#[tokio::test]
async fn a_call_of_its_own_tool_works_on_the_turn_and_says_through_it() {
    let host = host_with_policy("", &[CONCIERGE, COUNTER]);
    let id = start_for(&host, "concierge", None).await.session;
    let report = host
        .call_tool(
            &id,
            "relay",
            json!({ "name": "concierge/note", "args": { "text": "call me back" } }),
            None,
        )
        .await
        .unwrap();
    assert_eq!(report.result, json!({ "ok": 1 }));
    // The note's write is the relaying turn's, committed with it; what it
    // said, the turn said.
    assert_eq!(report.turn.state["notes"], json!(["call me back"]));
    assert_eq!(report.turn.said, ["noted: call me back"]);
    let committed = host.session(&id).await.unwrap().unwrap();
    assert_eq!(committed.state["notes"], json!(["call me back"]));
    // No child session for its own tools, and nobody else's tools granted.
    assert!(
        host.session(&child_session_id(&id, "concierge"))
            .await
            .unwrap()
            .is_none()
    );
    let tools = discover(&host, &id).await;
    assert_eq!(
        tools,
        json!(["concierge/discover", "concierge/note", "concierge/relay"])
    );

    // A 0.1.0 plugin beside it loads and runs without the registry.
    let counter = host.plugin("counter").unwrap();
    assert_eq!(counter.world, "0.1.0");
    let count = start_for(&host, "counter", None).await.session;
    send(&host, &count, "tick").await;
}

#[tokio::test]
async fn a_session_made_under_a_childs_id_is_never_taken_for_the_child() {
    let host = host_with_policy(POLICY, &[CONCIERGE, SHOP]);
    let id = start_for(&host, "concierge", Some("ada")).await.session;
    // Someone else makes a shop session under the id the child would have.
    let squatted = host
        .start_session(
            agentbox_host::SessionStart {
                plugin: "shop".into(),
                id: Some(child_session_id(&id, "shop")),
                user_id: Some("mallory".into()),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap()
        .session;
    let login = json!({ "username": "ada", "password": "lovelace" });
    let answer = relay(&host, &id, "shop/login", login).await;
    assert_eq!(answer["error"]["kind"], "failed");
    assert!(
        answer["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("is not the child of this session for `shop`"),
        "{answer}"
    );
    let untouched = host.session(&squatted).await.unwrap().unwrap();
    assert_eq!(
        (untouched.turn, untouched.state.get("authenticated")),
        (0, None)
    );
}

#[tokio::test]
async fn a_registry_call_is_in_both_plugins_records_linked_by_id() {
    let host = host_with_policy(POLICY, &[CONCIERGE, SHOP]);
    let id = start_for(&host, "concierge", None).await.session;
    send(&host, &id, "login ada lovelace").await;
    let refused = relay(&host, &id, "counter/tick", json!({})).await;
    assert_eq!(refused["error"]["kind"], "denied", "{refused}");

    let records = host.executions().await.unwrap();
    let call = records
        .iter()
        .find(|record| record.plugin == "concierge" && record.tool == "shop/login")
        .expect("the concierge's record of its call");
    assert_eq!(
        (
            call.session.as_str(),
            call.outcome,
            call.called_by.as_deref()
        ),
        (id.as_str(), ToolOutcome::Ok, None)
    );
    let answered = records
        .iter()
        .find(|record| record.plugin == "shop" && record.tool == "login")
        .expect("the shop's record of the login");
    assert_eq!(answered.called_by.as_deref(), Some(call.id.as_str()));
    assert_eq!(answered.session, child_session_id(&id, "shop"));
    assert_ne!(answered.id, call.id);
    // A refused call is recorded as the caller's, with its outcome; the
    // relay tool that made it has its own record, which it answers to no one.
    let denied = records
        .iter()
        .find(|record| record.tool == "counter/tick")
        .expect("the refused call's record");
    assert_eq!(denied.outcome, ToolOutcome::Denied);
    let relayed = records
        .iter()
        .find(|record| record.tool == "relay")
        .expect("the relay's record");
    assert_eq!(relayed.called_by, None);

    // Each turn's event names the registry calls it made, by record.
    let events = host.timeline().events(&id, 0, 100).await.unwrap().events;
    let calls: Vec<_> = events
        .iter()
        .map(|event| serde_json::to_value(event).unwrap()["calls"].clone())
        .collect();
    assert_eq!(
        calls[1],
        json!({ "calls": [{ "record": call.id, "tool": "shop/login", "outcome": "ok" }], "more": 0 })
    );
    assert_eq!(
        calls[2],
        json!({ "calls": [{ "record": denied.id, "tool": "counter/tick", "outcome": "denied" }], "more": 0 })
    );
    assert_eq!(calls[0], Value::Null, "the start made no call");
}
