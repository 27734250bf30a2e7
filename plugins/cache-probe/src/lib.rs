//! One tool per cache scope, each answering with the session that ran it,
//! so tests can see who a cached result is served to.

use agentbox_sdk::{Agent, session, tools};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct CacheProbe {}

impl Agent for CacheProbe {
    const NAME: &'static str = "cache-probe";
    const VERSION: &'static str = "0.1.0";
    const DESCRIPTION: &'static str = "A cached tool of each scope, answering who ran it";
}

#[tools]
impl CacheProbe {
    /// The session that ran it; cached for that session alone.
    #[tool(cache_ttl_ms = 60000)]
    fn per_session(
        /// Any text: another text is another call.
        text: String,
    ) -> Result<String, String> {
        Ok(format!("{text} from {}", session::id()))
    }

    /// The session that ran it; cached for every session of its user.
    #[tool(cache_ttl_ms = 60000, cache_scope = "user")]
    fn per_user(
        /// Any text: another text is another call.
        text: String,
    ) -> Result<String, String> {
        Ok(format!("{text} from {}", session::id()))
    }

    /// The session that ran it; cached for everyone.
    #[tool(cache_ttl_ms = 60000, cache_scope = "global")]
    fn for_everyone(
        /// Any text: another text is another call.
        text: String,
    ) -> Result<String, String> {
        Ok(format!("{text} from {}", session::id()))
    }
}

agentbox_sdk::export_agent!(CacheProbe);
