//! History the plugin shapes: `session.note` adds system messages and
//! `session.prune` drops older messages behind a summary, both committed
//! with the turn, on every store. The guest's `history()` and the API's
//! agree; the log keeps what was dropped, so a fork or rewind to any turn
//! gets that turn's history exactly.

use agentbox_host::hex::hex;
use agentbox_host::session::clip::Clip;
use agentbox_host::store::{Message, Role};
use agentbox_host::{Cause, Host, Limits};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::harness::{every_store, host, host_with, load, said, send, start};
use crate::plugins::MISBEHAVE;

fn message(role: Role, content: &str) -> Message {
    Message {
        role,
        content: content.to_owned(),
        interrupted: false,
    }
}

/// The history as the API shows it.
async fn history(host: &Host, id: &str) -> Vec<Message> {
    host.history(id, 1_000).await.unwrap()
}

/// The history as the plugin sees it, one `Role::X: content` line each.
async fn recalled(host: &Host, id: &str) -> Vec<String> {
    send(host, id, "recall").await.said
}

fn lines(history: &[Message]) -> Vec<String> {
    history
        .iter()
        .map(|message| {
            let role = match message.role {
                Role::System => "System",
                Role::User => "User",
                Role::Assistant => "Assistant",
                Role::Tool => "Tool",
            };
            format!("Role::{role}: {}", message.content)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_and_prunes_commit_with_the_turn_and_the_log_keeps_what_was_dropped() {
    for store in every_store() {
        let host = host_with(Default::default(), store.store.clone());
        load(&host, MISBEHAVE);
        let id = start(&host, "misbehave", json!({})).await.session;
        send(&host, &id, "one").await;
        let noted = send(&host, &id, "remark the caller is Ada|she is in a hurry").await;
        assert_eq!(said(&noted), "noted");
        assert_eq!(
            history(&host, &id).await,
            [
                message(Role::User, "one"),
                message(Role::Assistant, "entry 1"),
                message(Role::User, "remark the caller is Ada|she is in a hurry"),
                message(Role::System, "the caller is Ada"),
                message(Role::System, "she is in a hurry"),
                message(Role::Assistant, "noted"),
            ],
            "{}",
            store.name
        );
        let before = history(&host, &id).await;
        assert_eq!(recalled(&host, &id).await, lines(&before), "{}", store.name);

        // Turn 3 was the recall; turn 4 prunes to its 2 messages behind a
        // summary.
        let pruned = send(&host, &id, "forget 2 Ada, in a hurry, said one").await;
        assert_eq!((pruned.turn, said(&pruned).as_str()), (4, "pruned"));
        let after = history(&host, &id).await;
        let kept = [
            message(Role::System, "Ada, in a hurry, said one"),
            message(Role::User, "recall"),
            message(Role::Assistant, &lines(&before).join("\n")),
            message(Role::User, "forget 2 Ada, in a hurry, said one"),
            message(Role::Assistant, "pruned"),
        ];
        assert_eq!(after, kept, "{}", store.name);
        assert_eq!(recalled(&host, &id).await, lines(&after), "{}", store.name);

        // The log still holds every message, and history as of each turn
        // comes back whole: a fork at turn 2 gets the unpruned history, a
        // fork at turn 4 the pruned one.
        let events = host.timeline().events(&id, 0, 100).await.unwrap().events;
        assert_eq!(events[2].notes, ["the caller is Ada", "she is in a hurry"]);
        assert_eq!(events[4].prune.as_ref().unwrap().keep_last, 2);
        let early = host.timeline().fork(&id, 2, None).await.unwrap().session;
        assert_eq!(history(&host, &early).await, before, "{}", store.name);
        let late = host.timeline().fork(&id, 4, None).await.unwrap().session;
        assert_eq!(history(&host, &late).await, after, "{}", store.name);
        // A rewind to before the prune brings the dropped messages back.
        host.timeline().rewind(&id, 2).await.unwrap();
        assert_eq!(history(&host, &id).await, before, "{}", store.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_summary_folds_what_it_drops_into_the_one_before() {
    let host = host();
    load(&host, MISBEHAVE);
    let id = start(&host, "misbehave", json!({})).await.session;
    for text in ["a", "b", "c"] {
        send(&host, &id, text).await;
    }
    // Six messages; keeping 2 folds the oldest 4 into a summary.
    send(&host, &id, "recap 2").await;
    assert_eq!(
        history(&host, &id).await,
        [
            message(Role::System, "a / entry 1 / b / entry 2"),
            message(Role::User, "c"),
            message(Role::Assistant, "entry 3"),
            message(Role::User, "recap 2"),
            message(Role::Assistant, "recapped"),
        ]
    );
    // The next recap folds into that summary.
    send(&host, &id, "recap 2").await;
    assert_eq!(
        history(&host, &id).await[0],
        message(Role::System, "a / entry 1 / b / entry 2 / c / entry 3")
    );
    // Nothing to drop: the history stays as it is.
    let kept = history(&host, &id).await;
    send(&host, &id, "recap 100").await;
    assert_eq!(history(&host, &id).await[..kept.len()], kept[..]);

    // A prune's event holds only the prune: replaying the log through both
    // gives each turn's history exactly.
    let live = history(&host, &id).await;
    let fork = host.timeline().fork(&id, 6, None).await.unwrap().session;
    assert_eq!(history(&host, &fork).await, live);
    let fork = host.timeline().fork(&id, 5, None).await.unwrap().session;
    assert_eq!(history(&host, &fork).await, kept);
    host.timeline().rewind(&id, 4).await.unwrap();
    assert_eq!(
        history(&host, &id).await[0].content,
        "a / entry 1 / b / entry 2"
    );
    assert_eq!(history(&host, &id).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_keeps_the_start_of_a_large_text_and_the_history_keeps_it_whole() {
    let digest = |text: &str| hex(&Sha256::digest(text.as_bytes()));
    for store in every_store() {
        let limits = Limits {
            log_text_bytes: 1_000,
            ..Limits::default()
        };
        let host = host_with(limits, store.store.clone());
        load(&host, MISBEHAVE);
        let id = start(&host, "misbehave", json!({})).await.session;
        let large = "é".repeat(1_000);
        send(&host, &id, &large).await;
        let recalled = send(&host, &id, "recall").await.said;

        // The plugin reads the message whole, and the history keeps it so.
        assert_eq!(recalled[0], format!("Role::User: {large}"));
        let kept = history(&host, &id).await;
        assert_eq!(kept[0].content, large, "{}", store.name);

        // The log keeps the first 1,000 bytes of each, on a character, with
        // the size and digest of the whole.
        let events = host.timeline().events(&id, 0, 10).await.unwrap().events;
        assert_eq!(events[1].input["text"], "é".repeat(500), "{}", store.name);
        assert_eq!(
            events[1].clipped,
            [Clip {
                at: "/input/text".into(),
                bytes: 2_000,
                sha256: digest(&large),
            }]
        );
        let whole = recalled.join("\n");
        assert_eq!(
            events[2].clipped,
            [Clip {
                at: "/said".into(),
                bytes: whole.len() as u64,
                sha256: digest(&whole),
            }]
        );
        assert_eq!(events[2].said, [format!("Role::User: {}", "é".repeat(493))]);
        assert!(events[0].clipped.is_empty() && events[2].input["text"] == "recall");

        // Time travel has what the log kept.
        let fork = host.timeline().fork(&id, 1, None).await.unwrap().session;
        assert_eq!(
            history(&host, &fork).await[0].content,
            "é".repeat(500),
            "{}",
            store.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_notes_and_summaries_are_refused_and_a_failed_turn_shapes_nothing() {
    let host = host();
    load(&host, MISBEHAVE);
    let id = start(&host, "misbehave", json!({})).await.session;
    send(&host, &id, "one").await;
    let before = history(&host, &id).await;

    let long = "x".repeat(4097);
    let refused = send(&host, &id, &format!("remark {long}")).await;
    assert_eq!(
        said(&refused),
        "refused: Error::Invalid(\"a note is 1 to 4096 bytes; this one is 4097\")"
    );
    let refused = send(&host, &id, "remark |").await;
    assert_eq!(
        said(&refused),
        "refused: Error::Invalid(\"a note is 1 to 4096 bytes; this one is 0\")"
    );
    let many = vec!["n"; 17].join("|");
    let refused = send(&host, &id, &format!("remark {many}")).await;
    assert_eq!(
        said(&refused),
        "refused: Error::Invalid(\"a turn adds at most 16 notes\")"
    );
    // The 16 notes made before the refusal stand: the turn succeeded.
    let notes = history(&host, &id)
        .await
        .iter()
        .filter(|message| message.role == Role::System)
        .count();
    assert_eq!(notes, 16);

    let summary = "s".repeat(16 * 1024 + 1);
    let refused = send(&host, &id, &format!("forget 1 {summary}")).await;
    assert_eq!(
        said(&refused),
        "refused: Error::Invalid(\"a summary is 1 to 16384 bytes; this one is 16385\")"
    );

    let shaped = history(&host, &id).await;
    let err = host
        .send_message(&id, "remark kept?|!fail", None)
        .await
        .unwrap_err();
    assert!(matches!(err.cause, Cause::Guest(_)), "{err}");
    assert_eq!(
        history(&host, &id).await,
        shaped,
        "the failed turn's note is not kept"
    );
    assert!(shaped.starts_with(&before));
}
