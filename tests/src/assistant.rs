//! The assistant plugin, an LLM agent, against an OpenAI-compatible server
//! and a booking service started on loopback: streamed answers, a tool call
//! round trip through a header the host injects, the bound on tool rounds,
//! and a conversation kept bounded in state.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use agentbox_host::Host;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::harness::{host_with_policy, start_for};
use crate::plugins::ASSISTANT;

const LLM_KEY: &str = "sk-llm-7d2e9";
const BOOKING_KEY: &str = "bk-4410c";

/// One answer of the model.
enum Answer {
    /// The deltas it streams, as server-sent events.
    Stream(Vec<Value>),
    /// A whole body of this content type, as a server that ignores
    /// `stream` sends.
    Whole(&'static str, String),
}

/// What the fake services saw and what the model will answer next.
#[derive(Default)]
struct Fake {
    /// Each answer of the model.
    script: Mutex<VecDeque<Answer>>,
    /// Each chat completions request: its headers and body.
    completions: Mutex<Vec<(HeaderMap, Value)>>,
    /// Each booking request: its headers and body.
    bookings: Mutex<Vec<(HeaderMap, Value)>>,
}

impl Fake {
    fn answer(&self, deltas: Vec<Value>) {
        self.script
            .lock()
            .unwrap()
            .push_back(Answer::Stream(deltas));
    }

    fn answer_whole(&self, content_type: &'static str, body: impl ToString) {
        self.script
            .lock()
            .unwrap()
            .push_back(Answer::Whole(content_type, body.to_string()));
    }

    fn completions(&self) -> Vec<(HeaderMap, Value)> {
        self.completions.lock().unwrap().clone()
    }
}

/// `POST /v1/chat/completions` sends the next scripted answer: a stream of
/// server-sent events in the API's chunk format, or a whole body;
/// `POST /book` confirms.
async fn services() -> (SocketAddr, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(
                |State(fake): State<Arc<Fake>>, headers: HeaderMap, Json(body): Json<Value>| async move {
                    fake.completions.lock().unwrap().push((headers, body));
                    let answer = fake
                        .script
                        .lock()
                        .unwrap()
                        .pop_front()
                        .expect("the model was asked more often than the test scripted");
                    let deltas = match answer {
                        Answer::Stream(deltas) => deltas,
                        Answer::Whole(content_type, body) => {
                            return ([(header::CONTENT_TYPE, content_type)], body).into_response();
                        }
                    };
                    let events = deltas
                        .into_iter()
                        .map(|delta| {
                            let chunk = json!({
                                "object": "chat.completion.chunk",
                                "choices": [{ "index": 0, "delta": delta }],
                            });
                            format!("data: {chunk}\n\n")
                        })
                        .chain(["data: [DONE]\n\n".to_owned()])
                        .map(|event| Ok::<_, std::io::Error>(event.into_bytes()));
                    (
                        [(header::CONTENT_TYPE, "text/event-stream")],
                        Body::from_stream(tokio_stream::iter(events.collect::<Vec<_>>())),
                    )
                        .into_response()
                },
            ),
        )
        .route(
            "/book",
            post(
                |State(fake): State<Arc<Fake>>, headers: HeaderMap, Json(body): Json<Value>| async move {
                    fake.bookings.lock().unwrap().push((headers, body.clone()));
                    Json(json!({ "confirmed": true, "reference": "B-1", "day": body["day"] }))
                },
            ),
        )
        .with_state(fake.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, fake)
}

/// A host running the assistant against the fake services, with both keys
/// injected by the host.
fn host(address: SocketAddr) -> Host {
    let text = format!(
        r#"
        [plugins.assistant.http]
        allow = ["http://{address}"]
        [[plugins.assistant.http.inject]]
        url = "http://{address}"
        header = "authorization"
        value = "Bearer {{secret:api_key}}"
        [[plugins.assistant.http.inject]]
        url = "http://{address}"
        header = "x-booking-key"
        value = "{{secret:booking_key}}"
        [plugins.assistant.config]
        base_url = "http://{address}/v1"
        model = "test-model"
        booking_url = "http://{address}/book"
        api_key = "{LLM_KEY}"
        booking_key = "{BOOKING_KEY}"
        "#
    );
    host_with_policy(&text, &[ASSISTANT])
}

fn text(delta: &str) -> Value {
    json!({ "content": delta })
}

