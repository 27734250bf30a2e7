//! HTTP benchmarks: `cargo bench -p agentbox-tests --bench http`.
//!
//! Measures, in one run, turns of the counter plugin through the session API
//! of `agentbox serve` (the same router, on a loopback port) with 1, 16 and
//! 64 concurrent clients, each with its own session and keep-alive
//! connection, on the SQLite and Redis stores: turns per second, and p50 and
//! p99 latency as the client sees it. The baseline is the same turns with the
//! same concurrency through `Host::send_message`, without HTTP.
//!
//! Then, with 16 clients on SQLite, counter 0.2.0 is made active under load:
//! the latency of each session's first turn on it (which migrates its
//! state) and of the turns after, against the turns before the swap.
//!
//! The load generator runs on the same two cores as the server. The Redis
//! rows need `redis-server` installed; the bench starts its own. Prints a
//! Markdown table; `BENCHMARKS.md` keeps the latest one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentbox_host::Host;
use agentbox_host::store::{RedisStore, SqliteStore, Store};
use agentbox_tests::measure::{messages_at_once, ms, percentile, started};
use agentbox_tests::{RedisServer, plugin_bytes, plugins};

/// How long each measurement runs.
const RUN: Duration = Duration::from_secs(3);

fn main() {
    // `cargo bench -p agentbox-tests --bench http -- sqlite` runs only the rows naming sqlite.
    let filter = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();

    println!("| measurement | turns/s | p50 | p99 | baseline turns/s (no HTTP) | ratio |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, clients) in [
        ("sqlite", 1),
        ("sqlite", 16),
        ("sqlite", 64),
        ("redis", 1),
        ("redis", 16),
        ("redis", 64),
    ] {
        if !format!("{name} {clients}").contains(&filter) {
            continue;
        }
        let store = |runner: &str| -> Arc<dyn Store> {
            match (name, &redis) {
                ("redis", Some(server)) => Arc::new(RedisStore::open(server.url()).unwrap()),
                _ => Arc::new(
                    SqliteStore::open(&dir.path().join(format!("{runner}-{clients}.db"))).unwrap(),
                ),
            }
        };
        if name == "redis" && redis.is_none() {
            println!("| redis rows skipped: redis-server is not installed | | | | | |");
            continue;
        }
        let direct = runtime.block_on(direct_turns(host(store("direct")), clients));
        let server = Server::start(&runtime, host(store("http")));
        let sessions = runtime.block_on(sessions(&server.host, clients));
        let http = over_http(&server.base, sessions);
        println!(
            "| counter turn over HTTP, {name}, {clients} client{} | {:.0} | {} | {} | {direct:.0} | {:.2} |",
            if clients > 1 { "s" } else { "" },
            http.per_second,
            ms(percentile(&http.latencies(|_| true), 0.50)),
            ms(percentile(&http.latencies(|_| true), 0.99)),
            http.per_second / direct,
        );
    }
    if "swap".contains(&filter) || filter.is_empty() {
        swap(&runtime, &dir);
    }
}

fn host(store: Arc<dyn Store>) -> Host {
    let host = Host::builder().store(store).build().unwrap();
    host.load_plugin(&plugin_bytes(plugins::COUNTER)).unwrap();
    host
}

/// `count` new counter sessions, each past its first turn.
async fn sessions(host: &Host, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let id = started(host, "counter").await;
        host.send_message(&id, "tick", None).await.unwrap();
        ids.push(id);
    }
    ids
}

/// Turns per second through `Host::send_message`, `clients` sessions at once.
async fn direct_turns(host: Host, clients: usize) -> f64 {
    let ids = sessions(&host, clients).await;
    let (total, took) = messages_at_once(&host, ids, "tick", RUN).await;
    f64::from(total) / took.as_secs_f64()
}

/// The session API on a loopback port.
struct Server {
    host: Host,
    base: String,
    _serving: tokio::task::JoinHandle<()>,
}

impl Server {
    fn start(runtime: &tokio::runtime::Runtime, host: Host) -> Server {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = agentbox_host::server::router(host.clone(), Default::default());
        let serving = runtime.spawn(async move {
            agentbox_host::server::serve(
                listener,
                router,
                Default::default(),
                std::future::pending(),
            )
            .await
            .unwrap()
        });
        Server {
            host,
            base,
            _serving: serving,
        }
    }
}

