//! Guest language benchmarks: `cargo bench -p agentbox-tests --bench languages`.
//!
//! The intake agent in Rust, Python (componentize-py) and JavaScript
//! (componentize-js), on the memory store with the default limits, in one
//! run: loading it cold (compiled in this process) and cached (read from
//! the artifact cache), one session's message turns one after another, 16
//! sessions' turns at once, and what each turn running at once adds to the
//! process's resident memory. Ratios are to the Rust intake.
//!
//! Prints a Markdown table; `BENCHMARKS.md` keeps the latest one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentbox_host::store::MemoryStore;
use agentbox_host::{Host, Limits};
use agentbox_tests::measure::{latencies, messages_at_once, ms, percentile, started};
use agentbox_tests::{plugin_bytes, plugins};

/// How long each measurement runs.
const RUN: Duration = Duration::from_secs(3);

/// Sessions whose turns run at once.
const SESSIONS: usize = 16;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| intake in | component | load cold | load cached | 1 session p50 | p99 | {SESSIONS} sessions turns/s | p50 vs Rust | turns/s vs Rust | RSS per turn at once |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut rust: Option<(Duration, f64)> = None;
    for (language, path) in [
        ("Rust", plugins::INTAKE),
        ("Python", plugins::PYTHON_INTAKE),
        ("JavaScript", plugins::JS_INTAKE),
    ] {
        let bytes = plugin_bytes(path);
        let cache = tempfile::tempdir().unwrap();
        let (cold, _) = loaded(&bytes, cache.path());
        let (cached, host) = loaded(&bytes, cache.path());

        let id = runtime.block_on(started(&host, "intake"));
        let one = latencies(RUN, || {
            runtime
                .block_on(host.send_message(&id, "hello", None))
                .unwrap();
        });
        let p50 = percentile(&one, 0.50);

        let idle = rss_bytes();
        let peak = Arc::new(AtomicU64::new(idle));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, done) = (peak.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let turns = runtime.block_on(concurrent_turns(&host));
        done.store(true, Ordering::Relaxed);
        sampler.join().unwrap();
        let per_turn = peak.load(Ordering::Relaxed).saturating_sub(idle) / SESSIONS as u64;

        let per_second = f64::from(turns) / RUN.as_secs_f64();
        let (base_p50, base_rate) = *rust.get_or_insert((p50, per_second));
        println!(
            "| {language} | {:.1} MB | {} | {} | {} | {} | {per_second:.0} | {:.1}× | {:.2}× | {:.1} MiB |",
            bytes.len() as f64 / 1e6,
            ms(cold),
            ms(cached),
            ms(p50),
            ms(percentile(&one, 0.99)),
            p50.as_secs_f64() / base_p50.as_secs_f64(),
            per_second / base_rate,
            per_turn as f64 / f64::from(1 << 20),
        );
    }
}

/// A host with the artifact cache in `cache`, and how long loading `bytes`
/// into it took.
fn loaded(bytes: &[u8], cache: &std::path::Path) -> (Duration, Host) {
    let dir = cap_std::fs::Dir::open_ambient_dir(cache, cap_std::ambient_authority()).unwrap();
    let host = Host::builder()
        .limits(Limits::default())
        .store(Arc::new(MemoryStore::default()))
        .artifact_cache(dir)
        .build()
        .unwrap();
    let began = Instant::now();
    host.load_plugin(bytes).unwrap();
    (began.elapsed(), host)
}

/// Turns committed by [`SESSIONS`] sessions sending messages at once for
/// [`RUN`].
async fn concurrent_turns(host: &Host) -> u32 {
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        sessions.push(started(host, "intake").await);
    }
    messages_at_once(host, sessions, "hello", RUN).await.0
}

/// This process's resident memory, from `/proc/self/statm`.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
