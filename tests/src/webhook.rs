//! Webhooks: each committed event is posted to its plugin's webhook,
//! signed; a failing target is tried again, then the event is counted and
//! dropped; turns never wait for it; a full queue drops and counts; and a
//! name that resolves only to internal addresses is refused.

use std::net::SocketAddr;

use agentbox_host::Host;
use agentbox_host::hex::hex;
use agentbox_host::webhook::{DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::harness::{counter_session, host_with_policy, send};
use crate::plugins::COUNTER;

const SECRET: &str = "a secret of thirty-two bytes....";

/// What the receiver saw: each request's headers and body, as it came.
type Received = mpsc::UnboundedReceiver<(HeaderMap, String)>;

/// A receiver on a free loopback port answering every post with `status`
/// (none: it never answers).
async fn receiver(status: Option<StatusCode>) -> (SocketAddr, Received) {
    let (seen, received) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let _ = seen.send((headers, body));
            async move {
                match status {
                    Some(status) => status,
                    None => std::future::pending().await,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, received)
}

/// A host with the counter plugin posting to `url` with `settings`.
fn host(secret_file: &std::path::Path, url: &str, settings: &str) -> Host {
    host_with_policy(
        &format!(
            "[plugins.counter.webhook]\nurl = \"{url}\"\nsecret = {{ file = \"{}\" }}\n{settings}",
            secret_file.display()
        ),
        &[COUNTER],
    )
}

fn secret_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("{SECRET}\n")).unwrap();
    file
}

/// The count of `outcome` on `plugin`'s webhook in the host's metrics.
async fn counted(host: &Host, outcome: &str) -> u64 {
    let line =
        format!("agentbox_webhook_events_total{{plugin=\"counter\",outcome=\"{outcome}\"}} ");
    host.metrics_text()
        .await
        .lines()
        .find_map(|text| text.strip_prefix(&line)?.parse().ok())
        .unwrap_or(0)
}

/// Waits until `outcome` is counted `count` times: the webhook's task
/// counts it after its receiver has answered.
async fn until_counted(host: &Host, outcome: &str, count: u64) {
    while counted(host, outcome).await < count {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_posted_signed_in_order() {
    let (address, mut received) = receiver(Some(StatusCode::NO_CONTENT)).await;
    let secret = secret_file();
    let host = host(secret.path(), &format!("http://{address}/hook"), "");
    let id = counter_session(&host, 2).await;
    for expected in 1..=3u64 {
        let (headers, body) = received.recv().await.unwrap();
        let event: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (event["seq"].as_u64(), event["session"].as_str()),
            (Some(expected), Some(id.as_str()))
        );
        assert_eq!(
            headers[DELIVERY_HEADER],
            format!("{id}/{expected}").as_str()
        );
        // The receiver checks the signature over `TIMESTAMP.BODY` with the
        // secret (the file's final line break is not part of it).
        let timestamp = headers[TIMESTAMP_HEADER].to_str().unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{timestamp}.{body}").as_bytes());
        let expected_signature = hex(&mac.finalize().into_bytes());
        assert_eq!(
            headers[SIGNATURE_HEADER],
            format!("sha256={expected_signature}").as_str()
        );
    }
    until_counted(&host, "delivered", 3).await;
    assert_eq!(counted(&host, "dropped").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_is_tried_again_then_the_event_is_counted_and_dropped() {
    let (address, mut received) = receiver(Some(StatusCode::INTERNAL_SERVER_ERROR)).await;
    let secret = secret_file();
    let host = host(
        secret.path(),
        &format!("http://{address}/hook"),
        "attempts = 3\nbackoff_ms = 1",
    );
    counter_session(&host, 0).await;
    let mut deliveries = Vec::new();
    for _ in 0..3 {
        deliveries.push(received.recv().await.unwrap().0[DELIVERY_HEADER].clone());
    }
    assert!(
        deliveries.iter().all(|delivery| *delivery == deliveries[0]),
        "one event, three tries"
    );
    until_counted(&host, "dropped", 1).await;
    assert_eq!(counted(&host, "retried").await, 2);
    assert_eq!(counted(&host, "delivered").await, 0);
    assert!(received.try_recv().is_err(), "no fourth try");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_never_wait_for_a_stalled_target_and_a_full_queue_drops() {
    let (address, mut received) = receiver(None).await;
    let secret = secret_file();
    let host = host(
        secret.path(),
        &format!("http://{address}/hook"),
        "timeout_ms = 60000\nqueue = 1",
    );
    let id = counter_session(&host, 0).await;
    // The start's event is held by the stalled target.
    received.recv().await.unwrap();
    // Turns go on: one event waits in the queue, the next ones are dropped.
    for _ in 0..3 {
        send(&host, &id, "tick").await;
    }
    assert_eq!(counted(&host, "dropped").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_of_internal_addresses_only_is_refused_unless_named_literally() {
    let (address, mut received) = receiver(Some(StatusCode::OK)).await;
    let secret = secret_file();
    let host = host(
        secret.path(),
        &format!("http://localhost:{}/hook", address.port()),
        "attempts = 1",
    );
    counter_session(&host, 0).await;
    until_counted(&host, "dropped", 1).await;
    assert!(received.try_recv().is_err(), "nothing reached the receiver");
}
