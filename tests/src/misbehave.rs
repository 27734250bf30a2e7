//! A misbehaving plugin against the sandbox: deadlines, memory and output
//! limits, traps, and refused writes. No failed turn commits anything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentbox_host::store::MemoryStore;
use agentbox_host::{Cause, Host, Limits, Tripped, child_session_id};
use serde_json::json;

use crate::harness::{host, host_with, host_with_policy, load, said, send, start, state};
use crate::plugins::{COUNTER, INTAKE, MISBEHAVE};

async fn session(host: &Host) -> String {
    load(host, MISBEHAVE);
    start(host, "misbehave", json!({})).await.session
}

/// The committed (turn, state) of a session, and how many events its log holds.
async fn committed(host: &Host, id: &str) -> (u64, serde_json::Value, usize) {
    let record = host.session(id).await.unwrap().unwrap();
    let events = host
        .timeline()
        .events(id, 0, 1_000)
        .await
        .unwrap()
        .events
        .len();
    (record.turn, serde_json::Value::Object(record.state), events)
}

/// With `guest_output` on, a failed call's error carries the tail of what
/// the guest wrote: its panic message, whole, for the plugin's author.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_turn_carries_the_guests_output_when_the_limits_say_so() {
    let limits = Limits {
        guest_output: true,
        ..Limits::default()
    };
    let host = host_with(limits, Arc::new(MemoryStore::default()));
    let id = session(&host).await;
    let err = host.send_message(&id, "trap", None).await.unwrap_err();
    let output = err.guest_output.clone().expect("the guest's output");
    assert!(
        output.contains("panicked at hostile/misbehave/src/lib.rs:")
            && output.contains("deliberate trap after a set"),
        "{output}"
    );
    assert!(output.len() <= agentbox_host::limits::GUEST_OUTPUT_BYTES);
    let event =
        serde_json::to_value(agentbox_host::session::report::TurnEvent::failed(&err)).unwrap();
    assert_eq!(event["guest_output"], json!(output));
    // A turn that succeeds carries nothing.
    assert!(host.send_message(&id, "note", None).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_after_set_commits_nothing_and_the_next_turn_works() {
    let host = host();
    let id = session(&host).await;
    send(&host, &id, "note").await;
    let before = committed(&host, &id).await;

    let err = host.send_message(&id, "trap", None).await.unwrap_err();
    assert!(matches!(err.cause, Cause::Trap(_)), "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "session `{id}` (plugin `misbehave`), turn 2: plugin trapped: "
        )),
        "{message}"
    );
    assert!(
        message.contains("wasm `unreachable` instruction executed (the plugin's last output: panicked at hostile/misbehave/src/lib.rs:")
            && message.ends_with(": deliberate trap after a set)"),
        "the guest's panic message is named: {message}"
    );
    assert_eq!(err.guest_output, None, "unless the limits say so");
    assert_eq!(
        committed(&host, &id).await,
        before,
        "neither `poisoned` nor the turn number was committed"
    );
    assert_eq!(before, (1, json!({ "entries": 1 }), 2));

    let next = send(&host, &id, "note").await;
    assert_eq!(next.turn, 2);
    assert_eq!(next.state, state(json!({ "entries": 2 })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_loop_fails_at_the_deadline_while_another_plugins_session_completes() {
    let deadline = Duration::from_millis(300);
    let host = host_with(
        Limits {
            deadline,
            ..Limits::default()
        },
        Arc::new(MemoryStore::default()),
    );
    let looping = session(&host).await;
    load(&host, INTAKE);
    let intake = start(&host, "intake", json!({})).await.session;

    let started = Instant::now();
    let spinning = {
        let host = host.clone();
        tokio::spawn(async move {
            let result = host.send_message(&looping, "loop", None).await;
            (result, started.elapsed())
        })
    };
    let other = send(&host, &intake, "my name is Ada").await;
    let other_done = started.elapsed();
    let (result, loop_done) = spinning.await.unwrap();

    assert_eq!(other.state["name"], json!("Ada"));
    assert!(
        other_done < loop_done,
        "the intake turn ({other_done:?}) finished while the loop ({loop_done:?}) still ran"
    );
    let err = result.unwrap_err();
    assert!(
        matches!(err.cause, Cause::Limit(Tripped::Deadline(limit)) if limit == deadline),
        "{err}"
    );
    assert!(
        err.to_string()
            .ends_with("turn 1: deadline of 300 ms exceeded"),
        "{err}"
    );
    // Generous margin: this bounds the epoch mechanism, not the machine's speed.
    assert!(
        loop_done >= deadline && loop_done < deadline + Duration::from_secs(2),
        "stopped after {loop_done:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_fails_with_the_memory_limit() {
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let host = host_with(limits, Arc::new(MemoryStore::default()));
    let id = session(&host).await;
    let err = host.send_message(&id, "hog", None).await.unwrap_err();
    assert!(
        matches!(err.cause, Cause::Limit(Tripped::Memory(limit)) if limit == 16 << 20),
        "{err}"
    );
    assert!(
        err.to_string()
            .ends_with("memory limit of 16777216 bytes exceeded"),
        "{err}"
    );
    // Printed with its whole chain of causes, as `agentbox run` does, the
    // limit is said once.
    let chain: Vec<String> =
        std::iter::successors(Some(&err as &dyn std::error::Error), |err| err.source())
            .map(ToString::to_string)
            .collect();
    assert_eq!(
        chain.join(": ").matches("memory limit of").count(),
        1,
        "{chain:?}"
    );
    assert_eq!(committed(&host, &id).await, (0, json!({}), 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_output_fails_with_the_output_limit() {
    let host = host();
    let id = session(&host).await;
    let err = host.send_message(&id, "flood", None).await.unwrap_err();
    assert!(
        matches!(err.cause, Cause::Limit(Tripped::Output(_))),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("output limit of 1048576 bytes per turn exceeded"),
        "{err}"
    );
    assert!(
        host.history(&id, 10).await.unwrap().is_empty(),
        "nothing said in the failed turn reached the history"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_writes_tell_the_guest_why_and_change_nothing() {
    let host = host();
    let id = session(&host).await;
    let bad_key = send(&host, &id, "set bad!key 1").await;
    assert_eq!(
        said(&bad_key),
        "refused: Error::Invalid(\"key `bad!key` contains '!'; keys use A-Z, a-z, 0-9 and _ . : / -\")"
    );
    let long_key = send(&host, &id, &format!("set {} 1", "k".repeat(129))).await;
    assert_eq!(
        said(&long_key),
        "refused: Error::Invalid(\"key of 129 bytes is longer than 128\")"
    );
    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    let too_deep = send(&host, &id, &format!("set deep {deep}")).await;
    assert_eq!(
        said(&too_deep),
        "refused: Error::Invalid(\"value of `deep` is nested 40 levels deep, over the limit of 32\")"
    );
    assert_eq!(too_deep.state, state(json!({})));

    let err = host.send_message(&id, "huge", None).await.unwrap_err();
    assert!(matches!(err.cause, Cause::Guest(_)), "{err}");
    assert!(
        err.to_string()
            .contains("value of `huge` is 1048578 bytes, over the limit of 65536 bytes"),
        "{err}"
    );
    assert_eq!(committed(&host, &id).await, (3, json!({}), 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_sets_the_size_of_one_value_per_plugin() {
    let value = |bytes: usize| format!("\"{}\"", "x".repeat(bytes - 2));
    // Raised for a plugin whose state keeps long text.
    let roomy =
        crate::harness::host_with_policy("[plugins.misbehave]\nvalue_bytes = 262144", &[MISBEHAVE]);
    let id = start(&roomy, "misbehave", json!({})).await.session;
    let fits = send(&roomy, &id, &format!("set notes {}", value(200_000))).await;
    assert_eq!(said(&fits), "set notes");
    let over = send(&roomy, &id, &format!("set more {}", value(262_145))).await;
    assert_eq!(
        said(&over),
        "refused: Error::Invalid(\"value of `more` is 262145 bytes, over the limit of 262144 bytes\")"
    );
    // Lowered for another, which the default would have let through.
    let tight =
        crate::harness::host_with_policy("[plugins.misbehave]\nvalue_bytes = 100", &[MISBEHAVE]);
    let id = start(&tight, "misbehave", json!({})).await.session;
    let refused = send(&tight, &id, &format!("set a {}", value(101))).await;
    assert_eq!(
        said(&refused),
        "refused: Error::Invalid(\"value of `a` is 101 bytes, over the limit of 100 bytes\")"
    );
    assert_eq!(refused.state, state(json!({})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_state_over_the_size_limit_is_refused_as_quota() {
    let limits = Limits {
        state_bytes: 100,
        ..Limits::default()
    };
    let host = host_with(limits, Arc::new(MemoryStore::default()));
    let id = session(&host).await;
    let fits = send(&host, &id, &format!("set a \"{}\"", "x".repeat(60))).await;
    assert_eq!(said(&fits), "set a");
    let over = send(&host, &id, &format!("set b \"{}\"", "y".repeat(60))).await;
    assert_eq!(
        said(&over),
        "refused: Error::QuotaExceeded(\"setting `b` would make the session state 126 bytes, over the limit of 100 bytes\")"
    );
    assert_eq!(over.state.keys().collect::<Vec<_>>(), ["a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tool_arguments_list_every_violation_and_never_enter_the_guest() {
    let store: Arc<dyn agentbox_host::store::Store> = Arc::new(MemoryStore::default());
    let host = host_with(Limits::default(), store.clone());
    let id = session(&host).await;
    let counted = host
        .call_tool(&id, "record", json!({ "count": 2, "label": "ok" }), None)
        .await
        .unwrap();
    assert_eq!(counted.result, json!(2));

    let cases = [
        (
            json!({ "count": "two", "label": "x" }),
            vec![("/count", "\"two\" is not of type \"integer\"")],
        ),
        (
            json!({ "count": 1 }),
            vec![("", "\"label\" is a required property")],
        ),
        (
            json!({ "count": 1, "label": "x", "colour": "red" }),
            vec![(
                "",
                "Additional properties are not allowed ('colour' was unexpected)",
            )],
        ),
        (
            json!({ "count": 11, "label": "x" }),
            vec![("/count", "11 is greater than the maximum of 10")],
        ),
        (
            json!({ "count": 0, "label": 7, "extra": true }),
            vec![
                (
                    "",
                    "Additional properties are not allowed ('extra' was unexpected)",
                ),
                ("/count", "0 is less than the minimum of 1"),
                ("/label", "7 is not of type \"string\""),
            ],
        ),
    ];
    for (arguments, expected) in cases {
        let err = host
            .call_tool(&id, "record", arguments.clone(), None)
            .await
            .unwrap_err();
        let Cause::InvalidArguments { tool, violations } = &err.cause else {
            panic!("{arguments}: {err}")
        };
        assert_eq!(tool, "record");
        let mut found: Vec<(&str, &str)> = violations
            .iter()
            .map(|v| (v.pointer.as_str(), v.message.as_str()))
            .collect();
        found.sort();
        assert_eq!(found, expected, "{arguments}");
    }
    assert_eq!(
        committed(&host, &id).await,
        (1, json!({ "entries": 2 }), 2),
        "the guest never ran for an invalid call"
    );
    let outcomes: Vec<_> = store
        .executions()
        .unwrap()
        .iter()
        .map(|execution| execution.outcome.as_str())
        .collect();
    assert_eq!(
        outcomes,
        [
            "ok",
            "invalid-args",
            "invalid-args",
            "invalid-args",
            "invalid-args",
            "invalid-args"
        ]
    );

    let err = host
        .call_tool(
            &id,
            "record",
            json!({ "count": 1, "label": "x", "colour": "red" }),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().ends_with("turn 2: invalid arguments for tool `record`: (root): Additional properties are not allowed ('colour' was unexpected)"),
        "{err}"
    );
    let unknown = host
        .call_tool(&id, "erase", json!({}), None)
        .await
        .unwrap_err();
    assert!(
        unknown
            .to_string()
            .ends_with("plugin `misbehave` has no tool `erase`"),
        "{unknown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_that_breaks_the_state_schema_fails_the_turn_at_commit() {
    let host = host();
    let id = session(&host).await;
    let calm = send(&host, &id, "set mood \"calm\"").await;
    assert_eq!(calm.state, state(json!({ "mood": "calm" })));
    let err = host
        .send_message(&id, "set mood \"bored\"", None)
        .await
        .unwrap_err();
    assert!(matches!(err.cause, Cause::InvalidState(_)), "{err}");
    assert!(
        err.to_string().ends_with(
            "turn 2: invalid session state: breaks the state schema of `misbehave`: /mood: \"bored\" is not one of \"calm\" or \"cross\""
        ),
        "{err}"
    );
    assert_eq!(
        committed(&host, &id).await,
        (1, json!({ "mood": "calm" }), 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_that_breaks_its_schema_or_the_size_limit_is_refused() {
    let store: Arc<dyn agentbox_host::store::Store> = Arc::new(MemoryStore::default());
    let host = host_with(
        Limits {
            output_bytes: 1000,
            ..Limits::default()
        },
        store.clone(),
    );
    let id = session(&host).await;
    let fine = host
        .call_tool(&id, "score", json!({ "points": 10 }), None)
        .await
        .unwrap();
    assert_eq!(fine.result, json!({ "points": 10 }));

    let over = host
        .call_tool(&id, "score", json!({ "points": 11 }), None)
        .await
        .unwrap_err();
    assert!(matches!(over.cause, Cause::InvalidResult { .. }), "{over}");
    assert!(
        over.to_string().ends_with("tool `score` returned an invalid result: it breaks the result schema: /points: 11 is greater than the maximum of 10"),
        "{over}"
    );
    let long = host
        .call_tool(&id, "repeat", json!({ "text": "ab", "times": 600 }), None)
        .await
        .unwrap_err();
    assert!(long.to_string().ends_with("tool `repeat` returned an invalid result: it is 1202 bytes, over the output limit of 1000 bytes"), "{long}");

    assert_eq!(
        committed(&host, &id).await.0,
        1,
        "only the valid call committed a turn"
    );
    let outcomes: Vec<_> = store
        .executions()
        .unwrap()
        .iter()
        .map(|execution| execution.outcome.as_str())
        .collect();
    assert_eq!(outcomes, ["ok", "guest-error", "guest-error"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_session_runs_on_end_and_commits_its_writes_with_the_end() {
    let host = host();
    let id = session(&host).await;
    send(&host, &id, "note").await;
    let ended = host.end_session(&id).await.unwrap();
    assert_eq!(
        (ended.turn, ended.outcome.clone()),
        (2, agentbox_host::Outcome::End)
    );
    assert_eq!(ended.state, state(json!({ "entries": 1, "ended": true })));
    assert_eq!(ended.said, ["goodbye after 1 entries"]);
    let record = host.session(&id).await.unwrap().unwrap();
    assert_eq!(record.status, agentbox_host::store::Status::Ended);
    let again = host.end_session(&id).await.unwrap_err();
    assert!(matches!(again.cause, Cause::Ended), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_on_end_still_ends_the_session_with_its_committed_state() {
    let host = host();
    let id = session(&host).await;
    send(&host, &id, "set refuse_end true").await;
    let err = host.end_session(&id).await.unwrap_err();
    assert!(
        matches!(&err.cause, Cause::Guest(message) if message == "refusing to end"),
        "{err}"
    );
    let record = host.session(&id).await.unwrap().unwrap();
    assert_eq!(record.status, agentbox_host::store::Status::Ended);
    assert_eq!(
        serde_json::Value::Object(record.state),
        json!({ "refuse_end": true }),
        "on-end's writes were not committed"
    );
    let after = host.send_message(&id, "note", None).await.unwrap_err();
    assert!(matches!(after.cause, Cause::Ended), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_goes_where_the_policy_grants_and_the_target_answers_in_its_own_session_until_it_ends()
 {
    let host = host_with_policy(
        "[plugins.misbehave]\nmay_hand_off = [\"intake\"]",
        &[COUNTER],
    );
    let id = session(&host).await;
    send(&host, &id, "set name \"Ada\"").await;
    let refused = host
        .send_message(&id, "handoff nobody", None)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused.cause, Cause::PluginNotLoaded(name) if name == "nobody"),
        "{refused}"
    );
    // Counter is loaded, but the policy does not let misbehave hand to it.
    let denied = host
        .send_message(&id, "handoff counter", None)
        .await
        .unwrap_err();
    assert!(
        matches!(&denied.cause, Cause::HandOffDenied(name) if name == "counter"),
        "{denied}"
    );
    assert_eq!(denied.cause.kind(), "hand-off-denied");
    assert!(denied.to_string().contains("may_hand_off"), "{denied}");
    assert!(
        host.session(&child_session_id(&id, "counter"))
            .await
            .unwrap()
            .is_none(),
        "counter was never started"
    );
    let record = host.session(&id).await.unwrap().unwrap();
    assert_eq!(
        (record.turn, record.delegate),
        (1, None),
        "a refused hand-off commits nothing"
    );
    // Handing the conversation to its own plugin needs no grant: it stays.
    let kept = send(&host, &id, "handoff misbehave").await;
    assert_eq!(
        kept.outcome,
        agentbox_host::Outcome::HandOff("misbehave".into())
    );
    let record = host.session(&id).await.unwrap().unwrap();
    assert_eq!((record.turn, record.delegate), (2, None));

    // Intake starts in its own child session (on-start) and answers the
    // message that handed it the conversation.
    load(&host, INTAKE);
    let handed = send(&host, &id, "handoff intake").await;
    assert_eq!(
        handed.outcome,
        agentbox_host::Outcome::HandOff("intake".into())
    );
    assert_eq!(
        said(&handed),
        "Welcome! I will take down your request.\nStill needed: name, email, reason.\n\
         I did not catch that. Try \"my name is ...\", your email address, or \"I need ...\".\n\
         Still needed: name, email, reason."
    );
    let record = host.session(&id).await.unwrap().unwrap();
    assert_eq!(
        (
            record.plugin.as_str(),
            record.delegate.as_deref(),
            record.turn
        ),
        ("misbehave", Some("intake"), 3)
    );
    assert_eq!(record.state["name"], "Ada", "misbehave keeps its own state");
    let child = child_session_id(&id, "intake");
    assert_eq!(
        host.session(&child).await.unwrap().unwrap().plugin,
        "intake"
    );

    // The next messages go to intake, which never sees misbehave's state.
    let intake_turn = send(&host, &id, "ada@example.com").await;
    assert_eq!(
        said(&intake_turn),
        "Noted your email.\nStill needed: name, reason."
    );
    send(&host, &id, "my name is Grace, I need a laptop").await;
    let submitted = send(&host, &id, "submit").await;
    assert!(
        said(&submitted).starts_with("Submitted. Thank you, Grace"),
        "{}",
        said(&submitted)
    );
    // Intake ended its part: the conversation is misbehave's again.
    assert_eq!(
        host.session(&child).await.unwrap().unwrap().status,
        agentbox_host::store::Status::Ended
    );
    let back = send(&host, &id, "get name").await;
    assert_eq!(said(&back), "name = \"Ada\"");
    let record = host.session(&id).await.unwrap().unwrap();
    assert_eq!((record.delegate, record.turn), (None, 7));
    // The session's history keeps the whole conversation.
    let history = host.history(&id, 100).await.unwrap();
    assert!(
        history
            .iter()
            .any(|message| message.content.contains("Noted your email")),
        "{history:?}"
    );
}
