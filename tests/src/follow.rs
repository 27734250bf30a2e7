//! Following a session's log as server-sent events over HTTP: a follower
//! that disconnects and comes back with `Last-Event-ID` gets exactly the
//! events it missed, the stream ends with the session, and a follower on
//! one server sees what another server of the same Redis commits. A
//! plugin's feed carries each event of its sessions as it commits, on any
//! server of the store.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use agentbox_host::store::{MemoryStore, RedisStore, Store};
use agentbox_host::{Host, Limits};
use serde_json::Value;

use crate::harness::{RedisServer, agent, counter_session, host_with, load, send, start};
use crate::plugins::{COUNTER, INTAKE};

/// `host`'s API on a loopback port, served by `runtime`; its base URL.
fn serve(runtime: &tokio::runtime::Runtime, host: &Host) -> String {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = agentbox_host::server::router(host.clone(), Default::default());
    runtime.spawn(agentbox_host::server::serve(
        listener,
        router,
        Default::default(),
        std::future::pending(),
    ));
    base
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One server-sent event: its id, its name and its data as JSON.
#[derive(Debug)]
struct Sent {
    id: u64,
    name: String,
    data: Value,
}

/// A follower's stream of server-sent events.
struct Follower(BufReader<Box<dyn Read + Send>>);

impl Follower {
    /// Follows session `id` on `base`, after `last_event_id` if given.
    fn open(base: &str, id: &str, last_event_id: Option<&str>) -> Result<Follower, (u16, Value)> {
        Follower::at(
            &format!("{base}/v1/sessions/{id}/events?follow=true"),
            last_event_id,
        )
    }

    /// Follows the feed of `plugin` on `base`.
    fn feed(base: &str, plugin: &str) -> Result<Follower, (u16, Value)> {
        Follower::at(
            &format!("{base}/v1/events?plugin={plugin}&follow=true"),
            None,
        )
    }

    fn at(url: &str, last_event_id: Option<&str>) -> Result<Follower, (u16, Value)> {
        let mut request = agent().get(url);
        if let Some(last) = last_event_id {
            request = request.header("last-event-id", last);
        }
        let response = request.call().unwrap();
        let status = response.status().as_u16();
        let mut body = response.into_body();
        if status != 200 {
            return Err((
                status,
                serde_json::from_str(&body.read_to_string().unwrap()).unwrap(),
            ));
        }
        Ok(Follower(BufReader::new(Box::new(body.into_reader()))))
    }

    /// The next event, or `None` once the stream has ended.
    fn next(&mut self) -> Option<Sent> {
        let (mut id, mut name, mut data) = (None, String::new(), String::new());
        loop {
            let mut line = String::new();
            if self.0.read_line(&mut line).unwrap() == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if data.is_empty() {
                    continue; // a keep-alive, or nothing yet
                }
                return Some(Sent {
                    id: id.expect("every event has an id"),
                    name,
                    data: serde_json::from_str(&data).unwrap(),
                });
            }
            match line.split_once(':') {
                Some(("id", value)) => id = Some(value.trim().parse().unwrap()),
                Some(("event", value)) => name = value.trim().to_owned(),
                Some(("data", value)) => data.push_str(value.trim_start()),
                _ => {} // a comment: keep-alive
            }
        }
    }
}

#[test]
fn a_follower_that_comes_back_gets_exactly_what_it_missed_until_the_session_ends() {
    let runtime = runtime();
    let host = host_with(Limits::default(), Arc::new(MemoryStore::default()));
    load(&host, COUNTER);
    let base = serve(&runtime, &host);
    let id = runtime.block_on(counter_session(&host, 2));

    let mut follower = Follower::open(&base, &id, None).unwrap();
    let first: Vec<_> = (0..3).map(|_| follower.next().unwrap()).collect();
    assert_eq!(
        first
            .iter()
            .map(|sent| (sent.id, sent.name.as_str()))
            .collect::<Vec<_>>(),
        [(1, "start"), (2, "message"), (3, "message")]
    );
    assert_eq!(first[2].data["turn"], 2);
    // A turn committed while it follows arrives as it commits.
    runtime.block_on(send(&host, &id, "tick"));
    let live = follower.next().unwrap();
    assert_eq!(
        (live.id, live.data["patch"][0]["value"].clone()),
        (4, 3.into())
    );
    drop(follower);

    // Two turns while it is away, then the end.
    for _ in 0..2 {
        runtime.block_on(send(&host, &id, "tick"));
    }
    let mut follower = Follower::open(&base, &id, Some("4")).unwrap();
    runtime.block_on(host.end_session(&id)).unwrap();
    let mut rest = Vec::new();
    while let Some(sent) = follower.next() {
        rest.push((sent.id, sent.name));
    }
    assert_eq!(
        rest,
        [
            (5, "message".into()),
            (6, "message".into()),
            (7, "end".into())
        ],
        "nothing lost, nothing twice, and the stream ends with the session"
    );

    let Err((status, error)) = Follower::open(&base, &id, Some("four")) else {
        panic!("a Last-Event-ID that is no number is refused");
    };
    assert_eq!((status, error["kind"].as_str()), (400, Some("bad-request")));
    let Err((status, _)) = Follower::open(&base, "no-such-session", None) else {
        panic!("an unknown session is not followed");
    };
    assert_eq!(status, 404);
}

