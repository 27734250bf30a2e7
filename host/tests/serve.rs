//! `agentbox serve` as a separate process on a free port, driven by a real
//! HTTP client: the session API with its streamed replies and JSON errors,
//! the admin API with its token, hot-swap and roll-back, and a clean stop on
//! SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

fn plugin_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins")
        .join(name)
}

/// A running `agentbox serve` and its address.
struct Server {
    child: Child,
    base: String,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Server {
    /// Starts `agentbox serve` on a free port with `args`, and waits until it listens.
    fn start(data: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentbox"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start agentbox serve");
        let (lines, stderr) = std::sync::mpsc::channel();
        let output = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        // From here on, dropping the server (on a failed expectation too) stops the process.
        let mut server = Server {
            child,
            base: String::new(),
            stderr,
        };
        loop {
            let line = server
                .stderr
                .recv_timeout(std::time::Duration::from_secs(300))
                .expect("agentbox serve stopped before it listened");
            if let Some(rest) = line.strip_prefix("agentbox: listening on ") {
                server.base = rest.split_whitespace().next().unwrap().to_owned();
                return server;
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the server with SIGTERM and returns its exit status and the rest of its stderr.
    fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        (status, self.stderr.try_iter().collect())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Status and body of a request with an optional JSON body and bearer token.
fn request(method: &str, url: &str, body: Option<&str>, token: Option<&str>) -> (u16, String) {
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(body.unwrap_or_default().to_owned()).unwrap();
    let mut response = agent().run(request).unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

/// POSTs to `path` a request that declares a 2 MiB body and sends only its
/// first bytes (an HTTP client would otherwise race the server's early
/// answer with its writes), and returns the status and body of the answer.
fn declare_oversized_body(server: &Server, path: &str) -> (u16, String) {
    use std::io::{Read, Write};

    let address = server.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    // A server that waited for the whole body would never answer: fail instead.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{{\"text\": \"",
        2 << 20
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("`{text}`: {err}"))
}

#[test]
fn the_session_api_streams_replies_and_answers_mistakes_with_json_errors() {
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

    let (status, stderr) = server.terminate();
    assert!(status.success(), "{status}: {stderr:?}");
    assert_eq!(
        stderr.last().map(String::as_str),
        Some("agentbox: stopped"),
        "{stderr:?}"
    );
}

#[test]
fn the_admin_api_needs_its_token_swaps_versions_and_refuses_a_bad_one() {
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
            "s3cret",
        ],
    );
    let plugins = server.url("/v1/admin/plugins");
    for token in [None, Some("wrong"), Some("")] {
        let (status, body) = request("GET", &plugins, None, token);
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(json_of(&body)["kind"], "unauthorized");
        assert!(!body.contains("counter"), "{body}");
    }
    let (status, body) = request("GET", &plugins, None, Some("s3cret"));
    assert_eq!(status, 200);
    assert_eq!(json_of(&body)[0]["version"], "0.1.0");

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
        Some("s3cret"),
    );
    assert_eq!(
        (status, json_of(&body)["version"].clone()),
        (200, json!("0.2.0")),
        "{body}"
    );
    assert_eq!(tick(&server)["state"], json!({ "total": 2 }));

    // Something that is not a plugin changes nothing.
    let (status, body) = request("POST", &plugins, Some("this is not wasm"), Some("s3cret"));
    assert_eq!(
        (status, json_of(&body)["kind"].clone()),
        (422, json!("invalid-plugin")),
        "{body}"
    );
    let (_, body) = request("GET", &plugins, None, Some("s3cret"));
    assert_eq!(json_of(&body)[0]["version"], "0.2.0");
    assert_eq!(tick(&server)["state"], json!({ "total": 3 }));

    let (status, body) = request(
        "POST",
        &server.url("/v1/admin/plugins/nope/rollback"),
        None,
        Some("s3cret"),
    );
    assert_eq!(
        (status, json_of(&body)["kind"].clone()),
        (409, json!("no-previous-version"))
    );
}
