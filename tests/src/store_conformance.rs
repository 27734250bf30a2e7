//! One conformance suite for every `Store` backend.

use std::sync::Arc;

use agentbox_host::store::{
    Commit, Execution, HistoryCap, KvStoreError, KvWrite, LogEntry, Message, Namespace,
    OutboundUse, Quota, Retention, Role, SessionFilter, SessionRecord, SessionStoreError, State,
    Status, Store, ToolOutcome, Usage,
};
use serde_json::json;

use crate::harness::{start_event, state};

fn record(id: &str) -> SessionRecord {
    SessionRecord {
        id: id.to_owned(),
        plugin: "intake".to_owned(),
        digest: "00".repeat(32),
        user_id: Some("user-1".to_owned()),
        owner: Some("key/shop-backend".to_owned()),
        variables: state(json!({ "name": "Ada" })),
        state: state(json!({ "turns": 0 })),
        state_version: 1,
        revision: 1,
        turn: 0,
        status: Status::Active,
        created_at_ms: 1_000,
        updated_at_ms: 1_000,
        delegate: None,
        // The start event's bytes, as the store counts them.
        log_bytes: 2,
    }
}

fn message(role: Role, content: &str) -> Message {
    Message {
        role,
        content: content.to_owned(),
        interrupted: false,
    }
}

fn commit(id: &str, read_revision: u64, turn: u64, state: State) -> Commit {
    Commit {
        session: id.to_owned(),
        read_revision,
        state,
        turn,
        plugin: "intake".to_owned(),
        delegate: None,
        digest: "11".repeat(32),
        state_version: 1,
        status: Status::Active,
        messages: vec![
            message(Role::User, &format!("message {turn}")),
            message(Role::Assistant, &format!("reply {turn}")),
        ],
        dropped_messages: 0,
        history_cap: HistoryCap {
            messages: 1_000,
            bytes: 1 << 20,
        },
        at_ms: 2_000 + turn,
        event: turn_event(turn),
    }
}

/// The event a test's commit of `turn` appends.
fn turn_event(turn: u64) -> LogEntry {
    LogEntry {
        turn,
        snapshot: false,
        rewind: false,
        body: format!("{{\"turn\":{turn}}}"),
    }
}

/// A retention that deletes nothing a test made.
const KEEP_ALL: Retention = Retention {
    ended_before_ms: 0,
    records_before_ms: 0,
};

fn created_session_loads_as_stored(store: &dyn Store) {
    assert_eq!(store.load("s1").unwrap(), None);
    store
        .create(
            &record("s1"),
            &[message(Role::Assistant, "Welcome")],
            &start_event(),
        )
        .unwrap();
    assert_eq!(store.load("s1").unwrap(), Some(record("s1")));
    assert_eq!(
        store.history("s1", 10).unwrap(),
        [message(Role::Assistant, "Welcome")]
    );
}

fn creating_an_existing_id_fails_and_changes_nothing(store: &dyn Store) {
    store.create(&record("s1"), &[], &start_event()).unwrap();
    let mut other = record("s1");
    other.plugin = "shop".to_owned();
    let err = store
        .create(
            &other,
            &[message(Role::Assistant, "intruder")],
            &start_event(),
        )
        .unwrap_err();
    assert!(
        matches!(err, SessionStoreError::Exists(ref id) if id == "s1"),
        "{err}"
    );
    assert_eq!(store.load("s1").unwrap(), Some(record("s1")));
    assert!(store.history("s1", 10).unwrap().is_empty());
}

fn commit_replaces_state_and_appends_history(store: &dyn Store) {
    store.create(&record("s1"), &[], &start_event()).unwrap();
    let mut ended = commit("s1", 1, 1, state(json!({ "turns": 1, "name": "Ada" })));
    ended.status = Status::Ended;
    // The reply was cut off by the caller, and is kept marked so.
    ended.messages[1].interrupted = true;
    store.commit(&ended).unwrap();
    let loaded = store.load("s1").unwrap().unwrap();
    assert_eq!(loaded.state, state(json!({ "turns": 1, "name": "Ada" })));
    assert_eq!(
        (
            loaded.revision,
            loaded.turn,
            loaded.status,
            loaded.updated_at_ms
        ),
        (2, 1, Status::Ended, 2_001)
    );
    assert_eq!(loaded.digest, "11".repeat(32));
    assert_eq!(loaded.created_at_ms, 1_000);
    assert_eq!(
        store.history("s1", 10).unwrap(),
        [
            message(Role::User, "message 1"),
            Message {
                interrupted: true,
                ..message(Role::Assistant, "reply 1")
            }
        ]
    );
}

fn a_commit_hands_the_conversation_to_a_delegate_and_back(store: &dyn Store) {
    store.create(&record("s1"), &[], &start_event()).unwrap();
    assert_eq!(store.load("s1").unwrap().unwrap().delegate, None);
    let handed = Commit {
        delegate: Some("shop".to_owned()),
        ..commit("s1", 1, 1, state(json!({ "turns": 1 })))
    };
    store.commit(&handed).unwrap();
    let loaded = store.load("s1").unwrap().unwrap();
    assert_eq!(
        (loaded.plugin.as_str(), loaded.delegate.as_deref()),
        ("intake", Some("shop"))
    );
    store
        .commit(&commit("s1", 2, 2, state(json!({ "turns": 2 }))))
        .unwrap();
    assert_eq!(store.load("s1").unwrap().unwrap().delegate, None);
    // A session created already handed on keeps its delegate too.
    let created = SessionRecord {
        delegate: Some("shop".to_owned()),
        ..record("s2")
    };
    store.create(&created, &[], &start_event()).unwrap();
    assert_eq!(store.load("s2").unwrap().unwrap(), created);
}

fn commit_with_a_stale_revision_conflicts_and_changes_nothing(store: &dyn Store) {
    store.create(&record("s1"), &[], &start_event()).unwrap();
    store
        .commit(&commit("s1", 1, 1, state(json!({ "turns": 1 }))))
        .unwrap();
    let err = store
        .commit(&commit("s1", 1, 1, state(json!({ "turns": 99 }))))
        .unwrap_err();
    assert!(
        matches!(
            err,
            SessionStoreError::Conflict {
                read: 1,
                stored: 2,
                ..
            }
        ),
        "{err}"
    );
    let loaded = store.load("s1").unwrap().unwrap();
    assert_eq!(
        (loaded.revision, &loaded.state),
        (2, &state(json!({ "turns": 1 })))
    );
    assert_eq!(store.history("s1", 10).unwrap().len(), 2);
}

fn commit_to_a_missing_session_is_not_found(store: &dyn Store) {
    let err = store
        .commit(&commit("ghost", 1, 1, State::new()))
        .unwrap_err();
    assert!(
        matches!(err, SessionStoreError::NotFound(ref id) if id == "ghost"),
        "{err}"
    );
    assert!(store.history("ghost", 1).unwrap().is_empty());
}

fn history_returns_the_newest_messages_oldest_first(store: &dyn Store) {
    store
        .create(
            &record("s1"),
            &[message(Role::Assistant, "Welcome")],
            &start_event(),
        )
        .unwrap();
    for turn in 1..=3 {
        store
            .commit(&commit("s1", turn, turn, State::new()))
            .unwrap();
    }
    let last = store.history("s1", 3).unwrap();
    assert_eq!(
        last,
        [
            message(Role::Assistant, "reply 2"),
            message(Role::User, "message 3"),
            message(Role::Assistant, "reply 3")
        ]
    );
    assert_eq!(store.history("s1", 100).unwrap().len(), 7);
}