fn header_of<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|value| value.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_streams_as_it_arrives_and_the_conversation_is_kept() {
    let (address, fake) = services().await;
    let host = host(address);
    let session = start_for(&host, "assistant", Some("ada@example.com"))
        .await
        .session;
    fake.answer(vec![
        json!({ "role": "assistant", "content": "" }),
        text("Hel"),
        text("lo, "),
        text("Ada!"),
    ]);
    let report = host
        .send_message(&session, "Hi, I'm Ada", None)
        .await
        .unwrap();
    assert_eq!(report.said, ["Hel", "lo, ", "Ada!"]);
    assert_eq!(
        report.state["messages"],
        json!([
            { "role": "user", "content": "Hi, I'm Ada" },
            { "role": "assistant", "content": "Hello, Ada!" },
        ])
    );

    // The model got the configured model, the conversation after a system
    // message, the agent's tools, and the key the host injected.
    let completions = fake.completions();
    let (headers, body) = &completions[0];
    assert_eq!(
        header_of(headers, "authorization"),
        Some(&*format!("Bearer {LLM_KEY}"))
    );
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["stream"], true);
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(
        body["messages"][1],
        json!({ "role": "user", "content": "Hi, I'm Ada" })
    );
    let tools: Vec<&str> = body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["remember", "look_up", "book_appointment"]);

    // The next message carries the conversation so far.
    fake.answer(vec![text("Still here.")]);
    host.send_message(&session, "Are you there?", None)
        .await
        .unwrap();
    let (_, body) = &fake.completions()[1];
    assert_eq!(body["messages"].as_array().unwrap().len(), 4, "{body}");
    assert_eq!(body["messages"][2]["content"], "Hello, Ada!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_books_through_a_key_the_plugin_never_sees_and_the_model_gets_the_result() {
    let (address, fake) = services().await;
    let host = host(address);
    let session = start_for(&host, "assistant", None).await.session;
    // The call's arguments arrive in two pieces, as the API streams them.
    fake.answer(vec![
        json!({ "role": "assistant", "tool_calls": [{ "index": 0, "id": "call_1", "type": "function",
            "function": { "name": "book_appointment", "arguments": "{\"day\": \"monday\", " } }] }),
        json!({ "tool_calls": [{ "index": 0,
            "function": { "arguments": "\"time\": \"10:00\", \"name\": \"Ada\"}" } }] }),
    ]);
    fake.answer(vec![text("Booked: monday at 10:00, reference B-1.")]);
    let report = host
        .send_message(&session, "Book me monday at ten, I'm Ada", None)
        .await
        .unwrap();
    assert_eq!(report.said, ["Booked: monday at 10:00, reference B-1."]);

    let bookings = fake.bookings.lock().unwrap().clone();
    assert_eq!(bookings.len(), 1);
    let (headers, body) = &bookings[0];
    assert_eq!(
        body,
        &json!({ "day": "monday", "time": "10:00", "name": "Ada" })
    );
    assert_eq!(header_of(headers, "x-booking-key"), Some(BOOKING_KEY));

    // The second request hands the model the call and its result.
    let (_, body) = &fake.completions()[1];
    let messages = body["messages"].as_array().unwrap();
    let asked = &messages[messages.len() - 2];
    assert_eq!(
        asked["tool_calls"][0]["function"]["name"],
        "book_appointment"
    );
    let answered = &messages[messages.len() - 1];
    assert_eq!(answered["role"], "tool");
    assert_eq!(answered["tool_call_id"], "call_1");
    let result: Value = serde_json::from_str(answered["content"].as_str().unwrap()).unwrap();
    assert_eq!(result["reference"], "B-1");

    // Neither key is in anything the host keeps of the session.
    let history = host.history(&session, 1000).await.unwrap();
    let record = host.session(&session).await.unwrap().unwrap();
    let kept = format!("{history:?}{record:?}{}", host.metrics().encode());
    for key in [LLM_KEY, BOOKING_KEY] {
        assert!(!kept.contains(key), "{key} is kept: {kept}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_only_asks_for_tools_is_stopped_and_the_message_commits_nothing() {
    let (address, fake) = services().await;
    let host = host(address);
    let session = start_for(&host, "assistant", None).await.session;
    host.call_tool(
        &session,
        "remember",
        json!({ "topic": "opening hours", "text": "9 to 5" }),
        None,
    )
    .await
    .unwrap();
    let before = host.session(&session).await.unwrap().unwrap();
    for round in 0..4 {
        fake.answer(vec![json!({ "tool_calls": [{ "index": 0, "id": format!("call_{round}"),
            "type": "function", "function": { "name": "look_up", "arguments": "{\"topic\": \"Opening Hours\"}" } }] })]);
    }
    let err = host
        .send_message(&session, "When are you open?", None)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the model asked for tools 4 times without answering"),
        "{err}"
    );
    let completions = fake.completions();
    assert_eq!(completions.len(), 4);
    // Each round handed the model what the knowledge base says.
    let (_, last) = &completions[3];
    let messages = last["messages"].as_array().unwrap();
    assert_eq!(messages[messages.len() - 1]["content"], "\"9 to 5\"");
    let after = host.session(&session).await.unwrap().unwrap();
    assert_eq!((after.turn, after.state), (before.turn, before.state));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_conversation_keeps_its_latest_messages_and_a_summary_of_the_rest() {
    let (address, fake) = services().await;
    let host = host(address);
    let session = start_for(&host, "assistant", None).await.session;
    for message in 0..20 {
        fake.answer(vec![text(&format!("answer {message}"))]);
        host.send_message(&session, &format!("message {message}"), None)
            .await
            .unwrap();
    }
    let state = host.session(&session).await.unwrap().unwrap().state;
    let messages = state["messages"].as_array().unwrap();
    assert!(messages.len() <= 24, "{} messages kept", messages.len());
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages.last().unwrap()["content"], "answer 19");
    let summary = state["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("user: message 0\nassistant: answer 0\n"),
        "{summary}"
    );
    // The model is told the summary.
    let (_, body) = fake.completions().pop().unwrap();
    let system = body["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("user: message 0"), "{system}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_server_that_does_not_stream_is_read_whole_and_anything_else_fails_the_turn() {
    let (address, fake) = services().await;
    let host = host(address);
    let session = start_for(&host, "assistant", None).await.session;
    fake.answer_whole(
        "application/json",
        json!({
            "object": "chat.completion",
            "choices": [{ "index": 0, "finish_reason": "stop",
                "message": { "role": "assistant", "content": "Hello, Ada!", "refusal": null } }],
        }),
    );
    let report = host.send_message(&session, "Hi", None).await.unwrap();
    assert_eq!(report.said, ["Hello, Ada!"]);
    assert_eq!(
        report.state["messages"][1],
        json!({ "role": "assistant", "content": "Hello, Ada!" })
    );

    // A whole answer may ask for a tool, like a streamed one.
    fake.answer_whole(
        "application/json; charset=utf-8",
        json!({ "choices": [{ "message": { "role": "assistant", "content": null, "tool_calls": [
            { "id": "call_1", "type": "function",
              "function": { "name": "look_up", "arguments": "{\"topic\": \"hours\"}" } }] } }] }),
    );
    fake.answer_whole(
        "application/json",
        json!({ "choices": [{ "message": { "role": "assistant", "content": "I do not know." } }] }),
    );
    let report = host.send_message(&session, "Hours?", None).await.unwrap();
    assert_eq!(report.said, ["I do not know."]);
    let (_, body) = fake.completions().pop().unwrap();
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages[messages.len() - 1]["tool_call_id"], "call_1");

    // Anything else fails the turn, saying what came, and keeps nothing.
    let before = host.session(&session).await.unwrap().unwrap();
    let refusals = [
        (
            "application/json",
            json!({ "error": { "message": "model `test-model` not found", "type": "invalid_request_error" } })
                .to_string(),
            "the model server answered an error: model `test-model` not found",
        ),
        (
            "application/json",
            json!({ "object": "chat.completion", "choices": [] }).to_string(),
            "the model server's answer has no `choices[0].message`",
        ),
        (
            "application/json",
            json!({ "choices": [{ "message": { "role": "assistant", "content": "" } }] }).to_string(),
            "the model answered neither text nor a tool call",
        ),
        (
            "text/html",
            "<html>gateway</html>".to_owned(),
            "the model server answered with content type `text/html`, neither server-sent events nor JSON",
        ),
        (
            "text/event-stream",
            format!("data: {}\n\n", json!({ "error": { "message": "overloaded" } })),
            "the model server answered an error: overloaded",
        ),
    ];
    for (content_type, body, expected) in refusals {
        fake.answer_whole(content_type, body);
        let err = host
            .send_message(&session, "Again?", None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(expected), "{expected}: {err}");
    }
    let after = host.session(&session).await.unwrap().unwrap();
    assert_eq!((after.turn, after.state), (before.turn, before.state));
    let history = host.history(&session, 1000).await.unwrap();
    assert!(
        history.iter().all(|message| !message.content.is_empty()),
        "{history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_turns_of_long_answers_all_commit_within_the_state_caps() {
    let (address, fake) = services().await;
    let host = host(address);
    let session = start_for(&host, "assistant", None).await.session;
    // 24 answers of 6,000 bytes would be more than the 64 KiB one state
    // value may hold.
    let long = "word ".repeat(1200);
    for message in 0..500 {
        fake.answer(vec![text(&format!("answer {message}: {long}"))]);
        host.send_message(&session, &format!("message {message}"), None)
            .await
            .unwrap_or_else(|err| panic!("turn {message}: {err}"));
    }
    let state = host.session(&session).await.unwrap().unwrap().state;
    let kept = serde_json::to_vec(&state["messages"]).unwrap().len();
    assert!(kept <= 32 << 10, "{kept} bytes of messages kept");
    let messages = state["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "user");
    assert!(
        messages.last().unwrap()["content"]
            .as_str()
            .unwrap()
            .starts_with("answer 499: "),
    );
    let summary = state["summary"].as_str().unwrap();
    assert!(summary.len() <= 2000, "{} bytes of summary", summary.len());
    // Its newest line is the latest exchange dropped, cut to 120 characters.
    let newest = summary.lines().last().unwrap();
    assert!(newest.starts_with("assistant: answer 49"), "{summary}");
    assert_eq!(newest.chars().count(), "assistant: ".len() + 120);
}
