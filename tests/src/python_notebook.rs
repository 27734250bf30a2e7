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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helper_library_sends_requests_the_policy_allows_and_names_a_refusal() {
    crate::languages::notebook_http(PYTHON_NOTEBOOK).await;
}