fn history_is_trimmed_to_its_cap_oldest_first_keeping_the_newest(store: &dyn Store) {
    store
        .create(
            &record("s1"),
            &[message(Role::Assistant, "Welcome")],
            &start_event(),
        )
        .unwrap();
    let capped = |turn, cap: HistoryCap, messages: &[&str]| Commit {
        messages: messages
            .iter()
            .map(|text| message(Role::User, text))
            .collect(),
        history_cap: cap,
        ..commit("s1", turn, turn, State::new())
    };
    let three = HistoryCap {
        messages: 3,
        bytes: 1 << 20,
    };
    store.commit(&capped(1, three, &["a", "b"])).unwrap();
    assert_eq!(store.history("s1", 10).unwrap().len(), 3, "at the cap");
    store.commit(&capped(2, three, &["c", "d"])).unwrap();
    let texts = |store: &dyn Store| -> Vec<String> {
        store
            .history("s1", 10)
            .unwrap()
            .into_iter()
            .map(|message| message.content)
            .collect()
    };
    assert_eq!(texts(store), ["b", "c", "d"]);
    // Ten bytes: "d" and the next two fit, the third does not.
    let ten_bytes = HistoryCap {
        messages: 100,
        bytes: 10,
    };
    store
        .commit(&capped(3, ten_bytes, &["xxxx", "yyyyy"]))
        .unwrap();
    assert_eq!(texts(store), ["d", "xxxx", "yyyyy"]);
    // A message over the bound alone is kept, alone.
    store
        .commit(&capped(4, ten_bytes, &["zzzzzzzzzzzz"]))
        .unwrap();
    assert_eq!(texts(store), ["zzzzzzzzzzzz"]);
    // The bytes kept are counted: two small messages fit beside nothing else.
    store.commit(&capped(5, ten_bytes, &["1", "2"])).unwrap();
    assert_eq!(texts(store), ["1", "2"]);
    assert_eq!(store.load("s1").unwrap().unwrap().turn, 5);
}

fn ended_sessions_and_tool_records_are_deleted_past_their_retention(store: &dyn Store) {
    for id in ["ended", "active"] {
        store
            .create(
                &record(id),
                &[message(Role::Assistant, "Welcome")],
                &start_event(),
            )
            .unwrap();
    }
    store
        .commit(&Commit {
            status: Status::Ended,
            ..commit("ended", 1, 1, State::new())
        })
        .unwrap();
    let ended_at = 2_001;
    let execution = |at_ms: u64| Execution {
        id: format!("call-{at_ms}"),
        called_by: (at_ms > 1_000).then(|| "call-1000".to_owned()),
        plugin: "shop".to_owned(),
        digest: "00".repeat(32),
        tool: "login".to_owned(),
        session: "ended".to_owned(),
        duration_us: 10,
        outcome: ToolOutcome::InvalidArgs,
        at_ms,
        outbound: OutboundUse {
            requests: at_ms / 1_000,
            refused: 1,
            response_bytes: at_ms * 3,
        },
    };
    for at_ms in [1_000, 2_000, 3_000] {
        store.record_execution(&execution(at_ms)).unwrap();
    }
    let retention = |before_ms| Retention {
        ended_before_ms: before_ms,
        records_before_ms: before_ms,
    };
    let swept = store.sweep(1_000, retention(1_000)).unwrap();
    assert_eq!((swept.ended_sessions, swept.executions), (0, 1));
    let swept = store.sweep(ended_at - 1, retention(ended_at - 1)).unwrap();
    assert_eq!((swept.ended_sessions, swept.executions), (0, 1));
    assert!(store.load("ended").unwrap().is_some());
    let swept = store.sweep(ended_at, retention(ended_at)).unwrap();
    assert_eq!((swept.ended_sessions, swept.executions), (1, 0));
    assert_eq!(store.load("ended").unwrap(), None);
    assert!(store.history("ended", 10).unwrap().is_empty());
    assert!(store.events("ended", 0, 10, usize::MAX).unwrap().is_empty());
    assert!(
        store.load("active").unwrap().is_some(),
        "an active session is the reaper's by its idle time, not retention"
    );
    assert_eq!(store.history("active", 10).unwrap().len(), 1);
    // What is left is the newest record, whole.
    assert_eq!(store.executions().unwrap(), [execution(3_000)]);
    let swept = store.sweep(u64::MAX, retention(u64::MAX)).unwrap();
    assert_eq!((swept.ended_sessions, swept.executions), (0, 1));
    // The id of a deleted session is free again.
    store.create(&record("ended"), &[], &start_event()).unwrap();
}

fn live_sessions_are_counted_per_owner(store: &dyn Store) {
    let owned = |id: &str, owner: Option<&str>| SessionRecord {
        owner: owner.map(str::to_owned),
        ..record(id)
    };
    for (id, owner) in [
        ("a1", Some("key:a")),
        ("a2", Some("key:a")),
        ("a3", Some("key:a")),
        ("b1", Some("key:b")),
        ("open", None),
    ] {
        store
            .create(&owned(id, owner), &[], &start_event())
            .unwrap();
    }
    assert_eq!(store.live_sessions_of("key:a").unwrap(), 3);
    assert_eq!(store.live_sessions_of("key:b").unwrap(), 1);
    assert_eq!(store.live_sessions_of("key:nobody").unwrap(), 0);
    store
        .commit(&Commit {
            status: Status::Ended,
            ..commit("a1", 1, 1, State::new())
        })
        .unwrap();
    store.delete_session("a2").unwrap();
    assert_eq!(store.live_sessions_of("key:a").unwrap(), 1);
    assert_eq!(store.live_sessions_of("key:b").unwrap(), 1);
}

fn a_users_sessions_and_kv_owners_are_listed(store: &dyn Store) {
    let of = |id: &str, user: &str| SessionRecord {
        user_id: Some(user.to_owned()),
        ..record(id)
    };
    for (id, user) in [
        ("s1", "+15551234567"),
        ("s2", "ada@example.com"),
        ("s3", "+15551234567"),
    ] {
        store.create(&of(id, user), &[], &start_event()).unwrap();
    }
    assert_eq!(
        store.sessions_of_user("+15551234567").unwrap(),
        ["s1", "s3"]
    );
    store.delete_session("s1").unwrap();
    store
        .commit(&Commit {
            status: Status::Ended,
            ..commit("s3", 1, 1, State::new())
        })
        .unwrap();
    assert_eq!(
        store.sessions_of_user("+15551234567").unwrap(),
        ["s3"],
        "an ended one is still the user's"
    );
    store
        .sweep(
            u64::MAX,
            Retention {
                ended_before_ms: u64::MAX,
                records_before_ms: 0,
            },
        )
        .unwrap();
    assert!(store.sessions_of_user("+15551234567").unwrap().is_empty());
    assert_eq!(store.sessions_of_user("ada@example.com").unwrap(), ["s2"]);

    put(
        store,
        &ns("profile", "user/ada@example.com"),
        "name",
        "Ada",
        None,
    );
    put(store, &ns("@crm", "shared"), "customer:1", "{}", None);
    let mut owners = store.kv_owners().unwrap();
    owners.sort();
    assert_eq!(owners, ["@crm", "profile"]);
}

