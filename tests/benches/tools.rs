//! Tool-call benchmarks: `cargo bench -p agentbox-tests --bench tools`.
//!
//! Measures, in one run, with the memory store:
//! - a validated tool call (`shop/add_to_cart`: schema check, `requires`
//!   check, fresh instance, commit) against the argument validation alone,
//!   the share validation costs;
//! - a cacheable tool (`shop/get_product`) answered from the cache against
//!   the same call that misses and runs the guest.
//!
//! Prints a Markdown table; `BENCHMARKS.md` keeps the latest one.

use std::time::{Duration, Instant};

use agentbox_host::{Clock, Host};
use agentbox_tests::measure::started;
use agentbox_tests::{plugin_bytes, plugins};
use serde_json::json;

/// How long each measurement runs.
const RUN: Duration = Duration::from_secs(2);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let clock = Clock::manual(0);
    let host = Host::builder().clock(clock.clone()).build().unwrap();
    host.load_plugin(&plugin_bytes(plugins::SHOP)).unwrap();
    let id = started(&host, "shop").await;
    host.call_tool(
        &id,
        "login",
        json!({ "username": "ada", "password": "lovelace" }),
        None,
    )
    .await
    .unwrap();

    let add = json!({ "product_id": "book", "quantity": 1 });
    let call = mean_of_async(|| async {
        host.call_tool(&id, "add_to_cart", add.clone(), None)
            .await
            .unwrap();
    })
    .await;
    let tool = host.tool("shop/add_to_cart").unwrap();
    let validation = mean_of(|| {
        tool.tool().check_arguments(&add).unwrap();
    });

    let lamp = json!({ "product_id": "lamp" });
    host.call_tool(&id, "get_product", lamp.clone(), None)
        .await
        .unwrap();
    let hit = mean_of_async(|| async {
        assert!(
            host.call_tool(&id, "get_product", lamp.clone(), None)
                .await
                .unwrap()
                .cached
        );
    })
    .await;
    let miss = mean_of_async(|| async {
        // Past the one-minute TTL: every call misses and runs the guest.
        clock.advance(Duration::from_secs(61));
        assert!(
            !host
                .call_tool(&id, "get_product", lamp.clone(), None)
                .await
                .unwrap()
                .cached
        );
    })
    .await;

    println!("| measurement | per call (mean) | calls/s | ratio |");
    println!("|---|---:|---:|---|");
    row(
        "tool call `add_to_cart` (validated, requires checked, committed)",
        call,
        "",
    );
    row(
        "argument validation alone (JSON Schema of `add_to_cart`)",
        validation,
        &format!(
            "{:.1} % of the call",
            100.0 * validation.as_secs_f64() / call.as_secs_f64()
        ),
    );
    row(
        "cacheable tool `get_product`, cache miss (guest runs)",
        miss,
        "",
    );
    row(
        "cacheable tool `get_product`, cache hit",
        hit,
        &format!(
            "{:.1}× faster than a miss",
            miss.as_secs_f64() / hit.as_secs_f64()
        ),
    );
}

fn row(what: &str, per_call: Duration, ratio: &str) {
    println!(
        "| {what} | {:.1} µs | {:.0} | {ratio} |",
        per_call.as_secs_f64() * 1e6,
        1.0 / per_call.as_secs_f64()
    );
}

/// Mean time per operation of `op`, run repeatedly for [`RUN`].
fn mean_of(mut op: impl FnMut()) -> Duration {
    let started = Instant::now();
    let mut count = 0u32;
    while started.elapsed() < RUN {
        op();
        count += 1;
    }
    started.elapsed() / count
}

/// Mean time per operation of the async `op`, run one after another for [`RUN`].
async fn mean_of_async<F: Future<Output = ()>>(mut op: impl FnMut() -> F) -> Duration {
    op().await;
    let started = Instant::now();
    let mut count = 0u32;
    while started.elapsed() < RUN {
        op().await;
        count += 1;
    }
    started.elapsed() / count
}
