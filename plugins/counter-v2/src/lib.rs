//! Version 2 of the `counter` plugin, written with the SDK: the same name,
//! a new state layout. Version 1 keeps `{"count": N}`; version 2 keeps
//! `{"total": N}` (state version 2) and migrates version 1's state, except
//! counts of 100 or more, which it refuses, so that tests see a migration fail.

use agentbox_sdk::{Agent, Outcome, Value, json, say};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    total: u64,
}

impl Agent for Counter {
    const NAME: &'static str = "counter";
    const VERSION: &'static str = "0.2.0";
    const DESCRIPTION: &'static str = "Counts messages, in state layout 2";
    const STATE_VERSION: u32 = 2;

    fn on_message(&mut self, _text: &str) -> Result<Outcome, String> {
        self.total += 1;
        say(format!("total {}", self.total));
        Ok(Outcome::Continue)
    }

    fn migrate(from: u32, state: Value) -> Result<Value, String> {
        if from != 1 {
            return Err(format!("no migration from state version {from}"));
        }
        let count = state.get("count").and_then(Value::as_u64).unwrap_or(0);
        if count >= 100 {
            return Err(format!(
                "cannot migrate a count of {count}: version 2 takes counts below 100"
            ));
        }
        Ok(json!({ "total": count }))
    }
}

agentbox_sdk::export_agent!(Counter);
