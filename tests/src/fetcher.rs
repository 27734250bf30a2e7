//! The fetcher plugin: outbound HTTP and configuration under the operator's
//! policy, against real HTTP servers on loopback. Each refusal fails only
//! the call that made it, names its rule, and leaves a counter session
//! beside it untouched.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use agentbox_host::Host;
use agentbox_host::store::OutboundUse;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::harness::{counter_session, host_with_policy, send, start_for};
use crate::plugins::{COUNTER, FETCHER};

/// What the test server saw: the headers of each request, in order.
type Seen = Arc<Mutex<Vec<HeaderMap>>>;

/// An HTTP server on a free loopback port:
/// - `/hello` answers `hello`;
/// - `/big` answers 64 KiB with its length declared, `/big-stream` the
///   same in chunks without it;
/// - `/redirect` answers 302 to `/hello` on 127.0.0.2;
/// - `/events` streams three server-sent events.
async fn server() -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let record = {
        let seen = seen.clone();
        move |headers: HeaderMap| {
            seen.lock().unwrap().push(headers);
            async { "hello" }
        }
    };
    let app = Router::new()
        .route("/hello", get(record))
        .route("/big", get(|| async { vec![b'x'; 64 << 10] }))
        .route(
            "/big-stream",
            get(|| async {
                let chunks = (0..64).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 1024]));
                Body::from_stream(tokio_stream::iter(chunks))
            }),
        )
        .route(
            "/redirect",
            get(|request: axum::extract::Request| async move {
                let port = request
                    .headers()
                    .get(header::HOST)
                    .and_then(|host| host.to_str().ok()?.rsplit_once(':')?.1.parse::<u16>().ok())
                    .unwrap();
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, format!("http://127.0.0.2:{port}/hello"))],
                )
                    .into_response()
            }),
        )
        .route(
            "/events",
            get(|| async {
                let events = ["one", "two", "three"]
                    .map(|data| Ok::<_, std::io::Error>(format!("data: {data}\n\n").into_bytes()));
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    Body::from_stream(tokio_stream::iter(events)),
                )
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, seen)
}

/// What a [`stalling_server`] tells: a request read, a connection closed.
type Heard = tokio::sync::mpsc::UnboundedReceiver<()>;

/// A server that reads each request and never answers; the receivers learn
/// when it has read a request, and when a connection's client closed it.
pub(crate) async fn stalling_server() -> (SocketAddr, Heard, Heard) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (read, reads) = tokio::sync::mpsc::unbounded_channel();
    let (closed, closes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let (read, closed) = (read.clone(), closed.clone());
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                if socket.read(&mut buffer).await.is_ok_and(|bytes| bytes > 0) {
                    let _ = read.send(());
                    while socket.read(&mut buffer).await.is_ok_and(|bytes| bytes > 0) {}
                }
                let _ = closed.send(());
            });
        }
    });
    (address, reads, closes)
}

/// A server that reads a request's body by its `content-length` alone, as
/// Python's `http.server` and some gateways do (a chunked body is not read),
/// and answers 200 with the body it read.
pub(crate) async fn content_length_server() -> SocketAddr {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut socket = BufReader::new(socket);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if socket.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let Some((name, value)) = line.trim_end().split_once(':') else {
                        if line.trim_end().is_empty() {
                            break;
                        }
                        continue;
                    };
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                socket.read_exact(&mut body).await.unwrap();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n"
                );
                let socket = socket.get_mut();
                socket.write_all(head.as_bytes()).await.unwrap();
                socket.write_all(&body).await.unwrap();
                socket.shutdown().await.unwrap();
            });
        }
    });
    address
}

/// A host with the counter and fetcher plugins under `policy`.
fn host(policy: &str) -> Host {
    host_with_policy(policy, &[COUNTER, FETCHER])
}

/// Calls `tool` of the fetcher in `session`.
async fn call(host: &Host, session: &str, tool: &str, args: Value) -> Result<Value, String> {
    host.call_tool(session, tool, args, None)
        .await
        .map(|report| report.result)
        .map_err(|err| format!("{}: {err}", err.cause.kind()))
}

async fn fetch(host: &Host, session: &str, url: String) -> Result<Value, String> {
    call(host, session, "fetch", json!({ "url": url })).await
}

/// A counter session beside the fetcher, ticked once; [`still_counts`]
/// checks it again after the refusals.
async fn beside(host: &Host) -> String {
    counter_session(host, 1).await
}

async fn still_counts(host: &Host, counter: &str) {
    let report = send(host, counter, "tick").await;
    assert_eq!(report.state["count"], 2, "{report:?}");
}

