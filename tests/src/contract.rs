//! The helper libraries keep one contract, the table in
//! `docs/guests/README.md`: the same tool declared with the Rust, Python
//! and JavaScript helpers has one parameter schema, and each takes an
//! optional argument sent as `null` as left out.

use agentbox_host::PluginVersion;
use agentbox_sdk::{Agent, Tools, tools};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::harness::{host, load};
use crate::plugins::{JS_NOTEBOOK, PYTHON_NOTEBOOK};

/// The notebook's `add_note` in Rust, as `plugins/python/notebook` and
/// `plugins/js/notebook` declare it.
#[derive(Default, Serialize, Deserialize)]
struct Notebook {
    notes: Vec<String>,
    tagged: usize,
}

impl Agent for Notebook {
    const NAME: &'static str = "notebook";
    const VERSION: &'static str = "0.1.0";
}

#[tools]
impl Notebook {
    /// Adds a note.
    #[tool]
    fn add_note(
        &mut self,
        /// What to note.
        #[schemars(length(min = 1, max = 100))]
        text: String,
        /// Words to find it by.
        tags: Option<Vec<String>>,
    ) -> Result<Value, String> {
        self.notes.push(text);
        self.tagged += tags.unwrap_or_default().len();
        Ok(json!({ "notes": self.notes.len() }))
    }
}

/// The parameters of a tool of a loaded plugin.
fn parameters(version: &PluginVersion, tool: &str) -> Value {
    let found = version.manifest.tools.iter().find(|spec| spec.name == tool);
    serde_json::from_str(&found.expect("the tool").parameters).unwrap()
}

#[test]
fn one_tool_declared_with_each_helper_has_one_schema() {
    let rust: Value = serde_json::from_str(&Notebook::tool_specs()[0].parameters).unwrap();
    let want = json!({
        "type": "object",
        "properties": {
            "text": {
                "type": "string",
                "minLength": 1,
                "maxLength": 100,
                "description": "What to note.",
            },
            "tags": {
                "type": ["array", "null"],
                "items": { "type": "string" },
                "description": "Words to find it by.",
            },
        },
        "required": ["text"],
        "additionalProperties": false,
    });
    assert_eq!(rust, want, "Rust");
    let host = host();
    for (language, path) in [("Python", PYTHON_NOTEBOOK), ("JavaScript", JS_NOTEBOOK)] {
        assert_eq!(
            parameters(&load(&host, path), "add_note"),
            want,
            "{language}"
        );
    }
}

#[test]
fn the_rust_helper_takes_an_optional_argument_sent_as_null_as_left_out() {
    let mut notebook = Notebook::default();
    for arguments in [
        json!({ "text": "milk" }),
        json!({ "text": "eggs", "tags": null }),
        json!({ "text": "bread", "tags": ["shop"] }),
    ] {
        notebook.call_tool("add_note", arguments).unwrap().unwrap();
    }
    assert_eq!((notebook.notes.len(), notebook.tagged), (3, 1));
}
