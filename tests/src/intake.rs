//! The intake plugin: a data-collection conversation.

use std::sync::Arc;

use agentbox_host::store::{SqliteStore, Status};
use agentbox_host::{Cause, Limits, Outcome};
use serde_json::json;

use crate::harness::{host, host_with, load, said, send, start, state};
use crate::plugins::INTAKE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_collects_fields_reports_submit_errors_and_confirms() {
    let host = host();
    load(&host, INTAKE);
    let greeting = start(&host, "intake", json!({})).await;
    assert_eq!(
        said(&greeting),
        "Welcome! I will take down your request.\nStill needed: name, email, reason."
    );
    assert_eq!(greeting.turn, 0);
    let id = greeting.session.clone();

    let early = send(&host, &id, "submit").await;
    assert_eq!(
        said(&early),
        "I cannot submit yet: name is missing; email is missing; reason is missing."
    );
    assert_eq!(early.outcome, Outcome::Continue);

    let named = send(&host, &id, "Hi, my name is Ada Lovelace.").await;
    assert_eq!(
        said(&named),
        "Noted your name.\nStill needed: email, reason."
    );
    let mailed = send(&host, &id, "write to ada@example please").await;
    assert_eq!(said(&mailed), "Noted your email.\nStill needed: reason.");
    let reasoned = send(&host, &id, "I need a new laptop.").await;
    assert_eq!(
        said(&reasoned),
        "Noted your reason.\nI have everything I need. Say \"submit\" to send it."
    );
    assert_eq!(
        reasoned.state,
        state(
            json!({ "name": "Ada Lovelace", "email": "ada@example", "reason": "a new laptop", "turns": 4 })
        )
    );

    let refused = send(&host, &id, "submit").await;
    assert_eq!(
        said(&refused),
        "I cannot submit yet: email `ada@example` needs an @ and a dot after it."
    );
    assert_eq!(refused.outcome, Outcome::Continue);

    send(&host, &id, "sorry, it is ada@example.com").await;
    let submitted = send(&host, &id, "submit").await;
    assert_eq!(
        said(&submitted),
        "Submitted. Thank you, Ada Lovelace: we will write to ada@example.com about \"a new laptop\"."
    );
    assert_eq!(submitted.outcome, Outcome::End);
    assert_eq!(submitted.turn, 7);

    let record = host.session(&id).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Ended);
    assert_eq!(record.state["turns"], json!(7));
    let history = host.history(&id, 100).await.unwrap();
    assert_eq!(
        history.len(),
        1 + 2 * 7,
        "the greeting, then each message and its reply"
    );
    assert_eq!(history[1].content, "submit");

    let after = host.send_message(&id, "hello?", None).await.unwrap_err();
    assert!(matches!(after.cause, Cause::Ended), "{after}");
    assert_eq!(
        after.to_string(),
        format!("session `{id}` (plugin `intake`): the session has ended")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_greets_the_caller_by_the_name_variable() {
    let host = host();
    load(&host, INTAKE);
    let greeting = start(&host, "intake", json!({ "name": "Grace" })).await;
    assert_eq!(
        said(&greeting),
        "Welcome, Grace! I will take down your request.\nStill needed: email, reason."
    );
    assert_eq!(greeting.state["name"], json!("Grace"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_sessions_never_see_each_others_state() {
    let host = host();
    load(&host, INTAKE);
    let ada = start(&host, "intake", json!({})).await.session;
    let bob = start(&host, "intake", json!({})).await.session;
    send(&host, &ada, "my name is Ada").await;
    let bob_named = send(&host, &bob, "my name is Bob").await;
    assert_eq!(bob_named.state["name"], json!("Bob"));
    send(&host, &ada, "ada@example.com").await;
    let bob_turn = send(&host, &bob, "I need a refund").await;
    let ada_turn = send(&host, &ada, "I need a laptop").await;

    assert_eq!(
        ada_turn.state,
        state(
            json!({ "name": "Ada", "email": "ada@example.com", "reason": "a laptop", "turns": 3 })
        )
    );
    assert_eq!(
        bob_turn.state,
        state(json!({ "name": "Bob", "reason": "a refund", "turns": 2 }))
    );
    let bob_history = host.history(&bob, 100).await.unwrap();
    assert!(
        bob_history
            .iter()
            .all(|message| !message.content.contains("Ada")),
        "{bob_history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_survives_reopening_the_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessions.db");
    let id = {
        let host = host_with(Limits::default(), Arc::new(SqliteStore::open(&db).unwrap()));
        load(&host, INTAKE);
        let id = start(&host, "intake", json!({})).await.session;
        send(&host, &id, "my name is Ada").await;
        send(&host, &id, "ada@example.com").await;
        id
    };
    let host = host_with(Limits::default(), Arc::new(SqliteStore::open(&db).unwrap()));
    load(&host, INTAKE);
    let resumed = send(&host, &id, "I need a laptop").await;
    assert_eq!(resumed.turn, 3);
    assert_eq!(
        resumed.before,
        state(json!({ "name": "Ada", "email": "ada@example.com", "turns": 2 }))
    );
    assert_eq!(
        said(&resumed),
        "Noted your reason.\nI have everything I need. Say \"submit\" to send it."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_tools_record_fields_and_submit_with_every_error_listed() {
    let host = host();
    load(&host, INTAKE);
    let id = start(&host, "intake", json!({})).await.session;

    let bad_field = host
        .call_tool(
            &id,
            "record_information",
            json!({ "field": "phone", "value": "555" }),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        bad_field
            .to_string()
            .ends_with(r#"/field: "phone" is not one of "name", "email" or "reason""#),
        "{bad_field}"
    );

    let recorded = host
        .call_tool(
            &id,
            "record_information",
            json!({ "field": "email", "value": "ada@example" }),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        recorded.result,
        json!({ "recorded": "email", "missing": ["name", "reason"] })
    );

    let refused = host
        .call_tool(&id, "submit_form", json!({}), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused.cause, Cause::Guest(errors)
            if errors == "name is missing; reason is missing; email `ada@example` needs an @ and a dot after it"),
        "{refused}"
    );
    for (field, value) in [
        ("name", "Ada"),
        ("email", "ada@example.com"),
        ("reason", "a laptop"),
    ] {
        host.call_tool(
            &id,
            "record_information",
            json!({ "field": field, "value": value }),
            None,
        )
        .await
        .unwrap();
    }
    let submitted = host
        .call_tool(&id, "submit_form", json!({}), None)
        .await
        .unwrap();
    assert_eq!(
        submitted.result,
        json!({ "submitted": true, "name": "Ada", "email": "ada@example.com", "reason": "a laptop" })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_state_schema_refuses_an_empty_name_at_commit() {
    let host = host();
    load(&host, INTAKE);
    let id = start(&host, "intake", json!({ "name": "Ada" }))
        .await
        .session;
    let err = host
        .call_tool(
            &id,
            "record_information",
            json!({ "field": "name", "value": "  " }),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err.cause, Cause::InvalidState(_)), "{err}");
    assert!(
        err.to_string().contains(
            "breaks the state schema of `intake`: /name: \"\" is shorter than 1 character"
        ),
        "{err}"
    );
    assert_eq!(
        host.session(&id).await.unwrap().unwrap().state["name"],
        json!("Ada")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_session_starts_and_unknown_sessions_are_refused_with_reasons() {
    let host = host();
    load(&host, INTAKE);
    let start = |id: Option<&str>, user: Option<&str>, variables: serde_json::Value| {
        agentbox_host::SessionStart {
            plugin: "intake".into(),
            id: id.map(Into::into),
            user_id: user.map(Into::into),
            variables: state(variables),
            ..Default::default()
        }
    };
    let cases = [
        (
            start(Some("bad id!"), None, json!({})),
            "session id `bad id!` is invalid: use 1 to 128 characters of A-Z, a-z, 0-9 and _ . : -",
        ),
        (
            start(None, Some(""), json!({})),
            "user id `` is invalid: use 1 to 256 characters of A-Z, a-z, 0-9 and _ . : - + @ (a phone number in E.164 form or an e-mail address is one)",
        ),
        (
            start(None, Some("ada lovelace"), json!({})),
            "user id `ada lovelace` is invalid: use 1 to 256 characters of A-Z, a-z, 0-9 and _ . : - + @ (a phone number in E.164 form or an e-mail address is one)",
        ),
        (
            start(None, Some(&"9".repeat(257)), json!({})),
            "is invalid: use 1 to 256 characters of A-Z, a-z, 0-9 and _ . : - + @ (a phone number in E.164 form or an e-mail address is one)",
        ),
        (
            start(
                None,
                None,
                json!({ "deep": serde_json::from_str::<serde_json::Value>(&format!("{}1{}", "[".repeat(33), "]".repeat(33))).unwrap() }),
            ),
            "initial variable `deep` is nested 33 levels deep, over the limit of 32",
        ),
    ];
    for (start, reason) in cases {
        let err = host.start_session(start, None).await.unwrap_err();
        assert!(matches!(err.cause, Cause::BadRequest(_)), "{err}");
        assert!(err.to_string().ends_with(reason), "{err}");
    }
    let other = host
        .start_session(
            agentbox_host::SessionStart {
                plugin: "shop".into(),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap_err();
    assert!(
        other.to_string().ends_with("plugin `shop` is not loaded"),
        "{other}"
    );

    let taken = host
        .start_session(start(Some("ticket-1"), None, json!({})), None)
        .await
        .unwrap();
    let again = host
        .start_session(
            start(Some("ticket-1"), None, json!({ "name": "Eve" })),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(again.cause, Cause::Exists), "{again}");
    assert_eq!(
        host.session(&taken.session).await.unwrap().unwrap().state,
        taken.state,
        "the first session is untouched"
    );

    let missing = host
        .send_message("no-such-session", "hello", None)
        .await
        .unwrap_err();
    assert_eq!(
        missing.to_string(),
        "session `no-such-session`: no such session"
    );
}
