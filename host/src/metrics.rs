//! What the host counts, for `/metrics` (Prometheus text format) and the
//! admin API's per-plugin stats.
//!
//! Labels carry only names the host controls: a loaded plugin's name (a
//! request naming an unknown plugin is counted under `-`), an error kind,
//! a KV function, a limit. Never an id or a payload.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::limits::Limit;

/// The plugin label of something no loaded plugin did.
pub(crate) const NO_PLUGIN: &str = "-";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

/// The kinds of turn.
const TURN_KINDS: [&str; 5] = ["start", "message", "tool", "end", "expire"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TurnLabels {
    plugin: String,
    /// One of [`TURN_KINDS`].
    kind: &'static str,
    /// `ok` or `failed`.
    outcome: &'static str,
}

/// A label set of a plugin and one more label, `$label`.
macro_rules! plugin_and {
    ($name:ident, $label:ident) => {
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct $name {
            plugin: String,
            $label: &'static str,
        }

        impl $name {
            fn new(plugin: &str, $label: &'static str) -> $name {
                $name {
                    plugin: plugin.to_owned(),
                    $label,
                }
            }
        }
    };
}

plugin_and!(ErrorLabels, kind);
plugin_and!(KvLabels, function);
plugin_and!(SwapLabels, action);
plugin_and!(MigrationLabels, outcome);
plugin_and!(LimitLabels, limit);
plugin_and!(RefusalLabels, rule);
plugin_and!(WebhookLabels, outcome);

/// A plugin and an allow entry of its outbound grant, as the policy names it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OriginLabels {
    plugin: String,
    origin: String,
}

/// The host's counters. One per host; cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    turns: Family<TurnLabels, Counter>,
    turn_errors: Family<ErrorLabels, Counter>,
    turn_seconds: Family<PluginLabel, Histogram>,
    instances: Gauge,
    live_sessions: Family<PluginLabel, Gauge>,
    pinned_sessions: Family<PluginLabel, Gauge>,
    kv_operations: Family<KvLabels, Counter>,
    swaps: Family<SwapLabels, Counter>,
    migrations: Family<MigrationLabels, Counter>,
    limit_trips: Family<LimitLabels, Counter>,
    outbound_requests: Family<OriginLabels, Counter>,
    outbound_bytes: Family<OriginLabels, Counter>,
    outbound_refused: Family<RefusalLabels, Counter>,
    webhook_events: Family<WebhookLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("agentbox");
        let turns = Family::<TurnLabels, Counter>::default();
        registry.register(
            "turns",
            "Turns by plugin, kind and outcome (ok or failed)",
            turns.clone(),
        );
        let turn_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "turn_errors",
            "Failed turns by plugin and error kind (the `kind` of the API's errors)",
            turn_errors.clone(),
        );
        // 100 µs to about 13 s.
        let turn_seconds = Family::<PluginLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        registry.register(
            "turn_duration_seconds",
            "Time from a turn's request to its answer, waiting for the session included",
            turn_seconds.clone(),
        );
        let instances = Gauge::default();
        registry.register(
            "instances_in_use",
            "Plugin instances running a call right now",
            instances.clone(),
        );
        let live_sessions = Family::<PluginLabel, Gauge>::default();
        registry.register(
            "live_sessions",
            "Sessions not ended, by plugin, as the store holds them",
            live_sessions.clone(),
        );
        let pinned_sessions = Family::<PluginLabel, Gauge>::default();
        registry.register(
            "pinned_sessions",
            "Sessions kept on an older version of their plugin because the active version could not migrate them, by plugin",
            pinned_sessions.clone(),
        );
        let kv_operations = Family::<KvLabels, Counter>::default();
        registry.register(
            "kv_operations",
            "KV functions called by plugins, by function",
            kv_operations.clone(),
        );
        let swaps = Family::<SwapLabels, Counter>::default();
        registry.register(
            "plugin_swaps",
            "Plugin versions made active, by action (activate, roll-back, or follow: as the store records)",
            swaps.clone(),
        );
        let migrations = Family::<MigrationLabels, Counter>::default();
        registry.register(
            "migrations",
            "Session state migrations, by outcome (ok or failed)",
            migrations.clone(),
        );
        let limit_trips = Family::<LimitLabels, Counter>::default();
        registry.register(
            "limit_trips",
            "Turns or calls stopped by a limit, by limit",
            limit_trips.clone(),
        );
        let outbound_requests = Family::<OriginLabels, Counter>::default();
        registry.register(
            "outbound_requests",
            "Outbound HTTP requests answered, by plugin and the allow entry they matched",
            outbound_requests.clone(),
        );
        let outbound_bytes = Family::<OriginLabels, Counter>::default();
        registry.register(
            "outbound_response_bytes",
            "Bytes of outbound responses' bodies read, by plugin and allow entry",
            outbound_bytes.clone(),
        );
        let outbound_refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "outbound_refused",
            "Outbound HTTP requests refused by the host, by plugin and the rule that refused them",
            outbound_refused.clone(),
        );
        let webhook_events = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhook_events",
            "Events posted to a plugin's webhook, by outcome: delivered, retried (an attempt failed and another follows), dropped (every attempt failed, or too many waited)",
            webhook_events.clone(),
        );
        Metrics {
            registry,
            turns,
            turn_errors,
            turn_seconds,
            instances,
            live_sessions,
            pinned_sessions,
            kv_operations,
            swaps,
            migrations,
            limit_trips,
            outbound_requests,
            outbound_bytes,
            outbound_refused,
            webhook_events,
        }
    }
}