fn a_users_data_is_erased_whole_and_no_one_elses(store: &dyn Store) {
    let ada = "+15551234567";
    let of = |id: &str, user: &str| SessionRecord {
        user_id: Some(user.to_owned()),
        owner: Some("key:app".to_owned()),
        ..record(id)
    };
    for (id, user) in [("s1", ada), ("s2", ada), ("s3", "bob@example.com")] {
        store.create(&of(id, user), &[], &start_event()).unwrap();
        store
            .commit(&commit(id, 1, 1, state(json!({ "turns": 1 }))))
            .unwrap();
    }
    store
        .commit(&Commit {
            status: Status::Ended,
            ..commit("s2", 2, 2, state(json!({ "turns": 2 })))
        })
        .unwrap();
    let (profile, shop) = (
        ns("profile", &format!("user/{ada}")),
        ns("shop", &format!("user/{ada}")),
    );
    put(store, &profile, "name", "Ada", None);
    put(store, &profile, "pin", "4321", Some(1_500));
    put(store, &shop, "cart", "[\"book\"]", None);
    put(
        store,
        &ns("profile", "user/bob@example.com"),
        "name",
        "Bob",
        None,
    );
    put(store, &ns("profile", "global"), "visits", "3", None);
    put(
        store,
        &ns("@crm", "shared"),
        &format!("customer:{ada}"),
        "{}",
        None,
    );
    let bob_and_global = store.kv_usage("profile").unwrap().keys - 2;

    let erased = store.erase_user(ada).unwrap();
    assert_eq!(
        (erased.sessions, erased.kv_entries),
        (2, 3),
        "both sessions (one ended) and every entry, the expired one too"
    );
    for id in ["s1", "s2"] {
        assert_eq!(store.load(id).unwrap(), None);
        assert!(store.history(id, 10).unwrap().is_empty());
    }
    assert!(store.sessions_of_user(ada).unwrap().is_empty());
    assert_eq!(store.live_sessions_of("key:app").unwrap(), 1);
    assert_eq!(
        store
            .expired_sessions("intake", u64::MAX, u64::MAX, 10)
            .unwrap(),
        ["s3"],
        "the reaper's indexes forget the erased sessions"
    );
    for (ns, key) in [(&profile, "name"), (&profile, "pin"), (&shop, "cart")] {
        assert_eq!(get(store, ns, key, 1_000), None, "{key}");
    }
    assert!(
        store
            .kv_keys(&profile, "", None, 10, 1_000)
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        store.load("s3").unwrap().unwrap().turn,
        1,
        "Bob's session stays"
    );
    assert_eq!(store.history("s3", 10).unwrap().len(), 2);
    assert_eq!(
        get(store, &ns("profile", "user/bob@example.com"), "name", 1_000).as_deref(),
        Some("Bob")
    );
    assert_eq!(
        get(
            store,
            &ns("@crm", "shared"),
            &format!("customer:{ada}"),
            1_000
        )
        .as_deref(),
        Some("{}"),
        "a shared bucket is not the user's"
    );
    assert_eq!(store.kv_usage("profile").unwrap().keys, bob_and_global);
    assert_eq!(store.kv_usage("shop").unwrap(), Usage::default());
    // The user's quota is whole again.
    let tight = Quota {
        user_keys: 1,
        ..QUOTA
    };
    let write = KvWrite {
        value: b"Ada",
        expires_at_ms: None,
        only_if: None,
    };
    assert!(
        store
            .kv_put(&profile, "name", &write, 1_000, &tight)
            .unwrap()
    );

    let again = store.erase_user(ada).unwrap();
    assert_eq!((again.sessions, again.kv_entries), (0, 1));
    assert_eq!(
        store.erase_user("nobody@example.com").unwrap(),
        Default::default()
    );
}

/// Erasure races a writer that stores keys for the user and starts
/// sessions for it: every key and session is erased exactly once, and the
/// owner's count ends at what is left, nothing.
fn erasure_and_concurrent_writes_leave_nothing_half_counted(store: Arc<dyn Store>) {
    let user = "ada@example.com";
    let scope = ns("profile", &format!("user/{user}"));
    let writer = {
        let (store, scope) = (store.clone(), scope.clone());
        std::thread::spawn(move || {
            for i in 0..200 {
                put(&*store, &scope, &format!("k{i}"), "value", None);
                if i % 20 == 0 {
                    let session = SessionRecord {
                        user_id: Some(user.to_owned()),
                        ..record(&format!("s{i}"))
                    };
                    store.create(&session, &[], &start_event()).unwrap();
                }
            }
        })
    };
    let (mut entries, mut sessions) = (0, 0);
    while !writer.is_finished() {
        let erased = store.erase_user(user).unwrap();
        (entries, sessions) = (entries + erased.kv_entries, sessions + erased.sessions);
    }
    writer.join().unwrap();
    let erased = store.erase_user(user).unwrap();
    assert_eq!(
        (entries + erased.kv_entries, sessions + erased.sessions),
        (200, 10)
    );
    assert_eq!(store.kv_usage("profile").unwrap(), Usage::default());
    assert!(store.sessions_of_user(user).unwrap().is_empty());
}

