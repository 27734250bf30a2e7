//! A plugin whose manifest breaks the naming rule: the host must refuse it
//! at load, saying why.

use agentbox_sdk::Agent;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct BadName {}

impl Agent for BadName {
    const NAME: &'static str = "Bad Name!";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
}

agentbox_sdk::export_agent!(BadName);
