//! One conformance suite for every `Store` backend.

use std::sync::Arc;

use agentbox_host::store::{
    Commit, Message, Role, SessionRecord, State, Status, Store, StoreError,
};
use serde_json::json;

use crate::harness::state;

fn record(id: &str) -> SessionRecord {
    SessionRecord {
        id: id.to_owned(),
        plugin: "intake".to_owned(),
        digest: "00".repeat(32),
        user_id: Some("user-1".to_owned()),
        variables: state(json!({ "name": "Ada" })),
        state: state(json!({ "turns": 0 })),
        state_version: 1,
        revision: 1,
        turn: 0,
        status: Status::Active,
        created_at_ms: 1_000,
        updated_at_ms: 1_000,
    }
}

fn message(role: Role, content: &str) -> Message {
    Message {
        role,
        content: content.to_owned(),
    }
}

fn commit(id: &str, read_revision: u64, turn: u64, state: State) -> Commit {
    Commit {
        session: id.to_owned(),
        read_revision,
        state,
        turn,
        plugin: "intake".to_owned(),
        digest: "11".repeat(32),
        state_version: 1,
        status: Status::Active,
        messages: vec![
            message(Role::User, &format!("message {turn}")),
            message(Role::Assistant, &format!("reply {turn}")),
        ],
        at_ms: 2_000 + turn,
    }
}

fn created_session_loads_as_stored(store: &dyn Store) {
    assert_eq!(store.load("s1").unwrap(), None);
    store
        .create(&record("s1"), &[message(Role::Assistant, "Welcome")])
        .unwrap();
    assert_eq!(store.load("s1").unwrap(), Some(record("s1")));
    assert_eq!(
        store.history("s1", 10).unwrap(),
        [message(Role::Assistant, "Welcome")]
    );
}

fn creating_an_existing_id_fails_and_changes_nothing(store: &dyn Store) {
    store.create(&record("s1"), &[]).unwrap();
    let mut other = record("s1");
    other.plugin = "shop".to_owned();
    let err = store
        .create(&other, &[message(Role::Assistant, "intruder")])
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Exists(ref id) if id == "s1"),
        "{err}"
    );
    assert_eq!(store.load("s1").unwrap(), Some(record("s1")));
    assert!(store.history("s1", 10).unwrap().is_empty());
}

fn commit_replaces_state_and_appends_history(store: &dyn Store) {
    store.create(&record("s1"), &[]).unwrap();
    let mut ended = commit("s1", 1, 1, state(json!({ "turns": 1, "name": "Ada" })));
    ended.status = Status::Ended;
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
            message(Role::Assistant, "reply 1")
        ]
    );
}

fn commit_with_a_stale_revision_conflicts_and_changes_nothing(store: &dyn Store) {
    store.create(&record("s1"), &[]).unwrap();
    store
        .commit(&commit("s1", 1, 1, state(json!({ "turns": 1 }))))
        .unwrap();
    let err = store
        .commit(&commit("s1", 1, 1, state(json!({ "turns": 99 }))))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
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
        matches!(err, StoreError::NotFound(ref id) if id == "ghost"),
        "{err}"
    );
    assert!(store.history("ghost", 1).unwrap().is_empty());
}

fn history_returns_the_newest_messages_oldest_first(store: &dyn Store) {
    store
        .create(&record("s1"), &[message(Role::Assistant, "Welcome")])
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

fn concurrent_commits_to_many_sessions_all_land(store: Arc<dyn Store>) {
    let sessions = 16;
    let turns = 25;
    for s in 0..sessions {
        store.create(&record(&format!("s{s}")), &[]).unwrap();
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
        }

        mod sqlite {
            use agentbox_host::store::{SqliteStore, Store as _};

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
            fn commits_survive_reopening_the_file() {
                let dir = tempfile::tempdir().unwrap();
                {
                    let store = open(&dir);
                    store.create(&super::record("s1"), &[]).unwrap();
                    store.commit(&super::commit("s1", 1, 1, super::state(serde_json::json!({ "turns": 1 })))).unwrap();
                }
                let store = open(&dir);
                let loaded = store.load("s1").unwrap().unwrap();
                assert_eq!((loaded.turn, loaded.revision), (1, 2));
                assert_eq!(store.history("s1", 10).unwrap().len(), 2);
            }
        }
    };
}

conformance!(
    created_session_loads_as_stored,
    creating_an_existing_id_fails_and_changes_nothing,
    commit_replaces_state_and_appends_history,
    commit_with_a_stale_revision_conflicts_and_changes_nothing,
    commit_to_a_missing_session_is_not_found,
    history_returns_the_newest_messages_oldest_first,
);
