//! Version 2 of the counter plugin: hot-swap over version 1, state migration
//! before each session's next turn, a migration that fails, and roll-back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use agentbox_host::Limits;
use agentbox_host::store::{MemoryStore, Store};
use serde_json::json;

use crate::harness::{counter_session, host, host_with, load, said, send, start_event};
use crate::plugins::{COUNTER, COUNTER_V2};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_migrates_each_session_once_before_its_next_turn() {
    let host = host();
    let v1 = load(&host, COUNTER);
    let (a, b) = (
        counter_session(&host, 3).await,
        counter_session(&host, 5).await,
    );
    let v2 = load(&host, COUNTER_V2);
    assert_eq!(host.plugin("counter").unwrap().manifest.version, "0.2.0");
    assert_ne!(v1.digest, v2.digest);

    let first = send(&host, &a, "tick").await;
    assert_eq!(
        (said(&first), &first.state),
        (
            "total 4".into(),
            &json!({ "total": 4 }).as_object().unwrap().clone()
        )
    );
    assert_eq!(said(&send(&host, &b, "tick").await), "total 6");
    // Migrated once: the next turn starts from the committed layout 2.
    assert_eq!(said(&send(&host, &a, "tick").await), "total 5");
    let record = host.session(&a).await.unwrap().unwrap();
    assert_eq!((record.state_version, record.turn), (2, 5));
    assert_eq!(record.digest, v2.digest.to_string());
    assert_eq!(host.history(&a, 100).await.unwrap().len(), 5 + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_new_version_cannot_migrate_stays_on_the_old_one() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let host = host_with(Limits::default(), store.clone());
    let v1 = load(&host, COUNTER);
    let big = counter_session(&host, 100).await;
    load(&host, COUNTER_V2);

    let report = send(&host, &big, "tick").await;
    assert_eq!(report.state["count"], json!(101), "version 1 ran the turn");
    let record = store.load(&big).unwrap().unwrap();
    assert_eq!(
        (record.state_version, record.digest),
        (1, v1.digest.to_string())
    );
    // New sessions run on version 2 all the same.
    let fresh = counter_session(&host, 0).await;
    assert_eq!(said(&send(&host, &fresh, "tick").await), "total 1");

    // Another host that loaded only version 2 finds version 1 in the store
    // and keeps the session on it.
    let other = host_with(Limits::default(), store.clone());
    load(&other, COUNTER_V2);
    let report = send(&other, &big, "tick").await;
    assert_eq!(report.state["count"], json!(102));
    assert_eq!(other.plugin("counter").unwrap().manifest.version, "0.2.0");

    // A host whose store never had version 1 cannot run the session, and says why.
    let bare: Arc<dyn Store> = Arc::new(MemoryStore::default());
    bare.create(&store.load(&big).unwrap().unwrap(), &[], &start_event())
        .unwrap();
    let only_v2 = host_with(Limits::default(), bare);
    load(&only_v2, COUNTER_V2);
    let err = only_v2.send_message(&big, "tick", None).await.unwrap_err();
    assert_eq!(err.cause.kind(), "migration");
    assert!(
        err.to_string().contains("cannot migrate the session state from state version 1 to 2: plugin returned an error: cannot migrate a count of 102"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roll_back_makes_the_previous_version_active_again() {
    let host = host();
    let no_previous = |host: &agentbox_host::Host| {
        let err = host.roll_back("counter").unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugin `counter` has no previous version to roll back to"
        );
    };
    no_previous(&host); // nothing loaded
    load(&host, COUNTER);
    no_previous(&host);
    load(&host, COUNTER_V2);
    let back = host.roll_back("counter").unwrap();
    assert_eq!(back.manifest.version, "0.1.0");
    let id = counter_session(&host, 1).await;
    assert_eq!(
        host.session(&id).await.unwrap().unwrap().state["count"],
        json!(1)
    );
    // Rolling back again returns to version 2; loading it again changes nothing.
    assert_eq!(host.roll_back("counter").unwrap().manifest.version, "0.2.0");
    let again = load(&host, COUNTER_V2);
    assert_eq!(again.manifest.version, "0.2.0");
    assert_eq!(host.roll_back("counter").unwrap().manifest.version, "0.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_under_load_fails_no_turn_and_migrates_every_session() {
    let host = host();
    load(&host, COUNTER);
    let sessions = 8;
    let ticked = Arc::new(AtomicU64::new(0));
    // Compiled and checked before the load: the swap itself is the atomic
    // activation (counter 0.2.0 refuses counts of 100 or more, which a
    // slow compile under load would let the sessions reach).
    let v2 = host.stage_plugin(&crate::plugin_bytes(COUNTER_V2)).unwrap();
    let swapped = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for _ in 0..sessions {
        let id = counter_session(&host, 0).await;
        let (host, ticked, swapped) = (host.clone(), ticked.clone(), swapped.clone());
        senders.push(tokio::spawn(async move {
            let mut turns = 0;
            // Tick until the swap, then 10 more.
            while !swapped.load(Ordering::SeqCst) {
                send(&host, &id, "tick").await;
                turns += 1;
                ticked.fetch_add(1, Ordering::SeqCst);
            }
            for _ in 0..10 {
                send(&host, &id, "tick").await;
                turns += 1;
            }
            (id, turns)
        }));
    }
    while ticked.load(Ordering::SeqCst) < sessions * 5 {
        tokio::task::yield_now().await;
    }
    host.activate("counter", &v2.digest.to_string()).unwrap();
    swapped.store(true, Ordering::SeqCst);
    for sender in senders {
        let (id, turns) = sender.await.unwrap();
        let record = host.session(&id).await.unwrap().unwrap();
        // Every turn committed, and the count crossed into `total` exactly once.
        assert_eq!(record.turn, turns);
        assert_eq!(record.state_version, 2);
        assert_eq!(
            record.state,
            json!({ "total": turns }).as_object().unwrap().clone()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_migration_is_tried_once_per_version_until_an_operator_retries_it() {
    let host = host();
    load(&host, COUNTER);
    let big = counter_session(&host, 100).await;
    let v2 = load(&host, COUNTER_V2);
    let failed = |host: &agentbox_host::Host| host.metrics().stats("counter").migrations_failed;
    let gauge = |host: &agentbox_host::Host| {
        host.metrics()
            .encode()
            .lines()
            .find(|line| line.starts_with("agentbox_pinned_sessions{plugin=\"counter\"}"))
            .map(|line| line.rsplit(' ').next().unwrap().to_owned())
    };

    for tick in 1..=4 {
        let report = send(&host, &big, "tick").await;
        assert_eq!(
            report.state["count"],
            json!(100 + tick),
            "version 1 runs it"
        );
    }
    assert_eq!(failed(&host), 1, "tried once, not on every turn");
    let pinned = host.pinned().sessions("counter");
    assert_eq!(pinned.len(), 1);
    assert_eq!(
        (pinned[0].session.as_str(), pinned[0].from, pinned[0].to),
        (big.as_str(), 1, 2)
    );
    assert_eq!(pinned[0].digest, v2.digest.to_string());
    assert!(
        pinned[0].error.contains("cannot migrate a count of 100"),
        "{}",
        pinned[0].error
    );
    assert_eq!(gauge(&host).as_deref(), Some("1"));

    // The operator asks for another try: it is made at the next turn.
    assert_eq!(host.pinned().retry("counter"), 1);
    assert_eq!(gauge(&host).as_deref(), Some("0"));
    send(&host, &big, "tick").await;
    assert_eq!(failed(&host), 2);
    assert_eq!(host.pinned().sessions("counter").len(), 1);

    // A session that ends is no longer pinned.
    host.end_session(&big).await.unwrap();
    assert!(host.pinned().sessions("counter").is_empty());
    assert_eq!(gauge(&host).as_deref(), Some("0"));
}
