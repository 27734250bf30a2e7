//! A plugin attacking the host from every export: spinning in each, a stack
//! overflow, unbounded stdout and stderr, malformed JSON from a tool and
//! from `migrate`, and an `on-end` that spins or traps while the reaper
//! expires its session. Each attack fails only its own turn, with the kind
//! and limit named, commits nothing, and a counter session served alongside
//! never fails a turn.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agentbox_host::store::{MemoryStore, SessionRecord, Status, Store};
use agentbox_host::{Cause, Clock, Host, Limits, SessionError, SessionStart, Tripped};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::harness::{counter_session, host_with_clock, load, said, send, start_event, state};
use crate::plugins::{COUNTER, ROGUE};

const DEADLINE: Duration = Duration::from_millis(200);

fn rogue_host(clock: Clock) -> Host {
    rogue_host_on(clock, Arc::new(MemoryStore::default()))
}

/// A host running rogue and counter on `store`.
fn rogue_host_on(clock: Clock, store: Arc<dyn Store>) -> Host {
    let limits = Limits {
        deadline: DEADLINE,
        ..Limits::default()
    };
    let host = host_with_clock(limits, store, clock);
    load(&host, ROGUE);
    load(&host, COUNTER);
    host
}

/// A host running rogue under `own` limits and counter under the defaults.
fn rogue_host_with(own: Limits) -> Host {
    let host = crate::harness::host_builder(Clock::system())
        .plugin_limits("rogue", own)
        .build()
        .unwrap();
    load(&host, ROGUE);
    load(&host, COUNTER);
    host
}

/// A counter session that takes turns until it is told to stop: the flag
/// that tells it, the count of its committed turns, and the task, which
/// returns how many turns committed and fails on the first that does not.
type Alongside = (Arc<AtomicBool>, Arc<Notify>, tokio::task::JoinHandle<u64>);

fn alongside(host: &Host) -> Alongside {
    let stop = Arc::new(AtomicBool::new(false));
    let ticked = Arc::new(Notify::new());
    let task = {
        let (host, stop, ticked) = (host.clone(), stop.clone(), ticked.clone());
        tokio::spawn(async move {
            let id = counter_session(&host, 0).await;
            let mut turns = 0;
            while !stop.load(Ordering::SeqCst) {
                send(&host, &id, "tick").await;
                turns += 1;
                ticked.notify_one();
            }
            turns
        })
    };
    (stop, ticked, task)
}

/// Checks that the counter session is served: it commits a turn (on a
/// machine under load, perhaps only once the rogue turns are over) within
/// 30 s, then stops.
async fn still_served((stop, ticked, task): Alongside) {
    let _ = tokio::time::timeout(Duration::from_secs(30), ticked.notified()).await;
    stop.store(true, Ordering::SeqCst);
    assert!(task.await.unwrap() > 0, "the counter session took no turn");
}

async fn rogue_session(host: &Host, variables: Value) -> String {
    let Value::Object(variables) = variables else {
        unreachable!()
    };
    let start = SessionStart {
        plugin: "rogue".into(),
        variables,
        ..Default::default()
    };
    host.start_session(start, None).await.unwrap().session
}

/// The committed (turn, state) of a session.
async fn committed(host: &Host, id: &str) -> (u64, Value) {
    let record = host.session(id).await.unwrap().unwrap();
    (record.turn, Value::Object(record.state))
}

