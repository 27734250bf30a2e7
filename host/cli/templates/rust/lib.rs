//! The {{name}} agent: greets the caller, counts the visits, and renames.

use agentbox_sdk::{Agent, Outcome, Value, json, say, session, tools};
use serde::{Deserialize, Serialize};

/// The fields are session state: loaded before each turn, saved after it.
#[derive(Default, Serialize, Deserialize)]
struct {{Class}} {
    visits: u32,
    name: Option<String>,
}

impl Agent for {{Class}} {
    const NAME: &'static str = "{{name}}";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Greets the caller and counts the visits";

    fn on_start(&mut self) -> Result<(), String> {
        self.name = session::initial_variable("name");
        say(format!(
            "Hello, {}!",
            self.name.as_deref().unwrap_or("stranger")
        ));
        Ok(())
    }

    fn on_message(&mut self, text: &str) -> Result<Outcome, String> {
        self.visits += 1;
        say(format!("Visit {}: you said {text}", self.visits));
        Ok(if text == "bye" {
            Outcome::End
        } else {
            Outcome::Continue
        })
    }
}

#[tools]
impl {{Class}} {
    /// Changes the name the agent greets.
    #[tool]
    fn rename(
        &mut self,
        /// The new name.
        #[schemars(length(min = 1))]
        name: String,
    ) -> Result<Value, String> {
        if self.name.as_deref() == Some(name.as_str()) {
            return Err(format!("the name is already {name}"));
        }
        self.name = Some(name.clone());
        Ok(json!({ "name": name }))
    }
}

agentbox_sdk::export_agent!({{Class}});