/// One plugin's counts since the host started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PluginStats {
    /// Turns that committed.
    pub turns_ok: u64,
    /// Turns that failed (`agentbox_turn_errors_total` has them by kind).
    pub turns_failed: u64,
    /// Sessions whose state the active version migrated.
    pub migrations_ok: u64,
    /// Migrations that failed (the session stayed on its version, or failed).
    pub migrations_failed: u64,
    /// Versions made active: activations, roll-backs, and activations
    /// followed from the store's record.
    pub swaps: u64,
    /// Calls stopped by a limit (`agentbox_limit_trips_total` has them by limit).
    pub limit_trips: u64,
}

impl Metrics {
    /// Counts a finished turn of `kind` that took `took` and failed with
    /// the error kind `error`, if it failed.
    pub(crate) fn turn(
        &self,
        plugin: &str,
        kind: &'static str,
        error: Option<&'static str>,
        took: Duration,
    ) {
        self.turn_seconds
            .get_or_create(&PluginLabel {
                plugin: plugin.to_owned(),
            })
            .observe(took.as_secs_f64());
        self.turns
            .get_or_create(&TurnLabels {
                plugin: plugin.to_owned(),
                kind,
                outcome: if error.is_some() { "failed" } else { "ok" },
            })
            .inc();
        if let Some(error) = error {
            self.turn_errors
                .get_or_create(&ErrorLabels::new(plugin, error))
                .inc();
        }
    }

    /// An instance runs a call until the guard is dropped.
    pub(crate) fn instance(&self) -> InstanceGuard<'_> {
        self.instances.inc();
        InstanceGuard(&self.instances)
    }

    /// Counts a call of the KV function `function`.
    pub(crate) fn kv_operation(&self, plugin: &str, function: &'static str) {
        self.kv_operations
            .get_or_create(&KvLabels::new(plugin, function))
            .inc();
    }

    /// Counts a version of `plugin` made active by `action`.
    pub(crate) fn swap(&self, plugin: &str, action: &'static str) {
        self.swaps
            .get_or_create(&SwapLabels::new(plugin, action))
            .inc();
    }

    /// Counts a migration of a session's state.
    pub(crate) fn migration(&self, plugin: &str, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.migrations
            .get_or_create(&MigrationLabels::new(plugin, outcome))
            .inc();
    }

    /// Counts a call stopped by `limit`.
    pub(crate) fn limit_trip(&self, plugin: &str, limit: Limit) {
        self.limit_trips
            .get_or_create(&LimitLabels::new(plugin, limit.label()))
            .inc();
    }

    /// Counts an outbound request of `plugin` answered through `origin`.
    pub(crate) fn outbound_request(&self, plugin: &str, origin: &str) {
        self.outbound_requests
            .get_or_create(&OriginLabels {
                plugin: plugin.to_owned(),
                origin: origin.to_owned(),
            })
            .inc();
    }

    /// Counts `bytes` of an outbound response `plugin` read through `origin`.
    pub(crate) fn outbound_bytes(&self, plugin: &str, origin: &str, bytes: u64) {
        self.outbound_bytes
            .get_or_create(&OriginLabels {
                plugin: plugin.to_owned(),
                origin: origin.to_owned(),
            })
            .inc_by(bytes);
    }

    /// Counts an outbound request of `plugin` refused by `rule`.
    pub(crate) fn outbound_refused(&self, plugin: &str, rule: &'static str) {
        self.outbound_refused
            .get_or_create(&RefusalLabels::new(plugin, rule))
            .inc();
    }

    /// Counts an event of `plugin` posted to its webhook, by `outcome`.
    pub(crate) fn webhook_event(&self, plugin: &str, outcome: &'static str) {
        self.webhook_events
            .get_or_create(&WebhookLabels::new(plugin, outcome))
            .inc();
    }

    /// Sets the number of live sessions of `plugin`.
    pub(crate) fn set_live_sessions(&self, plugin: &str, sessions: u64) {
        self.live_sessions
            .get_or_create(&PluginLabel {
                plugin: plugin.to_owned(),
            })
            .set(i64::try_from(sessions).unwrap_or(i64::MAX));
    }

    /// Sets the number of `plugin`'s sessions pinned to an older version.
    pub(crate) fn set_pinned_sessions(&self, plugin: &str, sessions: u64) {
        self.pinned_sessions
            .get_or_create(&PluginLabel {
                plugin: plugin.to_owned(),
            })
            .set(i64::try_from(sessions).unwrap_or(i64::MAX));
    }

    /// What `plugin` did since the host started.
    pub fn stats(&self, plugin: &str) -> PluginStats {
        let turns = |outcome: &'static str| -> u64 {
            TURN_KINDS
                .iter()
                .filter_map(|&kind| {
                    let labels = TurnLabels {
                        plugin: plugin.to_owned(),
                        kind,
                        outcome,
                    };
                    self.turns.get(&labels).map(|turns| turns.get())
                })
                .sum()
        };
        let migrations =
            |outcome| count(self.migrations.get(&MigrationLabels::new(plugin, outcome)));
        let swaps = |action| count(self.swaps.get(&SwapLabels::new(plugin, action)));
        PluginStats {
            turns_ok: turns("ok"),
            turns_failed: turns("failed"),
            migrations_ok: migrations("ok"),
            migrations_failed: migrations("failed"),
            swaps: swaps("activate") + swaps("roll-back") + swaps("follow"),
            limit_trips: Limit::ALL
                .iter()
                .map(|limit| {
                    count(
                        self.limit_trips
                            .get(&LimitLabels::new(plugin, limit.label())),
                    )
                })
                .sum(),
        }
    }

    /// Every metric in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// The value of a counter that may not exist yet.
fn count(counter: Option<impl std::ops::Deref<Target = Counter>>) -> u64 {
    counter.map_or(0, |counter| counter.get())
}

/// Marks an instance in use until dropped.
pub(crate) struct InstanceGuard<'a>(&'a Gauge);

impl Drop for InstanceGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