fn assert_deadline(err: &SessionError, what: &str) {
    assert!(
        matches!(err.cause, Cause::Limit(Tripped::Deadline(limit)) if limit == DEADLINE),
        "{what}: {err}"
    );
    assert!(
        err.to_string().ends_with("deadline of 200 ms exceeded"),
        "{what}: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_in_any_export_fails_at_the_deadline_and_commits_nothing() {
    let store = Arc::new(MemoryStore::default());
    let host = rogue_host_on(Clock::system(), store.clone());
    let counter = alongside(&host);

    // on-start: the session is never stored.
    let start = SessionStart {
        id: Some("spins-at-start".into()),
        plugin: "rogue".into(),
        variables: state(json!({ "spin": true })),
        ..Default::default()
    };
    let err = host.start_session(start, None).await.unwrap_err();
    assert_deadline(&err, "on-start");
    assert_eq!(host.session("spins-at-start").await.unwrap(), None);
    assert!(
        host.timeline()
            .events("spins-at-start", 0, 10)
            .await
            .unwrap()
            .events
            .is_empty()
    );

    // on-message and a tool: the committed state stays.
    let id = rogue_session(&host, json!({})).await;
    send(&host, &id, "hello").await;
    let before = committed(&host, &id).await;
    let logged = host.timeline().events(&id, 0, 100).await.unwrap().events;
    let err = host.send_message(&id, "spin", None).await.unwrap_err();
    assert_deadline(&err, "on-message");
    let err = host
        .call_tool(&id, "spin", json!({}), None)
        .await
        .unwrap_err();
    assert_deadline(&err, "call-tool");
    assert_eq!(committed(&host, &id).await, before);
    assert_eq!(
        host.timeline().events(&id, 0, 100).await.unwrap().events,
        logged,
        "no event for a failed turn"
    );
    assert_eq!(send(&host, &id, "hello").await.state["seen"], json!(2));

    // on-end: the session ends all the same, with its committed state.
    send(&host, &id, r#"remember end "spin""#).await;
    let err = host.end_session(&id).await.unwrap_err();
    assert_deadline(&err, "on-end");
    let record = host.session(&id).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Ended);
    assert_eq!(record.state["end"], json!("spin"));

    // migrate: every turn fails until a version can migrate the state, and
    // the stored state stays as it was.
    let old = stored_under_state_version_1(
        &*store,
        host.clock(),
        "spins-in-migrate",
        json!({ "migrate": "spin" }),
    );
    let err = host
        .send_message("spins-in-migrate", "hello", None)
        .await
        .unwrap_err();
    assert_eq!(err.cause.kind(), "migration", "{err}");
    assert!(
        err.to_string().ends_with(
            "cannot migrate the session state from state version 1 to 2: deadline of 200 ms exceeded"
        ),
        "{err}"
    );
    assert_eq!(
        host.session("spins-in-migrate").await.unwrap().unwrap(),
        old
    );

    still_served(counter).await;
    assert_eq!(
        host.metrics().stats("rogue").limit_trips,
        5,
        "each spin counted as a deadline trip"
    );
}

/// Stores a session of `rogue` as a version with state version 1 left it.
fn stored_under_state_version_1(
    store: &dyn Store,
    clock: &Clock,
    id: &str,
    state: Value,
) -> SessionRecord {
    let Value::Object(state) = state else {
        unreachable!()
    };
    let record = SessionRecord {
        id: id.into(),
        plugin: "rogue".into(),
        digest: "00".repeat(32),
        user_id: None,
        owner: None,
        variables: Default::default(),
        state,
        state_version: 1,
        revision: 1,
        turn: 3,
        status: Status::Active,
        created_at_ms: clock.now_ms(),
        updated_at_ms: clock.now_ms(),
        delegate: None,
        log_bytes: 0,
    };
    store.create(&record, &[], &start_event()).unwrap();
    store.load(id).unwrap().expect("just created")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_overflows_trap_only_their_own_turn() {
    let host = rogue_host(Clock::system());
    let counter = alongside(&host);
    let id = rogue_session(&host, json!({})).await;
    send(&host, &id, "hello").await;
    let before = committed(&host, &id).await;
    for (order, trap) in [
        ("recurse", "out of bounds memory access"),
        ("deep", "call stack exhausted"),
        ("recurse", "out of bounds memory access"),
    ] {
        let err = host.send_message(&id, order, None).await.unwrap_err();
        assert_eq!(err.cause.kind(), "trap", "{err}");
        assert!(err.to_string().contains(trap), "{order}: {err}");
    }
    assert_eq!(committed(&host, &id).await, before);
    assert_eq!(send(&host, &id, "hello").await.state["seen"], json!(2));
    still_served(counter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_stdout_and_stderr_are_capped_and_fail_no_turn_of_their_own() {
    let host = rogue_host(Clock::system());
    let counter = alongside(&host);
    let id = rogue_session(&host, json!({})).await;
    // 64 MiB each, 64 times the output limit: kept up to the limit, the
    // rest dropped, and the turn commits.
    for stream in ["stdout", "stderr"] {
        let report = send(&host, &id, &format!("{stream} 64")).await;
        assert_eq!(said(&report), "wrote 64 MiB");
    }
    // Writing forever ends at the deadline like any other loop.
    let err = host.send_message(&id, "chatter", None).await.unwrap_err();
    assert_deadline(&err, "chatter");
    assert_eq!(committed(&host, &id).await.0, 2);
    still_served(counter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_from_a_tool_or_from_migrate_is_refused_and_changes_nothing() {
    let store = Arc::new(MemoryStore::default());
    let host = rogue_host_on(Clock::system(), store.clone());
    let id = rogue_session(&host, json!({})).await;
    let err = host
        .call_tool(&id, "junk", json!({}), None)
        .await
        .unwrap_err();
    assert_eq!(err.cause.kind(), "invalid-result", "{err}");
    assert!(err.to_string().contains("not JSON"), "{err}");
    assert_eq!(committed(&host, &id).await, (0, json!({})));

    for (id, migrate, reason) in [
        (
            "junk",
            "junk",
            "invalid session state: `migrate` returned something that is not JSON: EOF while parsing a list at line 1 column 15",
        ),
        (
            "array",
            "array",
            "invalid session state: `migrate` returned a state that is not a JSON object",
        ),
    ] {
        let old =
            stored_under_state_version_1(&*store, host.clock(), id, json!({ "migrate": migrate }));
        let err = host.send_message(id, "hello", None).await.unwrap_err();
        assert_eq!(err.cause.kind(), "migration", "{err}");
        assert!(
            err.to_string().ends_with(&format!(
                "cannot migrate the session state from state version 1 to 2: {reason}"
            )),
            "{err}"
        );
        assert_eq!(host.session(id).await.unwrap().unwrap(), old);
    }
    // A state it can migrate moves to state version 2 with its first turn.
    stored_under_state_version_1(&*store, host.clock(), "fine", json!({ "seen": 4 }));
    assert_eq!(send(&host, "fine", "hello").await.state["seen"], json!(5));
    assert_eq!(
        host.session("fine").await.unwrap().unwrap().state_version,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_ends_a_session_whose_on_end_traps_or_spins() {
    let clock = Clock::manual(1_000_000);
    let host = rogue_host(clock.clone());
    let mut rogues = Vec::new();
    for end in ["trap", "spin"] {
        let id = rogue_session(&host, json!({})).await;
        send(&host, &id, &format!(r#"remember end "{end}""#)).await;
        rogues.push(id);
    }
    let calm = counter_session(&host, 1).await;
    clock.advance(Limits::default().session_idle_ttl - Duration::from_secs(1));
    send(&host, &calm, "tick").await;
    clock.advance(Duration::from_secs(2));

    let mut reaped = host.reap(100).await.unwrap();
    reaped.ended.sort();
    rogues.sort();
    assert_eq!(reaped.ended, rogues);
    assert_eq!(reaped.on_end_failures, 2);
    for id in &rogues {
        assert_eq!(host.session(id).await.unwrap(), None, "{id} was deleted");
    }
    // The session touched in time lives on.
    assert_eq!(send(&host, &calm, "tick").await.state["count"], json!(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_runs_under_its_own_limits_and_others_under_the_hosts() {
    let own = Limits {
        deadline: Duration::from_millis(100),
        memory_bytes: 16 << 20,
        host_calls: 1_000,
        live_sessions: Some(2),
        ..Limits::default()
    };
    let host = rogue_host_with(own);
    let counter = alongside(&host);

    let first = rogue_session(&host, json!({})).await;
    let second = rogue_session(&host, json!({})).await;
    let start = SessionStart {
        plugin: "rogue".into(),
        ..Default::default()
    };
    let err = host.start_session(start.clone(), None).await.unwrap_err();
    assert_eq!(err.cause.kind(), "live-sessions", "{err}");
    assert!(
        err.to_string()
            .ends_with("the plugin already has its limit of 2 active sessions"),
        "{err}"
    );
    // Ending one makes room; the counter plugin has no such bound.
    host.end_session(&second).await.unwrap();
    host.start_session(start, None).await.unwrap();
    for _ in 0..3 {
        counter_session(&host, 0).await;
    }

    let err = host.send_message(&first, "spin", None).await.unwrap_err();
    assert!(
        err.to_string().ends_with("deadline of 100 ms exceeded"),
        "{err}"
    );
    let err = host.send_message(&first, "hog", None).await.unwrap_err();
    assert_eq!(err.cause.kind(), "memory-limit", "{err}");
    assert!(
        err.to_string()
            .ends_with("memory limit of 16777216 bytes exceeded"),
        "{err}"
    );
    assert_eq!(
        said(&send(&host, &first, "calls 900").await),
        "made 900 calls"
    );
    let err = host
        .send_message(&first, "calls 1000", None)
        .await
        .unwrap_err();
    assert_eq!(err.cause.kind(), "host-call-limit", "{err}");
    assert!(
        err.to_string()
            .ends_with("limit of 1000 host calls per call of an export exceeded"),
        "{err}"
    );
    assert_eq!(
        committed(&host, &first).await.0,
        1,
        "only `calls 900` committed"
    );
    let stats = host.metrics().stats("rogue");
    assert_eq!((stats.limit_trips, stats.turns_failed), (4, 4));
    still_served(counter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_stops_a_spinning_turn_long_before_its_deadline_and_others_run_unmetered() {
    let host = rogue_host_with(Limits {
        deadline: Duration::from_secs(60),
        fuel: Some(10_000_000),
        ..Limits::default()
    });
    let counter = alongside(&host);
    let id = rogue_session(&host, json!({})).await;
    let before = committed(&host, &id).await;
    let err = host.send_message(&id, "spin", None).await.unwrap_err();
    assert_eq!(err.cause.kind(), "fuel-limit", "{err}");
    assert!(
        err.to_string()
            .ends_with("fuel limit of 10000000 per call of an export exhausted"),
        "{err}"
    );
    assert_eq!(committed(&host, &id).await, before, "nothing committed");
    // A turn within its fuel commits; counter has no fuel limit at all.
    assert_eq!(said(&send(&host, &id, "calls 10").await), "made 10 calls");
    still_served(counter).await;
    assert_eq!(host.metrics().stats("rogue").limit_trips, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_past_a_plugins_limit_of_turns_at_once_is_refused_and_others_run() {
    let own = Limits {
        deadline: Duration::from_secs(1),
        plugin_turns: Some(1),
        ..Limits::default()
    };
    let host = rogue_host_with(own);
    let busy = rogue_session(&host, json!({})).await;
    let other = rogue_session(&host, json!({})).await;
    let ending = rogue_session(&host, json!({})).await;

    // One rogue turn spins to its deadline, holding rogue's one place.
    let spinning = {
        let host = host.clone();
        tokio::spawn(async move { host.send_message(&busy, "spin", None).await })
    };
    // Wait until it runs in its instance, the only one running.
    while !host
        .metrics()
        .encode()
        .contains("agentbox_instances_in_use 1\n")
    {
        assert!(!spinning.is_finished(), "the spinning turn did not run");
        tokio::task::yield_now().await;
    }
    let before = committed(&host, &other).await;
    let err = host
        .send_message(&other, r#"remember note "kept""#, None)
        .await
        .unwrap_err();
    assert_eq!(
        committed(&host, &other).await,
        before,
        "a refused turn commits nothing"
    );
    assert_eq!(err.cause.kind(), "concurrent-turns", "{err}");
    assert!(
        err.to_string().ends_with(
            "the plugin is already running its limit of 1 turns at once; \
             try again when one has finished"
        ),
        "{err}"
    );
    assert!(err.to_string().contains("rogue"), "{err}");
    // Ending a session is never refused for the plugin being busy.
    host.end_session(&ending).await.unwrap();
    assert!(!spinning.is_finished(), "the place was still taken");
    let counter = alongside(&host);
    assert_eq!(
        spinning.await.unwrap().unwrap_err().cause.kind(),
        "deadline"
    );
    // Meanwhile the counter plugin, with no such limit, was served.
    still_served(counter).await;
    // Once the spinning turn is over, the place is free again.
    send(&host, &other, r#"remember note "kept""#).await;
    assert_eq!(committed(&host, &other).await.1["note"], "kept");
    assert_eq!(host.metrics().stats("rogue").limit_trips, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_gets_no_file_network_environment_or_arguments() {
    let host = rogue_host(Clock::system());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();
    let id = rogue_session(&host, json!({})).await;
    let report = send(&host, &id, &format!("escape {address}")).await;
    assert_eq!(
        said(&report),
        "fs: refused, net: refused, env: 0 vars, args: 0"
    );
    let accepted = listener.accept();
    assert!(
        accepted
            .as_ref()
            .is_err_and(|err| err.kind() == std::io::ErrorKind::WouldBlock),
        "the plugin reached the host's network: {accepted:?}"
    );
}
