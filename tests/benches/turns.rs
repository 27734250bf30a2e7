//! Turn benchmarks: `cargo bench -p agentbox-tests --bench turns`.
//!
//! Measures, in one run:
//! - instantiating the counter plugin alone, and instantiating it plus one
//!   call (the floor every turn pays), with the host's engine configuration;
//! - the counter turn (load the session, one `get`, one `set`, commit)
//!   through the host, against a native Rust implementation of the same turn
//!   on the same store, with the memory, SQLite and Redis stores, for 1 and
//!   for 64 concurrent sessions. The Redis rows need `redis-server` installed;
//!   the bench starts its own;
//! - the memory-store turn again with fuel metered, against the same turn
//!   unmetered;
//! - the heap allocations of one memory-store turn, on every thread
//!   (`tests/budget.rs` holds them to a budget).
//!
//! Prints a Markdown table; `BENCHMARKS.md` keeps the latest one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentbox_host::engine::{Digest, Engine};
use agentbox_host::store::{Commit, MemoryStore, RedisStore, SqliteStore, Status, Store};
use agentbox_host::{Host, Limits};
use agentbox_tests::measure::{Counting, allocations_per_turn, messages_at_once, started};
use agentbox_tests::{RedisServer, plugin_bytes, plugins};
use serde_json::json;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// How long each measurement runs.
const RUN: Duration = Duration::from_secs(2);

fn main() {
    // `cargo bench -p agentbox-tests --bench turns -- sqlite` runs only the rows naming sqlite.
    let filter = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .unwrap_or_default();
    let bytes = plugin_bytes(plugins::COUNTER);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    println!("| measurement | per op (mean) | ops/s | ratio |");
    println!("|---|---:|---:|---|");
    let (instantiate, floor) = instantiation(&bytes);
    row("instantiate the counter plugin", instantiate, "");
    row("instantiate + one call (the floor)", floor, "");

    let redis = RedisServer::start();
    for (name, sessions) in [
        ("memory", 1),
        ("memory", 64),
        ("sqlite", 1),
        ("sqlite", 64),
        ("redis", 1),
        ("redis", 64),
    ] {
        if !format!("{name} {sessions}").contains(&filter) {
            continue;
        }
        if name == "redis" && redis.is_none() {
            println!("| redis rows skipped: redis-server is not installed | | | |");
            continue;
        }
        let store = |runner: &str| -> Arc<dyn Store> {
            match (name, &redis) {
                ("memory", _) => Arc::new(MemoryStore::default()),
                ("redis", Some(server)) => Arc::new(RedisStore::open(server.url()).unwrap()),
                _ => Arc::new(
                    SqliteStore::open(&dir.path().join(format!("{runner}-{sessions}.db"))).unwrap(),
                ),
            }
        };
        let native = native_turns(store("native"), sessions);
        let hosted = runtime.block_on(host_turns(
            &bytes,
            Limits::default(),
            store("host"),
            sessions,
        ));
        let label = format!(
            "{name} store, {sessions} session{}",
            if sessions > 1 { "s" } else { "" }
        );
        row(&format!("native counter turn, {label}"), native, "");
        row(
            &format!("agentbox counter turn, {label}"),
            hosted,
            &format!("{:.2}× native", ratio(hosted, native)),
        );
        if (name, sessions) == ("memory", 1) {
            println!(
                "| host overhead per turn over the floor | | | {:.2}× the floor |",
                ratio(hosted, floor)
            );
            let metered = Limits {
                fuel: Some(u64::MAX),
                ..Limits::default()
            };
            let fueled = runtime.block_on(host_turns(&bytes, metered, store("host"), sessions));
            row(
                &format!("agentbox counter turn, {label}, fuel metered"),
                fueled,
                &format!("{:.2}× unmetered", ratio(fueled, hosted)),
            );
            let host = Host::builder().store(store("host")).build().unwrap();
            host.load_plugin(&bytes).unwrap();
            let id = runtime.block_on(started(&host, "counter"));
            println!(
                "| heap allocations per counter turn, {label} | | | {} |",
                allocations_per_turn(&runtime, &host, &id, "tick", 1000)
            );
        }
    }
}