/// A page never holds more than asked for, whatever the backend's
/// iteration hands back at once, and the pages hold every session once.
fn many_sessions_are_listed_one_per_page_each_once(store: &dyn Store) {
    let ids: Vec<String> = (0..100).map(|n| format!("s{n:03}")).collect();
    for id in &ids {
        store.create(&record(id), &[], &start_event()).unwrap();
    }
    let (mut listed, mut cursor) = (Vec::new(), None);
    for _ in 0..1_000 {
        let page = store
            .list_sessions(&SessionFilter::default(), cursor.as_deref(), 1)
            .unwrap();
        assert!(
            page.sessions.len() <= 1,
            "{} on a page of 1",
            page.sessions.len()
        );
        listed.extend(page.sessions.into_iter().map(|record| record.id));
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    assert!(cursor.is_none(), "the listing never ends");
    listed.sort();
    assert_eq!(listed, ids);
}

fn sessions_are_listed_a_page_at_a_time_by_filter(store: &dyn Store) {
    let of = |id: &str, plugin: &str, user: &str| SessionRecord {
        plugin: plugin.to_owned(),
        user_id: Some(user.to_owned()),
        ..record(id)
    };
    for (id, plugin, user) in [
        ("a", "intake", "ada"),
        ("b", "shop", "ada"),
        ("c", "intake", "grace"),
        ("d", "intake", "ada"),
        ("e", "intake", "ada"),
    ] {
        store
            .create(&of(id, plugin, user), &[], &start_event())
            .unwrap();
    }
    store
        .commit(&Commit {
            status: Status::Ended,
            ..commit("d", 1, 1, State::new())
        })
        .unwrap();
    // Every page, two at a time, until there is no next one.
    let all = |filter: SessionFilter| {
        let (mut ids, mut cursor, mut pages) = (Vec::new(), None, 0);
        loop {
            let page = store.list_sessions(&filter, cursor.as_deref(), 2).unwrap();
            assert!(page.sessions.len() <= 2);
            ids.extend(page.sessions.into_iter().map(|record| record.id));
            pages += 1;
            assert!(pages < 100, "the listing never ends");
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        ids.sort();
        ids
    };
    assert_eq!(all(SessionFilter::default()), ["a", "b", "c", "d", "e"]);
    let intake_ada = SessionFilter {
        plugin: Some("intake".to_owned()),
        user: Some("ada".to_owned()),
        ..SessionFilter::default()
    };
    assert_eq!(all(intake_ada.clone()), ["a", "d", "e"]);
    assert_eq!(
        all(SessionFilter {
            status: Some(Status::Active),
            ..intake_ada
        }),
        ["a", "e"]
    );
    assert_eq!(
        all(SessionFilter {
            status: Some(Status::Ended),
            ..SessionFilter::default()
        }),
        ["d"]
    );
}

fn concurrent_commits_to_many_sessions_all_land(store: Arc<dyn Store>) {
    let sessions = 16;
    let turns = 25;
    for s in 0..sessions {
        store
            .create(&record(&format!("s{s}")), &[], &start_event())
            .unwrap();
    }
    let threads: Vec<_> = (0..sessions)
        .map(|s| {
            let store = store.clone();
            std::thread::spawn(move || {
                for turn in 1..=turns {
                    store
                        .commit(&commit(
                            &format!("s{s}"),
                            turn,
                            turn,
                            state(json!({ "turns": turn })),
                        ))
                        .unwrap();
                }
            })
        })
        .collect();
    threads
        .into_iter()
        .for_each(|thread| thread.join().unwrap());
    for s in 0..sessions {
        let loaded = store.load(&format!("s{s}")).unwrap().unwrap();
        assert_eq!(
            (loaded.turn, loaded.revision, &loaded.state["turns"]),
            (turns, turns + 1, &json!(turns))
        );
        assert_eq!(
            store.history(&format!("s{s}"), 1000).unwrap().len() as u64,
            2 * turns
        );
    }
}

fn sessions_expire_by_idle_time_and_by_age_per_plugin(store: &dyn Store) {
    for id in ["idle", "busy", "done", "moved"] {
        store.create(&record(id), &[], &start_event()).unwrap();
    }
    let mut other = record("other");
    other.plugin = "shop".to_owned();
    store.create(&other, &[], &start_event()).unwrap();
    let mut busy = commit("busy", 1, 1, State::new());
    busy.at_ms = 5_000;
    store.commit(&busy).unwrap();
    let mut done = commit("done", 1, 1, State::new());
    done.status = Status::Ended;
    store.commit(&done).unwrap();
    // Handed off to `shop` at 5,000: its age goes with it.
    let mut moved = commit("moved", 1, 1, State::new());
    (moved.plugin, moved.at_ms) = ("shop".to_owned(), 5_000);
    store.commit(&moved).unwrap();

    let expired = |plugin, idle_since_ms, created_since_ms| {
        let mut ids = store
            .expired_sessions(plugin, idle_since_ms, created_since_ms, 10)
            .unwrap();
        ids.sort();
        ids
    };
    // Idle since 2,000 at the latest: only the sessions untouched since 1,000.
    assert_eq!(expired("intake", 2_000, 0), ["idle"]);
    assert_eq!(expired("shop", 2_000, 0), ["other"]);
    // Created at 1,000 at the latest: every active session, however busy.
    assert_eq!(expired("intake", 0, 1_000), ["busy", "idle"]);
    assert_eq!(expired("shop", 0, 1_000), ["moved", "other"]);
    assert!(expired("intake", 999, 999).is_empty());
    assert!(expired("counter", u64::MAX, u64::MAX).is_empty());
    assert_eq!(
        store
            .expired_sessions("intake", u64::MAX, u64::MAX, 1)
            .unwrap()
            .len(),
        1
    );
}

fn deleted_session_is_gone_with_its_history(store: &dyn Store) {
    store
        .create(
            &record("s1"),
            &[message(Role::Assistant, "Welcome")],
            &start_event(),
        )
        .unwrap();
    store.create(&record("s2"), &[], &start_event()).unwrap();
    store.delete_session("s1").unwrap();
    assert_eq!(store.load("s1").unwrap(), None);
    assert!(store.history("s1", 10).unwrap().is_empty());
    assert_eq!(
        store.expired_sessions("intake", u64::MAX, 0, 10).unwrap(),
        ["s2"]
    );
    store.delete_session("s1").unwrap();
    // The id is free again.
    store.create(&record("s1"), &[], &start_event()).unwrap();
    assert!(store.history("s1", 10).unwrap().is_empty());
}

fn cache_entries_expire_at_their_time_and_are_swept(store: &dyn Store) {
    store.cache_put("k1", "\"one\"", 2_000, 1_000).unwrap();
    store.cache_put("k2", "\"two\"", 9_000, 1_000).unwrap();
    assert_eq!(
        store.cache_get("k1", 1_999).unwrap().as_deref(),
        Some("\"one\"")
    );
    assert_eq!(store.cache_get("k1", 2_000).unwrap(), None);
    assert_eq!(store.sweep(2_000, KEEP_ALL).unwrap().cache_entries, 1);
    assert_eq!(
        store.cache_get("k2", 2_000).unwrap().as_deref(),
        Some("\"two\"")
    );
}

const QUOTA: Quota = Quota {
    keys: 1_000,
    bytes: 1 << 20,
    user_keys: 1_000,
    user_bytes: 1 << 20,
};

fn ns(owner: &str, scope: &str) -> Namespace {
    Namespace {
        owner: owner.to_owned(),
        scope: scope.to_owned(),
    }
}

fn put(store: &dyn Store, ns: &Namespace, key: &str, value: &str, expires_at_ms: Option<u64>) {
    let write = KvWrite {
        value: value.as_bytes(),
        expires_at_ms,
        only_if: None,
    };
    assert!(store.kv_put(ns, key, &write, 1_000, &QUOTA).unwrap());
}

fn get(store: &dyn Store, ns: &Namespace, key: &str, now_ms: u64) -> Option<String> {
    store
        .kv_get(ns, key, now_ms)
        .unwrap()
        .map(|bytes| String::from_utf8(bytes).unwrap())
}

fn kv_values_round_trip_and_delete(store: &dyn Store) {
    let global = ns("profile", "global");
    assert_eq!(get(store, &global, "k", 1_000), None);
    put(store, &global, "k", "one", None);
    assert_eq!(get(store, &global, "k", 1_000).as_deref(), Some("one"));
    put(store, &global, "k", "three", None);
    assert_eq!(get(store, &global, "k", u64::MAX).as_deref(), Some("three"));
    assert_eq!(
        store.kv_usage("profile").unwrap(),
        Usage { keys: 1, bytes: 6 }
    );
    store.kv_delete(&global, "k").unwrap();
    store.kv_delete(&global, "k").unwrap();
    assert_eq!(get(store, &global, "k", 1_000), None);
    assert_eq!(store.kv_usage("profile").unwrap(), Usage::default());
}

fn kv_ttl_hides_at_expiry_and_the_sweep_reclaims(store: &dyn Store) {
    let global = ns("profile", "global");
    put(store, &global, "brief", "x", Some(2_000));
    put(store, &global, "lasting", "y", None);
    assert_eq!(get(store, &global, "brief", 1_999).as_deref(), Some("x"));
    assert_eq!(get(store, &global, "brief", 2_000), None);
    assert_eq!(
        store.kv_keys(&global, "", None, 10, 2_000).unwrap(),
        ["lasting"]
    );
    // Invisible, but held until the sweep reclaims it.
    assert_eq!(store.kv_usage("profile").unwrap().keys, 2);
    assert_eq!(store.sweep(1_999, KEEP_ALL).unwrap().kv_entries, 0);
    assert_eq!(store.sweep(2_000, KEEP_ALL).unwrap().kv_entries, 1);
    assert_eq!(
        store.kv_usage("profile").unwrap(),
        Usage { keys: 1, bytes: 8 }
    );
    // Gone for good: even the past no longer sees it.
    assert_eq!(get(store, &global, "brief", 1_000), None);
    // A set without a TTL keeps a live key's expiry, and leaves one
    // written over an expired key without any.
    put(store, &global, "kept", "1", Some(1_500));
    put(store, &global, "kept", "2", None);
    assert_eq!(get(store, &global, "kept", 1_499).as_deref(), Some("2"));
    assert_eq!(get(store, &global, "kept", 1_500), None);
    put(store, &global, "renewed", "1", Some(900));
    put(store, &global, "renewed", "2", None);
    assert_eq!(get(store, &global, "renewed", 9_999).as_deref(), Some("2"));
}

fn kv_namespaces_are_isolated(store: &dyn Store) {
    let spaces = [
        ns("profile", "user/ada"),
        ns("profile", "user/alan"),
        ns("profile", "global"),
        ns("shop", "global"),
        ns("@crm", "shared"),
    ];
    for (n, space) in spaces.iter().enumerate() {
        put(store, space, "name", &format!("value {n}"), None);
    }
    for (n, space) in spaces.iter().enumerate() {
        assert_eq!(get(store, space, "name", 1_000), Some(format!("value {n}")));
        assert_eq!(store.kv_keys(space, "", None, 10, 1_000).unwrap(), ["name"]);
    }
    store.kv_delete(&spaces[0], "name").unwrap();
    assert_eq!(get(store, &spaces[0], "name", 1_000), None);
    assert_eq!(
        get(store, &spaces[1], "name", 1_000).as_deref(),
        Some("value 1")
    );
    assert_eq!(store.kv_usage("profile").unwrap().keys, 2);
    assert_eq!(store.kv_usage("shop").unwrap().keys, 1);
    assert_eq!(store.kv_usage("@crm").unwrap().keys, 1);
}

fn kv_keys_page_in_order_by_prefix(store: &dyn Store) {
    let global = ns("profile", "global");
    for n in (0..10).rev() {
        put(store, &global, &format!("a:{n}"), "v", None);
    }
    put(store, &global, "a:5", "v", Some(1_500));
    put(store, &global, "b:0", "v", None);
    put(store, &global, "a", "v", None);
    let page = |after: Option<&str>| store.kv_keys(&global, "a:", after, 4, 2_000).unwrap();
    assert_eq!(page(None), ["a:0", "a:1", "a:2", "a:3"]);
    assert_eq!(page(Some("a:3")), ["a:4", "a:6", "a:7", "a:8"]);
    assert_eq!(page(Some("a:8")), ["a:9"]);
    assert!(page(Some("a:9")).is_empty());
    // A cursor from before the prefix starts at the prefix.
    assert_eq!(page(Some("0"))[0], "a:0");
    assert_eq!(
        store.kv_keys(&global, "", None, 100, 2_000).unwrap().len(),
        11
    );
}

fn kv_compare_and_swap_stores_only_on_a_match(store: &dyn Store) {
    let global = ns("profile", "global");
    let cas = |expected: Option<&str>, value: &str, now_ms| {
        let write = KvWrite {
            value: value.as_bytes(),
            expires_at_ms: Some(5_000),
            only_if: Some(expected.map(str::as_bytes)),
        };
        store
            .kv_put(&global, "lock", &write, now_ms, &QUOTA)
            .unwrap()
    };
    assert!(cas(None, "first", 1_000));
    assert!(!cas(None, "second", 1_000));
    assert!(!cas(Some("stale"), "third", 1_000));
    assert_eq!(get(store, &global, "lock", 1_000).as_deref(), Some("first"));
    assert!(cas(Some("first"), "fourth", 1_000));
    assert_eq!(
        get(store, &global, "lock", 1_000).as_deref(),
        Some("fourth")
    );
    // An expired value counts as absent.
    assert!(!cas(Some("fourth"), "fifth", 5_000));
    assert!(cas(None, "sixth", 5_000));
}

fn kv_increment_counts_and_refuses_non_integers(store: &dyn Store) {
    let global = ns("profile", "global");
    let incr = |key: &str, delta, now_ms| store.kv_increment(&global, key, delta, now_ms, &QUOTA);
    assert_eq!(incr("n", 5, 1_000).unwrap(), 5);
    assert_eq!(incr("n", -7, 1_000).unwrap(), -2);
    assert_eq!(get(store, &global, "n", 1_000).as_deref(), Some("-2"));
    put(store, &global, "text", "hello", None);
    let err = incr("text", 1, 1_000).unwrap_err();
    assert!(
        matches!(err, KvStoreError::Invalid(ref reason) if reason.contains("not an integer")),
        "{err}"
    );
    assert_eq!(get(store, &global, "text", 1_000).as_deref(), Some("hello"));
    put(store, &global, "max", &i64::MAX.to_string(), None);
    let err = incr("max", 1, 1_000).unwrap_err();
    assert!(matches!(err, KvStoreError::Invalid(_)), "{err}");
    assert_eq!(
        get(store, &global, "max", 1_000),
        Some(i64::MAX.to_string())
    );
    // The expiry stays; an expired counter starts again.
    put(store, &global, "visits", "1", Some(2_000));
    assert_eq!(incr("visits", 1, 1_000).unwrap(), 2);
    assert_eq!(get(store, &global, "visits", 2_000), None);
    assert_eq!(incr("visits", 1, 2_000).unwrap(), 1);
    assert_eq!(get(store, &global, "visits", 999_999).as_deref(), Some("1"));
}

fn kv_quota_refuses_and_changes_nothing(store: &dyn Store) {
    let global = ns("profile", "global");
    let quota = Quota {
        keys: 2,
        bytes: 20,
        ..QUOTA
    };
    let set = |key: &str, value: &str, expires_at_ms, now_ms| {
        let write = KvWrite {
            value: value.as_bytes(),
            expires_at_ms,
            only_if: None,
        };
        store.kv_put(&global, key, &write, now_ms, &quota)
    };
    set("a", "1", Some(1_500), 1_000).unwrap();
    set("b", "2", None, 1_000).unwrap();
    let err = set("c", "3", None, 1_000).unwrap_err();
    assert!(
        matches!(err, KvStoreError::QuotaExceeded(ref reason) if reason.contains("3 keys") && reason.contains("quota of 2")),
        "{err}"
    );
    assert_eq!(get(store, &global, "c", 1_000), None);
    let err = set("b", &"x".repeat(19), None, 1_000).unwrap_err();
    assert!(
        matches!(err, KvStoreError::QuotaExceeded(ref reason) if reason.contains("bytes")),
        "{err}"
    );
    assert_eq!(get(store, &global, "b", 1_000).as_deref(), Some("2"));
    let err = store
        .kv_increment(&global, "c", 1, 1_000, &quota)
        .unwrap_err();
    assert!(matches!(err, KvStoreError::QuotaExceeded(_)), "{err}");
    assert_eq!(get(store, &global, "c", 1_000), None);
    assert_eq!(
        store.kv_usage("profile").unwrap(),
        Usage { keys: 2, bytes: 4 }
    );
    // Once `a` expired, its room is taken back for the write.
    set("c", "3", None, 1_500).unwrap();
    assert_eq!(
        store.kv_usage("profile").unwrap(),
        Usage { keys: 2, bytes: 4 }
    );
    assert_eq!(get(store, &global, "a", 1_000), None);
}

fn kv_user_quota_holds_each_user_and_leaves_the_others_room(store: &dyn Store) {
    let quota = Quota {
        keys: 5,
        bytes: 1_000,
        user_keys: 2,
        user_bytes: 12,
    };
    let set = |ns: &Namespace, key: &str, value: &str, expires_at_ms, now_ms| {
        let write = KvWrite {
            value: value.as_bytes(),
            expires_at_ms,
            only_if: None,
        };
        store.kv_put(ns, key, &write, now_ms, &quota)
    };
    let (made_up, ada) = (ns("profile", "user/made-up-1"), ns("profile", "user/ada"));
    set(&made_up, "a", "1", Some(1_500), 1_000).unwrap();
    set(&made_up, "b", "2", None, 1_000).unwrap();
    let err = set(&made_up, "c", "3", None, 1_000).unwrap_err();
    assert!(
        matches!(err, KvStoreError::QuotaExceeded(ref reason)
            if reason == "the write would make user `made-up-1` hold 3 keys in `profile`, over the quota of 2 per user"),
        "{err}"
    );
    let err = store
        .kv_increment(&made_up, "c", 1, 1_000, &quota)
        .unwrap_err();
    assert!(matches!(err, KvStoreError::QuotaExceeded(_)), "{err}");
    let err = set(&made_up, "b", "0123456789x", None, 1_000).unwrap_err();
    assert!(
        matches!(err, KvStoreError::QuotaExceeded(ref reason) if reason.contains("bytes in `profile`")),
        "{err}"
    );
    assert_eq!(get(store, &made_up, "b", 1_000).as_deref(), Some("2"));
    // Another user, and the plugin's own scope, still have room.
    set(&ada, "name", "Ada", None, 1_000).unwrap();
    set(&ns("profile", "global"), "visits", "1", None, 1_000).unwrap();
    // A deleted key and an expired one give their user's room back.
    store.kv_delete(&made_up, "b").unwrap();
    set(&made_up, "c", "3", None, 1_000).unwrap();
    set(&made_up, "d", "4", None, 1_600).unwrap();
    assert_eq!(get(store, &made_up, "a", 1_600), None);
    assert_eq!(
        store.kv_usage("profile").unwrap(),
        Usage {
            keys: 4,
            bytes: 2 + 7 + 7 + 2
        },
        "the owner's count holds every scope's"
    );
    store.kv_sweep(10_000).unwrap();
    let err = set(&made_up, "e", "5", None, 10_000).unwrap_err();
    assert!(matches!(err, KvStoreError::QuotaExceeded(_)), "{err}");
}

fn kv_concurrent_increments_are_exact(store: Arc<dyn Store>) {
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..250 {
                    store
                        .kv_increment(&ns("profile", "global"), "hits", 1, 1_000, &QUOTA)
                        .unwrap();
                }
            })
        })
        .collect();
    threads
        .into_iter()
        .for_each(|thread| thread.join().unwrap());
    assert_eq!(
        get(&*store, &ns("profile", "global"), "hits", 1_000).as_deref(),
        Some("2000")
    );
}

