//! What a counter turn costs the host, counted rather than timed: its heap
//! allocations. The number is written next to the test, so that a change
//! which adds to every turn changes the number on purpose, with the reason
//! in its commit. `BENCHMARKS.md` says where the allocations go.

use agentbox_host::Host;
use agentbox_host::store::MemoryStore;
use agentbox_tests::measure::{Counting, allocations_per_turn, started};
use agentbox_tests::{plugin_bytes, plugins};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap allocations of one counter turn on the memory store, on every
/// thread: the caller's future, the turn, wasmtime's instance and the
/// commit. 104 counted; two more allow for a background task's rare
/// allocation landing among the counted turns.
const ALLOCATIONS_PER_TURN: u64 = 106;

/// Turns counted; the mean is taken over all of them.
const TURNS: u64 = 200;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A host of the counter plugin on the memory store, and a session of it.
async fn counter() -> (Host, String) {
    let host = Host::builder()
        .store(std::sync::Arc::new(MemoryStore::default()))
        .build()
        .unwrap();
    host.load_plugin(&plugin_bytes(plugins::COUNTER)).unwrap();
    let id = started(&host, "counter").await;
    (host, id)
}

/// One test in this binary: the allocator counts every thread, so nothing
/// else may run while it counts.
#[test]
fn a_counter_turn_allocates_within_its_budget() {
    let runtime = runtime();
    let (host, id) = runtime.block_on(counter());
    let per_turn = allocations_per_turn(&runtime, &host, &id, "tick", TURNS);
    println!("{per_turn} allocations per counter turn (budget {ALLOCATIONS_PER_TURN})");
    assert!(
        per_turn <= ALLOCATIONS_PER_TURN,
        "a counter turn now makes {per_turn} heap allocations, over its budget of \
         {ALLOCATIONS_PER_TURN}: cut them, or raise ALLOCATIONS_PER_TURN on purpose and say why"
    );
    assert!(
        per_turn > 0,
        "no allocation counted: the counting allocator is not in use"
    );
}
