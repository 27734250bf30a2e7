//! The notebook plugin in Python: the helper library's state, KV, notes,
//! refusals, failures and tools (see `languages::notebook`).

use crate::plugins::PYTHON_NOTEBOOK;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helper_library_serves_state_kv_notes_tools_and_failures() {
    crate::languages::notebook(
        PYTHON_NOTEBOOK,
        "KeyError: 'no such key'",
        "Traceback (most recent call last):",
    )
    .await;
}

/// An `Enum` argument arrives as its member, given or defaulted (left out
/// or `null`), and a member returned is its value; a list or dict default
/// (`tags = {}`) is written the natural way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enum_arguments_arrive_as_members_and_mutable_defaults_are_each_sessions_own() {
    use crate::harness::{host, load, start_for};
    use serde_json::json;

    let host = host();
    load(&host, PYTHON_NOTEBOOK);
    let started = start_for(&host, "notebook", Some("ada")).await;
    assert_eq!(started.state["tags"], json!({}));
    let id = started.session;
    for (arguments, level) in [
        (json!({ "level": "high" }), "high"),
        (json!({}), "low"),
        (json!({ "level": null }), "low"),
    ] {
        let report = host
            .call_tool(&id, "prioritize", arguments, None)
            .await
            .unwrap();
        assert_eq!(report.result, json!({ "level": level, "member": true }));
    }
    host.call_tool(
        &id,
        "add_note",
        json!({ "text": "milk", "tags": ["shop"] }),
        None,
    )
    .await
    .unwrap();
    let other = start_for(&host, "notebook", Some("bob")).await;
    assert_eq!(other.state["tags"], json!({}), "a default is not shared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helper_library_sends_requests_the_policy_allows_and_names_a_refusal() {
    crate::languages::notebook_http(PYTHON_NOTEBOOK).await;
}
