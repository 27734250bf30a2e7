//! The relay plugin: registry calls that pass a call on, so that chains
//! can turn back into a cycle or nest past the depth limit, and callees
//! that trap or run past their deadline. Each refusal reaches the guest
//! that called, whose own turn goes on.

use serde_json::{Value, json};

use crate::concierge::relay;
use crate::harness::{host_with_policy, start_for};
use crate::plugins::{CONCIERGE, RELAY};

const POLICY: &str = r#"
[plugins.concierge]
may_call = ["relay/*"]

[plugins.relay]
may_call = ["concierge/*"]
deadline_ms = 100
"#;

/// The registry's error in a relay's answer, `depth` relays down.
fn error_at(answer: &Value, depth: usize) -> (String, String) {
    let mut answer = answer;
    for _ in 0..depth {
        answer = &answer["ok"];
    }
    let error = &answer["error"];
    assert!(
        error.is_object(),
        "no error {depth} relays down in {answer}"
    );
    (
        error["kind"].as_str().unwrap().to_owned(),
        error["detail"].to_string(),
    )
}

#[tokio::test]
async fn a_chain_that_turns_back_is_refused_as_a_cycle() {
    let host = host_with_policy(POLICY, &[CONCIERGE, RELAY]);
    let id = start_for(&host, "concierge", None).await.session;
    // concierge → relay → concierge: the relay's call back is refused.
    let answer = relay(
        &host,
        &id,
        "relay/relay",
        json!({ "name": "concierge/discover", "args": { "prefix": "" } }),
    )
    .await;
    let (kind, detail) = error_at(&answer, 1);
    assert_eq!(kind, "denied");
    assert!(
        detail.contains("would close a cycle: concierge → relay → concierge"),
        "{detail}"
    );
}

#[tokio::test]
async fn calls_nest_only_as_deep_as_the_limit() {
    let host = host_with_policy(POLICY, &[CONCIERGE, RELAY]);
    let id = start_for(&host, "concierge", None).await.session;
    // The concierge relays to its own relay, which relays to its own
    // relay, and so on: the fifth nested call is one too deep.
    let mut args = json!({ "name": "concierge/discover", "args": { "prefix": "relay/" } });
    for _ in 0..4 {
        args = json!({ "name": "concierge/relay", "args": args });
    }
    let answer = relay(&host, &id, "concierge/relay", args).await;
    let (kind, detail) = error_at(&answer, 4);
    assert_eq!(kind, "limit");
    assert!(
        detail.contains("would nest registry calls 5 deep, over the limit of 4"),
        "{detail}"
    );

    // Four deep is allowed: the innermost call discovers the relay's tools.
    let mut args = json!({ "name": "concierge/discover", "args": { "prefix": "relay/" } });
    for _ in 0..2 {
        args = json!({ "name": "concierge/relay", "args": args });
    }
    let mut answer = &relay(&host, &id, "concierge/relay", args).await;
    for _ in 0..4 {
        answer = &answer["ok"];
    }
    assert_eq!(answer, &json!(["relay/crash", "relay/relay", "relay/spin"]));
}

#[tokio::test]
async fn a_callee_that_traps_or_overruns_fails_its_call_and_not_the_callers_turn() {
    let host = host_with_policy(POLICY, &[CONCIERGE, RELAY]);
    let id = start_for(&host, "concierge", None).await.session;

    let (kind, detail) = error_at(&relay(&host, &id, "relay/crash", json!({})).await, 0);
    assert_eq!(kind, "failed");
    assert!(detail.contains("plugin trapped"), "{detail}");

    // The relay's own deadline (100 ms) stops it; the concierge (2 s) goes on.
    let (kind, detail) = error_at(&relay(&host, &id, "relay/spin", json!({})).await, 0);
    assert_eq!(kind, "limit");
    assert!(detail.contains("deadline of 100 ms exceeded"), "{detail}");

    let session = host.session(&id).await.unwrap().unwrap();
    assert_eq!(session.turn, 2, "both relaying turns committed");
}

#[tokio::test]
async fn a_callee_gets_no_more_than_what_is_left_of_its_callers_deadline() {
    // The concierge has 150 ms, the relay its default 2 s: the relay's
    // spin is stopped by what is left of the concierge's, and so the
    // concierge's turn, out of time, fails as past its own deadline.
    let host = host_with_policy(
        r#"
[plugins.concierge]
may_call = ["relay/*"]
deadline_ms = 150
"#,
        &[CONCIERGE, RELAY],
    );
    let id = start_for(&host, "concierge", None).await.session;
    let err = host
        .call_tool(
            &id,
            "relay",
            json!({ "name": "relay/spin", "args": {} }),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().ends_with("deadline of 150 ms exceeded"),
        "{err}"
    );
    assert_eq!(host.session(&id).await.unwrap().unwrap().turn, 0);
}
