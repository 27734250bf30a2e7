//! `agentbox serve` as a separate process on a free port, driven by a real
//! HTTP client: the session API with its streamed replies and JSON errors,
//! the admin API with its token, hot-swap and roll-back, activations that
//! reach every server on one Redis, a clean stop on SIGTERM, no committed
//! turn lost to SIGKILL (nor an event missing or extra in the log), memory
//! back at its baseline after hostile turns, and `agentbox sessions`.

mod common;

use std::path::{Path, PathBuf};

use common::{Server, agent, agentbox, declare_oversized_body, json_of, plugin_dir, request};
use serde_json::{Value, json};

/// The admin token of the servers these tests start: as long as `serve` asks.
const ADMIN_TOKEN: &str = "an-admin-token-of-the-serve-tests";

// Shared with the agentbox-tests crate; these tests use only part of it.
#[allow(dead_code)]
#[path = "../../../tests/src/redis_server.rs"]
mod redis_server;

/// The machine's cores, shared by the tests of this file, which load them;
/// a test whose limits are tight for a machine under load (a turn that
/// touches 64 MiB within its deadline) takes them alone.
static CORES: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// A share of the cores, for a test that may run beside others.
fn shared_cores() -> std::sync::RwLockReadGuard<'static, ()> {
    CORES
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn the_session_api_streams_replies_and_answers_mistakes_with_json_errors() {
    let _cores = shared_cores();
    let data = tempfile::tempdir().unwrap();
    let intake = plugin_dir("intake");
    let server = Server::start(data.path(), &["--plugin", intake.to_str().unwrap()]);

    let (status, body) = request("GET", &server.url("/healthz"), None, None);
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    let (status, body) = request(
        "POST",
        &server.url("/v1/sessions"),
        Some(r#"{"plugin": "intake", "user_id": "ada", "variables": {"name": "Grace"}}"#),
        None,
    );
    assert_eq!(status, 201, "{body}");
    let started = json_of(&body);
    let id = started["session"].as_str().unwrap().to_owned();
    assert_eq!(started["turn"], 0);
    assert_eq!(started["state"]["name"], "Grace");

    let (status, body) = request(
        "POST",
        &server.url(&format!("/v1/sessions/{id}/messages")),
        Some(r#"{"text": "my name is Ada"}"#),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let events: Vec<Value> = body.lines().map(json_of).collect();
    assert_eq!(
        events[..2],
        [
            json!({ "event": "say", "text": "Noted your name." }),
            json!({ "event": "say", "text": "Still needed: email, reason." })
        ]
    );
    assert_eq!(events[2]["event"], "committed");
    assert_eq!(events[2]["turn"], 1);
    assert_eq!(events[2]["state"]["name"], "Ada");

    let (status, body) = request(
        "GET",
        &server.url(&format!("/v1/sessions/{id}")),
        None,
        None,
    );
    assert_eq!(status, 200);
    let record = json_of(&body);
    assert_eq!(
        (record["turn"].clone(), record["state"]["name"].clone()),
        (json!(1), json!("Ada"))
    );
    let (_, body) = request(
        "GET",
        &server.url(&format!("/v1/sessions/{id}/history?last=1")),
        None,
        None,
    );
    assert_eq!(
        json_of(&body),
        json!([{ "role": "assistant", "content": "Noted your name.\nStill needed: email, reason." }])
    );

    let (_, body) = request("GET", &server.url("/v1/tools"), None, None);
    let addresses: Vec<Value> = json_of(&body)
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["address"].clone())
        .collect();
    assert!(
        addresses.contains(&json!("intake/record_information")),
        "{addresses:?}"
    );

    let (status, body) = request(
        "POST",
        &server.url(&format!("/v1/sessions/{id}/tools/record_information")),
        Some(r#"{"field": "age", "value": "x"}"#),
        None,
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(json_of(&body)["kind"], "invalid-arguments");

    // The caller's mistakes are 4xx with a JSON body naming them.
    for (method, path, body, expected, kind) in [
        (
            "POST",
            "/v1/sessions/nope/messages".to_owned(),
            Some(r#"{"text": "hi"}"#),
            404,
            "not-found",
        ),
        (
            "POST",
            "/v1/sessions".to_owned(),
            Some(r#"{"plugin": "nope"}"#),
            404,
            "plugin-not-loaded",
        ),
        (
            "POST",
            "/v1/sessions".to_owned(),
            Some("not json"),
            400,
            "bad-request",
        ),
        (
            "POST",
            format!("/v1/sessions/{id}/messages"),
            Some(r#"{"txt": "hi"}"#),
            422,
            "bad-request",
        ),
        (
            "POST",
            format!("/v1/sessions/{id}/tools/nope"),
            Some("{}"),
            404,
            "unknown-tool",
        ),
        (
            "GET",
            "/v1/sessions/nope".to_owned(),
            None,
            404,
            "not-found",
        ),
        ("GET", "/v1/nothing".to_owned(), None, 404, "not-found"),
    ] {
        let (status, text) = request(method, &server.url(&path), body, None);
        assert_eq!(status, expected, "{method} {path}: {text}");
        let error = json_of(&text);
        assert_eq!(error["kind"], kind, "{method} {path}: {text}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }

    // A body declared over the limit is refused before it is read.
    let (status, text) = declare_oversized_body(&server, &format!("/v1/sessions/{id}/messages"));
    assert_eq!(status, 413, "{text}");
    assert_eq!(json_of(&text)["kind"], "too-large", "{text}");
    let (status, _) = request(
        "DELETE",
        &server.url(&format!("/v1/sessions/{id}")),
        None,
        None,
    );
    assert_eq!(status, 200);
    let (status, body) = request(
        "POST",
        &server.url(&format!("/v1/sessions/{id}/messages")),
        Some(r#"{"text": "hello?"}"#),
        None,
    );
    assert_eq!(
        (status, json_of(&body)["kind"].clone()),
        (409, json!("ended"))
    );

    assert_clean_stop(server.terminate());
}

#[test]
fn the_admin_api_needs_its_token_swaps_versions_and_refuses_a_bad_one() {
    let _cores = shared_cores();
    let data = tempfile::tempdir().unwrap();
    let (v2, v1) = (plugin_dir("counter-v2"), plugin_dir("counter"));
    let server = Server::start(
        data.path(),
        &[
            "--plugin",
            v2.to_str().unwrap(),
            "--plugin",
            v1.to_str().unwrap(),
            "--admin-token",
            ADMIN_TOKEN,
        ],
    );
    let plugins = server.url("/v1/admin/plugins");
    for token in [None, Some("wrong"), Some("")] {
        let (status, body) = request("GET", &plugins, None, token);
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(json_of(&body)["kind"], "unauthorized");
        assert!(!body.contains("counter"), "{body}");
    }
    let (status, body) = request("GET", &plugins, None, Some(ADMIN_TOKEN));
    assert_eq!(status, 200);
    assert_eq!(json_of(&body)[0]["active"]["version"], "0.1.0");

    let (_, body) = request(
        "POST",
        &server.url("/v1/sessions"),
        Some(r#"{"plugin": "counter"}"#),
        None,
    );
    let id = json_of(&body)["session"].as_str().unwrap().to_owned();
    let tick = |server: &Server| {
        let (status, body) = request(
            "POST",
            &server.url(&format!("/v1/sessions/{id}/messages")),
            Some(r#"{"text": "tick"}"#),
            None,
        );
        assert_eq!(status, 200, "{body}");
        json_of(body.lines().last().unwrap())
    };
    assert_eq!(tick(&server)["state"], json!({ "count": 1 }));

    // Roll back to the version loaded before: 0.2.0, which migrates the session.
    let (status, body) = request(
        "POST",
        &server.url("/v1/admin/plugins/counter/rollback"),
        None,
        Some(ADMIN_TOKEN),
    );
    assert_eq!(
        (status, json_of(&body)["version"].clone()),
        (200, json!("0.2.0")),
        "{body}"
    );
    assert_eq!(tick(&server)["state"], json!({ "total": 2 }));

    // Something that is not a plugin changes nothing.
    let (status, body) = request(
        "POST",
        &plugins,
        Some("this is not wasm"),
        Some(ADMIN_TOKEN),
    );
    assert_eq!(
        (status, json_of(&body)["kind"].clone()),
        (422, json!("invalid-plugin")),
        "{body}"
    );
    // Nor does a core module, a component of another world, an invalid
    // manifest, or a plugin that traps in `describe` (as `counter` 9.9.9).
    let mut refused = vec![(
        "a core module".to_owned(),
        b"\0asm\x01\0\0\0".to_vec(),
        "not a component",
    )];
    for (plugin, reason) in [
        ("hostile/other-world", "not an agentbox plugin"),
        ("hostile/bad-name", "invalid manifest"),
        ("hostile/describe-trap", "`describe()` failed"),
    ] {
        // `inspect` builds the plugin, then refuses it.
        let (ok, _, _) = agentbox(
            &[
                "inspect",
                plugin_dir(plugin).to_str().unwrap(),
                "--data-dir",
                data.path().to_str().unwrap(),
            ],
            &[],
        );
        assert!(!ok, "{plugin} loads");
        let name = plugin.trim_start_matches("hostile/");
        let bytes = std::fs::read(built_component(name)).unwrap();
        refused.push((plugin.to_owned(), bytes, reason));
    }
    for (plugin, bytes, reason) in refused {
        let request = ureq::http::Request::builder()
            .method("POST")
            .uri(&plugins)
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(bytes)
            .unwrap();
        let mut response = agent().run(request).unwrap();
        let body = response.body_mut().read_to_string().unwrap();
        assert_eq!(response.status(), 422, "{plugin}: {body}");
        let error = json_of(&body);
        assert_eq!(error["kind"], "invalid-plugin", "{plugin}: {body}");
        assert!(
            error["message"].as_str().unwrap().contains(reason),
            "{plugin}: {body}"
        );
    }
    let (_, body) = request("GET", &plugins, None, Some(ADMIN_TOKEN));
    assert_eq!(json_of(&body)[0]["active"]["version"], "0.2.0");
    assert_eq!(json_of(&body)[0]["versions"].as_array().unwrap().len(), 2);
    assert_eq!(tick(&server)["state"], json!({ "total": 3 }));

    let (status, body) = request(
        "POST",
        &server.url("/v1/admin/plugins/nope/rollback"),
        None,
        Some(ADMIN_TOKEN),
    );
    assert_eq!(
        (status, json_of(&body)["kind"].clone()),
        (409, json!("no-previous-version"))
    );

    // Sessions the active version could not migrate: none here (the
    // counter tests pin one), and a retry of none.
    let migrations = server.url("/v1/admin/plugins/counter/migrations");
    let (status, body) = request("GET", &migrations, None, Some(ADMIN_TOKEN));
    assert_eq!((status, json_of(&body)), (200, json!({ "pinned": [] })));
    let (status, body) = request(
        "POST",
        &format!("{migrations}/retry"),
        None,
        Some(ADMIN_TOKEN),
    );
    assert_eq!((status, json_of(&body)), (200, json!({ "retried": 0 })));
    let (status, _) = request("POST", &format!("{migrations}/retry"), None, None);
    assert_eq!(status, 401);
    let (status, body) = request(
        "GET",
        &server.url("/v1/admin/plugins/nope/migrations"),
        None,
        Some(ADMIN_TOKEN),
    );
    assert_eq!(
        (status, json_of(&body)["kind"].clone()),
        (404, json!("not-found"))
    );
}

/// Sends `text` to session `id` and returns the reply's events, or what
/// went wrong: a transport error, a status other than 200, or an `error`
/// event.
fn send(base: &str, id: &str, text: &str) -> Result<Vec<Value>, String> {
    let url = format!("{base}/v1/sessions/{id}/messages");
    let body = json!({ "text": text }).to_string();
    let request = ureq::http::Request::builder()
        .method("POST")
        .uri(&url)
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let mut response = agent().run(request).map_err(|err| err.to_string())?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|err| err.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {text}"));
    }
    let events: Vec<Value> = text.lines().map(json_of).collect();
    match events.last() {
        Some(last) if last["event"] == "committed" => Ok(events),
        _ => Err(text),
    }
}

/// The path of a plugin's component, built by an earlier `agentbox` command.
fn built_component(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| plugin_dir("target"));
    let path = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// Builds the plugin folder `dir` (with `agentbox inspect`, which also
/// checks it) and returns the path of its component.
fn build(dir: &Path, data: &Path) -> PathBuf {
    let (ok, _, stderr) = agentbox(
        &[
            "inspect",
            dir.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    built_component(dir.file_name().unwrap().to_str().unwrap())
}

/// Reads text frames from `socket` until one has `event` among `last`.
fn read_until(
    socket: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    last: &[&str],
) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        match socket.read().unwrap() {
            tungstenite::Message::Text(text) => {
                let event = json_of(&text);
                let done = last.iter().any(|name| event["event"] == *name);
                events.push(event);
                if done {
                    return events;
                }
            }
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

#[test]
fn a_websocket_carries_a_conversation_both_ways_and_answers_bad_frames() {
    let _cores = shared_cores();
    use tungstenite::Message as Frame;

    let data = tempfile::tempdir().unwrap();
    let intake = plugin_dir("intake");
    let server = Server::start(data.path(), &["--plugin", intake.to_str().unwrap()]);
    let ws = server.base.replace("http://", "ws://");

    match tungstenite::connect(format!("{ws}/v1/sessions/nope/ws")) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("a socket on an unknown session: {other:?}"),
    }
    let id = server.start_session("intake");
    let (status, body) = request(
        "GET",
        &server.url(&format!("/v1/sessions/{id}/ws")),
        None,
        None,
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(json_of(&body)["kind"], "bad-request");

    let (mut socket, _) = tungstenite::connect(format!("{ws}/v1/sessions/{id}/ws")).unwrap();
    let message = json!({ "type": "message", "text": "my name is Ada" });
    socket.send(Frame::text(message.to_string())).unwrap();
    let events = read_until(&mut socket, &["committed", "error"]);
    assert_eq!(
        events[..2],
        [
            json!({ "event": "say", "text": "Noted your name." }),
            json!({ "event": "say", "text": "Still needed: email, reason." })
        ]
    );
    assert_eq!(events[2]["turn"], 1);
    assert_eq!(events[2]["state"]["name"], "Ada");

    // Bad frames are answered, and the socket stays open.
    socket.send(Frame::text("not json")).unwrap();
    let refused = read_until(&mut socket, &["error"]);
    assert_eq!(refused[0]["kind"], "bad-request", "{refused:?}");
    socket.send(Frame::binary(vec![1, 2, 3])).unwrap();
    let refused = read_until(&mut socket, &["error"]);
    assert_eq!(refused[0]["kind"], "bad-request", "{refused:?}");
    let unknown = json!({ "type": "tool", "tool": "nope" });
    socket.send(Frame::text(unknown.to_string())).unwrap();
    let refused = read_until(&mut socket, &["error"]);
    assert_eq!(refused[0]["kind"], "unknown-tool", "{refused:?}");

    let tool = json!({
        "type": "tool",
        "tool": "record_information",
        "arguments": { "field": "email", "value": "ada@example.com" }
    });
    socket.send(Frame::text(tool.to_string())).unwrap();
    let events = read_until(&mut socket, &["tool-result", "error"]);
    let result = events.last().unwrap();
    assert_eq!(
        (result["event"].clone(), result["turn"].clone()),
        (json!("tool-result"), json!(2)),
        "{events:?}"
    );

    socket
        .send(Frame::text(json!({ "type": "end" }).to_string()))
        .unwrap();
    let events = read_until(&mut socket, &["committed", "error"]);
    let ended = events.last().unwrap();
    assert_eq!(ended["turn"], 3, "{events:?}");
    assert_eq!(ended["outcome"], json!({ "outcome": "end" }));
    // The server closes the socket once the session has ended.
    match socket.read() {
        Ok(Frame::Close(_)) | Err(_) => {}
        Ok(other) => panic!("after the end: {other:?}"),
    }
    let (_, body) = request(
        "GET",
        &server.url(&format!("/v1/sessions/{id}")),
        None,
        None,
    );
    let record = json_of(&body);
    assert_eq!(
        (record["status"].clone(), record["turn"].clone()),
        (json!("ended"), json!(3))
    );
}

/// The value of the sample `name` in Prometheus text, if present.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_count_turns_errors_limits_and_kv_and_the_openapi_document_names_real_routes() {
    let _cores = shared_cores();
    let data = tempfile::tempdir().unwrap();
    let (counter, misbehave, profile) = (
        plugin_dir("counter"),
        plugin_dir("hostile/misbehave"),
        plugin_dir("profile"),
    );
    let server = Server::start(
        data.path(),
        &[
            "--plugin",
            counter.to_str().unwrap(),
            "--plugin",
            misbehave.to_str().unwrap(),
            "--plugin",
            profile.to_str().unwrap(),
            "--deadline-ms",
            "300",
        ],
    );
    let id = server.start_session("counter");
    for _ in 0..2 {
        send(&server.base, &id, "tick").unwrap();
    }
    let hostile = server.start_session("misbehave");
    let err = send(&server.base, &hostile, "loop").unwrap_err();
    assert!(err.contains("\"kind\":\"deadline\""), "{err}");
    let (status, _) = request(
        "POST",
        &server.url("/v1/sessions"),
        Some(r#"{"plugin": "made-up-name"}"#),
        None,
    );
    assert_eq!(status, 404);
    let (status, body) = request(
        "POST",
        &server.url("/v1/sessions"),
        Some(r#"{"plugin": "profile", "user_id": "ada"}"#),
        None,
    );
    assert_eq!(status, 201, "{body}");

    let (status, metrics) = request("GET", &server.url("/metrics"), None, None);
    assert_eq!(status, 200);
    for (name, expected) in [
        (
            r#"agentbox_turns_total{plugin="counter",kind="message",outcome="ok"}"#,
            2.0,
        ),
        (
            r#"agentbox_turns_total{plugin="counter",kind="start",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"agentbox_turns_total{plugin="misbehave",kind="message",outcome="failed"}"#,
            1.0,
        ),
        (
            r#"agentbox_turn_errors_total{plugin="misbehave",kind="deadline"}"#,
            1.0,
        ),
        (
            r#"agentbox_limit_trips_total{plugin="misbehave",limit="deadline"}"#,
            1.0,
        ),
        (
            r#"agentbox_turns_total{plugin="-",kind="start",outcome="failed"}"#,
            1.0,
        ),
        (
            r#"agentbox_turn_errors_total{plugin="-",kind="plugin-not-loaded"}"#,
            1.0,
        ),
        (
            r#"agentbox_turn_duration_seconds_count{plugin="counter"}"#,
            3.0,
        ),
        (r#"agentbox_live_sessions{plugin="counter"}"#, 1.0),
        (r#"agentbox_live_sessions{plugin="misbehave"}"#, 1.0),
        (
            r#"agentbox_kv_operations_total{plugin="profile",function="open"}"#,
            1.0,
        ),
        ("agentbox_instances_in_use", 0.0),
    ] {
        assert_eq!(
            sample(&metrics, name),
            Some(expected),
            "{name} in\n{metrics}"
        );
    }
    // A name the caller made up never becomes a label.
    assert!(!metrics.contains("made-up-name"), "{metrics}");

    // Every endpoint the OpenAPI document names is routed, and every error
    // it answers is JSON with a kind.
    let (status, body) = request("GET", &server.url("/v1/openapi.json"), None, None);
    assert_eq!(status, 200);
    let openapi = json_of(&body);
    let paths = openapi["paths"].as_object().unwrap();
    assert!(paths.len() >= 12, "{paths:?}");
    for (path, operations) in paths {
        let concrete = path
            .replace("{id}", &id)
            .replace("{tool}", "nope")
            .replace("{name}", "counter")
            .replace("{user}", "ada")
            .replace("{bucket}", "global")
            .replace("{key}", "k");
        for method in ["get", "post", "delete"] {
            if operations.get(method).is_none() {
                continue;
            }
            let body = (method == "post").then_some("{}");
            let (status, text) =
                request(&method.to_uppercase(), &server.url(&concrete), body, None);
            assert_ne!(status, 405, "{method} {path}");
            if status >= 400 {
                let error = json_of(&text);
                assert_ne!(
                    error["message"], "no such endpoint",
                    "{method} {path} is not routed"
                );
                assert!(error["kind"].is_string(), "{method} {path}: {text}");
            }
        }
    }
}

/// What one client of a load test saw.
#[derive(Debug, Default)]
struct Seen {
    session: String,
    committed: u64,
    failures: Vec<String>,
    /// The state of each committed turn, in order.
    states: Vec<Value>,
}

/// Starts `clients` threads, each with a session of `plugin`, sending `tick`
/// to each of `servers` in turn until `stop` is set or a request fails to
/// reach a server.
fn load(
    servers: &[&Server],
    plugin: &str,
    clients: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<Seen>> {
    (0..clients)
        .map(|_| {
            let session = servers[0].start_session(plugin);
            let bases: Vec<String> = servers.iter().map(|server| server.base.clone()).collect();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = Seen {
                    session,
                    ..Seen::default()
                };
                for base in bases.iter().cycle() {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    match send(base, &seen.session, "tick") {
                        Ok(events) => {
                            seen.committed += 1;
                            seen.states.push(events.last().unwrap()["state"].clone());
                        }
                        Err(err) if err.contains("Connection refused") => break,
                        Err(err) => {
                            seen.failures.push(err);
                            if seen.failures.len() > 3 {
                                break;
                            }
                        }
                    }
                }
                seen
            })
        })
        .collect()
}

/// Stops the clients `load` started and returns what each saw.
fn stop_load(
    stop: &std::sync::atomic::AtomicBool,
    clients: Vec<std::thread::JoinHandle<Seen>>,
) -> Vec<Seen> {
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    clients
        .into_iter()
        .map(|client| client.join().unwrap())
        .collect()
}

/// The admin API's entry for `plugin`.
fn admin_entry(server: &Server, token: &str, plugin: &str) -> Value {
    let (status, body) = request("GET", &server.url("/v1/admin/plugins"), None, Some(token));
    assert_eq!(status, 200, "{body}");
    json_of(&body)
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["name"] == plugin)
        .cloned()
        .unwrap_or_else(|| panic!("no {plugin} in {body}"))
}

/// The whole history of `session` on `server`: the most one read returns,
/// and asserted to be less, so that no message was left out of it.
fn whole_history(server: &Server, session: &str) -> Vec<Value> {
    let (_, body) = request(
        "GET",
        &server.url(&format!("/v1/sessions/{session}/history?last=1000")),
        None,
        None,
    );
    let history = json_of(&body).as_array().unwrap().clone();
    assert!(history.len() < 1000, "{session}: the history fills a page");
    history
}

/// Checks what `clients` saw through a swap from counter 0.1.0 to 0.2.0 and
/// back: no failed turn; each reply from the version active when it ran,
/// never back to an earlier phase; every committed turn in the history
/// (read from `server`). Returns how many sessions migrated to version 2,
/// and how many back.
fn check_swapped_clients(seen: &[Seen], server: &Server) -> (usize, usize) {
    for client in seen {
        assert!(
            client.failures.is_empty(),
            "{}: {:?}",
            client.session,
            client.failures
        );
        // Each reply came from the version active when it ran: v1's
        // `count`, then v2's `total`, which migrated v1's count, then v1
        // again, which keeps v2's state as it is (its `migrate` is the
        // identity) and counts again from 1.
        let mut phase = 0;
        for (turn, state) in (1..).zip(&client.states) {
            let phase_of = match (state.get("count"), state.get("total")) {
                (Some(_), None) => 0,
                (None, Some(_)) => 1,
                (Some(_), Some(_)) => 2,
                (None, None) => panic!("turn {turn}: {state}"),
            };
            assert!(
                phase_of >= phase,
                "{}: turn {turn}: {state}",
                client.session
            );
            phase = phase_of;
            match phase {
                0 => assert_eq!(state["count"], turn),
                1 => assert_eq!(state["total"], turn),
                _ => assert_eq!(
                    state["total"].as_u64().unwrap() + state["count"].as_u64().unwrap(),
                    turn
                ),
            }
        }
        // Every committed turn is in the history.
        let asked = whole_history(server, &client.session)
            .iter()
            .filter(|message| message["role"] == "user")
            .count();
        assert_eq!(asked as u64, client.committed, "{}", client.session);
    }
    let migrated_to_v2 = seen
        .iter()
        .filter(|client| {
            client
                .states
                .iter()
                .any(|state| state.get("total").is_some())
        })
        .count();
    let migrated_back = seen
        .iter()
        .filter(|client| {
            client
                .states
                .iter()
                .any(|state| state.get("count").is_some() && state.get("total").is_some())
        })
        .count();
    (migrated_to_v2, migrated_back)
}

#[test]
fn a_swap_under_load_fails_no_turn_migrates_each_session_once_and_rolls_back() {
    let _cores = shared_cores();
    use std::sync::atomic::AtomicBool;

    let data = tempfile::tempdir().unwrap();
    let counter = plugin_dir("counter");
    let server = Server::start(
        data.path(),
        &[
            "--plugin",
            counter.to_str().unwrap(),
            "--admin-token",
            ADMIN_TOKEN,
        ],
    );
    let env = [
        ("AGENTBOX_SERVER", server.base.as_str()),
        ("AGENTBOX_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    // Built before the load starts: counter 0.2.0 refuses to migrate counts
    // of 100 or more, which a slow swap would let the sessions reach.
    let v2 = build(&plugin_dir("counter-v2"), data.path());
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let clients = load(&[&server], "counter", 8, &stop);
    let turns_ok = |server: &Server| {
        admin_entry(server, ADMIN_TOKEN, "counter")["stats"]["turns_ok"]
            .as_u64()
            .unwrap()
    };
    // 8 starts and some turns on version 1.
    let wait_for_turns = |server: &Server, turns: u64| {
        while turns_ok(server) < turns {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    wait_for_turns(&server, 8 + 40);
    let (ok, stdout, stderr) = agentbox(&["plugins", "load", v2.to_str().unwrap()], &env);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.starts_with("counter 0.2.0 (sha256:") && stdout.trim_end().ends_with("active"),
        "{stdout}"
    );
    wait_for_turns(&server, turns_ok(&server) + 80);
    let (ok, stdout, stderr) = agentbox(&["plugins", "rollback", "counter"], &env);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.starts_with("counter 0.1.0"), "{stdout}");
    wait_for_turns(&server, turns_ok(&server) + 40);
    let seen = stop_load(&stop, clients);

    let (migrated_to_v2, migrated_back) = check_swapped_clients(&seen, &server);
    // Most sessions ran turns on each of the three versions (a session
    // that was between turns at a swap skips nothing: it runs its next
    // turn on the new version).
    let stats = &admin_entry(&server, ADMIN_TOKEN, "counter")["stats"];
    assert_eq!(stats["migrations_failed"], 0, "{stats}");
    assert_eq!(stats["turns_failed"], 0, "{stats}");
    assert_eq!(stats["swaps"], 2, "{stats}");
    // Once to state version 2, once back to 1: never twice the same way.
    assert_eq!(
        stats["migrations_ok"].as_u64().unwrap(),
        (migrated_to_v2 + migrated_back) as u64,
        "{stats}"
    );
    assert_eq!(migrated_to_v2, 8);

    // A new session starts on the version rolled back to.
    let id = server.start_session("counter");
    let events = send(&server.base, &id, "tick").unwrap();
    assert_eq!(events.last().unwrap()["state"], json!({ "count": 1 }));
}

#[test]
fn sigterm_under_load_lets_running_turns_finish_and_loses_no_committed_turn() {
    let _cores = shared_cores();
    let data = tempfile::tempdir().unwrap();
    assert_clean_stop(stopped_under_load(data.path(), &[], "TERM"));
}

/// Checks that a server stopped by SIGTERM exited 0 and said so last.
fn assert_clean_stop((status, stderr): (std::process::ExitStatus, Vec<String>)) {
    assert!(status.success(), "{status}: {stderr:?}");
    assert_eq!(
        stderr.last().map(String::as_str),
        Some("agentbox: stopped"),
        "{stderr:?}"
    );
}

#[test]
fn sigkill_under_load_on_sqlite_leaves_every_session_at_a_committed_turn() {
    let _cores = shared_cores();
    use std::os::unix::process::ExitStatusExt as _;

    let data = tempfile::tempdir().unwrap();
    let (status, _) = stopped_under_load(data.path(), &[], "KILL");
    assert_eq!(status.signal(), Some(9), "{status}");
}

#[test]
fn sigkill_under_load_on_redis_leaves_every_session_at_a_committed_turn() {
    let _cores = shared_cores();
    use std::os::unix::process::ExitStatusExt as _;

    let Some(redis) = redis_server::RedisServer::start() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let (status, _) = stopped_under_load(data.path(), &["--store", redis.url()], "KILL");
    assert_eq!(status.signal(), Some(9), "{status}");
}

/// Serves counter sessions to 8 clients with `args`, stops the server with
/// `signal` once 80 turns committed, starts it again and checks that every
/// session is at a committed turn: every turn its client saw, and at most
/// the one in flight, each whole (state, turn number and history agree).
/// Returns how the first server ended, and the rest of its stderr.
fn stopped_under_load(
    data: &Path,
    args: &[&str],
    signal: &str,
) -> (std::process::ExitStatus, Vec<String>) {
    use std::sync::atomic::AtomicBool;

    let counter = plugin_dir("counter");
    let args = [args, &["--plugin", counter.to_str().unwrap()]].concat();
    let server = Server::start(data, &args);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let clients = load(&[&server], "counter", 8, &stop);
    // Let the clients commit some turns, then stop the server under load.
    let metric = r#"agentbox_turns_total{plugin="counter",kind="message",outcome="ok"}"#;
    while sample(
        &request("GET", &server.url("/metrics"), None, None).1,
        metric,
    ) < Some(80.0)
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let stopped = server.signal(signal);
    let seen: Vec<Seen> = clients
        .into_iter()
        .map(|client| client.join().unwrap())
        .collect();

    let server = Server::start(data, &args);
    for client in seen {
        assert!(client.committed > 0, "{client:?}");
        // A request cut off by the stop may have failed on the client's side
        // (the connection closed), never with a turn error.
        for failure in &client.failures {
            assert!(!failure.contains("\"event\":\"error\""), "{failure}");
        }
        let (_, body) = request(
            "GET",
            &server.url(&format!("/v1/sessions/{}", client.session)),
            None,
            None,
        );
        let record = json_of(&body);
        let turn = record["turn"].as_u64().unwrap();
        // Every turn the client saw committed is there; at most the one in
        // flight when its connection closed committed unseen.
        assert!(
            (client.committed..=client.committed + 1).contains(&turn),
            "{}: the client saw {} turns, the store has {turn}",
            client.session,
            client.committed
        );
        assert_eq!(record["state"]["count"], turn, "{record}");
        let asked = whole_history(&server, &client.session).len() as u64;
        assert_eq!(asked, turn, "no half-applied turn in {}", client.session);
        // The log holds one event per commit, no more, and replaying its
        // patches from turn 0 gives exactly the stored state.
        let (_, body) = request(
            "GET",
            &server.url(&format!(
                "/v1/sessions/{}/events?limit=1000",
                client.session
            )),
            None,
            None,
        );
        let events = json_of(&body)["events"].as_array().unwrap().clone();
        let turns: Vec<u64> = events
            .iter()
            .map(|event| event["turn"].as_u64().unwrap())
            .collect();
        assert_eq!(turns, (0..=turn).collect::<Vec<_>>(), "{}", client.session);
        let (_, body) = request(
            "GET",
            &server.url(&format!(
                "/v1/sessions/{}/state?turn={turn}",
                client.session
            )),
            None,
            None,
        );
        assert_eq!(
            json_of(&body)["state"],
            record["state"],
            "{}",
            client.session
        );
    }
    stopped
}

#[test]
fn settings_come_from_a_config_file_and_watch_loads_a_finished_file_only() {
    let _cores = shared_cores();
    let data = tempfile::tempdir().unwrap();
    build(&plugin_dir("counter-v2"), data.path());
    build(&plugin_dir("counter"), data.path());
    let plugins = data.path().join("watched");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(built_component("counter"), plugins.join("counter.wasm")).unwrap();
    let config = data.path().join("agentbox.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:1\"\nplugin_dir = {:?}\nwatch = true\nadmin_token = \"an-admin-token-from-the-config-file\"\n",
            plugins.to_str().unwrap()
        ),
    )
    .unwrap();
    // `--listen 127.0.0.1:0` from the flags wins over the file's port 1.
    let server = Server::start(data.path(), &["--config", config.to_str().unwrap()]);
    let entry = admin_entry(&server, "an-admin-token-from-the-config-file", "counter");
    assert_eq!(entry["active"]["version"], "0.1.0");
    let id = server.start_session("counter");
    assert_eq!(
        send(&server.base, &id, "tick").unwrap().last().unwrap()["state"],
        json!({ "count": 1 })
    );

    // A file that stops changing half-written does not load: v1 keeps serving.
    let v2 = std::fs::read(built_component("counter-v2")).unwrap();
    let target = plugins.join("counter-v2.wasm");
    std::fs::write(&target, &v2[..v2.len() / 2]).unwrap();
    let refused = server.wait_for("counter-v2.wasm changed");
    assert!(
        refused.contains("does not load, so the active version keeps serving"),
        "{refused}"
    );
    assert_eq!(
        send(&server.base, &id, "tick").unwrap().last().unwrap()["state"],
        json!({ "count": 2 })
    );

    std::fs::write(&target, &v2).unwrap();
    let loaded = server.wait_for("counter-v2.wasm changed");
    assert!(
        loaded.contains("plugin counter 0.2.0 is active"),
        "{loaded}"
    );
    assert_eq!(
        send(&server.base, &id, "tick").unwrap().last().unwrap()["state"],
        json!({ "total": 3 })
    );
    drop(server);

    // A config file with a mistake is refused, naming it.
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nwatched = true\n").unwrap();
    let (ok, _, stderr) = agentbox(&["serve", "--config", config.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(
        stderr.contains("is invalid") && stderr.contains("unknown field `watched`"),
        "{stderr}"
    );
}

/// The plugin folder is written by others than the operator: it loads
/// regular files only (saying once of each other entry that it is refused),
/// no bigger than an upload, and a FIFO never holds the watcher or the stop.
#[test]
fn the_plugin_folder_loads_regular_files_only_and_never_blocks_the_stop() {
    let _cores = shared_cores();
    let data = tempfile::tempdir().unwrap();
    build(&plugin_dir("counter"), data.path());
    let outside = data.path().join("outside.wasm");
    std::fs::copy(built_component("counter"), &outside).unwrap();
    let plugins = data.path().join("watched");
    std::fs::create_dir(&plugins).unwrap();
    std::os::unix::fs::symlink(&outside, plugins.join("linked.wasm")).unwrap();
    let mkfifo = |name: &str| {
        let made = std::process::Command::new("mkfifo")
            .arg(plugins.join(name))
            .status()
            .unwrap();
        assert!(made.success());
    };
    mkfifo("fifo.wasm");
    let server = Server::start_with_env(
        data.path(),
        &["--plugin-dir", plugins.to_str().unwrap(), "--watch"],
        &[("AGENTBOX_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    server.wait_for("no plugins loaded");

    mkfifo("late.wasm");
    let big = std::fs::File::create(plugins.join("big.wasm")).unwrap();
    big.set_len((64 << 20) + 1).unwrap();
    let lines = server.lines_until("big.wasm changed");
    let refused = lines.last().unwrap();
    assert!(
        refused.contains("does not load") && refused.contains("over the limit of 67108864 bytes"),
        "{refused}"
    );
    let said = |lines: &[String], name: &str| {
        lines
            .iter()
            .filter(|line| line.contains("not a regular file") && line.contains(name))
            .count()
    };
    assert_eq!(said(&lines, "late.wasm"), 1, "{lines:#?}");
    // Another second of watching says none of them again.
    let bigger = std::fs::File::create(plugins.join("bigger.wasm")).unwrap();
    bigger.set_len((64 << 20) + 2).unwrap();
    let lines = server.lines_until("bigger.wasm changed");
    for name in ["linked.wasm", "fifo.wasm", "late.wasm"] {
        assert_eq!(said(&lines, name), 0, "{lines:#?}");
    }
    let (status, body) = request(
        "GET",
        &server.url("/v1/admin/plugins"),
        None,
        Some(ADMIN_TOKEN),
    );
    assert_eq!((status, json_of(&body)), (200, json!([])), "nothing loaded");

    let (status, stderr) = server.terminate();
    assert!(status.success(), "{stderr:?}");
}

/// Waits until `server` runs version `version` of `plugin`, and returns how
/// many times the admin API had to be asked.
fn wait_for_version(server: &Server, plugin: &str, version: &str) -> u32 {
    let asked_until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for asked in 1.. {
        if admin_entry(server, ADMIN_TOKEN, plugin)["active"]["version"] == version {
            return asked;
        }
        assert!(
            std::time::Instant::now() < asked_until,
            "{} never ran {plugin} {version}",
            server.base
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    unreachable!()
}

#[test]
fn servers_on_one_redis_follow_each_others_swaps_under_load() {
    let _cores = shared_cores();
    use std::sync::atomic::AtomicBool;

    let Some(redis) = redis_server::RedisServer::start() else {
        return;
    };
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let counter = plugin_dir("counter");
    let shared = ["--store", redis.url(), "--admin-token", ADMIN_TOKEN];
    let a = Server::start(
        data_a.path(),
        &[&shared[..], &["--plugin", counter.to_str().unwrap()]].concat(),
    );
    // `b` is given no plugin: it serves the one `a` recorded in the store.
    let b = Server::start(data_b.path(), &shared);
    assert_eq!(
        admin_entry(&b, ADMIN_TOKEN, "counter")["active"]["version"],
        "0.1.0"
    );
    // Built before the load starts, as in the one-server swap.
    let v2 = build(&plugin_dir("counter-v2"), data_a.path());

    // 8 clients send each turn of their session to `a` and `b` in turn.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let clients = load(&[&a, &b], "counter", 8, &stop);
    let stats = |server: &Server| admin_entry(server, ADMIN_TOKEN, "counter")["stats"].clone();
    let turns_ok = || {
        [&a, &b]
            .iter()
            .map(|server| stats(server)["turns_ok"].as_u64().unwrap())
            .sum::<u64>()
    };
    let wait_for_turns = |turns: u64| {
        while turns_ok() < turns {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    wait_for_turns(8 + 40);

    // Version 2, loaded through `a`, reaches `b`.
    let (ok, stdout, stderr) = agentbox(
        &["plugins", "load", v2.to_str().unwrap()],
        &[
            ("AGENTBOX_SERVER", &a.base),
            ("AGENTBOX_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
    );
    assert!(ok, "{stdout}{stderr}");
    wait_for_version(&b, "counter", "0.2.0");
    wait_for_turns(turns_ok() + 80);
    // A roll-back through `b` reaches `a`.
    let (ok, stdout, stderr) = agentbox(
        &["plugins", "rollback", "counter"],
        &[
            ("AGENTBOX_SERVER", &b.base),
            ("AGENTBOX_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.starts_with("counter 0.1.0"), "{stdout}");
    wait_for_version(&a, "counter", "0.1.0");
    wait_for_turns(turns_ok() + 40);
    let seen = stop_load(&stop, clients);

    // No turn failed, and no session went back to an earlier phase: a
    // server that had not followed yet ran migrated sessions on the new
    // version instead of migrating them back.
    let (migrated_to_v2, migrated_back) = check_swapped_clients(&seen, &a);
    let (a_stats, b_stats) = (stats(&a), stats(&b));
    let sum = |field: &str| a_stats[field].as_u64().unwrap() + b_stats[field].as_u64().unwrap();
    assert_eq!(sum("turns_failed"), 0, "{a_stats} {b_stats}");
    assert_eq!(sum("migrations_failed"), 0, "{a_stats} {b_stats}");
    assert_eq!(
        sum("migrations_ok"),
        (migrated_to_v2 + migrated_back) as u64,
        "{a_stats} {b_stats}"
    );
    assert_eq!(migrated_to_v2, 8);
    // `a`: activated, then followed back; `b`: followed the plugin at
    // startup and version 2, then rolled back.
    assert_eq!(
        (&a_stats["swaps"], &b_stats["swaps"]),
        (&json!(2), &json!(3))
    );
    let metrics = request("GET", &b.url("/metrics"), None, None).1;
    assert!(
        metrics.contains(r#"agentbox_plugin_swaps_total{plugin="counter",action="follow"} 2"#),
        "{metrics}"
    );
    let fresh = a.start_session("counter");
    let events = send(&a.base, &fresh, "tick").unwrap();
    assert_eq!(events.last().unwrap()["state"], json!({ "count": 1 }));

    // A third server started with version 1's file, which the store has
    // seen, runs what the store records, and says so.
    let data_c = tempfile::tempdir().unwrap();
    let versions = admin_entry(&a, ADMIN_TOKEN, "counter")["versions"].clone();
    let v2 = versions
        .as_array()
        .unwrap()
        .iter()
        .find(|version| version["version"] == "0.2.0")
        .unwrap();
    let (ok, stdout, stderr) = agentbox(
        &[
            "plugins",
            "activate",
            "counter",
            v2["digest"].as_str().unwrap(),
        ],
        &[
            ("AGENTBOX_SERVER", &a.base),
            ("AGENTBOX_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
    );
    assert!(ok, "{stdout}{stderr}");
    let c = Server::start(
        data_c.path(),
        &[&shared[..], &["--plugin", counter.to_str().unwrap()]].concat(),
    );
    assert_eq!(
        admin_entry(&c, ADMIN_TOKEN, "counter")["active"]["version"],
        "0.2.0"
    );
}

/// The resident memory of process `pid`, in bytes.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix(" kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"));
    kib << 10
}

#[test]
fn hostile_turns_leave_the_servers_memory_at_its_baseline() {
    let _cores = CORES
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let data = tempfile::tempdir().unwrap();
    let (rogue, counter) = (plugin_dir("hostile/rogue"), plugin_dir("counter"));
    // A deadline that `hog` meets on a busy machine only after it reached
    // the memory limit, and host calls enough that `chatter` meets the
    // deadline first.
    let policy = data.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[turns]\ndeadline_ms = 300\nhost_calls = 1000000000\n",
    )
    .unwrap();
    let server = Server::start(
        data.path(),
        &[
            "--plugin",
            rogue.to_str().unwrap(),
            "--plugin",
            counter.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
        ],
    );
    let ticks = server.start_session("counter");
    let attacks = [
        ("hog", "memory-limit"),
        ("recurse", "trap"),
        ("deep", "trap"),
        ("chatter", "deadline"),
        ("spin", "deadline"),
    ];
    // Each round: every attack in a session of its own, which then ends,
    // 4 MiB written to stdout, and a counter turn that must succeed.
    let round = || {
        for (attack, kind) in attacks {
            let id = server.start_session("rogue");
            let err = send(&server.base, &id, attack).unwrap_err();
            assert!(
                err.contains(&format!("\"kind\":\"{kind}\"")),
                "{attack}: {err}"
            );
            let (status, body) = request(
                "DELETE",
                &server.url(&format!("/v1/sessions/{id}")),
                None,
                None,
            );
            assert_eq!(status, 200, "{body}");
        }
        let id = server.start_session("rogue");
        send(&server.base, &id, "stdout 4").unwrap();
        send(&server.base, &ticks, "tick").unwrap();
    };
    // Freed instances give their memory back in batches of 32: a round of
    // counter turns, each freeing one, makes the attacks' batch go back.
    let settled = || {
        for _ in 0..64 {
            send(&server.base, &ticks, "tick").unwrap();
        }
        resident_bytes(server.child.id())
    };
    // The baseline is taken once every kind of turn has run: pools,
    // caches and the allocator's arenas are as large as they get.
    for _ in 0..3 {
        round();
    }
    let baseline = settled();
    for _ in 0..20 {
        round();
    }
    let after = settled();
    // 100 attacks, each of them touching up to 64 MiB; leaking 80 KiB each
    // would pass the margin.
    assert!(
        after < baseline + (8 << 20),
        "resident memory grew from {} KiB to {} KiB",
        baseline >> 10,
        after >> 10
    );
}

/// Lets this process open as many files as it may, for tests that hold a
/// thousand sockets, and returns how many that is.
fn raise_open_files() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let files = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: files.maximum,
            ..files
        },
    );
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// A connection to `server` that has sent nothing.
fn connect(server: &Server) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    stream
}

/// Whether the server closed `stream` (a read ends, with nothing or an
/// answer) rather than leaving it open; waits for at most `wait`.
fn closed_within(stream: &mut std::net::TcpStream, wait: std::time::Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => true,
        Err(err) => !matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Whether `/healthz` answers on a new connection within some 100 tries,
/// as it does once a place under the connection cap is free.
fn healthz_answers_soon(server: &Server) -> bool {
    (0..100).any(|_| {
        let mut probe = connect(server);
        std::io::Write::write_all(
            &mut probe,
            b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
        let mut answer = String::new();
        let _ = std::io::Read::read_to_string(&mut probe, &mut answer);
        answer.starts_with("HTTP/1.1 200") || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            false
        }
    })
}

/// A session-API request whose head declares a body it never sends.
fn stall_an_upload(server: &Server) -> std::net::TcpStream {
    use std::io::Write;
    let mut stream = connect(server);
    write!(
        stream,
        "POST /v1/sessions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 900000\r\n\r\n{{\"plugin\": "
    )
    .unwrap();
    stream
}

#[test]
fn a_thousand_idle_connections_and_twenty_stalled_uploads_leave_healthz_answering() {
    let _cores = shared_cores();
    // A machine that lets a process open fewer files than this test needs
    // (and the server's cap keeps room beside its connections) holds fewer.
    let open_files = raise_open_files();
    let idle_count = 1_000.min(open_files.saturating_sub(400) as usize);
    if idle_count < 1_000 {
        eprintln!(
            "this machine lets a process open {open_files} files: holding {idle_count} idle connections, not 1,000"
        );
    }
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let idle: Vec<_> = (0..idle_count).map(|_| connect(&server)).collect();
    let stalled: Vec<_> = (0..20).map(|_| stall_an_upload(&server)).collect();
    let started = std::time::Instant::now();
    let (status, body) = request("GET", &server.url("/healthz"), None, None);
    let took = started.elapsed();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    eprintln!(
        "/healthz answered in {took:?} beside {idle_count} idle connections and 20 stalled uploads"
    );
    drop((idle, stalled));
}

#[test]
fn slow_clients_are_cut_off_and_connections_past_the_cap_closed_at_once() {
    let _cores = shared_cores();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("serve.toml");
    std::fs::write(
        &config,
        "[server]\nmax_connections = 4\nheader_timeout_ms = 300\nbody_timeout_ms = 300\n",
    )
    .unwrap();
    let server = Server::start(data.path(), &["--config", config.to_str().unwrap()]);
    let patience = std::time::Duration::from_secs(20);

    // Four connections take every place; a fifth is closed at once, long
    // before a timeout could have closed it.
    let held: Vec<_> = (0..4).map(|_| connect(&server)).collect();
    let mut fifth = connect(&server);
    assert!(
        closed_within(&mut fifth, std::time::Duration::from_millis(200)),
        "a connection past the cap was kept"
    );
    drop(held);
    assert!(
        healthz_answers_soon(&server),
        "places free again once the held connections close"
    );

    // A client that never sends its head is let go.
    let mut silent = connect(&server);
    assert!(
        closed_within(&mut silent, patience),
        "a silent client was kept"
    );

    // A client that never finishes its body is answered 408 in JSON.
    let mut slow = stall_an_upload(&server);
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut slow, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    assert!(body.contains(r#""kind":"timeout""#), "{answer}");

    let bad = data.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nmax_connections = 0\n").unwrap();
    let (ok, _, stderr) = agentbox(
        &[
            "serve",
            "--config",
            bad.to_str().unwrap(),
            "--data-dir",
            data.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        !ok && stderr.contains("[server] table is invalid: max_connections must be from 1 to"),
        "{stderr}"
    );
}

/// Sends `head` on a new connection and reads the answer to the end:
/// its status and its body as JSON.
fn raw_answer(server: &Server, head: &[u8]) -> (String, Value) {
    let mut stream = connect(server);
    std::io::Write::write_all(&mut stream, head).unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("content-type: application/json"), "{answer}");
    (head.lines().next().unwrap().to_owned(), json_of(body))
}

#[test]
fn hypers_own_answers_to_unreadable_requests_are_json_too() {
    let _cores = shared_cores();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);

    let (status, body) = raw_answer(&server, b"NOT HTTP AT ALL\r\n\r\n");
    assert_eq!(
        (status.as_str(), &body["kind"]),
        ("HTTP/1.1 400 Bad Request", &json!("bad-request")),
        "{body}"
    );
    let many: String = (0..200).map(|i| format!("x-header-{i}: v\r\n")).collect();
    let (status, body) = raw_answer(
        &server,
        format!("GET /healthz HTTP/1.1\r\nhost: localhost\r\n{many}\r\n").as_bytes(),
    );
    assert_eq!(
        (status.as_str(), &body["kind"]),
        (
            "HTTP/1.1 431 Request Header Fields Too Large",
            &json!("too-large")
        ),
        "{body}"
    );
    let long = "a".repeat(70_000);
    let (status, body) = raw_answer(
        &server,
        format!("GET /{long} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes(),
    );
    assert_eq!(
        (status.as_str(), &body["kind"]),
        ("HTTP/1.1 414 URI Too Long", &json!("too-large")),
        "{body}"
    );
    // A handler's own 400 is left as it wrote it.
    let (status, body) = raw_answer(
        &server,
        b"POST /v1/sessions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 3\r\nconnection: close\r\n\r\n{x}",
    );
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    assert_eq!(body["kind"], "bad-request", "{body}");
    assert!(
        !body["message"]
            .as_str()
            .unwrap()
            .contains("well-formed HTTP"),
        "{body}"
    );
}

#[test]
fn an_open_websocket_keeps_its_place_under_the_connection_cap() {
    let _cores = shared_cores();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("serve.toml");
    std::fs::write(&config, "[server]\nmax_connections = 2\n").unwrap();
    let intake = plugin_dir("intake");
    let server = Server::start(
        data.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--plugin",
            intake.to_str().unwrap(),
        ],
    );
    let id = server.start_session("intake");
    let ws = server.base.replace("http://", "ws://");
    let (socket, _) = tungstenite::connect(format!("{ws}/v1/sessions/{id}/ws")).unwrap();
    let _idle = connect(&server);
    let mut third = connect(&server);
    assert!(
        closed_within(&mut third, std::time::Duration::from_millis(500)),
        "the WebSocket gave up its place when it upgraded"
    );
    drop(socket);
    assert!(
        healthz_answers_soon(&server),
        "the WebSocket's place is free once it closes"
    );
}

/// The processes `pid` started that are still there.
fn children_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default()
}

/// Starts a server in `data` with `flags`, and uploads `component` to it
/// with `agentbox plugins load`: the upload is refused as `invalid-plugin`
/// saying `reason`, and the server has no plugin.
fn refused_upload(data: &Path, flags: &[&str], component: &Path, reason: &str) -> Server {
    let server = Server::start_with_env(data, flags, &[("AGENTBOX_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let (ok, _, stderr) = load_into(&server, component);
    assert!(!ok);
    assert!(
        stderr.contains("invalid-plugin") && stderr.contains(reason),
        "{stderr}"
    );
    let (status, body) = request(
        "GET",
        &server.url("/v1/admin/plugins"),
        None,
        Some(ADMIN_TOKEN),
    );
    assert_eq!((status, body.as_str()), (200, "[]"));
    server
}

/// `agentbox plugins load COMPONENT` into `server`: whether it succeeded,
/// and what it wrote.
fn load_into(server: &Server, component: &Path) -> (bool, String, String) {
    agentbox(
        &["plugins", "load", component.to_str().unwrap()],
        &[
            ("AGENTBOX_SERVER", server.base.as_str()),
            ("AGENTBOX_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
    )
}

#[test]
fn an_upload_that_compiles_past_its_budget_is_refused_and_its_compiler_stopped() {
    let _cores = shared_cores();
    // Built beside, so that the server's artifact cache does not hold it.
    let (data, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let counter = build(&plugin_dir("counter"), elsewhere.path());
    let server = refused_upload(
        data.path(),
        &["--compile-timeout-ms", "1"],
        &counter,
        "compiling it took longer than the budget of 1 ms",
    );
    assert_eq!(
        children_of(server.child.id()).trim(),
        "",
        "the compiler process was stopped and reaped"
    );
    let (status, _) = request("GET", &server.url("/healthz"), None, None);
    assert_eq!(status, 200);
}

/// `component` with a core module of `functions` empty functions added,
/// which nothing instantiates: as valid as it was, small, and costly only
/// to compile.
fn with_an_unused_module(component: &[u8], functions: u32) -> Vec<u8> {
    fn leb(mut value: u32, into: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                into.push(byte);
                return;
            }
            into.push(byte | 0x80);
        }
    }
    fn section(id: u8, contents: &[u8], into: &mut Vec<u8>) {
        into.push(id);
        leb(u32::try_from(contents.len()).unwrap(), into);
        into.extend_from_slice(contents);
    }
    // One type, `func() -> ()`; each function of it; each body empty.
    let (mut declared, mut bodies) = (Vec::new(), Vec::new());
    leb(functions, &mut declared);
    leb(functions, &mut bodies);
    let count = usize::try_from(functions).unwrap();
    declared.extend(std::iter::repeat_n(0x00, count));
    bodies.extend([0x02, 0x00, 0x0b].repeat(count));
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(0x01, &[0x01, 0x60, 0x00, 0x00], &mut module);
    section(0x03, &declared, &mut module);
    section(0x0a, &bodies, &mut module);
    let mut bigger = component.to_vec();
    section(0x01, &module, &mut bigger);
    bigger
}

#[test]
fn an_upload_that_compiles_past_its_memory_budget_is_refused() {
    let _cores = shared_cores();
    let (data, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let counter = build(&plugin_dir("counter"), elsewhere.path());
    let hostile = elsewhere.path().join("hostile.wasm");
    let bytes = std::fs::read(&counter).unwrap();
    std::fs::write(&hostile, with_an_unused_module(&bytes, 200_000)).unwrap();
    let server = refused_upload(
        data.path(),
        &["--compile-memory-mib", "128"],
        &hostile,
        "compiling it needed more memory than the budget of 128 MiB",
    );
    // The plugin itself compiles well within the budget.
    let (ok, _, stderr) = load_into(&server, &counter);
    assert!(ok, "{stderr}");
}

#[test]
fn a_server_whose_program_file_an_upgrade_replaced_compiles_with_its_own_engine() {
    use std::os::unix::fs::PermissionsExt as _;

    let _cores = shared_cores();
    let (data, bin, elsewhere) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let program = bin.path().join("agentbox");
    std::fs::copy(env!("CARGO_BIN_EXE_agentbox"), &program).unwrap();
    let server = Server::start_program(
        &program,
        data.path(),
        &[],
        &[("AGENTBOX_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    // An upgrade puts another program where the running one was started from.
    let upgrade = bin.path().join("agentbox.new");
    std::fs::write(&upgrade, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&upgrade, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&upgrade, &program).unwrap();

    let counter = build(&plugin_dir("counter"), elsewhere.path());
    let env = [
        ("AGENTBOX_SERVER", server.base.as_str()),
        ("AGENTBOX_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let (ok, stdout, stderr) = agentbox(&["plugins", "load", counter.to_str().unwrap()], &env);
    assert!(
        ok,
        "the running server compiled with its own program: {stdout}{stderr}"
    );
    assert!(stdout.starts_with("counter 0.1.0 (sha256:"), "{stdout}");
}

/// The error of a message turn that failed in the plugin, whether the
/// server answered with it or streamed it last.
fn turn_error(server: &Server, id: &str, text: &str) -> Value {
    let (status, body) = request(
        "POST",
        &server.url(&format!("/v1/sessions/{id}/messages")),
        Some(&json!({ "text": text }).to_string()),
        None,
    );
    let error = json_of(body.lines().last().unwrap());
    assert!(
        status == 502 || error["event"] == "error",
        "{status} {body}"
    );
    error
}

#[test]
fn a_failed_turn_carries_the_plugins_output_only_when_the_policy_says() {
    let _cores = shared_cores();
    let data = tempfile::tempdir().unwrap();
    let policy = data.path().join("policy.toml");
    std::fs::write(&policy, "[plugins.misbehave]\nguest_output = true\n").unwrap();
    let misbehave = plugin_dir("hostile/misbehave");
    let server = Server::start(
        data.path(),
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--plugin",
            misbehave.to_str().unwrap(),
        ],
    );
    let id = server.start_session("misbehave");
    let error = turn_error(&server, &id, "trap");
    assert_eq!(error["kind"], "trap", "{error}");
    assert!(
        error["guest_output"]
            .as_str()
            .is_some_and(|output| output.contains("deliberate trap after a set")),
        "{error}"
    );
    // Without the policy, the same failure answers without the output.
    let plain = tempfile::tempdir().unwrap();
    let server = Server::start(plain.path(), &["--plugin", misbehave.to_str().unwrap()]);
    let id = server.start_session("misbehave");
    let error = turn_error(&server, &id, "trap");
    assert_eq!(error["kind"], "trap", "{error}");
    assert!(error.get("guest_output").is_none(), "{error}");
}

#[test]
fn agentbox_users_exports_and_erases_what_a_server_keeps_of_a_user() {
    let _cores = shared_cores();
    let data = tempfile::tempdir().unwrap();
    let profile = plugin_dir("profile");
    let server = Server::start_with_env(
        data.path(),
        &["--plugin", profile.to_str().unwrap()],
        &[("AGENTBOX_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    let (status, body) = request(
        "POST",
        &server.url("/v1/sessions"),
        Some(&json!({ "plugin": "profile", "user_id": "+15551234567" }).to_string()),
        None,
    );
    assert_eq!(status, 201, "{body}");
    let id = json_of(&body)["session"].as_str().unwrap().to_owned();
    let said = send(&server.base, &id, "my name is Grace").unwrap();
    assert!(!said.is_empty());
    let (status, _) = request(
        "DELETE",
        &server.url(&format!("/v1/sessions/{id}")),
        None,
        None,
    );
    assert_eq!(status, 200);

    let env = [
        ("AGENTBOX_SERVER", server.base.as_str()),
        ("AGENTBOX_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let (ok, exported, stderr) = agentbox(&["users", "export", "+15551234567"], &env);
    assert!(ok, "{stderr}");
    let exported = json_of(&exported);
    assert_eq!(exported["sessions"][0]["session"]["id"], json!(id));
    assert!(
        exported["kv"][0]["value"]
            .as_str()
            .unwrap()
            .contains("Grace"),
        "{exported}"
    );
    let (ok, said, stderr) = agentbox(&["users", "erase", "+15551234567"], &env);
    assert!(ok, "{stderr}");
    assert_eq!(
        said.trim(),
        "erased user +15551234567: 1 sessions with their history, 1 KV entries"
    );
    let (status, _) = request(
        "GET",
        &server.url(&format!("/v1/sessions/{id}")),
        None,
        None,
    );
    assert_eq!(status, 404, "the session is gone");
    let (ok, _, stderr) = agentbox(
        &["users", "export", "+15551234567"],
        &[
            ("AGENTBOX_SERVER", server.base.as_str()),
            ("AGENTBOX_ADMIN_TOKEN", "wrong"),
        ],
    );
    assert!(
        !ok && stderr.contains("(401 Unauthorized, unauthorized)"),
        "{stderr}"
    );
}

/// An HTTP server on a free loopback port answering every request `hello`;
/// the receiver gets each request's head as it arrived.
fn hello_server() -> (std::net::SocketAddr, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (heads, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for mut socket in listener.incoming().map_while(Result::ok) {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = heads.send(String::from_utf8_lossy(&head).into_owned());
            let _ = socket.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            );
        }
    });
    (address, received)
}

#[test]
fn an_injected_secret_is_in_no_log_line_answer_metric_or_listing() {
    let _cores = shared_cores();
    const SECRET: &str = "sk-serve-9c1f77e2";
    let data = tempfile::tempdir().unwrap();
    let fetcher = build(&plugin_dir("fetcher"), data.path());
    let (address, heads) = hello_server();
    let policy = data.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"
            [plugins.fetcher.http]
            allow = ["http://{address}"]
            [[plugins.fetcher.http.inject]]
            url = "http://{address}"
            header = "authorization"
            value = "Bearer {{secret:key}}"
            [plugins.fetcher]
            may_call = ["shop/*"]
            [plugins.fetcher.config]
            key = {{ env = "AGENTBOX_TEST_KEY" }}
            "#
        ),
    )
    .unwrap();
    // Everything the host logs, at every level.
    let server = Server::start_with_env(
        data.path(),
        &[
            "--plugin",
            fetcher.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--admin-token",
            ADMIN_TOKEN,
        ],
        &[
            ("AGENTBOX_TEST_KEY", SECRET),
            ("RUST_LOG", "agentbox=trace,agentbox_host=trace,info"),
        ],
    );
    let id = server.start_session("fetcher");
    let mut answers = Vec::new();
    for (path, body) in [
        ("fetch", json!({ "url": format!("http://{address}/hello") })),
        ("fetch", json!({ "url": "http://127.0.0.2:9/denied" })),
        ("config", json!({ "key": "key" })),
        ("config_keys", json!({})),
    ] {
        let (status, answer) = request(
            "POST",
            &server.url(&format!("/v1/sessions/{id}/tools/{path}")),
            Some(&body.to_string()),
            None,
        );
        answers.push(format!("{status} {answer}"));
    }
    assert!(
        answers[0].starts_with("200 ") && answers[0].contains("hello"),
        "{answers:?}"
    );
    assert!(
        answers[1].contains("not on the plugin's allow-list"),
        "{answers:?}"
    );
    assert_eq!(
        json_of(answers[2].trim_start_matches("200 "))["result"],
        Value::Null
    );
    assert_eq!(
        json_of(answers[3].trim_start_matches("200 "))["result"],
        json!([])
    );
    // The server it was meant for got it.
    let head = heads
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    assert!(
        head.contains(&format!("authorization: Bearer {SECRET}")),
        "{head}"
    );

    for path in [
        format!("/v1/sessions/{id}"),
        format!("/v1/sessions/{id}/history"),
        "/v1/tools".to_owned(),
        "/metrics".to_owned(),
        "/v1/admin/plugins".to_owned(),
    ] {
        let (_, body) = request("GET", &server.url(&path), None, Some(ADMIN_TOKEN));
        answers.push(body);
    }
    // The operator's listing shows what the plugin may reach, not the secret.
    let listing = json_of(answers.last().unwrap());
    let outbound = &listing[0]["outbound"];
    assert_eq!(
        outbound["http"]["allow"],
        json!([format!("http://{address}")])
    );
    assert_eq!(outbound["http"]["inject"][0]["value"], "[secret]");
    assert_eq!(outbound["config"], json!({ "key": "[secret]" }));
    assert_eq!(listing[0]["may_call"], json!(["shop/*"]));
    let (_, log) = server.terminate();
    let refusal = log
        .iter()
        .find(|line| line.contains("outbound request refused"))
        .unwrap_or_else(|| panic!("the refusal is not logged: {log:?}"));
    assert!(
        refusal.contains("fetcher") && refusal.contains("allow_list"),
        "{refusal}"
    );
    for text in answers.iter().chain(&log) {
        assert!(!text.contains(SECRET), "the secret is out: {text}");
    }
    // Nor is it in any file the server keeps: the SQLite store (its
    // database and write-ahead log) and compiled artifacts.
    let mut folders = vec![data.path().to_path_buf()];
    let mut files = 0;
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            files += 1;
            assert!(
                !bytes
                    .windows(SECRET.len())
                    .any(|window| window == SECRET.as_bytes()),
                "the secret is in {}",
                path.display()
            );
        }
    }
    assert!(
        files > 1,
        "the server kept no files in {}",
        data.path().display()
    );
}

#[test]
fn configuration_set_through_the_admin_api_reaches_every_server_of_the_store() {
    let _cores = shared_cores();
    let Some(redis) = redis_server::RedisServer::start() else {
        return;
    };
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fetcher = build(&plugin_dir("fetcher"), data_a.path());
    let policy = data_a.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[plugins.fetcher.config]\nmodel = \"small\"\ntoken = { env = \"AGENTBOX_TEST_TOKEN\" }\n",
    )
    .unwrap();
    let args = [
        "--store",
        redis.url(),
        "--admin-token",
        ADMIN_TOKEN,
        "--policy",
        policy.to_str().unwrap(),
    ];
    let env = [("AGENTBOX_TEST_TOKEN", "t0k3n-secret")];
    let a = Server::start_with_env(
        data_a.path(),
        &[&args[..], &["--plugin", fetcher.to_str().unwrap()]].concat(),
        &env,
    );
    let b = Server::start_with_env(data_b.path(), &args, &env);
    let config_of = |server: &Server| {
        let (status, body) = request(
            "GET",
            &server.url("/v1/admin/plugins/fetcher/config"),
            None,
            Some(ADMIN_TOKEN),
        );
        assert_eq!(status, 200, "{body}");
        json_of(&body)["config"].clone()
    };
    assert_eq!(
        config_of(&a),
        json!({ "model": "small", "token": "[secret]" })
    );
    let read = |server: &Server, key: &str| {
        let id = server.start_session("fetcher");
        let (status, body) = request(
            "POST",
            &server.url(&format!("/v1/sessions/{id}/tools/config")),
            Some(&json!({ "key": key }).to_string()),
            None,
        );
        assert_eq!(status, 200, "{body}");
        json_of(&body)["result"].clone()
    };

    // Set through `a`: `a` serves it at once, `b` once it follows the store.
    let put = |body: &str| {
        request(
            "PUT",
            &a.url("/v1/admin/plugins/fetcher/config"),
            Some(body),
            Some(ADMIN_TOKEN),
        )
    };
    let (status, body) = put(r#"{"model": "large", "tone": "dry"}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json_of(&body)["config"],
        json!({ "model": "large", "token": "[secret]", "tone": "dry" })
    );
    assert_eq!(read(&a, "model"), "large");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while read(&b, "tone") != "dry" {
        assert!(std::time::Instant::now() < deadline, "b never followed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(config_of(&b), config_of(&a));
    // The command line shows the same, from either server.
    let (ok, stdout, stderr) = agentbox(
        &["plugins", "config", "fetcher"],
        &[
            ("AGENTBOX_SERVER", &b.base),
            ("AGENTBOX_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout,
        "fetcher sends no HTTP request\n  model = large\n  token = [secret]\n  tone = dry\n"
    );
    let (ok, _, stderr) = agentbox(
        &["plugins", "config", "fetcher", "model"],
        &[
            ("AGENTBOX_SERVER", &b.base),
            ("AGENTBOX_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
    );
    assert!(
        !ok && stderr.contains("`model` is not KEY=VALUE"),
        "{stderr}"
    );

    // Mistakes change nothing.
    for (body, status, said) in [
        (
            r#"{"token": "mine"}"#,
            422,
            "config `token` is a secret the policy file sets",
        ),
        (
            r#"{"bad key": "x"}"#,
            422,
            "config key `bad key` contains ' '",
        ),
        (
            r#"{"model": 5}"#,
            422,
            "invalid type: integer `5`, expected a string",
        ),
        ("[]", 422, "invalid type: sequence"),
        ("{", 400, "EOF while parsing"),
    ] {
        let (got, answer) = put(body);
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer.contains(said), "{body}: {answer}");
    }
    let (status, answer) = request(
        "PUT",
        &a.url("/v1/admin/plugins/fetcher/config"),
        Some("{}"),
        None,
    );
    assert_eq!(status, 401, "{answer}");
    assert_eq!(read(&a, "model"), "large");

    // `--clear` takes it back to the policy's, everywhere.
    let (ok, stdout, stderr) = agentbox(
        &["plugins", "config", "fetcher", "--clear"],
        &[
            ("AGENTBOX_SERVER", &a.base),
            ("AGENTBOX_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("  model = small\n"), "{stdout}");

    // A listing cursor the store never handed out is the caller's mistake.
    let (status, answer) = request(
        "GET",
        &a.url("/v1/admin/sessions?cursor=abc"),
        None,
        Some(ADMIN_TOKEN),
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(json_of(&answer)["kind"], "bad-request", "{answer}");
    while read(&b, "tone") != Value::Null {
        assert!(std::time::Instant::now() < deadline, "b never followed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(read(&b, "model"), "small");
}

#[test]
fn agentbox_sessions_reads_a_timeline_rewinds_and_forks_through_the_api() {
    let _cores = shared_cores();
    let data = tempfile::tempdir().unwrap();
    let counter = plugin_dir("counter");
    let server = Server::start(data.path(), &["--plugin", counter.to_str().unwrap()]);
    let (_, body) = request(
        "POST",
        &server.url("/v1/sessions"),
        Some(r#"{"plugin": "counter"}"#),
        None,
    );
    let id = json_of(&body)["session"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        let (status, body) = request(
            "POST",
            &server.url(&format!("/v1/sessions/{id}/messages")),
            Some(r#"{"text": "tick"}"#),
            None,
        );
        assert_eq!(status, 200, "{body}");
    }
    let base = server.url("");
    let sessions = |args: &[&str]| {
        let mut all = vec!["sessions"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--server", &base]);
        agentbox(&all, &[])
    };

    let (ok, listed, stderr) = sessions(&["events", &id]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(
        lines,
        [
            "#1 turn 0 start",
            "#2 turn 1 message: \"tick\"",
            "#3 turn 2 message: \"tick\"",
            "#4 turn 3 message: \"tick\""
        ]
    );
    let (ok, state, stderr) = sessions(&["state", &id, "--turn", "1"]);
    assert!(ok, "{stderr}");
    assert_eq!(json_of(&state), json!({ "count": 1 }));

    let (ok, said, stderr) = sessions(&["rewind", &id, "--turn", "1"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        said.trim(),
        format!("rewound {id} to turn 1; its next turn is 2")
    );
    let (_, listed, _) = sessions(&["events", &id, "--after", "2"]);
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        [
            "#3 turn 2 message (rewound): \"tick\"",
            "#4 turn 3 message (rewound): \"tick\"",
            "#5 turn 1 rewind"
        ]
    );
    let (ok, said, stderr) = sessions(&["fork", &id, "--turn", "1", "--id", "forked"]);
    assert!(ok, "{stderr}");
    assert_eq!(said.trim(), format!("forked {id} at turn 1 into forked"));
    let (_, state, _) = sessions(&["state", "forked"]);
    assert_eq!(json_of(&state), json!({ "count": 1 }));

    // Following a session prints its events until it ends.
    let (status, body) = request("DELETE", &server.url("/v1/sessions/forked"), None, None);
    assert_eq!(status, 200, "{body}");
    let (ok, followed, stderr) = sessions(&["events", "forked", "--follow"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        followed.lines().collect::<Vec<_>>(),
        ["#1 turn 1 fork", "#2 turn 2 end"]
    );
    // Nothing runs to interrupt.
    let (ok, _, stderr) = sessions(&["interrupt", &id]);
    assert!(!ok);
    assert!(
        stderr.contains("no turn of the session is running") && stderr.contains("idle"),
        "{stderr}"
    );

    // Mistakes are the server's own messages, and a failure.
    let (ok, _, stderr) = sessions(&["state", &id, "--turn", "9"]);
    assert!(!ok);
    assert!(
        stderr.contains("turn 9 has not happened") && stderr.contains("bad-request"),
        "{stderr}"
    );
    let (ok, _, stderr) = sessions(&["events", "no-such-session"]);
    assert!(!ok);
    assert!(stderr.contains("not-found"), "{stderr}");
}
