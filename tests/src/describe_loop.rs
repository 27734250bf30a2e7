//! A plugin that never finishes `describe`: refused at load when the
//! deadline passes, and the active version of the plugin stays.

use std::sync::Arc;
use std::time::Duration;

use agentbox_host::store::MemoryStore;
use agentbox_host::{Limits, LoadError};

use crate::harness::{host_with, load};
use crate::plugin_bytes;
use crate::plugins::{COUNTER, DESCRIBE_LOOP};

#[test]
fn a_describe_that_never_returns_is_refused_at_the_deadline() {
    let limits = Limits {
        deadline: Duration::from_millis(200),
        ..Limits::default()
    };
    let host = host_with(limits, Arc::new(MemoryStore::default()));
    let counter = load(&host, COUNTER);
    let err = host.load_plugin(&plugin_bytes(DESCRIBE_LOOP)).unwrap_err();
    assert!(matches!(err, LoadError::Describe(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "`describe()` failed: deadline of 200 ms exceeded"
    );
    assert_eq!(host.plugins().len(), 1);
    assert_eq!(host.plugin("counter").unwrap().digest, counter.digest);
}