fn plugin_versions_are_published_once_and_recorded_active(store: &dyn Store) {
    let (one, two) = ("01".repeat(32), "02".repeat(32));
    assert_eq!(store.published_plugin(&one).unwrap(), None);
    assert!(store.publish_plugin(&one, b"\0asm one").unwrap());
    assert!(
        !store.publish_plugin(&one, b"\0asm one").unwrap(),
        "seen before"
    );
    assert!(store.publish_plugin(&two, b"\0asm two").unwrap());
    assert_eq!(
        store.published_plugin(&one).unwrap().as_deref(),
        Some(&b"\0asm one"[..])
    );
    assert!(store.active_plugins().unwrap().is_empty());
    store.set_active_plugin("counter", &one).unwrap();
    store.set_active_plugin("shop", &two).unwrap();
    store.set_active_plugin("counter", &two).unwrap();
    let active = store.active_plugins().unwrap();
    assert_eq!(
        active.into_iter().collect::<Vec<_>>(),
        [
            ("counter".to_owned(), two.clone()),
            ("shop".to_owned(), two)
        ]
    );
}

fn plugin_configuration_is_replaced_whole_and_removed_when_empty(store: &dyn Store) {
    use std::collections::BTreeMap;

    let config = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    };
    assert!(store.plugin_configs().unwrap().is_empty());
    store
        .set_plugin_config("assistant", &config(&[("model", "small"), ("tone", "dry")]))
        .unwrap();
    store
        .set_plugin_config("shop", &config(&[("currency", "EUR")]))
        .unwrap();
    store
        .set_plugin_config("assistant", &config(&[("model", "large")]))
        .unwrap();
    let configs = store.plugin_configs().unwrap();
    assert_eq!(configs["assistant"], config(&[("model", "large")]));
    assert_eq!(configs["shop"], config(&[("currency", "EUR")]));
    store.set_plugin_config("shop", &config(&[])).unwrap();
    assert_eq!(
        store.plugin_configs().unwrap().keys().collect::<Vec<_>>(),
        ["assistant"]
    );
}

