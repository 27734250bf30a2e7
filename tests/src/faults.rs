//! Faults outside the guest: Redis stopped and started again while turns
//! run. Turns fail with `unavailable` while it is down, nothing committed is
//! lost or half-applied, and service resumes by itself. (A host killed
//! while turns commit is tested against `agentbox serve`, in
//! `host/cli/tests/serve.rs`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agentbox_host::Limits;
use agentbox_host::store::{RedisStore, Store};
use serde_json::json;

use crate::harness::{RedisServer, counter_session, host_with, load};
use crate::plugins::COUNTER;

/// Whether Redis is up, down, or up again.
const UP: usize = 0;
const DOWN: usize = 1;
const BACK: usize = 2;

/// What one client saw: the turn numbers that committed, each with the
/// phase it started in, and the errors, each with the phase it ended in.
#[derive(Debug, Default)]
struct Seen {
    committed: Vec<(usize, u64)>,
    failed: Vec<(usize, String, String)>,
}

impl Seen {
    fn committed_in(&self, phase: usize) -> usize {
        self.committed.iter().filter(|(p, _)| *p == phase).count()
    }
}

/// Waits until `done` holds, for at most 30 s.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < until, "never saw {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_under_load_fails_turns_as_unavailable_and_service_resumes_by_itself() {
    let Some(mut redis) = RedisServer::start_durable() else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(RedisStore::open(redis.url()).unwrap());
    let host = host_with(Limits::default(), store);
    load(&host, COUNTER);
    let phase = Arc::new(AtomicUsize::new(UP));
    let stop = Arc::new(AtomicBool::new(false));
    let progress: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
    let failures = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let id = counter_session(&host, 1).await;
        let (host, phase, stop) = (host.clone(), phase.clone(), stop.clone());
        let (progress, failures) = (progress.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            while !stop.load(Ordering::SeqCst) {
                let now = phase.load(Ordering::SeqCst);
                match host.send_message(&id, "tick", None).await {
                    Ok(report) => {
                        seen.committed.push((now, report.turn));
                        progress[now].fetch_add(1, Ordering::SeqCst);
                    }
                    Err(err) => {
                        // The phase when it failed: Redis may have stopped during the turn.
                        let now = phase.load(Ordering::SeqCst);
                        seen.failed
                            .push((now, err.cause.kind().to_owned(), err.to_string()));
                        failures.fetch_add(1, Ordering::SeqCst);
                        // Pace the retries; the store answers at once while it is down.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            (id, seen)
        }));
    }
    wait_until("40 turns before the stop", || {
        progress[UP].load(Ordering::SeqCst) >= 40
    })
    .await;
    phase.store(DOWN, Ordering::SeqCst);
    redis.stop();
    wait_until("20 failures while Redis is down", || {
        failures.load(Ordering::SeqCst) >= 20
    })
    .await;
    redis.start_again();
    phase.store(BACK, Ordering::SeqCst);
    wait_until("40 turns after the restart", || {
        progress[BACK].load(Ordering::SeqCst) >= 40
    })
    .await;
    stop.store(true, Ordering::SeqCst);

    for client in clients {
        let (id, seen) = client.await.unwrap();
        // Every failure says the store is unavailable and names it.
        for (_, kind, message) in &seen.failed {
            assert_eq!(kind, "unavailable", "{message}");
            assert!(
                message.contains(&format!("store backend failed: Redis at {}", redis.url())),
                "{message}"
            );
        }
        assert!(
            seen.failed.iter().all(|(phase, _, _)| *phase != UP),
            "{id}: no failure before the stop: {:?}",
            seen.failed
        );
        // Service resumed by itself.
        assert!(seen.committed_in(BACK) > 0, "{id}: {seen:?}");
        // Nothing committed was lost, and nothing is half-applied: the
        // state, the turn number and the history agree.
        let record = host.session(&id).await.unwrap().unwrap();
        let last_seen = seen.committed.iter().map(|(_, turn)| *turn).max().unwrap();
        assert!(
            record.turn >= last_seen,
            "{id}: stored {} < seen {last_seen}",
            record.turn
        );
        assert_eq!(record.state["count"], json!(record.turn), "{id}");
        let history = host.history(&id, 100_000).await.unwrap();
        assert_eq!(history.len() as u64, record.turn, "{id}");
        // Turn numbers the client saw only ever grew.
        assert!(
            seen.committed.windows(2).all(|pair| pair[0].1 < pair[1].1),
            "{id}: {seen:?}"
        );
    }
    // Counted by kind; while the store is down a turn cannot even tell
    // whose session it is, so it counts under no plugin (`-`).
    let metrics = host.metrics_text().await;
    let unavailable: f64 = metrics
        .lines()
        .filter(|line| {
            line.starts_with("agentbox_turn_errors_total{")
                && line.contains(r#"kind="unavailable""#)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(unavailable >= 20.0, "{metrics}");
}
