//! A plugin that never finishes describing itself: the host must refuse it
//! at load when the deadline passes, and keep the active version of the
//! plugin it claims to be.

wit_bindgen::generate!({ path: "../../../wit/v0.1", world: "plugin" });

use agentbox::plugin::types::{EndReason, Manifest, Outcome};
use exports::agentbox::plugin::agent::Guest;

struct DescribeLoop;

impl Guest for DescribeLoop {
    fn describe() -> Manifest {
        loop {
            std::hint::black_box(());
        }
    }

    fn on_start() -> Result<(), String> {
        Ok(())
    }

    fn on_message(_text: String) -> Result<Outcome, String> {
        Ok(Outcome::Continue)
    }

    fn call_tool(name: String, _args: String) -> Result<String, String> {
        Err(format!("no tool `{name}`"))
    }

    fn on_end(_reason: EndReason) -> Result<(), String> {
        Ok(())
    }

    fn migrate(_from: u32, state: String) -> Result<String, String> {
        Ok(state)
    }
}

export!(DescribeLoop);
