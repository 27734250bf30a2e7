//! The cache-probe plugin: who a cached tool result is served to, by the
//! tool's cache scope (`agentbox:plugin@0.2.0`).

use agentbox_host::Host;
use serde_json::{Value, json};

use crate::harness::{host, load, start_for};
use crate::plugins::CACHE_PROBE;

async fn session(host: &Host, user: Option<&str>) -> String {
    start_for(host, "cache-probe", user).await.session
}

/// Calls `tool` in `session`: whether the answer was cached, and the
/// session that ran the tool to make it.
async fn ask(host: &Host, session: &str, tool: &str) -> (bool, String) {
    let report = host
        .call_tool(session, tool, json!({ "text": "hello" }), None)
        .await
        .unwrap_or_else(|err| panic!("{tool} failed: {err}"));
    let Value::String(answer) = report.result else {
        panic!("{tool} answered {}", report.result)
    };
    let ran_in = answer.strip_prefix("hello from ").unwrap().to_owned();
    (report.cached, ran_in)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_result_reaches_the_session_the_user_or_everyone_as_the_tool_says() {
    let host = host();
    load(&host, CACHE_PROBE);
    let ada = session(&host, Some("ada@example.com")).await;
    let ada_again = session(&host, Some("ada@example.com")).await;
    let grace = session(&host, Some("+15551234567")).await;
    let nobody = session(&host, None).await;
    let nobody_else = session(&host, None).await;

    // Session scope, the default: only the session that ran it.
    assert_eq!(ask(&host, &ada, "per_session").await, (false, ada.clone()));
    assert_eq!(ask(&host, &ada, "per_session").await, (true, ada.clone()));
    assert_eq!(
        ask(&host, &ada_again, "per_session").await,
        (false, ada_again.clone()),
        "another session of the same user"
    );

    // User scope: every session of the user, no one else's; a session
    // without a user keeps its own.
    assert_eq!(ask(&host, &ada, "per_user").await, (false, ada.clone()));
    assert_eq!(
        ask(&host, &ada_again, "per_user").await,
        (true, ada.clone())
    );
    assert_eq!(ask(&host, &grace, "per_user").await, (false, grace.clone()));
    assert_eq!(
        ask(&host, &nobody, "per_user").await,
        (false, nobody.clone())
    );
    assert_eq!(
        ask(&host, &nobody_else, "per_user").await,
        (false, nobody_else.clone()),
        "two sessions without a user are not one user"
    );

    // Global scope: everyone.
    assert_eq!(
        ask(&host, &grace, "for_everyone").await,
        (false, grace.clone())
    );
    for other in [&ada, &nobody] {
        assert_eq!(
            ask(&host, other, "for_everyone").await,
            (true, grace.clone())
        );
    }
}
