//! Barge-in: a caller interrupts its session's running turn. The turn
//! fails as interrupted and commits no state; the message and what the
//! agent had said by then are recorded, marked interrupted; the next turn
//! goes on from there. An idle session has nothing to interrupt.

use std::sync::Arc;
use std::time::Duration;

use agentbox_host::capability::output::Sink;
use agentbox_host::session::event::EventKind;
use agentbox_host::session::report::Outcome;
use agentbox_host::store::{Message, RedisStore, Role, Store, ToolOutcome};
use agentbox_host::{Cause, Limits};
use serde_json::json;
use tokio::sync::mpsc;

use crate::fetcher::stalling_server;
use crate::harness::{
    RedisServer, every_store, host_with, host_with_policy, load, send, start, start_for,
};
use crate::plugins::{FETCHER, MISBEHAVE};

/// A sink that passes on what the agent says.
fn heard() -> (Sink, mpsc::UnboundedReceiver<String>) {
    let (said, heard) = mpsc::unbounded_channel();
    let sink: Sink = Arc::new(move |text: &str| {
        let _ = said.send(text.to_owned());
    });
    (sink, heard)
}

/// Limits under which nothing but an interrupt stops a turn in time.
fn patient() -> Limits {
    Limits {
        deadline: Duration::from_secs(120),
        fuel: None,
        ..Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_turn_commits_no_state_and_records_what_was_said_marked() {
    for store in every_store() {
        let host = host_with(patient(), store.store.clone());
        load(&host, MISBEHAVE);
        let id = start(&host, "misbehave", json!({})).await.session;
        send(&host, &id, "note").await;
        let before = host.session(&id).await.unwrap().unwrap();

        let (sink, mut heard) = heard();
        let running = {
            let (host, id) = (host.clone(), id.clone());
            tokio::spawn(async move {
                host.send_message(&id, "ramble I was about to say", Some(sink))
                    .await
            })
        };
        assert_eq!(heard.recv().await.unwrap(), "I was about to say");
        host.interrupt(&id).await.unwrap();
        let err = running.await.unwrap().unwrap_err();
        assert!(
            matches!(err.cause, Cause::Interrupted),
            "{}: {err}",
            store.name
        );
        assert_eq!(
            err.to_string(),
            format!(
                "session `{id}` (plugin `misbehave`), turn 2: the turn was interrupted by its caller"
            )
        );

        // No state: `rambling` was never committed.
        let after = host.session(&id).await.unwrap().unwrap();
        assert_eq!(after.state, before.state, "{}", store.name);
        assert_eq!(after.turn, 2, "the interrupted turn keeps its number");
        let history = host.history(&id, 2).await.unwrap();
        assert_eq!(
            history,
            [
                Message {
                    role: Role::User,
                    content: "ramble I was about to say".into(),
                    interrupted: false
                },
                Message {
                    role: Role::Assistant,
                    content: "I was about to say".into(),
                    interrupted: true
                },
            ],
            "{}",
            store.name
        );
        let events = host.timeline().events(&id, 0, 100).await.unwrap().events;
        let event = events.last().unwrap();
        assert_eq!(
            (event.kind, &event.outcome, event.patch.0.len()),
            (EventKind::Message, &Outcome::Interrupted, 0),
            "{}",
            store.name
        );
        let wire = serde_json::to_value(event).unwrap();
        assert_eq!(wire["outcome"], "interrupted");

        // The next turn goes on from the committed state.
        let next = send(&host, &id, "note").await;
        assert_eq!(next.turn, 3);
        assert_eq!(next.state["entries"], json!(2), "{}", store.name);
        assert_eq!(
            host.timeline().state_at(&id, 2).await.unwrap().state,
            before.state
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_has_nothing_to_interrupt_and_a_late_interrupt_stops_nothing() {
    let host = host_with(
        patient(),
        Arc::new(agentbox_host::store::MemoryStore::default()),
    );
    load(&host, MISBEHAVE);
    let id = start(&host, "misbehave", json!({})).await.session;
    let err = host.interrupt(&id).await.unwrap_err();
    assert!(matches!(err.cause, Cause::Idle), "{err}");
    assert_eq!(
        err.to_string(),
        format!("session `{id}`: no turn of the session is running")
    );
    let err = host.interrupt("no-such-session").await.unwrap_err();
    assert!(matches!(err.cause, Cause::Idle), "{err}");
    // The interrupt of an idle session is not held for its next turn.
    assert_eq!(send(&host, &id, "note").await.said, ["entry 1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_waiting_on_a_slow_server_is_interrupted_and_its_connection_closed() {
    let (address, mut reads, mut closes) = stalling_server().await;
    let host = host_with_policy(
        &format!(
            "[plugins.fetcher]\ndeadline_ms = 120000\n[plugins.fetcher.http]\nallow = [\"http://{address}\"]\ntimeout_ms = 120000"
        ),
        &[FETCHER],
    );
    let id = start_for(&host, "fetcher", None).await.session;
    let running = {
        let (host, id) = (host.clone(), id.clone());
        let url = format!("http://{address}/stall");
        tokio::spawn(async move {
            host.call_tool(&id, "fetch", json!({ "url": url }), None)
                .await
        })
    };
    // Interrupt once the server holds the turn's request.
    reads.recv().await.unwrap();
    host.interrupt(&id).await.unwrap();
    let err = running.await.unwrap().unwrap_err();
    assert!(matches!(err.cause, Cause::Interrupted), "{err}");
    closes
        .recv()
        .await
        .expect("the interrupted request's connection was never closed");
    let record = host.session(&id).await.unwrap().unwrap();
    assert_eq!(record.turn, 0, "an interrupted tool call commits nothing");
    let executions = host.executions().await.unwrap();
    assert_eq!(
        executions.iter().map(|run| run.outcome).collect::<Vec<_>>(),
        [ToolOutcome::Interrupted],
        "its record says so"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_sent_to_another_server_of_the_same_redis_stops_the_turn() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = || -> Arc<dyn Store> { Arc::new(RedisStore::open(server.url()).unwrap()) };
    let (one, other) = (host_with(patient(), store()), host_with(patient(), store()));
    load(&one, MISBEHAVE);
    load(&other, MISBEHAVE);
    let id = start(&one, "misbehave", json!({})).await.session;
    let err = other.interrupt(&id).await.unwrap_err();
    assert!(
        matches!(err.cause, Cause::Idle),
        "no server runs a turn: {err}"
    );

    let (sink, mut heard) = heard();
    let running = {
        let (one, id) = (one.clone(), id.clone());
        tokio::spawn(async move { one.send_message(&id, "ramble far away", Some(sink)).await })
    };
    heard.recv().await.unwrap();
    other.interrupt(&id).await.unwrap();
    let err = running.await.unwrap().unwrap_err();
    assert!(matches!(err.cause, Cause::Interrupted), "{err}");
    let history = other.history(&id, 1).await.unwrap();
    assert!(history[0].interrupted, "{history:?}");
}