/// Two hosts of the counter on `server`'s Redis, the other one serving its
/// API: both hosts, and the other's base URL.
fn two_servers(runtime: &tokio::runtime::Runtime, server: &RedisServer) -> (Host, Host, String) {
    let store = || -> Arc<dyn Store> { Arc::new(RedisStore::open(server.url()).unwrap()) };
    let (one, other) = (
        host_with(Limits::default(), store()),
        host_with(Limits::default(), store()),
    );
    load(&one, COUNTER);
    load(&other, COUNTER);
    let base = serve(runtime, &other);
    (one, other, base)
}

#[test]
fn a_follower_on_one_server_sees_what_another_server_of_the_same_redis_commits() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runtime = runtime();
    let (one, _other, base) = two_servers(&runtime, &server);
    let id = runtime.block_on(counter_session(&one, 0));

    let mut follower = Follower::open(&base, &id, None).unwrap();
    assert_eq!(follower.next().unwrap().id, 1);
    for turn in 1..=3 {
        runtime.block_on(send(&one, &id, "tick"));
        let sent = follower.next().unwrap();
        assert_eq!(
            (sent.id, sent.data["turn"].clone()),
            (turn + 1, turn.into())
        );
    }
}

#[test]
fn a_plugins_feed_carries_each_event_of_its_sessions_and_no_others_as_they_commit() {
    let runtime = runtime();
    let host = host_with(Limits::default(), Arc::new(MemoryStore::default()));
    load(&host, COUNTER);
    load(&host, INTAKE);
    let base = serve(&runtime, &host);
    let mut feed = Follower::feed(&base, "counter").unwrap();

    let first = runtime.block_on(counter_session(&host, 0));
    runtime.block_on(start(&host, "intake", serde_json::json!({})));
    let second = runtime.block_on(counter_session(&host, 0));
    runtime.block_on(send(&host, &first, "tick"));
    runtime.block_on(send(&host, &second, "tick"));
    let heard: Vec<_> = (0..4)
        .map(|_| {
            let sent = feed.next().unwrap();
            (
                sent.data["session"].as_str().unwrap().to_owned(),
                sent.name,
                sent.id,
            )
        })
        .collect();
    assert_eq!(
        heard,
        [
            (first.clone(), "start".to_owned(), 1),
            (second.clone(), "start".to_owned(), 1),
            (first, "message".to_owned(), 2),
            (second, "message".to_owned(), 2),
        ],
        "the intake session is not the counter's"
    );

    for (url, status, kind) in [
        ("/v1/events?plugin=counter", 400, "bad-request"),
        (
            "/v1/events?plugin=nothing&follow=true",
            404,
            "plugin-not-loaded",
        ),
        ("/v1/events?follow=true", 400, "bad-request"),
    ] {
        let Err((got, error)) = Follower::at(&format!("{base}{url}"), None) else {
            panic!("{url} is refused");
        };
        assert_eq!(
            (got, error["kind"].as_str()),
            (status, Some(kind)),
            "{url}: {error}"
        );
    }
}

#[test]
fn a_plugins_feed_on_one_server_hears_what_another_server_of_the_same_redis_commits() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runtime = runtime();
    let (one, _other, base) = two_servers(&runtime, &server);
    let mut feed = Follower::feed(&base, "counter").unwrap();
    let id = runtime.block_on(counter_session(&one, 0));
    runtime.block_on(send(&one, &id, "tick"));
    for (seq, name) in [(1, "start"), (2, "message")] {
        let sent = feed.next().unwrap();
        assert_eq!(
            (sent.id, sent.name.as_str(), sent.data["session"].as_str()),
            (seq, name, Some(id.as_str()))
        );
    }
}