fn row(what: &str, per_op: Duration, ratio: &str) {
    let per_second = 1.0 / per_op.as_secs_f64();
    println!(
        "| {what} | {:.1} µs | {per_second:.0} | {ratio} |",
        per_op.as_secs_f64() * 1e6
    );
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// Mean time per operation of `op`, run repeatedly for [`RUN`].
fn mean_of(mut op: impl FnMut()) -> Duration {
    for _ in 0..100 {
        op();
    }
    let started = Instant::now();
    let mut count = 0u32;
    while started.elapsed() < RUN {
        for _ in 0..100 {
            op();
        }
        count += 100;
    }
    started.elapsed() / count
}

/// Instantiation alone, and instantiation plus one call of `on-start`, with
/// the host's engine; the imports are stubs, which instantiation never calls.
fn instantiation(bytes: &[u8]) -> (Duration, Duration) {
    let engine = Engine::new(&Limits::default(), None, None).unwrap();
    let (component, _) = engine.component(bytes, Digest::of(bytes)).unwrap();
    let mut linker = wasmtime::component::Linker::<()>::new(engine.wasmtime());
    linker.define_unknown_imports_as_traps(&component).unwrap();
    let pre = linker.instantiate_pre(&component).unwrap();
    let store = || {
        let mut store = wasmtime::Store::new(engine.wasmtime(), ());
        store.set_epoch_deadline(u64::MAX / 2);
        store
    };
    let instantiate = mean_of(|| {
        let mut store = store();
        pre.instantiate(&mut store).unwrap();
    });
    let floor = mean_of(|| {
        let mut store = store();
        let instance = pre.instantiate(&mut store).unwrap();
        let agent = instance
            .get_export_index(&mut store, None, "agentbox:plugin/agent@0.1.0")
            .unwrap();
        let on_start = instance
            .get_export_index(&mut store, Some(&agent), "on-start")
            .unwrap();
        let on_start = instance
            .get_typed_func::<(), (Result<(), String>,)>(&mut store, &on_start)
            .unwrap();
        on_start.call(&mut store, ()).unwrap().0.unwrap();
    });
    (instantiate, floor)
}

/// The counter turn in native Rust: load the session, increment `count`,
/// commit, as the host does around the plugin.
fn native_turns(store: Arc<dyn Store>, sessions: usize) -> Duration {
    for s in 0..sessions {
        let record = agentbox_host::store::SessionRecord {
            id: format!("native-{sessions}-{s}"),
            plugin: "counter".into(),
            digest: String::new(),
            user_id: None,
            owner: None,
            variables: Default::default(),
            state: Default::default(),
            state_version: 1,
            revision: 1,
            turn: 0,
            status: Status::Active,
            created_at_ms: 0,
            updated_at_ms: 0,
            delegate: None,
            log_bytes: 0,
        };
        let start = agentbox_host::store::LogEntry {
            turn: 0,
            snapshot: true,
            rewind: false,
            body: "{}".into(),
        };
        store.create(&record, &[], &start).unwrap();
    }
    let turn = |store: &dyn Store, id: &str| {
        let record = store.load(id).unwrap().unwrap();
        let mut state = record.state;
        let count = state
            .get("count")
            .and_then(|count| count.as_u64())
            .unwrap_or(0);
        state.insert("count".into(), json!(count + 1));
        // An event the size of the one a host logs for the turn.
        let event = json!({
            "seq": record.revision + 1, "session": id, "turn": record.turn + 1,
            "kind": "message", "input": { "text": "tick" }, "said": [], "outcome": "continue",
            "patch": [{ "op": "replace", "path": "/count", "value": count + 1 }],
            "plugin": "counter", "digest": "0".repeat(64), "state_version": 1,
            "at_ms": 0, "duration_us": 0, "rewound": false,
        });
        store
            .commit(&Commit {
                session: id.into(),
                read_revision: record.revision,
                state,
                turn: record.turn + 1,
                plugin: record.plugin,
                delegate: None,
                digest: record.digest,
                state_version: 1,
                status: Status::Active,
                dropped_messages: 0,
                messages: vec![agentbox_host::store::Message {
                    role: agentbox_host::store::Role::User,
                    content: "tick".into(),
                    interrupted: false,
                }],
                // As a host commits, with the default limits.
                history_cap: agentbox_host::store::HistoryCap {
                    messages: Limits::default().history_messages,
                    bytes: Limits::default().history_bytes,
                },
                at_ms: 0,
                event: agentbox_host::store::LogEntry {
                    turn: record.turn + 1,
                    snapshot: false,
                    rewind: false,
                    body: event.to_string(),
                },
            })
            .unwrap();
    };
    concurrently(sessions, |s| {
        let store = store.clone();
        let id = format!("native-{sessions}-{s}");
        move || turn(&*store, &id)
    })
}

/// Runs `sessions` threads, each repeating its own operation, for [`RUN`];
/// returns wall time per operation over all threads.
fn concurrently<F: FnMut() + Send + 'static>(
    sessions: usize,
    make: impl Fn(usize) -> F,
) -> Duration {
    let started = Instant::now();
    let threads: Vec<_> = (0..sessions)
        .map(|s| {
            let mut op = make(s);
            std::thread::spawn(move || {
                let mut count = 0u32;
                while started.elapsed() < RUN {
                    op();
                    count += 1;
                }
                count
            })
        })
        .collect();
    let total: u32 = threads
        .into_iter()
        .map(|thread| thread.join().unwrap())
        .sum();
    started.elapsed() / total
}

/// The counter turn through the host: `sessions` sessions, each sending
/// messages one after another, all at once.
async fn host_turns(
    bytes: &[u8],
    limits: Limits,
    store: Arc<dyn Store>,
    sessions: usize,
) -> Duration {
    let host = Host::builder().limits(limits).store(store).build().unwrap();
    host.load_plugin(bytes).unwrap();
    let mut ids = Vec::new();
    for _ in 0..sessions {
        ids.push(started(&host, "counter").await);
    }
    for id in &ids {
        host.send_message(id, "tick", None).await.unwrap();
    }
    let (total, took) = messages_at_once(&host, ids, "tick", RUN).await;
    took / total
}
