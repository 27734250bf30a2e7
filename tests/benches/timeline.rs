//! Timeline benchmark: `cargo bench -p agentbox-tests --bench timeline`.
//!
//! On a SQLite store (the default), a counter session of 10,000 turns, with
//! a snapshot every 100 turns (the default). Measures, one at a time:
//! - the baseline: reading the session's record (`Host::session`), one
//!   store read;
//! - the state as of turn 10, 1,000 and 10,000, rebuilt from the latest
//!   snapshot at or before it and the patches after it (`Timeline::state_at`),
//!   and of turn 9,999, the most patches there are to apply (99);
//! - a page of 100 events (`Timeline::events`).
//!
//! Prints a Markdown table of calls per second, p50 and p99, and each p50
//! against the baseline's; `BENCHMARKS.md` keeps the latest.

use std::time::Duration;

use agentbox_host::Host;
use agentbox_host::store::StoreSpec;
use agentbox_tests::measure::{latencies, print_table, started};
use agentbox_tests::{plugin_bytes, plugins};
use serde_json::json;

/// How long each measurement runs.
const RUN: Duration = Duration::from_secs(3);

/// Turns of the session read back.
const TURNS: u64 = 10_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = StoreSpec::Sqlite(dir.path().join("agentbox.db"))
        .open()
        .unwrap();
    let host = Host::builder().store(store).build().unwrap();
    host.load_plugin(&plugin_bytes(plugins::COUNTER)).unwrap();
    let id = runtime.block_on(started(&host, "counter"));
    for _ in 0..TURNS {
        runtime
            .block_on(host.send_message(&id, "tick", None))
            .unwrap();
    }

    let record = latencies(RUN, || {
        let record = runtime.block_on(host.session(&id)).unwrap().unwrap();
        assert_eq!(record.turn, TURNS);
    });
    let state_at = |turn: u64| {
        latencies(RUN, || {
            let state = runtime
                .block_on(host.timeline().state_at(&id, turn))
                .unwrap();
            assert_eq!(state.state["count"], json!(turn));
        })
    };
    let (at_10, at_1_000, at_9_999, at_10_000) = (
        state_at(10),
        state_at(1_000),
        state_at(TURNS - 1),
        state_at(TURNS),
    );
    let page = latencies(RUN, || {
        let events = runtime
            .block_on(host.timeline().events(&id, 5_000, 100))
            .unwrap()
            .events;
        assert_eq!(events.len(), 100);
    });

    print_table(
        "a counter session of 10,000 turns, SQLite",
        "p50 / record p50",
        RUN,
        &[
            ("the session's record (`Host::session`)", &record),
            ("`state?turn=10`", &at_10),
            ("`state?turn=1000`", &at_1_000),
            ("`state?turn=9999` (99 patches after a snapshot)", &at_9_999),
            ("`state?turn=10000`", &at_10_000),
            ("a page of 100 events", &page),
        ],
    );
}
