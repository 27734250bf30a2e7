//! KV benchmarks: `cargo bench -p agentbox-tests --bench kv`.
//!
//! Measures, in one run, one KV `set` and one `get` of a 100-byte value:
//! - through a guest: the kv-probe plugin's `fill` and `read` tools, which
//!   run [`OPS_PER_TURN`] operations in one turn, so the turn's own cost is
//!   spread thin;
//! - through the store from native Rust (`Store::kv_put`, `Store::kv_get`),
//!   which is everything the host does for a guest's call but the call;
//! - for Redis, plain `SET` and `GET` from the redis crate on one
//!   connection: the baseline the target is set against.
//!
//! Needs `redis-server` installed for the Redis rows. Prints a Markdown table;
//! `BENCHMARKS.md` keeps the latest one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentbox_host::store::{KvWrite, Namespace, Quota, Store, StoreSpec};
use agentbox_host::{Host, Limits};
use agentbox_tests::measure::started;
use agentbox_tests::{RedisServer, plugin_bytes, plugins};
use serde_json::json;

/// How long each measurement runs.
const RUN: Duration = Duration::from_secs(2);

/// KV operations in one guest turn.
const OPS_PER_TURN: u32 = 500;

const VALUE: &str = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopq";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start();

    println!("| measurement | per op (mean) | ops/s | ratio |");
    println!("|---|---:|---:|---|");
    if let Some(server) = &server {
        let mut conn = redis::Client::open(server.url())
            .and_then(|client| client.get_connection())
            .unwrap();
        let mut n = 0u64;
        let native_set = mean_of(|| {
            n += 1;
            redis::cmd("SET")
                .arg(format!("native:{}", n % 1000))
                .arg(VALUE)
                .query::<()>(&mut conn)
                .unwrap();
        });
        let native_get = mean_of(|| {
            n += 1;
            redis::cmd("GET")
                .arg(format!("native:{}", n % 1000))
                .query::<Option<Vec<u8>>>(&mut conn)
                .unwrap();
        });
        let spec = StoreSpec::Redis(server.url().to_owned());
        let store = spec.open().unwrap();
        row("redis crate SET, one connection", native_set, "");
        let (set, get) = store_ops(&store);
        row(
            "Store::kv_put on Redis (native Rust)",
            set,
            &of(set, native_set, "SET"),
        );
        let (guest_set, guest_get) = runtime.block_on(guest_ops(store));
        row(
            "kv set through a guest, Redis",
            guest_set,
            &of(guest_set, native_set, "SET"),
        );
        row("redis crate GET, one connection", native_get, "");
        row(
            "Store::kv_get on Redis (native Rust)",
            get,
            &of(get, native_get, "GET"),
        );
        row(
            "kv get through a guest, Redis",
            guest_get,
            &of(guest_get, native_get, "GET"),
        );
    } else {
        println!("| Redis rows skipped: redis-server is not installed | | | |");
    }

    let store = StoreSpec::Sqlite(dir.path().join("kv.db")).open().unwrap();
    let (set, get) = store_ops(&store);
    let (guest_set, guest_get) = runtime.block_on(guest_ops(store));
    row("Store::kv_put on SQLite (native Rust)", set, "");
    row(
        "kv set through a guest, SQLite",
        guest_set,
        &of(guest_set, set, "Store::kv_put"),
    );
    row("Store::kv_get on SQLite (native Rust)", get, "");
    row(
        "kv get through a guest, SQLite",
        guest_get,
        &of(guest_get, get, "Store::kv_get"),
    );
}

fn row(what: &str, per_op: Duration, ratio: &str) {
    let per_second = 1.0 / per_op.as_secs_f64();
    println!(
        "| {what} | {:.1} µs | {per_second:.0} | {ratio} |",
        per_op.as_secs_f64() * 1e6
    );
}

/// Throughput of `op` as a share of the baseline's, named.
fn of(op: Duration, baseline: Duration, name: &str) -> String {
    format!(
        "{:.0} % of {name}",
        100.0 * baseline.as_secs_f64() / op.as_secs_f64()
    )
}

/// Mean time per operation of `op`, run repeatedly for [`RUN`].
fn mean_of(mut op: impl FnMut()) -> Duration {
    for _ in 0..10 {
        op();
    }
    let started = Instant::now();
    let mut count = 0u32;
    while started.elapsed() < RUN {
        op();
        count += 1;
    }
    started.elapsed() / count
}

/// `kv_put` and `kv_get` called on the store from native Rust.
fn store_ops(store: &Arc<dyn Store>) -> (Duration, Duration) {
    let ns = Namespace {
        owner: "native".into(),
        scope: "global".into(),
    };
    let quota = Quota {
        keys: u64::MAX,
        bytes: u64::MAX,
        user_keys: u64::MAX,
        user_bytes: u64::MAX,
    };
    let mut n = 0u64;
    let set = mean_of(|| {
        n += 1;
        let write = KvWrite {
            value: VALUE.as_bytes(),
            expires_at_ms: None,
            only_if: None,
        };
        store
            .kv_put(&ns, &format!("key{}", n % 1000), &write, 0, &quota)
            .unwrap();
    });
    let get = mean_of(|| {
        n += 1;
        store.kv_get(&ns, &format!("key{}", n % 1000), 0).unwrap();
    });
    (set, get)
}

/// One `set` and one `get` through the kv-probe plugin, per operation.
async fn guest_ops(store: Arc<dyn Store>) -> (Duration, Duration) {
    let limits = Limits {
        deadline: Duration::from_secs(60),
        ..Limits::default()
    };
    let host = Host::builder().limits(limits).store(store).build().unwrap();
    host.load_plugin(&plugin_bytes(plugins::KV_PROBE)).unwrap();
    let id = started(&host, "kv-probe").await;
    let fill =
        json!({ "bucket": "global", "prefix": "key", "count": OPS_PER_TURN, "value": VALUE });
    let read = json!({ "bucket": "global", "prefix": "key", "count": OPS_PER_TURN });
    let set = mean_of_async(|| host.call_tool(&id, "fill", fill.clone(), None)).await;
    let get = mean_of_async(|| host.call_tool(&id, "read", read.clone(), None)).await;
    (set / OPS_PER_TURN, get / OPS_PER_TURN)
}

/// [`mean_of`] for a turn.
async fn mean_of_async<F, T, E>(mut turn: impl FnMut() -> F) -> Duration
where
    F: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    for _ in 0..3 {
        turn().await.unwrap_or_else(|err| panic!("{err}"));
    }
    let started = Instant::now();
    let mut count = 0u32;
    while started.elapsed() < RUN {
        turn().await.unwrap_or_else(|err| panic!("{err}"));
        count += 1;
    }
    started.elapsed() / count
}
