//! Where a call's requests are counted and logged, and why one is refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::metrics::Metrics;

/// Where the call's requests are counted and logged.
#[derive(Clone)]
pub(super) struct Meter {
    pub(super) plugin: Arc<str>,
    pub(super) session: Arc<str>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) usage: Arc<Usage>,
}

/// What the call sent, for its tool execution record, and whether its
/// deadline ended a wait.
#[derive(Default)]
pub(super) struct Usage {
    pub(super) requests: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) response_bytes: AtomicU64,
    pub(super) cut_by_deadline: AtomicBool,
}

/// Why the host refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rule {
    /// Its origin is not on the plugin's allow-list.
    AllowList,
    /// Its host resolves only to internal addresses the allow entry does
    /// not name.
    Address,
    /// Its method is one the host never sends (TRACE, CONNECT).
    Method,
    /// The call sent as many requests as the grant allows.
    RequestsPerTurn,
    /// Its response body is larger than the grant allows.
    ResponseBytes,
}

impl Rule {
    /// Its name in logs and metrics.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Rule::AllowList => "allow_list",
            Rule::Address => "address",
            Rule::Method => "method",
            Rule::RequestsPerTurn => "max_requests_per_turn",
            Rule::ResponseBytes => "max_response_bytes",
        }
    }
}

impl Meter {
    /// Logs and counts a request to `target` refused by `rule`.
    pub(super) fn refuse(&self, target: &str, rule: Rule, detail: &str) {
        tracing::warn!(
            plugin = %self.plugin,
            session = %self.session,
            target,
            rule = rule.as_str(),
            "outbound request refused: {detail}"
        );
        self.metrics.outbound_refused(&self.plugin, rule.as_str());
        self.usage.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `bytes` of a response from `origin`.
    pub(super) fn read(&self, bytes: u64, origin: &str) {
        self.metrics.outbound_bytes(&self.plugin, origin, bytes);
        self.usage
            .response_bytes
            .fetch_add(bytes, Ordering::Relaxed);
    }
}
