//! Passes tool calls on through the registry, and fails on request: the
//! second plugin of the registry's tests (a chain that turns back into a
//! cycle, a callee that traps, one that runs past its deadline).

use agentbox_sdk::{Agent, Value, json, registry, tools};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Relay {}

impl Agent for Relay {
    const NAME: &'static str = "relay";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Passes tool calls on, and fails on request";
}

#[tools]
impl Relay {
    /// Calls the tool at `name` with `args` through the registry; answers
    /// `{"ok": result}` or `{"error": {"kind", "detail"}}`.
    #[tool]
    fn relay(&mut self, name: String, args: Value) -> Result<Value, String> {
        Ok(match registry::call::<Value>(&name, &args) {
            Ok(result) => json!({ "ok": result }),
            Err(err) => json!({ "error": err }),
        })
    }

    /// Panics.
    #[tool]
    fn crash(&mut self) -> Result<(), String> {
        panic!("relay crashed on request");
    }

    /// Spins until the host stops it.
    #[tool]
    fn spin(&mut self) -> Result<(), String> {
        loop {
            std::hint::black_box(());
        }
    }
}

agentbox_sdk::export_agent!(Relay);
