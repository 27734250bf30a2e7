//! Two host processes sharing one Redis: the session lease keeps their turns
//! of one session one at a time, and each sees what the other committed.

use std::sync::Arc;

use agentbox_host::store::{RedisStore, Store};
use agentbox_host::{Host, Limits, SessionStart};
use serde_json::json;

use crate::harness::{RedisServer, host_with, load, send};
use crate::plugins::COUNTER;

fn counter_host(server: &RedisServer) -> Host {
    let store: Arc<dyn Store> = Arc::new(RedisStore::open(server.url()).unwrap());
    let host = host_with(Limits::default(), store);
    load(&host, COUNTER);
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hosts_never_run_turns_of_one_session_at_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (counter_host(&server), counter_host(&server));
    let start = SessionStart {
        plugin: "counter".into(),
        ..Default::default()
    };
    let id = a.start_session(start, None).await.unwrap().session;

    // A turn committed on one host is what the other reads next.
    assert_eq!(send(&a, &id, "tick").await.state["count"], json!(1));
    assert_eq!(send(&b, &id, "tick").await.state["count"], json!(2));

    // Both hosts send to the session at once: every turn waits for the
    // other host's lease instead of failing on a conflict.
    let turns = 100;
    let senders: Vec<_> = [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .map(|host| {
            let id = id.clone();
            tokio::spawn(async move {
                for _ in 0..turns {
                    send(&host, &id, "tick").await;
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    let record = b.store().load(&id).unwrap().unwrap();
    let total = 2 + 4 * turns;
    assert_eq!(
        (record.turn, &record.state["count"]),
        (total, &json!(total))
    );
    assert_eq!(b.store().history(&id, 10_000).unwrap().len() as u64, total);
}
