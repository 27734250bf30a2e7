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

/// An echo server on loopback: `GET /hello` says hi, `POST /echo` answers
/// 201 with the body, and the content type it got in `x-seen`; `GET
/// /events` streams server-sent events in chunks that split an event and
/// a line.
async fn echo_server() -> std::net::SocketAddr {
    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};

    let events = || async {
        let chunks = [
            "data: one\n\n",
            "event: note\ndata: two\n",
            "data: lines\n\n",
            "data: thr",
            "ee\n\n",
        ]
        .map(|chunk| Ok::<_, std::io::Error>(chunk.as_bytes().to_vec()));
        (
            [("content-type", "text/event-stream")],
            axum::body::Body::from_stream(tokio_stream::iter(chunks)),
        )
    };
    let app = Router::new()
        .route("/hello", get(|| async { "hi" }))
        .route("/events", get(events))
        .route(
            "/echo",
            post(|headers: HeaderMap, body: String| async move {
                let seen = headers
                    .get("content-type")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("none")
                    .to_owned();
                (StatusCode::CREATED, [("x-seen", seen)], body)
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helper_library_sends_requests_the_policy_allows_and_names_a_refusal() {
    use crate::harness::{host_with_policy, said, send, start_for};

    let address = echo_server().await;
    let by_length = crate::fetcher::content_length_server().await;
    let host = host_with_policy(
        &format!("[plugins.notebook.http]\nallow = [\"http://{address}\", \"http://{by_length}\"]"),
        &[PYTHON_NOTEBOOK],
    );
    let id = start_for(&host, "notebook", Some("ada")).await.session;
    let reply = |text: String| {
        let (host, id) = (host.clone(), id.clone());
        async move { said(&send(&host, &id, &text).await) }
    };
    assert_eq!(
        reply(format!("fetch http://{address}/hello")).await,
        "200 - hi"
    );
    reply("note buy milk".into()).await;
    assert_eq!(
        reply(format!("post http://{address}/echo")).await,
        "201 application/json {\"notes\": [\"buy milk\"]}"
    );
    // Server-sent events are read as they arrive, however they are cut.
    let streamed = send(&host, &id, &format!("stream http://{address}/events")).await;
    assert_eq!(
        streamed.said,
        ["message: one", "note: two\nlines", "message: three"]
    );
    // A server that reads the body by its declared length gets all of it.
    assert_eq!(
        reply(format!("post http://{by_length}/notes")).await,
        "200 - {\"notes\": [\"buy milk\"]}"
    );
    // Another origin is not on the allow-list.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        reply(format!(
            "fetch http://{}/hello",
            other.local_addr().unwrap()
        ))
        .await,
        "refused (HTTP-request-denied)"
    );
    // A URL the helper cannot send is refused before the host is asked.
    assert_eq!(
        reply("fetch ftp://example.com/notes".into()).await,
        "refused (HTTP-request-URI-invalid)"
    );
}
