//! The size of the pooling allocator, from the policy, and what one of its
//! slots holds.
//!
//! Every instance a host runs takes one slot: a turn's, each callee's
//! along a chain of registry calls or a hand-off, and the trial instances
//! made while loading. A turn's chain is at most `call_depth + 1`
//! instances deep and runs on one thread, so `concurrent_turns` turns
//! at once hold at most `concurrent_turns × (call_depth + 1)` slots; the
//! pool has that many plus [`LOADING_SLOTS`]. A slot holds [`SLOT`]: as
//! many core instances, memories and tables as one component may
//! instantiate. A component that needs more is refused at load, so no
//! turn within the bounds ever finds the pool full. `docs/security.md`
//! works the numbers through.

use wasmtime::PoolingAllocationConfig;

use crate::limits::Limits;

/// What one instance of a component takes from the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Core module instances: the component's own modules, and the shims
    /// and adapters its toolchain adds (about 4 for Rust, 14 for a Python
    /// interpreter).
    pub core_instances: u32,
    /// Linear memories.
    pub memories: u32,
    /// Tables.
    pub tables: u32,
}

/// What one pool slot holds: room for an interpreter guest.
pub const SLOT: Footprint = Footprint {
    core_instances: 16,
    memories: 1,
    tables: 8,
};

/// Slots kept for the trial instances made while loading plugins.
pub const LOADING_SLOTS: u32 = 40;

/// Freed slots decommitted together, in one round of TLB shootdowns.
const DECOMMIT_BATCH: usize = 32;

impl Footprint {
    /// What of this footprint a slot cannot hold: each resource over
    /// [`SLOT`], as "17 core instances (a slot holds 16)".
    pub fn over_slot(&self) -> Vec<String> {
        [
            (self.core_instances, SLOT.core_instances, "core instances"),
            (self.memories, SLOT.memories, "memories"),
            (self.tables, SLOT.tables, "tables"),
        ]
        .into_iter()
        .filter(|(needs, holds, _)| needs > holds)
        .map(|(needs, holds, what)| format!("{needs} {what} (a slot holds {holds})"))
        .collect()
    }
}

impl std::fmt::Display for Footprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} core instances, {} memor{}, {} tables",
            self.core_instances,
            self.memories,
            if self.memories == 1 { "y" } else { "ies" },
            self.tables
        )
    }
}

/// Slots in the pool of a host with `limits`: every turn at once with its
/// deepest chain of calls, and the loading slots.
pub fn slots(limits: &Limits) -> u32 {
    let turns = u32::try_from(limits.concurrent_turns).unwrap_or(u32::MAX);
    let chain = u32::try_from(limits.call_depth)
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    turns.saturating_mul(chain).saturating_add(LOADING_SLOTS)
}

/// The pooling allocator's configuration for `slots` slots of [`SLOT`],
/// each memory up to `memory_bytes`.
pub(super) fn config(slots: u32, memory_bytes: usize) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots * SLOT.core_instances)
        .max_core_instances_per_component(SLOT.core_instances)
        .total_memories(slots * SLOT.memories)
        .max_memories_per_component(SLOT.memories)
        .total_tables(slots * SLOT.tables)
        .max_tables_per_component(SLOT.tables)
        .max_memory_size(memory_bytes)
        // Keep freed slots warm so the next turn reuses their mappings.
        .max_unused_warm_slots(slots / 4)
        // Decommit freed slots in batches: each madvise round costs a TLB
        // shootdown on every core.
        .decommit_batch_size(DECOMMIT_BATCH);
    pool
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_holds_every_turn_with_its_deepest_chain() {
        let limits = Limits::default();
        assert_eq!(
            (limits.concurrent_turns, limits.call_depth),
            (256, 4),
            "the defaults this arithmetic is written for"
        );
        assert_eq!(slots(&limits), 256 * 5 + 40);
        let shallow = Limits {
            concurrent_turns: 10,
            call_depth: 0,
            ..Limits::default()
        };
        assert_eq!(slots(&shallow), 50);
    }

    #[test]
    fn a_footprint_over_a_slot_names_each_resource_it_exceeds() {
        let python = Footprint {
            core_instances: 14,
            memories: 1,
            tables: 2,
        };
        assert!(python.over_slot().is_empty());
        let big = Footprint {
            core_instances: 17,
            memories: 2,
            tables: 8,
        };
        assert_eq!(
            big.over_slot(),
            [
                "17 core instances (a slot holds 16)",
                "2 memories (a slot holds 1)"
            ]
        );
        assert_eq!(python.to_string(), "14 core instances, 1 memory, 2 tables");
    }
}
