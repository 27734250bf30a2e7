//! The same agent in three languages: the intake plugin in Rust
//! (`plugins/intake`), Python (`plugins/python/intake`, componentize-py) and
//! JavaScript (`plugins/js/intake`, componentize-js), each built with its
//! language's helper library, held to one conversation file and one set of
//! tool calls. Every turn's words, outcome and committed state, and every
//! tool's result or refusal, must be the same in all three.

use serde_json::{Value, json};

use crate::harness::{host, load, said, start};
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
