//! The plugin's configuration, as the operator sets it in the policy
//! (`[plugins.NAME.config]`), read through the world's `wasi:config/store`.
//!
//! ```no_run
//! let model = agentbox_sdk::config::get("model").unwrap_or_else(|| "small".to_owned());
//! ```
//!
//! A value the operator bound to an injected header (an API key sent to one
//! origin) is not here: the host adds it to the requests itself.

use crate::bindings::wasi::config::store;

/// The value of `key`, if the operator set one the plugin may read.
pub fn get(key: &str) -> Option<String> {
    // The host's configuration is in memory; its store never fails.
    store::get(key).ok().flatten()
}

/// Every value the plugin may read, as `(key, value)` pairs.
pub fn all() -> Vec<(String, String)> {
    store::get_all().unwrap_or_default()
}