/// The turns and rewound marks of a page of `id`'s log, by number.
fn logged(store: &dyn Store, id: &str, after: u64, limit: usize) -> Vec<(u64, u64, bool)> {
    store
        .events(id, after, limit, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|event| (event.seq, event.turn, event.rewound))
        .collect()
}

/// The turns of `id`'s line that rebuild `turn`.
fn line_turns(store: &dyn Store, id: &str, turn: u64) -> Vec<u64> {
    store
        .line(id, turn)
        .unwrap()
        .into_iter()
        .map(|event| event.turn)
        .collect()
}

fn every_commit_appends_its_event_numbered_by_its_revision(store: &dyn Store) {
    assert!(store.events("s1", 0, 10, usize::MAX).unwrap().is_empty());
    store.create(&record("s1"), &[], &start_event()).unwrap();
    for turn in 1..=3 {
        store
            .commit(&commit("s1", turn, turn, State::new()))
            .unwrap();
    }
    let events = store.events("s1", 0, 10, usize::MAX).unwrap();
    assert_eq!(
        events
            .iter()
            .map(|event| (event.seq, event.turn, event.body.as_str()))
            .collect::<Vec<_>>(),
        [
            (1, 0, "{}"),
            (2, 1, "{\"turn\":1}"),
            (3, 2, "{\"turn\":2}"),
            (4, 3, "{\"turn\":3}")
        ]
    );
    assert_eq!(logged(store, "s1", 2, 1), [(3, 2, false)]);
    assert_eq!(logged(store, "s1", 4, 10), []);
    assert_eq!(logged(store, "other", 0, 10), []);

    // A commit that fails appends nothing.
    store.commit(&commit("s1", 1, 2, State::new())).unwrap_err();
    store
        .commit(&commit("missing", 1, 1, State::new()))
        .unwrap_err();
    assert_eq!(logged(store, "s1", 0, 10).len(), 4);
    assert_eq!(logged(store, "missing", 0, 10), []);
}

fn a_page_of_the_log_stops_at_its_byte_budget(store: &dyn Store) {
    // The store counts the log's bytes itself, whatever a create says.
    let claimed = SessionRecord {
        log_bytes: 999,
        ..record("s1")
    };
    store.create(&claimed, &[], &start_event()).unwrap();
    for turn in 1..=4 {
        let mut next = commit("s1", turn, turn, State::new());
        next.event.body = format!("{{\"turn\":{turn},\"said\":\"{}\"}}", "x".repeat(1_000));
        store.commit(&next).unwrap();
    }
    assert_eq!(store.load("s1").unwrap().unwrap().log_bytes, 2 + 4 * 1_020);
    let seqs = |after, max_bytes| -> Vec<u64> {
        store
            .events("s1", after, 10, max_bytes)
            .unwrap()
            .iter()
            .map(|event| event.seq)
            .collect()
    };
    // The start's body is 2 bytes and each turn's 1,020: the event that
    // reaches the budget is the page's last.
    assert_eq!(seqs(0, 1_500), [1, 2, 3]);
    assert_eq!(seqs(0, 1_022), [1, 2]);
    assert_eq!(seqs(0, 2), [1]);
    assert_eq!(seqs(2, 1), [3]);
    assert_eq!(seqs(0, usize::MAX), [1, 2, 3, 4, 5]);
    // Past the largest number an event may have, there is none.
    assert_eq!(seqs(u64::MAX, usize::MAX), Vec::<u64>::new());
    assert_eq!(seqs(1 << 63, usize::MAX), Vec::<u64>::new());
}

fn the_line_runs_from_the_latest_snapshot_to_the_turn(store: &dyn Store) {
    store.create(&record("s1"), &[], &start_event()).unwrap();
    for turn in 1..=5 {
        let mut next = commit("s1", turn, turn, State::new());
        next.event.snapshot = turn == 2;
        store.commit(&next).unwrap();
    }
    assert_eq!(line_turns(store, "s1", 0), [0]);
    assert_eq!(line_turns(store, "s1", 1), [0, 1]);
    assert_eq!(line_turns(store, "s1", 2), [2]);
    assert_eq!(line_turns(store, "s1", 4), [2, 3, 4]);
    // Past the latest turn, the line ends at the latest.
    assert_eq!(line_turns(store, "s1", 1_000_000), [2, 3, 4, 5]);
    assert_eq!(line_turns(store, "missing", 3), Vec::<u64>::new());
}

/// A rewind of `id`, read at `read_revision`, to `turn` and its `state`,
/// which replaces the history with none.
fn rewind(id: &str, read_revision: u64, turn: u64, state: State) -> Commit {
    Commit {
        messages: Vec::new(),
        dropped_messages: u64::MAX,
        event: LogEntry {
            rewind: true,
            ..turn_event(turn)
        },
        ..commit(id, read_revision, turn, state)
    }
}

