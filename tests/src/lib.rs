//! Integration tests and benchmarks of agentbox.
//!
//! `build.rs` builds the plugins in `plugins/` from source; [`plugins`] has
//! the path of each component. Every plugin has a test module of its own
//! name here, or this crate does not compile.

/// Paths of the plugin components built from `plugins/`.
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}

/// Reads a plugin component built by `build.rs`.
pub fn plugin_bytes(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|err| panic!("cannot read the plugin {path}: {err}"))
}

/// What the benchmarks share: latency percentiles, printed, and counted
/// allocations.
pub mod measure {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    /// A new session of `plugin` on `host`, started with nothing but its
    /// name: its id.
    pub async fn started(host: &agentbox_host::Host, plugin: &str) -> String {
        let start = agentbox_host::SessionStart {
            plugin: plugin.into(),
            ..Default::default()
        };
        host.start_session(start, None).await.unwrap().session
    }

    /// Each session of `ids` sends `text` as soon as its last turn
    /// committed, all at once, for `run`: the turns committed, and the time
    /// they took.
    pub async fn messages_at_once(
        host: &agentbox_host::Host,
        ids: Vec<String>,
        text: &'static str,
        run: Duration,
    ) -> (u32, Duration) {
        let began = Instant::now();
        let tasks: Vec<_> = ids
            .into_iter()
            .map(|id| {
                let host = host.clone();
                tokio::spawn(async move {
                    let mut count = 0u32;
                    while began.elapsed() < run {
                        host.send_message(&id, text, None).await.unwrap();
                        count += 1;
                    }
                    count
                })
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap();
        }
        (total, began.elapsed())
    }

    /// The latency of each run of `once`, run one after another for `run`,
    /// after 50 runs to warm up (compile, connect, fill caches).
    pub fn latencies(run: Duration, mut once: impl FnMut()) -> Vec<Duration> {
        for _ in 0..50 {
            once();
        }
        let started = Instant::now();
        let mut latencies = Vec::new();
        while started.elapsed() < run {
            let began = Instant::now();
            once();
            latencies.push(began.elapsed());
        }
        latencies
    }

    /// The latency at percentile `p` (0 to 1) of `latencies`; zero if none.
    pub fn percentile(latencies: &[Duration], p: f64) -> Duration {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = latencies.to_vec();
        sorted.sort();
        let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    /// Prints a Markdown table of `rows`, each measured for `run`: calls
    /// per second, p50, p99, and its p50 against the first row's, headed
    /// `what` and `ratio`.
    pub fn print_table(what: &str, ratio: &str, run: Duration, rows: &[(&str, &[Duration])]) {
        let base = percentile(rows[0].1, 0.50);
        println!("| {what} | calls/s | p50 | p99 | {ratio} |");
        println!("|---|---:|---:|---:|---:|");
        for (name, latencies) in rows {
            let p50 = percentile(latencies, 0.50);
            println!(
                "| {name} | {:.0} | {} | {} | {:.2} |",
                latencies.len() as f64 / run.as_secs_f64(),
                ms(p50),
                ms(percentile(latencies, 0.99)),
                p50.as_secs_f64() / base.as_secs_f64(),
            );
        }
    }

    /// `latency` in milliseconds, two decimals.
    pub fn ms(latency: Duration) -> String {
        format!("{:.2} ms", latency.as_secs_f64() * 1e3)
    }

    /// The system allocator, counting the allocations of every thread while
    /// [`allocations_in`] runs. A bench or test that counts registers it:
    /// `#[global_allocator] static ALLOCATOR: Counting = Counting;`. Outside
    /// [`allocations_in`] it costs one load of a flag per allocation.
    #[derive(Debug)]
    pub struct Counting;

    static COUNTING: AtomicBool = AtomicBool::new(false);
    static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

    impl Counting {
        fn count() {
            if COUNTING.load(Ordering::Relaxed) {
                ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    // SAFETY: every method forwards to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            Counting::count();
            // SAFETY: the caller's contract is `System`'s.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            Counting::count();
            // SAFETY: as above.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            Counting::count();
            // SAFETY: as above.
            unsafe { System.realloc(ptr, layout, new_size) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: as above.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    /// The heap allocations (and reallocations) of every thread while `run`
    /// runs, counted by [`Counting`]; zero unless it is the global allocator.
    pub fn allocations_in(run: impl FnOnce()) -> u64 {
        ALLOCATIONS.store(0, Ordering::Relaxed);
        COUNTING.store(true, Ordering::SeqCst);
        run();
        COUNTING.store(false, Ordering::SeqCst);
        ALLOCATIONS.load(Ordering::Relaxed)
    }

    /// The heap allocations of one turn of session `id` on `host`, each
    /// sending `text`, rounded up from the mean of `turns` turns taken one
    /// after another, after 20 to warm up (threads, instances, caches). The
    /// turns run in a task on one of `runtime`'s workers, as a server's
    /// do, so the count includes what the worker pays to run a turn.
    pub fn allocations_per_turn(
        runtime: &tokio::runtime::Runtime,
        host: &agentbox_host::Host,
        id: &str,
        text: &'static str,
        turns: u64,
    ) -> u64 {
        let run = |count: u64| {
            let (host, id) = (host.clone(), id.to_owned());
            let task = runtime.spawn(async move {
                for _ in 0..count {
                    if let Err(err) = host.send_message(&id, text, None).await {
                        panic!("a turn failed while counting: {err}");
                    }
                }
            });
            runtime.block_on(task).unwrap();
        };
        run(20);
        allocations_in(|| run(turns)).div_ceil(turns)
    }
}

#[cfg(test)]
mod harness;
mod redis_server;

pub use redis_server::RedisServer;

#[cfg(test)]
mod assistant;
#[cfg(test)]
mod bad_name;
#[cfg(test)]
mod bad_tool_name;
#[cfg(test)]
mod boundary;
#[cfg(test)]
mod broken_schema;
#[cfg(test)]
mod cache_probe;
#[cfg(test)]
mod callers;
#[cfg(test)]
mod concierge;
#[cfg(test)]
mod contract;
#[cfg(test)]
mod counter;
#[cfg(test)]
mod counter_v2;
#[cfg(test)]
mod describe_loop;
#[cfg(test)]
mod describe_trap;
#[cfg(test)]
mod duplicate_tools;
#[cfg(test)]
mod faults;
#[cfg(test)]
mod fetcher;
#[cfg(test)]
mod follow;
#[cfg(test)]
mod foreign_import;
#[cfg(test)]
mod history;
#[cfg(test)]
mod intake;
#[cfg(test)]
mod interrupt;
#[cfg(all(test, guest_languages))]
mod js_intake;
#[cfg(all(test, guest_languages))]
mod js_notebook;
#[cfg(test)]
mod kv_probe;
#[cfg(all(test, guest_languages))]
mod languages;
#[cfg(test)]
mod loading;
#[cfg(test)]
mod misbehave;
#[cfg(test)]
mod other_world;
#[cfg(test)]
mod policy;
#[cfg(test)]
mod profile;
#[cfg(all(test, guest_languages))]
mod python_intake;
#[cfg(all(test, guest_languages))]
mod python_notebook;
#[cfg(test)]
mod relay;
#[cfg(test)]
mod remote_mcp;
#[cfg(test)]
mod rogue;
#[cfg(test)]
mod shop;
#[cfg(test)]
mod store_conformance;
#[cfg(test)]
mod timeline;
#[cfg(test)]
mod two_hosts;
#[cfg(test)]
mod webhook;

/// Every plugin has a test module named after it.
#[cfg(test)]
macro_rules! has_tests {
    ($plugin:ident) => {
        const _: () = {
            #[expect(unused_imports, reason = "only checks that the module exists")]
            use crate::$plugin as _;
        };
    };
}
#[cfg(test)]
for_each_plugin!(has_tests);
