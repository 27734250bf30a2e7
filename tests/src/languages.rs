//! The same agent in three languages: the intake plugin in Rust
//! (`plugins/intake`), Python (`plugins/python/intake`, componentize-py) and
//! JavaScript (`plugins/js/intake`, componentize-js), each built with its
//! language's helper library, held to one conversation file and one set of
//! tool calls. Every turn's words, outcome and committed state, and every
//! tool's result or refusal, must be the same in all three. And the
//! notebook plugin, the same in Python and JavaScript, for what the two
//! helper libraries give beyond the intake's needs.

use std::sync::Arc;
use std::time::Duration;

use agentbox_host::store::MemoryStore;
use agentbox_host::{Clock, Limits, Outcome, PluginVersion};
use serde_json::{Value, json};

use crate::harness::{host, host_with_clock, load, said, send, start, start_for};
use crate::plugins::{INTAKE, JS_INTAKE, PYTHON_INTAKE};

/// The conversation the three implementations share.
const CONVERSATION: &str = include_str!("../../plugins/intake/conversation.txt");

/// What one implementation did with the conversation and the tool calls,
/// one line each.
async fn transcript(path: &str) -> Vec<String> {
    let host = host();
    load(&host, path);
    let mut lines = Vec::new();
    let line = |turn: &agentbox_host::TurnReport| {
        format!(
            "turn {} {:?} said {:?} state {}",
            turn.turn,
            turn.outcome,
            said(turn),
            Value::Object(turn.state.clone())
        )
    };

    let greeting = start(&host, "intake", json!({})).await;
    lines.push(line(&greeting));
    for text in CONVERSATION.lines().filter(|text| !text.trim().is_empty()) {
        let turn = host.send_message(&greeting.session, text, None).await;
        lines.push(match turn {
            Ok(turn) => line(&turn),
            Err(err) => format!("`{text}` failed: {}", err.cause),
        });
    }

    let named = start(&host, "intake", json!({ "name": "Grace" })).await;
    lines.push(line(&named));
    let calls = [
        ("submit_form", json!({})),
        (
            "record_information",
            json!({ "field": "email", "value": " grace@navy.mil " }),
        ),
        (
            "record_information",
            json!({ "field": "reason", "value": "a compiler" }),
        ),
        (
            "record_information",
            json!({ "field": "age", "value": "85" }),
        ),
        ("record_information", json!({ "field": "name" })),
        (
            "record_information",
            json!({ "field": "name", "value": "   " }),
        ),
        ("submit_form", json!({})),
    ];
    for (tool, arguments) in calls {
        let call = host
            .call_tool(&named.session, tool, arguments.clone(), None)
            .await;
        lines.push(match call {
            Ok(report) => format!(
                "{tool} {arguments} -> {} state {}",
                report.result,
                Value::Object(report.turn.state)
            ),
            Err(err) => format!(
                "{tool} {arguments} refused ({}): {}",
                err.cause.kind(),
                err.cause
            ),
        });
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_intakes_hold_the_rust_intakes_conversation() {
    let rust = transcript(INTAKE).await;
    // The Rust intake's own tests pin these words; a few lines here show
    // that the transcript holds what it should, refusals included.
    assert!(
        rust[0].contains("Still needed: name, email, reason."),
        "{rust:#?}"
    );
    assert!(
        rust.iter()
            .any(|line| line.contains("refused (invalid-arguments)")),
        "{rust:#?}"
    );
    assert!(
        rust.iter()
            .any(|line| line.contains("refused (invalid-state)")),
        "{rust:#?}"
    );
    assert!(
        rust.last().unwrap().contains("\"submitted\":true"),
        "{rust:#?}"
    );
    for (language, path) in [("Python", PYTHON_INTAKE), ("JavaScript", JS_INTAKE)] {
        let other = transcript(path).await;
        for (at, (want, got)) in rust.iter().zip(&other).enumerate() {
            assert_eq!(got, want, "line {at} of the {language} intake's transcript");
        }
        assert_eq!(
            other.len(),
            rust.len(),
            "the {language} transcript's length"
        );
    }
}

/// The manifest either helper library derives from its intake class: the
/// Rust intake's tools and state rules, in the schemas the helpers write
/// (`Literal`, `s.enum` as an enum; each argument described; a required
/// argument unless it has a default or is optional; an optional state
/// field nullable).
pub fn derived_intake_manifest(version: &PluginVersion) {
    let manifest = &version.manifest;
    assert_eq!(
        (
            manifest.name.as_str(),
            manifest.version.as_str(),
            manifest.state_version
        ),
        ("intake", "0.1.0", 1)
    );
    let record = &manifest.tools[0];
    assert_eq!(record.name, "record_information");
    assert_eq!(
        record.description,
        "Records one field of the request, replacing what was there."
    );
    assert_eq!(
        serde_json::from_str::<Value>(&record.parameters).unwrap(),
        json!({
            "type": "object",
            "properties": {
                "field": { "enum": ["name", "email", "reason"], "description": "Which field to record." },
                "value": { "type": "string", "description": "Its value." },
            },
            "required": ["field", "value"],
            "additionalProperties": false,
        })
    );
    assert_eq!(manifest.tools[1].name, "submit_form");
    let state: Value = serde_json::from_str(manifest.state_schema.as_deref().unwrap()).unwrap();
    assert_eq!(
        state["properties"]["name"],
        json!({ "type": ["string", "null"], "minLength": 1, "maxLength": 200 })
    );
    assert_eq!(
        state["properties"]["turns"],
        json!({ "type": "integer", "minimum": 0 })
    );
}

/// What the notebook plugin of one language does with one conversation:
/// the helper library's state, KV with a TTL (on a test clock), notes,
/// refusals, failures, tools and `on_end`, the same in Python and
/// JavaScript. `exception` is how the unexpected exception of `crash`
/// fails the turn, and `trace` a line of its trace in the guest's output.
pub async fn notebook(path: &str, exception: &str, trace: &str) {
    let clock = Clock::manual(1_000_000);
    let limits = Limits {
        guest_output: true,
        ..Limits::default()
    };
    let host = host_with_clock(limits, Arc::new(MemoryStore::default()), clock.clone());
    load(&host, path);
    let first = start_for(&host, "notebook", Some("ada")).await;
    assert_eq!(said(&first), "Hello.");
    let id = first.session;
    let reply = |text: &'static str| {
        let host = host.clone();
        let id = id.clone();
        async move { said(&send(&host, &id, text).await) }
    };

    // Fields in session state, changed in place and saved.
    reply("note buy milk").await;
    reply("note call Bob").await;
    let notes = host.session(&id).await.unwrap().unwrap().state;
    assert_eq!(notes["notes"], json!(["buy milk", "call Bob"]));
    // `session.note` adds to the history after the caller's message.
    assert_eq!(
        reply("history").await,
        "user: note buy milk | system: the user noted: buy milk | user: note call Bob | system: the user noted: call Bob"
    );
    // The host's refusals arrive as `HostError` with their kind.
    assert_eq!(reply("set bad key").await, "refused (invalid)");
    assert_eq!(reply("bucket secrets").await, "refused (denied)");
    assert_eq!(reply("visits").await, "visit 1");
    assert_eq!(reply("visits").await, "visit 2");

    // `Fail` fails the turn with its message; any other exception with its
    // type and message, its trace in the guest's output. Neither commits.
    let before = host.session(&id).await.unwrap().unwrap();
    let failed = host.send_message(&id, "fail now", None).await.unwrap_err();
    assert_eq!(
        failed.cause.to_string(),
        "plugin returned an error: failed on purpose: now"
    );
    let crashed = host.send_message(&id, "crash", None).await.unwrap_err();
    assert_eq!(
        crashed.cause.to_string(),
        format!("plugin returned an error: {exception}")
    );
    let output = crashed.guest_output.as_deref().expect("the guest's output");
    assert!(output.contains(trace), "{output}");
    assert_eq!(host.session(&id).await.unwrap().unwrap(), before);

    // Tools: arguments from the schema (a list, an optional one), `requires`.
    let tagged = host
        .call_tool(
            &id,
            "add_note",
            json!({ "text": "tagged", "tags": ["work"] }),
            None,
        )
        .await
        .unwrap();
    assert_eq!(tagged.result, json!({ "notes": 3 }));
    // An optional argument sent as `null` is left out.
    let untagged = host
        .call_tool(
            &id,
            "add_note",
            json!({ "text": "untagged", "tags": null }),
            None,
        )
        .await
        .unwrap();
    assert_eq!(untagged.result, json!({ "notes": 4 }));
    let found = host
        .call_tool(&id, "find", json!({ "tag": "work" }), None)
        .await
        .unwrap();
    assert_eq!(found.result, json!(["tagged"]));
    let empty = start_for(&host, "notebook", Some("bob")).await.session;
    let early = host
        .call_tool(&empty, "find", json!({ "tag": "work" }), None)
        .await
        .unwrap_err();
    assert_eq!(early.cause.kind(), "precondition", "{early}");
    // A tool that returns nothing (a KV read of a missing key) answers null;
    // one that returns what is not JSON fails its call, saying so.
    let nothing = host
        .call_tool(&id, "recall", json!({ "key": "last_order" }), None)
        .await
        .unwrap();
    assert_eq!(nothing.result, Value::Null);
    let before = host.session(&id).await.unwrap().unwrap();
    let raw = host
        .call_tool(&id, "raw", json!({}), None)
        .await
        .unwrap_err();
    assert_eq!(raw.cause.kind(), "guest-error", "{raw}");
    assert!(
        raw.to_string()
            .contains("tool `raw` returned a value that is not JSON: "),
        "{raw}"
    );
    assert_eq!(host.session(&id).await.unwrap().unwrap(), before);

    // A registry call's refusal is a `CallError` whose detail is the
    // violations, or the state keys not set, as data.
    let refused = |said: String, kind: &str| {
        let detail = said
            .strip_prefix(&format!("refused ({kind}) "))
            .unwrap_or_else(|| panic!("{said:?} is no `{kind}` refusal"));
        serde_json::from_str::<Value>(detail).unwrap()
    };
    let violations = refused(
        reply("call notebook/add_note {\"text\": \"\"}").await,
        "invalid-arguments",
    );
    assert_eq!(violations[0]["pointer"], "/text", "{violations}");
    assert!(violations[0]["message"].is_string(), "{violations}");
    let early = said(&send(&host, &empty, "call notebook/find {\"tag\": \"work\"}").await);
    assert_eq!(refused(early, "precondition"), json!(["notes"]));
    assert_eq!(
        refused(reply("call nobody/tool {}").await, "denied"),
        "plugin `notebook` may not call `nobody/tool`: the policy's may_call for it does not grant it"
    );
    assert_eq!(
        reply("call notebook/find {\"tag\": \"work\"}").await,
        "[\"tagged\"]"
    );

    // KV outlives the session, until its TTL runs out.
    reply("call-me Ada").await;
    let ended = host.send_message(&id, "bye", None).await.unwrap();
    assert_eq!(ended.outcome, Outcome::End);
    assert_eq!(said(&ended), "4 notes kept.\nClosing the notebook (agent).");
    assert_eq!(
        said(&start_for(&host, "notebook", Some("ada")).await),
        "Hello again, Ada."
    );
    clock.advance(Duration::from_secs(61));
    assert_eq!(
        said(&start_for(&host, "notebook", Some("ada")).await),
        "Hello."
    );
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

/// What the notebook plugin of one language does with its HTTP commands,
/// the same in Python and JavaScript: a GET, a POST whose body a server
/// reading by `content-length` gets whole, server-sent events however they
/// are cut, and the refusals of the policy and of the helper.
pub async fn notebook_http(path: &str) {
    use crate::harness::host_with_policy;

    let address = echo_server().await;
    let by_length = crate::fetcher::content_length_server().await;
    let host = host_with_policy(
        &format!("[plugins.notebook.http]\nallow = [\"http://{address}\", \"http://{by_length}\"]"),
        &[path],
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
    // Each language spells JSON its own way: the body is compared as JSON.
    let posted = |said: String, head: &str| {
        let body = said
            .strip_prefix(head)
            .unwrap_or_else(|| panic!("{said:?} does not start with {head:?}"));
        assert_eq!(
            serde_json::from_str::<Value>(body).unwrap(),
            json!({ "notes": ["buy milk"] })
        );
    };
    posted(
        reply(format!("post http://{address}/echo")).await,
        "201 application/json ",
    );
    // Server-sent events are read as they arrive, however they are cut.
    let streamed = send(&host, &id, &format!("stream http://{address}/events")).await;
    assert_eq!(
        streamed.said,
        ["message: one", "note: two\nlines", "message: three"]
    );
    // A server that reads the body by its declared length gets all of it.
    posted(
        reply(format!("post http://{by_length}/notes")).await,
        "200 - ",
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