/// A count in `/metrics` text: the value of the line that starts with `series`.
fn metric(host: &Host, series: &str) -> f64 {
    let text = host.metrics().encode();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_origins_are_reached_and_a_refusal_names_the_host_and_the_rule() {
    let (address, seen) = server().await;
    let host = host(&format!(
        "[plugins.fetcher.http]\nallow = [\"http://{address}\"]"
    ));
    let counter = beside(&host).await;
    let fetcher = start_for(&host, "fetcher", None).await.session;

    let answer = fetch(&host, &fetcher, format!("http://{address}/hello"))
        .await
        .unwrap();
    assert_eq!(
        (answer["status"].clone(), answer["body"].clone()),
        (json!(200), json!("hello"))
    );
    assert_eq!(seen.lock().unwrap().len(), 1);

    // Another port of the same address, another address, and https to the
    // allowed one are all other origins.
    let other_port = format!("http://127.0.0.1:{}/hello", address.port() + 1);
    let other_address = format!("http://127.0.0.2:{}/hello", address.port());
    let https = format!("https://{address}/hello");
    for url in [other_port, other_address, https] {
        let err = fetch(&host, &fetcher, url.clone()).await.unwrap_err();
        let shown = url
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        let shown = shown.trim_end_matches("/hello");
        assert!(
            err.contains(&format!("the host refused the request to {shown}: its origin is not on the plugin's allow-list")),
            "{url}: {err}"
        );
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "no refused request reached a server"
    );
    let series = "agentbox_outbound_refused_total{plugin=\"fetcher\",rule=\"allow_list\"}";
    assert_eq!(metric(&host, series), 3.0);
    let series = format!(
        "agentbox_outbound_requests_total{{plugin=\"fetcher\",origin=\"http://{address}\"}}"
    );
    assert_eq!(metric(&host, &series), 1.0);
    // Each call's record says what it sent: the answered one read 5 bytes.
    let records: Vec<OutboundUse> = host
        .executions()
        .await
        .unwrap()
        .iter()
        .map(|execution| execution.outbound)
        .collect();
    let sent = |requests, refused, response_bytes| OutboundUse {
        requests,
        refused,
        response_bytes,
    };
    assert_eq!(
        records,
        [sent(1, 0, 5), sent(0, 1, 0), sent(0, 1, 0), sent(0, 1, 0)]
    );
    still_counts(&host, &counter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_resolves_to_a_loopback_address_is_refused_unless_the_address_is_named() {
    let (address, seen) = server().await;
    let port = address.port();
    let host = host(&format!(
        "[plugins.fetcher.http]\nallow = [\"http://localhost:{port}\"]"
    ));
    let counter = beside(&host).await;
    let fetcher = start_for(&host, "fetcher", None).await.session;
    let err = fetch(&host, &fetcher, format!("http://localhost:{port}/hello"))
        .await
        .unwrap_err();
    assert!(
        err.contains(&format!("the host refused the request to localhost:{port}: it resolves to a loopback, private or link-local address")),
        "{err}"
    );
    assert!(seen.lock().unwrap().is_empty());
    let series = "agentbox_outbound_refused_total{plugin=\"fetcher\",rule=\"address\"}";
    assert_eq!(metric(&host, series), 1.0);
    still_counts(&host, &counter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_the_plugins_to_follow_and_its_target_is_checked_again() {
    let (address, seen) = server().await;
    let host = host(&format!(
        "[plugins.fetcher.http]\nallow = [\"http://{address}\"]"
    ));
    let fetcher = start_for(&host, "fetcher", None).await.session;
    let answer = fetch(&host, &fetcher, format!("http://{address}/redirect"))
        .await
        .unwrap();
    let location = format!("http://127.0.0.2:{}/hello", address.port());
    assert_eq!(answer["status"], 302, "{answer}");
    assert_eq!(answer["location"], json!(location));
    let err = fetch(&host, &fetcher, location).await.unwrap_err();
    assert!(err.contains("not on the plugin's allow-list"), "{err}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "the host followed the redirect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_over_max_response_bytes_fails_that_call_declared_or_streamed() {
    let (address, _) = server().await;
    let host = host(&format!(
        "[plugins.fetcher.http]\nallow = [\"http://{address}\"]\nmax_response_bytes = 16384"
    ));
    let counter = beside(&host).await;
    let fetcher = start_for(&host, "fetcher", None).await.session;
    for path in ["big", "big-stream"] {
        let err = fetch(&host, &fetcher, format!("http://{address}/{path}"))
            .await
            .unwrap_err();
        // A length the response declares is refused before its body is
        // read; a streamed body when it passes the size.
        let said = match path {
            "big" => format!("the response from {address} is larger than the policy's 16384 bytes"),
            _ => format!(
                "the request to {address} failed: HTTP response body size exceeds limit: 16384 bytes"
            ),
        };
        assert!(err.contains(&said), "{path}: {err}");
    }
    let series = "agentbox_outbound_refused_total{plugin=\"fetcher\",rule=\"max_response_bytes\"}";
    assert_eq!(metric(&host, series), 2.0);
    // What fits still passes.
    let answer = fetch(&host, &fetcher, format!("http://{address}/hello"))
        .await
        .unwrap();
    assert_eq!(answer["body"], "hello");
    still_counts(&host, &counter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_sends_no_more_requests_than_the_policy_allows() {
    let (address, seen) = server().await;
    let host = host(&format!(
        "[plugins.fetcher.http]\nallow = [\"http://{address}\"]\nmax_requests_per_turn = 3"
    ));
    let fetcher = start_for(&host, "fetcher", None).await.session;
    let args = json!({ "url": format!("http://{address}/hello"), "times": 5 });
    let ran = call(&host, &fetcher, "fetch_repeatedly", args.clone())
        .await
        .unwrap();
    assert_eq!(ran["done"], 3, "{ran}");
    assert!(
        ran["error"]
            .as_str()
            .unwrap()
            .contains("the host refused the request"),
        "{ran}"
    );
    assert_eq!(seen.lock().unwrap().len(), 3);
    // The count is per call: the next call has its own.
    let ran = call(
        &host,
        &fetcher,
        "fetch_repeatedly",
        json!({ "url": args["url"], "times": 2 }),
    )
    .await
    .unwrap();
    assert_eq!(ran, json!({ "done": 2, "error": null }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_holds_no_turn_past_its_deadline_and_its_connection_is_closed() {
    let (address, _, mut closes) = stalling_server().await;
    // The request's own wait would last 30 s; the turn's deadline is 300 ms.
    let host = host(&format!(
        "[plugins.fetcher]\ndeadline_ms = 300\n[plugins.fetcher.http]\nallow = [\"http://{address}\"]\ntimeout_ms = 30000"
    ));
    let counter = beside(&host).await;
    let fetcher = start_for(&host, "fetcher", None).await.session;
    let before = host.session(&fetcher).await.unwrap().unwrap();
    let err = fetch(&host, &fetcher, format!("http://{address}/stall"))
        .await
        .unwrap_err();
    assert!(err.starts_with("deadline:"), "{err}");
    assert!(err.contains("deadline of 300 ms exceeded"), "{err}");
    // The connection the turn opened is closed with it.
    closes
        .recv()
        .await
        .expect("the stalled connection was never closed");
    assert_eq!(
        host.session(&fetcher).await.unwrap().unwrap().turn,
        before.turn
    );
    still_counts(&host, &counter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_times_out_by_the_policy_within_the_deadline() {
    let (address, _, mut closes) = stalling_server().await;
    let host = host(&format!(
        "[plugins.fetcher]\ndeadline_ms = 30000\n[plugins.fetcher.http]\nallow = [\"http://{address}\"]\ntimeout_ms = 100"
    ));
    let fetcher = start_for(&host, "fetcher", None).await.session;
    let err = fetch(&host, &fetcher, format!("http://{address}/stall"))
        .await
        .unwrap_err();
    assert!(
        err.starts_with("guest-error: ")
            && err.contains(&format!("the request to {address} timed out")),
        "{err}"
    );
    closes
        .recv()
        .await
        .expect("the timed-out connection was never closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_reaches_a_server_that_reads_by_content_length() {
    let address = content_length_server().await;
    let host = host(&format!(
        "[plugins.fetcher.http]\nallow = [\"http://{address}\"]"
    ));
    let fetcher = start_for(&host, "fetcher", None).await.session;
    let url = format!("http://{address}/v1/chat/completions");
    let body = r#"{"model": "test-model", "stream": true}"#;
    let answer = call(
        &host,
        &fetcher,
        "fetch",
        json!({ "url": url, "method": "POST", "body": body }),
    )
    .await
    .unwrap();
    assert_eq!(answer["body"], body, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_and_connect_are_never_sent_so_no_injected_header_comes_back() {
    let (address, seen) = server().await;
    let host = host(&format!(
        "[plugins.fetcher.http]\nallow = [\"http://{address}\"]\n[[plugins.fetcher.http.inject]]\nurl = \"http://{address}\"\nheader = \"x-api-key\"\nvalue = \"k-5ecret\""
    ));
    let fetcher = start_for(&host, "fetcher", None).await.session;
    for method in ["TRACE", "CONNECT"] {
        let err = call(
            &host,
            &fetcher,
            "fetch",
            json!({ "url": format!("http://{address}/hello"), "method": method }),
        )
        .await
        .unwrap_err();
        assert!(err.contains("refused"), "{method}: {err}");
        assert!(!err.contains("k-5ecret"), "{method}: {err}");
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the server"
    );
    let series = "agentbox_outbound_refused_total{plugin=\"fetcher\",rule=\"method\"}";
    assert_eq!(metric(&host, series), 2.0);
    // Any other method goes.
    let answer = call(
        &host,
        &fetcher,
        "fetch",
        json!({ "url": format!("http://{address}/hello"), "method": "HEAD" }),
    )
    .await
    .unwrap();
    assert_eq!(answer["status"], 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_are_said_one_by_one() {
    let (address, _) = server().await;
    let host = host(&format!(
        "[plugins.fetcher.http]\nallow = [\"http://{address}\"]"
    ));
    let fetcher = start_for(&host, "fetcher", None).await.session;
    let report = host
        .call_tool(
            &fetcher,
            "stream",
            json!({ "url": format!("http://{address}/events") }),
            None,
        )
        .await
        .unwrap();
    assert_eq!(report.result, 3);
    assert_eq!(report.turn.said, ["one", "two", "three"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_secret_reaches_its_origin_and_never_the_plugin() {
    const SECRET: &str = "sk-test-5ecret-4f1c";
    let (address, seen) = server().await;
    let (other, other_seen) = server().await;
    let folder = tempfile::tempdir().unwrap();
    let file = folder.path().join("booking-token");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let host = host(&format!(
        r#"
        [plugins.fetcher.http]
        allow = ["http://{address}", "http://{other}"]
        [[plugins.fetcher.http.inject]]
        url = "http://{address}"
        header = "authorization"
        value = "Bearer {{secret:token}}"
        [plugins.fetcher.config]
        model = "small"
        token = {{ file = "{}" }}
        "#,
        file.display()
    ));
    let fetcher = start_for(&host, "fetcher", Some("ada@example.com"))
        .await
        .session;

    // The plugin reads its configuration, but not the bound secret.
    assert_eq!(
        call(&host, &fetcher, "config_keys", json!({}))
            .await
            .unwrap(),
        json!(["model"])
    );
    assert_eq!(
        call(&host, &fetcher, "config", json!({ "key": "model" }))
            .await
            .unwrap(),
        "small"
    );
    assert_eq!(
        call(&host, &fetcher, "config", json!({ "key": "token" }))
            .await
            .unwrap(),
        Value::Null
    );

    // The host adds it to requests to its origin, and to no other.
    fetch(&host, &fetcher, format!("http://{address}/hello"))
        .await
        .unwrap();
    fetch(&host, &fetcher, format!("http://{other}/hello"))
        .await
        .unwrap();
    let authorization = |seen: &Seen| {
        seen.lock().unwrap()[0]
            .get(header::AUTHORIZATION)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    assert_eq!(authorization(&seen), Some(format!("Bearer {SECRET}")));
    assert_eq!(authorization(&other_seen), None);

    // Nothing the host keeps or shows has it.
    let history = host.history(&fetcher, 1000).await.unwrap();
    let record = host.session(&fetcher).await.unwrap();
    for (what, text) in [
        ("history", format!("{history:?}")),
        ("session", format!("{record:?}")),
        ("metrics", host.metrics().encode()),
        ("host", format!("{host:?}")),
    ] {
        assert!(
            !text.contains(SECRET),
            "the secret is in the {what}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_reads_the_hosts_clock_which_a_test_moves() {
    const START_MS: u64 = 1_800_000_000_000;
    let clock = agentbox_host::Clock::manual(START_MS);
    let host = crate::harness::host_with_clock(
        agentbox_host::Limits::default(),
        Arc::new(agentbox_host::store::MemoryStore::default()),
        clock.clone(),
    );
    crate::harness::load(&host, FETCHER);
    let fetcher = start_for(&host, "fetcher", None).await.session;
    assert_eq!(
        call(&host, &fetcher, "now", json!({})).await.unwrap(),
        START_MS
    );
    clock.advance(std::time::Duration::from_secs(90 * 60));
    assert_eq!(
        call(&host, &fetcher, "now", json!({})).await.unwrap(),
        START_MS + 90 * 60 * 1000
    );
}