fn a_rewind_takes_later_turns_off_the_line_and_the_history_back(store: &dyn Store) {
    store
        .create(
            &record("s1"),
            &[message(Role::Assistant, "Welcome")],
            &start_event(),
        )
        .unwrap();
    for turn in 1..=4 {
        store
            .commit(&commit("s1", turn, turn, state(json!({ "turns": turn }))))
            .unwrap();
    }
    let back = Commit {
        messages: vec![
            message(Role::Assistant, "Welcome"),
            message(Role::User, "message 1"),
        ],
        ..rewind("s1", 5, 1, state(json!({ "turns": 1 })))
    };
    store.commit(&back).unwrap();
    let loaded = store.load("s1").unwrap().unwrap();
    assert_eq!((loaded.turn, loaded.revision), (1, 6));
    assert_eq!(loaded.state, state(json!({ "turns": 1 })));
    assert_eq!(
        store.history("s1", 100).unwrap(),
        [
            message(Role::Assistant, "Welcome"),
            message(Role::User, "message 1")
        ]
    );
    assert_eq!(
        logged(store, "s1", 0, 10),
        [
            (1, 0, false),
            (2, 1, false),
            (3, 2, true),
            (4, 3, true),
            (5, 4, true),
            (6, 1, false)
        ]
    );
    // The rewind is off the line; the line leads to turn 1 again.
    assert_eq!(line_turns(store, "s1", 10), [0, 1]);

    // The next turn is 2, on a new branch.
    store
        .commit(&commit("s1", 6, 2, state(json!({ "turns": 2 }))))
        .unwrap();
    assert_eq!(line_turns(store, "s1", 10), [0, 1, 2]);
    assert_eq!(logged(store, "s1", 6, 10), [(7, 2, false)]);
    assert_eq!(store.history("s1", 100).unwrap().len(), 4);
}

/// The numbers and rewound marks of the line `id` stood on for `count`
/// turns before event `seq` of `turn`.
fn line_before(store: &dyn Store, id: &str, seq: u64, turn: u64, count: u64) -> Vec<(u64, bool)> {
    store
        .line_before(id, seq, turn, count)
        .unwrap()
        .into_iter()
        .map(|event| (event.seq, event.rewound))
        .collect()
}

fn the_line_before_an_event_is_the_one_it_stood_on_though_rewound_since(store: &dyn Store) {
    store.create(&record("s1"), &[], &start_event()).unwrap();
    // Turns 1 to 4 are events 2 to 5; a rewind to turn 1 is event 6, and
    // turns 2 and 3 again are events 7 and 8.
    for turn in 1..=4 {
        store
            .commit(&commit("s1", turn, turn, State::new()))
            .unwrap();
    }
    store.commit(&rewind("s1", 5, 1, State::new())).unwrap();
    for turn in 2..=3 {
        store
            .commit(&commit("s1", turn + 4, turn, State::new()))
            .unwrap();
    }
    let as_it_was = [(1, false), (2, false), (3, true), (4, true)];
    assert_eq!(line_before(store, "s1", 5, 4, 10), as_it_was);
    assert_eq!(line_before(store, "s1", 5, 4, 2), as_it_was[2..]);
    assert_eq!(
        line_before(store, "s1", 8, 3, 10),
        [(1, false), (2, false), (7, false)]
    );
    // The rewind's own event, between turn 1 and turn 2 again, is none.
    assert_eq!(line_before(store, "s1", 7, 2, 10), [(1, false), (2, false)]);

    // A rewind to turn 0 (event 9) and a new turn 1 (event 10): the line
    // event 8 stood on is all rewound now, with rewinds between its events.
    store.commit(&rewind("s1", 8, 0, State::new())).unwrap();
    store.commit(&commit("s1", 9, 1, State::new())).unwrap();
    assert_eq!(
        line_before(store, "s1", 8, 3, 10),
        [(1, false), (2, true), (7, true)]
    );
    assert_eq!(
        line_before(store, "s1", 5, 4, 10),
        [(1, false), (2, true), (3, true), (4, true)]
    );
    assert_eq!(
        line_before(store, "s1", 11, 2, 10),
        [(1, false), (10, false)]
    );

    // Nothing comes before turn 0, and a missing session has no line.
    assert_eq!(line_before(store, "s1", 1, 0, 10), []);
    assert_eq!(line_before(store, "s1", 8, 3, 0), []);
    assert_eq!(line_before(store, "missing", 8, 3, 10), []);
}

fn a_deleted_session_takes_its_log_along(store: &dyn Store) {
    store.create(&record("s1"), &[], &start_event()).unwrap();
    store.commit(&commit("s1", 1, 1, State::new())).unwrap();
    store.delete_session("s1").unwrap();
    assert_eq!(logged(store, "s1", 0, 10), []);
    assert_eq!(line_turns(store, "s1", 5), Vec::<u64>::new());
    // A session made again under the id starts a log of its own.
    store.create(&record("s1"), &[], &start_event()).unwrap();
    assert_eq!(logged(store, "s1", 0, 10), [(1, 0, false)]);
    assert_eq!(line_turns(store, "s1", 5), [0]);
}

