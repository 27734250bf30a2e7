//! A plugin that panics while it describes itself: the host must refuse it
//! at load, and a version of it must never replace an active one.

use agentbox_sdk::Agent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Default, Serialize, Deserialize)]
struct DescribeTrap {}

impl Agent for DescribeTrap {
    // The name of the counter plugin, so that it would replace it if loaded.
    const NAME: &'static str = "counter";
    const VERSION: &'static str = "9.9.9";

    fn state_schema() -> Option<Value> {
        panic!("no schema today")
    }
}

agentbox_sdk::export_agent!(DescribeTrap);
