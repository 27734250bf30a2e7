//! A plugin of the agentbox world that also imports `wasi:keyvalue/store`,
//! which the host does not provide: the host must refuse it at load,
//! naming that import, before any of its code runs.

wit_bindgen::generate!({
    path: ["../../../wit/v0.1", "wit"],
    world: "wasi:keyvalue/plugin-with-keyvalue",
    generate_all,
});

use agentbox::plugin::types::{EndReason, Manifest, Outcome};
use exports::agentbox::plugin::agent::Guest;
use wasi::keyvalue::store;

struct ForeignImport;

impl Guest for ForeignImport {
    fn describe() -> Manifest {
        Manifest {
            name: "foreign-import".into(),
            version: "0.1.0".into(),
            description: "Reads its greeting from wasi:keyvalue.".into(),
            state_version: 1,
            state_schema: None,
            tools: Vec::new(),
        }
    }

    fn on_start() -> Result<(), String> {
        Ok(())
    }

    fn on_message(_text: String) -> Result<Outcome, String> {
        // Calling the import keeps it in the component.
        let bucket = store::open("default").map_err(|err| format!("{err:?}"))?;
        bucket.get("greeting").map_err(|err| format!("{err:?}"))?;
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

export!(ForeignImport);