/// One turn as a client saw it.
struct Turn {
    began: Instant,
    took: Duration,
    /// Its committed state migrated to counter 0.2.0's layout (`total`),
    /// where the turn before had counter 0.1.0's (`count`).
    migrated: bool,
}

struct Load {
    per_second: f64,
    turns: Vec<Turn>,
}

impl Load {
    fn latencies(&self, which: impl Fn(&Turn) -> bool) -> Vec<Duration> {
        self.turns
            .iter()
            .filter(|turn| which(turn))
            .map(|turn| turn.took)
            .collect()
    }
}

/// Sends `tick` to each session from a client thread of its own for [`RUN`].
fn over_http(base: &str, sessions: Vec<String>) -> Load {
    let started = Instant::now();
    let turns: Vec<Turn> = std::thread::scope(|scope| {
        let clients: Vec<_> = sessions
            .into_iter()
            .map(|id| {
                let url = format!("{base}/v1/sessions/{id}/messages");
                scope.spawn(move || {
                    let agent = ureq::Agent::new_with_defaults();
                    let mut turns = Vec::new();
                    let mut was_v1 = true;
                    while started.elapsed() < RUN {
                        let began = Instant::now();
                        let reply = agent
                            .post(&url)
                            .header("content-type", "application/json")
                            .send(r#"{"text": "tick"}"#)
                            .unwrap()
                            .body_mut()
                            .read_to_string()
                            .unwrap();
                        let took = began.elapsed();
                        assert!(reply.contains(r#""event":"committed""#), "{reply}");
                        let is_v2 = reply.contains(r#""total""#);
                        turns.push(Turn {
                            began,
                            took,
                            migrated: was_v1 && is_v2,
                        });
                        was_v1 = !is_v2;
                    }
                    turns
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|client| client.join().unwrap())
            .collect()
    });
    Load {
        per_second: turns.len() as f64 / started.elapsed().as_secs_f64(),
        turns,
    }
}

/// Latency of the turns that migrate to counter 0.2.0 and of the turns
/// after it, against the turns before the swap.
fn swap(runtime: &tokio::runtime::Runtime, dir: &tempfile::TempDir) {
    let store = Arc::new(SqliteStore::open(&dir.path().join("swap.db")).unwrap());
    let server = Server::start(runtime, host(store));
    let sessions = runtime.block_on(sessions(&server.host, 16));
    // Loaded (compiled, trial-instantiated) before the load starts: counter
    // 0.2.0 refuses to migrate counts of 100 or more, which the sessions
    // reach within a second.
    let staging = Instant::now();
    let v2 = server
        .host
        .stage_plugin(&plugin_bytes(plugins::COUNTER_V2))
        .unwrap();
    let staged = staging.elapsed();
    let swapping = std::sync::Mutex::new(None::<(Instant, Instant)>);
    let load = std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(RUN / 30);
            let began = Instant::now();
            server
                .host
                .activate("counter", &v2.digest.to_string())
                .unwrap();
            *swapping.lock().unwrap() = Some((began, Instant::now()));
        });
        over_http(&server.base, sessions)
    });
    let (began, ended) = swapping.lock().unwrap().expect("the swap ran");
    let before = load.latencies(|turn| turn.began < began && !turn.migrated);
    let migrating = load.latencies(|turn| turn.migrated);
    let after = load.latencies(|turn| turn.began >= ended && !turn.migrated);
    println!();
    println!(
        "Swap to counter 0.2.0 with 16 clients on SQLite: loading it took {:.0} ms, activating it {:.1} µs.",
        staged.as_secs_f64() * 1e3,
        (ended - began).as_secs_f64() * 1e6
    );
    println!();
    println!("| turns | count | p50 | p99 | p50 vs before |");
    println!("|---|---:|---:|---:|---:|");
    let base = percentile(&before, 0.50);
    for (what, latencies) in [
        ("before the swap", &before),
        ("first turn on v2 (migrates the state)", &migrating),
        ("after the swap", &after),
    ] {
        let p50 = percentile(latencies, 0.50);
        println!(
            "| {what} | {} | {} | {} | {:.2}× |",
            latencies.len(),
            ms(p50),
            ms(percentile(latencies, 0.99)),
            p50.as_secs_f64() / base.as_secs_f64()
        );
    }
}
