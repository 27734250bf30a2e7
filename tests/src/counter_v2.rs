//! Version 2 of the counter plugin: hot-swap over version 1, state migration
//! before each session's next turn, a migration that fails, and roll-back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use agentbox_host::store::{MemoryStore, Store};
use agentbox_host::{Host, Limits, SessionStart};
use serde_json::json;

use crate::harness::{host, host_with, load, said, send};
use crate::plugins::{COUNTER, COUNTER_V2};

async fn counter_session(host: &Host, ticks: u64) -> String {
    let start = SessionStart {
        plugin: "counter".into(),
        ..Default::default()
    };
    let id = host.start_session(start, None).await.unwrap().session;
    for _ in 0..ticks {
        send(host, &id, "tick").await;
    }
    id
}

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
    let record = host.store().load(&a).unwrap().unwrap();
    assert_eq!((record.state_version, record.turn), (2, 5));
    assert_eq!(record.digest, v2.digest.to_string());
    assert_eq!(host.store().history(&a, 100).unwrap().len(), 5 + 2);
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

    // A host that has only version 2 cannot run the session, and says why.
    let only_v2 = host_with(Limits::default(), store);
    load(&only_v2, COUNTER_V2);
    let err = only_v2.send_message(&big, "tick", None).await.unwrap_err();
    assert_eq!(err.cause.kind(), "migration");
    assert!(
        err.to_string().contains("cannot migrate the session state from state version 1 to 2: plugin returned an error: cannot migrate a count of 101"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roll_back_makes_the_previous_version_active_again() {
    let host = host();
    assert!(host.roll_back("counter").is_none(), "nothing loaded");
    load(&host, COUNTER);
    assert!(host.roll_back("counter").is_none(), "no previous version");
    load(&host, COUNTER_V2);
    let back = host.roll_back("counter").unwrap();
    assert_eq!(back.manifest.version, "0.1.0");
    let id = counter_session(&host, 1).await;
    assert_eq!(
        host.store().load(&id).unwrap().unwrap().state["count"],
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
        let record = host.store().load(&id).unwrap().unwrap();
        // Every turn committed, and the count crossed into `total` exactly once.
        assert_eq!(record.turn, turns);
        assert_eq!(record.state_version, 2);
        assert_eq!(
            record.state,
            json!({ "total": turns }).as_object().unwrap().clone()
        );
    }
}
