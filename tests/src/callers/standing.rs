//! What a caller holds open lasts only as long as the caller stands: a
//! revoked key, a key whose grant changed and an expired token lose their
//! WebSockets, follows and feeds within a second, each told why in a last
//! `error` event; an open server that reads a keys file requires a key
//! from then on, of the callers it already serves too.

use std::io::BufRead as _;
use std::time::Duration;

use agentbox_host::server::auth::jwt::JwtVerifier;
use agentbox_host::server::auth::{Callers, Grant};
use serde_json::{Value, json};
use tungstenite::protocol::frame::coding::CloseCode;

use super::{
    ADMIN, Served, Socket, Stream, es256_settings, keys, mcp_initialize, mcp_rpc, next_frame,
    open_feed, open_follow, open_socket, serve, start_socket, status_with_host, token, turn_events,
};
use crate::harness::agent;

/// A socket that starts a session of `plugin` as `token`, read through its
/// start: the socket, which fails a read that waits over 10 s, and the
/// session.
fn started(served: &Served, token: &str, plugin: &str) -> (Socket, String) {
    let mut socket = start_socket(served, token, &format!("plugin={plugin}")).unwrap();
    time_out_reads(&mut socket);
    let committed = turn_events(&mut socket).pop().unwrap();
    assert_eq!(committed["event"], "committed", "{committed}");
    let id = committed["session"].as_str().unwrap().to_owned();
    (socket, id)
}

fn time_out_reads(socket: &mut Socket) {
    let tungstenite::stream::MaybeTlsStream::Plain(tcp) = socket.get_mut() else {
        unreachable!("the test server is plain HTTP")
    };
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
}

/// Asserts that the socket's next frames are an `unauthorized` error that
/// says `why`, then a close for policy.
fn closed_for(socket: &mut Socket, why: &str) {
    let last = next_frame(socket);
    assert_eq!(
        (&last["event"], &last["kind"]),
        (&json!("error"), &json!("unauthorized")),
        "{last}"
    );
    assert!(last["message"].as_str().unwrap().contains(why), "{last}");
    match socket.read().unwrap() {
        tungstenite::Message::Close(Some(close)) => assert_eq!(close.code, CloseCode::Policy),
        other => panic!("not a close: {other:?}"),
    }
}

/// Asserts that the stream's next `error` event is `unauthorized` and says
/// `why`, and that the stream ends after it.
fn ended_for(stream: &mut Stream, why: &str) {
    let mut line = String::new();
    while line.trim_end() != "event: error" {
        line.clear();
        assert!(stream.read_line(&mut line).unwrap() > 0, "the stream ended");
    }
    line.clear();
    stream.read_line(&mut line).unwrap();
    let last: Value = serde_json::from_str(line.strip_prefix("data:").unwrap().trim()).unwrap();
    assert_eq!(last["kind"], "unauthorized", "{last}");
    assert!(last["message"].as_str().unwrap().contains(why), "{last}");
    let mut rest = String::new();
    std::io::Read::read_to_string(stream, &mut rest).unwrap();
    assert!(!rest.contains("data:"), "the stream went on: {rest}");
}

/// Sends a message on the socket: the turn's last event.
fn message(socket: &mut Socket, text: &str) -> Value {
    let frame = json!({ "type": "message", "text": text }).to_string();
    socket
        .send(tungstenite::Message::Text(frame.into()))
        .unwrap();
    turn_events(socket).pop().unwrap()
}

#[test]
fn a_revoked_key_or_a_changed_grant_loses_its_sockets_follows_and_feeds() {
    let (file, [backend, app, _]) = keys();
    let served = serve(Callers::new(Some(&file), None));
    let (mut backend_socket, profile) = started(&served, &backend, "profile");
    let mut follow = open_follow(&served, &backend, &profile).unwrap();
    let mut feed = open_feed(&served, &backend, "shop").unwrap();
    let (mut app_socket, _) = started(&served, &app, "intake");

    let mut revoked = file.clone();
    assert!(revoked.revoke("backend"));
    served.callers.reload_keys(&revoked);
    let why = "the API key was revoked, or its grant changed";
    closed_for(&mut backend_socket, why);
    ended_for(&mut follow, why);
    ended_for(&mut feed, why);
    assert_eq!(
        message(&mut app_socket, "hello")["event"],
        "committed",
        "another key's socket stays open"
    );

    // The same key with another grant stands no more either.
    let mut regranted = revoked.clone();
    regranted.keys.get_mut("app").unwrap().grant = Grant {
        plugins: vec!["intake".into(), "shop".into()],
        act_for_users: false,
        choose_ids: false,
    };
    served.callers.reload_keys(&regranted);
    closed_for(&mut app_socket, why);
}

#[test]
fn a_revoked_keys_mcp_event_stream_ends() {
    let (file, [backend, ..]) = keys();
    let served = serve(Callers::new(Some(&file), None));
    let (status, id, _) = mcp_initialize(&served, &backend);
    assert_eq!(status, 200);
    let id = id.unwrap();
    let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    mcp_rpc(&served, &backend, &id, &initialized);
    let response = agent()
        .get(format!("{}/mcp", served.base))
        .header("authorization", format!("Bearer {backend}"))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &id)
        .call()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.into_body().into_reader();

    let mut revoked = file.clone();
    assert!(revoked.revoke("backend"));
    served.callers.reload_keys(&revoked);
    // It ends at once (open, the read would time out after the client's
    // 20 s), having sent nothing but the transport's priming event.
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stream, &mut rest).unwrap();
    assert!(!rest.contains("jsonrpc"), "{rest}");
}

#[test]
fn an_expired_tokens_socket_and_follow_end_by_the_host_clock() {
    let verifier = JwtVerifier::new(&es256_settings()).unwrap();
    let served = serve(Callers::new(None, Some(verifier)));
    // Valid for an hour, and the 30 s of leeway.
    let ada = token("ada@example.com", json!({}));
    let (mut socket, id) = started(&served, &ada, "profile");
    let mut follow = open_follow(&served, &ada, &id).unwrap();

    served.clock.advance(Duration::from_secs(3600));
    assert_eq!(
        message(&mut socket, "my name is ada")["event"],
        "committed",
        "within the leeway the token stands"
    );
    served.clock.advance(Duration::from_secs(30));
    closed_for(&mut socket, "the token has expired");
    ended_for(&mut follow, "the token has expired");
}

#[test]
fn an_open_server_that_reads_keys_requires_one_of_every_caller_from_then_on() {
    let (file, [backend, ..]) = keys();
    let served = serve(Callers::default());
    let (status, body, _) = served.call(
        "POST",
        "/v1/sessions",
        Some(json!({ "plugin": "intake" })),
        None,
    );
    assert_eq!(status, 201, "{body}");
    let id = body["session"].as_str().unwrap().to_owned();
    let mut socket = open_socket(&served, &id, None).unwrap();
    time_out_reads(&mut socket);
    assert_eq!(
        status_with_host(&served, "GET", "/v1/tools", "rebound.example.com"),
        403,
        "open, it answers loopback names only"
    );

    served.callers.reload_keys(&file);
    closed_for(&mut socket, "the server now requires an API key");
    let (status, _, _) = served.call("GET", "/v1/tools", None, None);
    assert_eq!(status, 401);
    assert_eq!(
        status_with_host(&served, "GET", "/v1/tools", "rebound.example.com"),
        401,
        "keys, not names, guard it now"
    );
    assert_eq!(served.as_caller(&backend, "GET", "/v1/tools", None).0, 200);
    assert_eq!(served.as_caller(ADMIN, "GET", "/v1/tools", None).0, 200);
}
