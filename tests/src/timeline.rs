//! The timeline: every committed turn's event, the state of any turn
//! rebuilt from the log, forks and rewinds, on every store.

use agentbox_host::session::event::EventKind;
use agentbox_host::{Cause, Limits};
use serde_json::{Value, json};

use crate::harness::{counter_session, every_store, host_with, load, said, send};
use crate::plugins::{COUNTER, COUNTER_V2};

/// The count a counter session's state holds.
fn count(state: &serde_json::Map<String, Value>) -> Value {
    state.get("count").cloned().unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_of_every_turn_is_rebuilt_from_the_log_with_and_without_snapshots() {
    for store in every_store() {
        for snapshot_turns in [7, 1_000] {
            let limits = Limits {
                snapshot_turns,
                ..Limits::default()
            };
            let host = host_with(limits, store.store.clone());
            load(&host, COUNTER);
            let id = counter_session(&host, 0).await;
            let mut committed = vec![host.session(&id).await.unwrap().unwrap().state];
            for _ in 0..200 {
                committed.push(send(&host, &id, "tick").await.state);
            }
            for (turn, state) in committed.iter().enumerate() {
                let rebuilt = host.timeline().state_at(&id, turn as u64).await.unwrap();
                assert_eq!(
                    (&rebuilt.state, rebuilt.turn),
                    (state, turn as u64),
                    "{} with a snapshot every {snapshot_turns} turns",
                    store.name
                );
            }
            // Replaying the log from turn 0 gives exactly the stored state.
            let stored = host.session(&id).await.unwrap().unwrap();
            assert_eq!(
                host.timeline().state_at(&id, 200).await.unwrap().state,
                stored.state
            );

            let events = host.timeline().events(&id, 0, 1_000).await.unwrap().events;
            assert_eq!(events.len(), 201, "{}", store.name);
            assert_eq!(events[0].kind, EventKind::Start);
            let tick = &events[5];
            assert_eq!(
                (tick.seq, tick.turn, tick.kind, &tick.input),
                (6, 5, EventKind::Message, &json!({ "text": "tick" }))
            );
            assert_eq!(
                serde_json::to_value(&tick.patch).unwrap(),
                json!([{ "op": "replace", "path": "/count", "value": 5 }])
            );
            assert_eq!(
                tick.snapshot.is_some(),
                5 % snapshot_turns == 0,
                "{}",
                store.name
            );

            let err = host.timeline().state_at(&id, 201).await.unwrap_err();
            assert!(
                err.to_string()
                    .contains("is at turn 200; turn 201 has not happened"),
                "{err}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_carries_the_state_and_history_of_its_turn_and_goes_its_own_way() {
    for store in every_store() {
        let host = host_with(Limits::default(), store.store.clone());
        load(&host, COUNTER);
        let id = counter_session(&host, 5).await;
        let history_at_2 = {
            let history = host.history(&id, 100).await.unwrap();
            history[..history.len() - 3].to_vec()
        };

        let forked = host
            .timeline()
            .fork(&id, 2, Some("forked".into()))
            .await
            .unwrap();
        assert_eq!((forked.session.as_str(), forked.turn), ("forked", 2));
        assert_eq!(count(&forked.state), json!(2));
        assert_eq!(host.history("forked", 100).await.unwrap(), history_at_2);
        let record = host.session("forked").await.unwrap().unwrap();
        let source = host.session(&id).await.unwrap().unwrap();
        assert_eq!(
            (record.turn, &record.owner, &record.user_id),
            (2, &source.owner, &source.user_id)
        );
        let first = &host
            .timeline()
            .events("forked", 0, 10)
            .await
            .unwrap()
            .events[0];
        assert_eq!(first.kind, EventKind::Fork);
        assert_eq!(first.input, json!({ "from": id, "turn": 2, "event": 3 }));

        // The fork's next turn is 3, and the source is untouched.
        let next = send(&host, "forked", "tick").await;
        assert_eq!((next.turn, count(&next.state)), (3, json!(3)));
        assert_eq!(
            count(&host.timeline().state_at(&id, 5).await.unwrap().state),
            json!(5)
        );
        assert_eq!(
            host.timeline().state_at("forked", 2).await.unwrap().state,
            forked.state
        );
        let err = host.timeline().state_at("forked", 1).await.unwrap_err();
        assert!(
            err.to_string().contains("where it was forked from session"),
            "{err}"
        );
        let err = host.timeline().fork(&id, 9, None).await.unwrap_err();
        assert!(matches!(err.cause, Cause::BadRequest(_)), "{err}");
        let err = host
            .timeline()
            .fork(&id, 1, Some("forked".into()))
            .await
            .unwrap_err();
        assert!(matches!(err.cause, Cause::Exists), "{err}");
        let err = host
            .timeline()
            .fork(&id, 1, Some("no spaces".into()))
            .await
            .unwrap_err();
        assert!(matches!(err.cause, Cause::BadRequest(_)), "{err}");
        assert!(host.session("no spaces").await.unwrap().is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_refers_to_its_sources_history_and_finds_it_though_the_source_went_back() {
    for store in every_store() {
        let host = host_with(Limits::default(), store.store.clone());
        load(&host, COUNTER);
        let id = counter_session(&host, 0).await;
        // More turns than a walk reads at a time.
        let text = "x".repeat(2_000);
        for _ in 0..70 {
            send(&host, &id, &text).await;
        }
        let history_at_70 = host.history(&id, 1_000).await.unwrap();
        assert_eq!(history_at_70.len(), 70, "{}", store.name);

        // The fork's log holds no copy of the history it starts with.
        let fork = host.timeline().fork(&id, 70, None).await.unwrap().session;
        let record = host.session(&fork).await.unwrap().unwrap();
        assert!(
            record.log_bytes < 2_000,
            "{}: the fork's log holds {} bytes",
            store.name,
            record.log_bytes
        );
        assert_eq!(host.history(&fork, 1_000).await.unwrap(), history_at_70);

        // The source goes back past the fork's turn and on another way;
        // the fork, set back to the turn it was made at, and a fork of it,
        // still get the history as it was.
        host.timeline().rewind(&id, 5).await.unwrap();
        send(&host, &id, "tick").await;
        send(&host, &fork, "tick").await;
        host.timeline().rewind(&fork, 70).await.unwrap();
        assert_eq!(
            host.history(&fork, 1_000).await.unwrap(),
            history_at_70,
            "{}",
            store.name
        );
        let again = host.timeline().fork(&fork, 70, None).await.unwrap().session;
        assert_eq!(host.history(&again, 1_000).await.unwrap(), history_at_70);

        // Once the source is gone, the fork's history starts at the fork.
        store.store.delete_session(&id).unwrap();
        send(&host, &fork, "tick").await;
        host.timeline().rewind(&fork, 70).await.unwrap();
        assert_eq!(host.history(&fork, 1_000).await.unwrap(), []);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewind_sets_the_session_back_and_keeps_what_it_went_past_marked() {
    for store in every_store() {
        let host = host_with(Limits::default(), store.store.clone());
        load(&host, COUNTER);
        let id = counter_session(&host, 4).await;
        let history_at_1 = {
            let history = host.history(&id, 100).await.unwrap();
            history[..history.len() - 3].to_vec()
        };
        assert_eq!(history_at_1.len(), 1, "one tick; the counter says nothing");

        let rewound = host.timeline().rewind(&id, 1).await.unwrap();
        assert_eq!((rewound.turn, count(&rewound.state)), (1, json!(1)));
        let record = host.session(&id).await.unwrap().unwrap();
        assert_eq!((record.turn, count(&record.state)), (1, json!(1)));
        assert_eq!(host.history(&id, 100).await.unwrap(), history_at_1);

        let next = send(&host, &id, "tick").await;
        assert_eq!((next.turn, count(&next.state)), (2, json!(2)));
        let events = host.timeline().events(&id, 0, 100).await.unwrap().events;
        let marks: Vec<_> = events
            .iter()
            .map(|event| (event.turn, event.kind, event.rewound))
            .collect();
        assert_eq!(
            marks,
            [
                (0, EventKind::Start, false),
                (1, EventKind::Message, false),
                (2, EventKind::Message, true),
                (3, EventKind::Message, true),
                (4, EventKind::Message, true),
                (1, EventKind::Rewind, false),
                (2, EventKind::Message, false),
            ],
            "{}",
            store.name
        );
        assert_eq!(
            count(&host.timeline().state_at(&id, 2).await.unwrap().state),
            json!(2)
        );

        for turn in [2, 7] {
            let err = host.timeline().rewind(&id, turn).await.unwrap_err();
            assert!(
                err.to_string()
                    .contains("a rewind goes back to an earlier one"),
                "{err}"
            );
        }
        host.end_session(&id).await.unwrap();
        let err = host.timeline().rewind(&id, 0).await.unwrap_err();
        assert!(matches!(err.cause, Cause::Ended), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewind_past_a_version_change_migrates_again_on_the_next_turn() {
    for store in every_store() {
        let host = host_with(Limits::default(), store.store.clone());
        let v1 = load(&host, COUNTER);
        let id = counter_session(&host, 3).await;
        let v2 = load(&host, COUNTER_V2);
        assert_eq!(said(&send(&host, &id, "tick").await), "total 4");
        let migrated = host
            .timeline()
            .events(&id, 4, 1)
            .await
            .unwrap()
            .events
            .remove(0);
        let migration = migrated.migration.expect("turn 4 migrated the state");
        assert_eq!((migration.from, migration.to), (1, 2));
        assert_eq!(migrated.digest, v2.digest.to_string());

        // Back to turn 2, committed by version 1 in layout 1.
        let rewound = host.timeline().rewind(&id, 2).await.unwrap();
        assert_eq!(
            (rewound.state_version, rewound.digest.as_str()),
            (1, v1.digest.to_string().as_str())
        );
        assert_eq!(said(&send(&host, &id, "tick").await), "total 3");
        let record = host.session(&id).await.unwrap().unwrap();
        assert_eq!((record.turn, record.state_version), (3, 2));

        // A fork from turn 1 migrates the same way.
        let forked = host.timeline().fork(&id, 1, None).await.unwrap();
        assert_eq!(said(&send(&host, &forked.session, "tick").await), "total 2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_large_messages_is_cut_at_its_bytes_and_says_where_to_go_on() {
    for store in every_store() {
        // Events keep these messages whole.
        let limits = Limits {
            log_text_bytes: 1 << 20,
            ..Limits::default()
        };
        let host = host_with(limits, store.store.clone());
        load(&host, COUNTER);
        let id = counter_session(&host, 0).await;
        let large = "tick ".repeat(140_000);
        for _ in 0..5 {
            host.send_message(&id, &large, None).await.unwrap();
        }
        // 700 KB a message: the third brings the page past 2 MiB, and is
        // its last, though a thousand events were asked for.
        let first = host.timeline().events(&id, 0, 1_000).await.unwrap();
        let seqs: Vec<u64> = first.events.iter().map(|event| event.seq).collect();
        assert_eq!(
            (seqs, first.next),
            (vec![1, 2, 3, 4], Some(4)),
            "{}",
            store.name
        );
        let rest = host.timeline().events(&id, 4, 1_000).await.unwrap();
        let seqs: Vec<u64> = rest.events.iter().map(|event| event.seq).collect();
        assert_eq!((seqs, rest.next), (vec![5, 6], None), "{}", store.name);
        assert_eq!(rest.events[1].input["text"], large.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_log_is_full_takes_no_more_events_and_a_fork_goes_on() {
    for store in every_store() {
        let limits = Limits {
            log_bytes: 4_000,
            ..Limits::default()
        };
        let host = host_with(limits, store.store.clone());
        load(&host, COUNTER);
        let id = counter_session(&host, 0).await;
        let mut ticks = 0;
        let err = loop {
            match host.send_message(&id, "tick", None).await {
                Ok(_) => ticks += 1,
                Err(err) => break err,
            }
            assert!(ticks < 100, "{}: the log never filled", store.name);
        };
        assert!(
            matches!(err.cause, Cause::LogFull { limit: 4_000, .. }),
            "{err}"
        );
        assert_eq!(err.cause.kind(), "log-full");
        assert!(err.to_string().contains("fork the session"), "{err}");

        // The refused turn committed nothing, and neither does a rewind.
        let record = host.session(&id).await.unwrap().unwrap();
        assert!(record.log_bytes <= 4_000 && ticks > 2, "{}", store.name);
        assert_eq!((record.turn, count(&record.state)), (ticks, json!(ticks)));
        let err = host.timeline().rewind(&id, 1).await.unwrap_err();
        assert_eq!(err.cause.kind(), "log-full", "{err}");
        let events = host.timeline().events(&id, 0, 1_000).await.unwrap().events;
        assert_eq!(events.len() as u64, ticks + 1, "{}", store.name);
        assert_eq!(host.session(&id).await.unwrap().unwrap(), record);

        // A fork starts a log of its own and goes on.
        let fork = host
            .timeline()
            .fork(&id, ticks, None)
            .await
            .unwrap()
            .session;
        let next = send(&host, &fork, "tick").await;
        assert_eq!(count(&next.state), json!(ticks + 1), "{}", store.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_keeps_the_whole_state_every_so_many_bytes_as_well_as_turns() {
    for store in every_store() {
        let limits = Limits {
            snapshot_turns: 1_000,
            snapshot_bytes: 3_000,
            ..Limits::default()
        };
        let host = host_with(limits, store.store.clone());
        load(&host, COUNTER);
        let id = counter_session(&host, 0).await;
        let mut committed = vec![host.session(&id).await.unwrap().unwrap().state];
        for _ in 0..40 {
            committed.push(send(&host, &id, "tick").await.state);
        }
        // One snapshot at the start, and one each time the log passed
        // another 3,000 bytes: far more than every 1,000 turns would give.
        let log_bytes = host.session(&id).await.unwrap().unwrap().log_bytes;
        let events = host.timeline().events(&id, 0, 1_000).await.unwrap().events;
        let snapshots = events.iter().filter(|event| event.snapshot.is_some());
        assert_eq!(
            snapshots.count() as u64,
            1 + log_bytes / 3_000,
            "{}",
            store.name
        );
        assert!(log_bytes > 6_000, "{log_bytes}");
        for (turn, state) in committed.iter().enumerate() {
            let rebuilt = host.timeline().state_at(&id, turn as u64).await.unwrap();
            assert_eq!(&rebuilt.state, state, "{} turn {turn}", store.name);
        }
    }
}
