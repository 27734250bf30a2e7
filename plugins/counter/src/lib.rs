//! The smallest useful plugin, written against the WIT with wit-bindgen
//! alone, no SDK: each message increments `count` in session state (one
//! `get`, one `set`). The benchmarks use it as the trivial turn.

wit_bindgen::generate!({ path: "../../wit/v0.1", world: "plugin" });

use agentbox::plugin::session;
use agentbox::plugin::types::{EndReason, Manifest, Outcome};
use exports::agentbox::plugin::agent::Guest;

struct Counter;

impl Guest for Counter {
    fn describe() -> Manifest {
        Manifest {
            name: "counter".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Counts messages in session state".into(),
            state_version: 1,
            state_schema: None,
            tools: Vec::new(),
        }
    }

    fn on_start() -> Result<(), String> {
        Ok(())
    }

    fn on_message(_text: String) -> Result<Outcome, String> {
        let count: u64 = session::get("count")
            .and_then(|json| json.parse().ok())
            .unwrap_or(0);
        session::set("count", &(count + 1).to_string()).map_err(|err| format!("{err:?}"))?;
        Ok(Outcome::Continue)
    }

    fn call_tool(name: String, _args: String) -> Result<String, String> {
        Err(format!("counter has no tool `{name}`"))
    }

    fn on_end(_reason: EndReason) -> Result<(), String> {
        Ok(())
    }

    fn migrate(_from: u32, state: String) -> Result<String, String> {
        Ok(state)
    }
}

export!(Counter);