/// A store one process serves takes no part in coordination: every lease is
/// granted, to any holder, so turns never wait on one, and there is no other
/// process to tell of a commit or an interrupt.
fn a_store_one_process_serves_grants_every_lease_and_announces_nothing(store: &dyn Store) {
    let long = std::time::Duration::from_secs(60);
    assert!(store.lease("s1", "host-a", long).unwrap());
    assert!(
        store.lease("s1", "host-b", long).unwrap(),
        "a second holder is granted too"
    );
    store.release("s1", "host-a").unwrap();
    store.release("s1", "host-b").unwrap();
    assert!(!store.announce(Arc::new(|_| true)), "no announcements");
    assert!(
        !store.interrupt("s1").unwrap(),
        "no other process holds a turn"
    );
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[test]
                fn $test() {
                    super::$test(&agentbox_host::store::MemoryStore::default());
                }
            )*

            #[test]
            fn concurrent_commits_to_many_sessions_all_land() {
                super::concurrent_commits_to_many_sessions_all_land(std::sync::Arc::new(agentbox_host::store::MemoryStore::default()));
            }

            #[test]
            fn kv_concurrent_increments_are_exact() {
                super::kv_concurrent_increments_are_exact(std::sync::Arc::new(agentbox_host::store::MemoryStore::default()));
            }

            #[test]
            fn erasure_and_concurrent_writes_leave_nothing_half_counted() {
                super::erasure_and_concurrent_writes_leave_nothing_half_counted(std::sync::Arc::new(agentbox_host::store::MemoryStore::default()));
            }

            #[test]
            fn a_store_one_process_serves_grants_every_lease_and_announces_nothing() {
                super::a_store_one_process_serves_grants_every_lease_and_announces_nothing(&agentbox_host::store::MemoryStore::default());
            }
        }

        mod sqlite {
            use agentbox_host::store::{SessionStore as _, SqliteStore};

            fn open(dir: &tempfile::TempDir) -> SqliteStore {
                SqliteStore::open(&dir.path().join("nested/agentbox.db")).unwrap()
            }

            $(
                #[test]
                fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$test(&open(&dir));
                }
            )*

            #[test]
            fn concurrent_commits_to_many_sessions_all_land() {
                let dir = tempfile::tempdir().unwrap();
                super::concurrent_commits_to_many_sessions_all_land(std::sync::Arc::new(open(&dir)));
            }

            #[test]
            fn kv_concurrent_increments_are_exact() {
                let dir = tempfile::tempdir().unwrap();
                super::kv_concurrent_increments_are_exact(std::sync::Arc::new(open(&dir)));
            }

            #[test]
            fn erasure_and_concurrent_writes_leave_nothing_half_counted() {
                let dir = tempfile::tempdir().unwrap();
                super::erasure_and_concurrent_writes_leave_nothing_half_counted(std::sync::Arc::new(open(&dir)));
            }

            #[test]
            fn a_store_one_process_serves_grants_every_lease_and_announces_nothing() {
                let dir = tempfile::tempdir().unwrap();
                super::a_store_one_process_serves_grants_every_lease_and_announces_nothing(&open(&dir));
            }

            #[test]
            fn commits_survive_reopening_the_file() {
                let dir = tempfile::tempdir().unwrap();
                {
                    let store = open(&dir);
                    store.create(&super::record("s1"), &[], &super::start_event()).unwrap();
                    store.commit(&super::commit("s1", 1, 1, super::state(serde_json::json!({ "turns": 1 })))).unwrap();
                }
                let store = open(&dir);
                let loaded = store.load("s1").unwrap().unwrap();
                assert_eq!((loaded.turn, loaded.revision), (1, 2));
                assert_eq!(store.history("s1", 10).unwrap().len(), 2);
            }
        }

        mod redis {
            use agentbox_host::store::{Coordination as _, KvStore as _, RedisStore, SessionStore as _};

            use crate::harness::RedisServer;

            $(
                #[test]
                fn $test() {
                    let Some(server) = RedisServer::start() else { return };
                    super::$test(&RedisStore::open(server.url()).unwrap());
                }
            )*

            #[test]
            fn concurrent_commits_to_many_sessions_all_land() {
                let Some(server) = RedisServer::start() else { return };
                super::concurrent_commits_to_many_sessions_all_land(std::sync::Arc::new(RedisStore::open(server.url()).unwrap()));
            }

            #[test]
            fn kv_concurrent_increments_are_exact() {
                let Some(server) = RedisServer::start() else { return };
                super::kv_concurrent_increments_are_exact(std::sync::Arc::new(RedisStore::open(server.url()).unwrap()));
            }

            #[test]
            fn erasure_and_concurrent_writes_leave_nothing_half_counted() {
                let Some(server) = RedisServer::start() else { return };
                super::erasure_and_concurrent_writes_leave_nothing_half_counted(std::sync::Arc::new(RedisStore::open(server.url()).unwrap()));
            }

            #[test]
            fn commits_survive_reconnecting() {
                let Some(server) = RedisServer::start() else { return };
                {
                    let store = RedisStore::open(server.url()).unwrap();
                    store.create(&super::record("s1"), &[], &super::start_event()).unwrap();
                    store.commit(&super::commit("s1", 1, 1, super::state(serde_json::json!({ "turns": 1 })))).unwrap();
                }
                let store = RedisStore::open(server.url()).unwrap();
                assert_eq!(store.load("s1").unwrap(), Some({
                    let mut record = super::record("s1");
                    record.state = super::state(serde_json::json!({ "turns": 1 }));
                    (record.revision, record.turn, record.digest, record.updated_at_ms, record.log_bytes) = (2, 1, "11".repeat(32), 2_001, 12);
                    record
                }));
                assert_eq!(store.history("s1", 10).unwrap().len(), 2);
            }

            #[test]
            fn a_listing_refuses_a_cursor_it_did_not_hand_out() {
                use agentbox_host::store::{SessionFilter, SessionStoreError};

                let Some(server) = RedisServer::start() else { return };
                let store = RedisStore::open(server.url()).unwrap();
                store.create(&super::record("s1"), &[], &super::start_event()).unwrap();
                for cursor in ["abc", "-s1", "12x-s1", ""] {
                    match store.list_sessions(&SessionFilter::default(), Some(cursor), 10) {
                        Err(SessionStoreError::BadCursor(shown)) => assert_eq!(shown, cursor),
                        other => panic!("{cursor:?}: {other:?}"),
                    }
                }
                let first = store.list_sessions(&SessionFilter::default(), None, 10).unwrap();
                assert_eq!(first.sessions.len(), 1);
            }

            #[test]
            fn a_lease_has_one_holder_until_released_or_expired() {
                let Some(server) = RedisServer::start() else { return };
                let store = RedisStore::open(server.url()).unwrap();
                let long = std::time::Duration::from_secs(60);
                assert!(store.lease("s1", "host-a", long).unwrap());
                assert!(!store.lease("s1", "host-b", long).unwrap());
                assert!(store.lease("s1", "host-a", long).unwrap(), "the holder renews");
                assert!(store.lease("s2", "host-b", long).unwrap(), "other sessions are free");
                store.release("s1", "host-b").unwrap();
                assert!(!store.lease("s1", "host-b", long).unwrap(), "only the holder releases");
                store.release("s1", "host-a").unwrap();
                assert!(store.lease("s1", "host-b", std::time::Duration::from_millis(1)).unwrap());
                // Redis expires the lease by itself; wait for its clock, not ours.
                let waited = std::time::Instant::now();
                while !store.lease("s1", "host-a", long).unwrap() {
                    assert!(waited.elapsed() < std::time::Duration::from_secs(5), "the lease never expired");
                    std::thread::yield_now();
                }
            }

            #[test]
            fn the_store_reconnects_by_itself_after_redis_restarts() {
                let Some(mut server) = RedisServer::start() else { return };
                let store = RedisStore::open(server.url()).unwrap();
                let global = super::ns("profile", "global");
                super::put(&store, &global, "k", "before", None);
                server.stop();
                for _ in 0..2 {
                    let err = store.kv_get(&global, "k", 1_000).unwrap_err();
                    assert!(
                        err.to_string().starts_with(&format!("store backend failed: Redis at {}: ", server.url())),
                        "{err}"
                    );
                }
                server.start_again();
                // The server restarted empty; the store answers again at once.
                assert_eq!(super::get(&store, &global, "k", 1_000), None);
                super::put(&store, &global, "k", "after", None);
                assert_eq!(super::get(&store, &global, "k", 1_000).as_deref(), Some("after"));
            }

            #[test]
            fn kv_entries_carry_a_native_ttl() {
                let Some(server) = RedisServer::start() else { return };
                let store = RedisStore::open(server.url()).unwrap();
                super::put(&store, &super::ns("profile", "global"), "brief", "x", Some(61_000));
                super::put(&store, &super::ns("profile", "global"), "lasting", "y", None);
                let pttl = |key: &str| server.command(&["PTTL", &format!("agentbox:{{kv/profile}}:e:global/{key}")]);
                let brief: i64 = pttl("brief").parse().unwrap();
                assert!((59_000..=60_000).contains(&brief), "PTTL is {brief}");
                assert_eq!(pttl("lasting"), "-1");
            }
        }
    };
}

conformance!(
    created_session_loads_as_stored,
    creating_an_existing_id_fails_and_changes_nothing,
    commit_replaces_state_and_appends_history,
    a_commit_hands_the_conversation_to_a_delegate_and_back,
    commit_with_a_stale_revision_conflicts_and_changes_nothing,
    commit_to_a_missing_session_is_not_found,
    history_returns_the_newest_messages_oldest_first,
    history_is_trimmed_to_its_cap_oldest_first_keeping_the_newest,
    ended_sessions_and_tool_records_are_deleted_past_their_retention,
    live_sessions_are_counted_per_owner,
    kv_user_quota_holds_each_user_and_leaves_the_others_room,
    a_users_sessions_and_kv_owners_are_listed,
    a_users_data_is_erased_whole_and_no_one_elses,
    sessions_are_listed_a_page_at_a_time_by_filter,
    many_sessions_are_listed_one_per_page_each_once,
    sessions_expire_by_idle_time_and_by_age_per_plugin,
    deleted_session_is_gone_with_its_history,
    cache_entries_expire_at_their_time_and_are_swept,
    kv_values_round_trip_and_delete,
    kv_ttl_hides_at_expiry_and_the_sweep_reclaims,
    kv_namespaces_are_isolated,
    kv_keys_page_in_order_by_prefix,
    kv_compare_and_swap_stores_only_on_a_match,
    kv_increment_counts_and_refuses_non_integers,
    kv_quota_refuses_and_changes_nothing,
    plugin_versions_are_published_once_and_recorded_active,
    plugin_configuration_is_replaced_whole_and_removed_when_empty,
    every_commit_appends_its_event_numbered_by_its_revision,
    a_page_of_the_log_stops_at_its_byte_budget,
    the_line_runs_from_the_latest_snapshot_to_the_turn,
    a_rewind_takes_later_turns_off_the_line_and_the_history_back,
    the_line_before_an_event_is_the_one_it_stood_on_though_rewound_since,
    a_deleted_session_takes_its_log_along,
);
