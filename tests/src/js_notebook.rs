//! The notebook plugin in JavaScript: the helper library's state, KV,
//! notes, refusals, failures and tools (see `languages::notebook`).

use crate::plugins::JS_NOTEBOOK;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helper_library_serves_state_kv_notes_tools_and_failures() {
    crate::languages::notebook(
        JS_NOTEBOOK,
        "TypeError: this.noSuchMethod is not a function",
        "onMessage@plugins/js/notebook/notebook.js",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helper_library_sends_requests_the_policy_allows_and_names_a_refusal() {
    crate::languages::notebook_http(JS_NOTEBOOK).await;
}
