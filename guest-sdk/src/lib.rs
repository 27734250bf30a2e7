//! Write agentbox agent plugins in Rust.
//!
//! An agentbox plugin is a WebAssembly component built for `wasm32-wasip2`
//! against the `agentbox:plugin@0.2.0` world. The host runs every turn of a
//! conversation in a fresh instance, so a plugin keeps nothing in memory
//! between turns: what must last goes into session state, which the host
//! commits when the turn succeeds and throws away when it fails.
//!
//! This SDK makes that one idiom: **store it on self**. Declare an agent
//! struct whose fields are the conversation's state, implement [`Agent`] for
//! it, and [`export_agent!`] it. Before each turn the SDK loads the fields
//! from session state; after a successful turn it writes back the fields
//! that changed.
//!
//! ```
//! use agentbox_sdk::{Agent, Outcome, say};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Counter {
//!     count: u32,
//! }
//!
//! impl Agent for Counter {
//!     const NAME: &'static str = "counter";
//!     const VERSION: &'static str = "0.1.0";
//!
//!     fn on_message(&mut self, text: &str) -> Result<Outcome, String> {
//!         self.count += 1;
//!         say(format!("message {} was: {text}", self.count));
//!         Ok(Outcome::Continue)
//!     }
//! }
//!
//! agentbox_sdk::export_agent!(Counter);
//! ```
//!
//! # What `export_agent!` expands to
//!
//! `export_agent!(Counter)` implements the WIT `agent` interface with calls
//! into [`runtime`], then exports it with wit-bindgen's own `export!`:
//!
//! ```ignore
//! const _: () = {
//!     struct AgentExport;
//!     impl agentbox_sdk::bindings::exports::agentbox::plugin::agent::Guest for AgentExport {
//!         fn describe() -> Manifest {
//!             // The agent's tools if it implements `Tools` (see below), else none.
//!             agentbox_sdk::runtime::describe::<Counter>(tools_of::<Counter>())
//!         }
//!         fn on_start() -> Result<(), String> {
//!             agentbox_sdk::runtime::turn::<Counter, _>(|agent| agent.on_start())
//!         }
//!         fn on_message(text: String) -> Result<Outcome, String> {
//!             agentbox_sdk::runtime::turn::<Counter, _>(|agent| agent.on_message(&text))
//!         }
//!         fn call_tool(name: String, args: String) -> Result<String, String> {
//!             agentbox_sdk::runtime::call_tool::<Counter>(&name, &args, dispatch_of::<Counter>())
//!         }
//!         fn on_end(reason: EndReason) -> Result<(), String> {
//!             agentbox_sdk::runtime::turn::<Counter, _>(|agent| agent.on_end(reason))
//!         }
//!         fn migrate(from: u32, state: String) -> Result<String, String> {
//!             agentbox_sdk::runtime::migrate::<Counter>(from, &state)
//!         }
//!     }
//!     agentbox_sdk::bindings::export_world!(AgentExport with_types_in agentbox_sdk::bindings);
//! };
//! ```
//!
//! # Tools
//!
//! Put `#[tools]` on an impl block of the agent and `#[tool]` on each method
//! that is a tool. The method's doc comment is the tool's description, its
//! arguments (each a plain `name: Type` with `Type: Deserialize + JsonSchema`)
//! become the properties of the parameter schema, their doc comments the
//! properties' descriptions, and `#[schemars(...)]` on an argument adds
//! constraints. It returns `Result<T, E>` with `T: Serialize`, `E: Display`.
//! The host validates every call against the schema before the plugin sees
//! it; extra properties are refused.
//!
//! ```
//! use agentbox_sdk::{Agent, tools};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Shop {
//!     authenticated: Option<bool>,
//!     items: u32,
//! }
//!
//! impl Agent for Shop {
//!     const NAME: &'static str = "shop";
//!     const VERSION: &'static str = "0.1.0";
//! }
//!
//! #[tools]
//! impl Shop {
//!     /// Logs the customer in.
//!     #[tool]
//!     fn login(&mut self, user: String, #[sensitive] password: String) -> Result<bool, String> {
//!         self.authenticated = Some(user == "ada" && password == "lovelace");
//!         Ok(self.authenticated == Some(true))
//!     }
//!
//!     /// Adds items to the cart.
//!     #[tool(requires = ["authenticated"])]
//!     fn add_items(
//!         &mut self,
//!         /// How many, at least 1.
//!         #[schemars(range(min = 1))]
//!         quantity: u32,
//!     ) -> Result<u32, String> {
//!         self.items += quantity;
//!         Ok(self.items)
//!     }
//! }
//!
//! agentbox_sdk::export_agent!(Shop);
//! ```
//!
//! `#[tool]` takes `requires = ["key", ...]` (session keys that must be set,
//! checked by the host), `cache_ttl_ms = N` (results cached by the host per
//! plugin version and arguments, for the same session unless
//! `cache_scope = "user"` shares them among the user's sessions or
//! `cache_scope = "global"` with everyone) and `result_schema` (the host
//! checks results against the schema of `T`). Methods without `#[tool]`
//! stay ordinary methods. An unsupported signature is a compile error at
//! the offending argument.
//!
//! `#[sensitive]` on an argument (a password, a card number) marks it
//! `"writeOnly": true` in the schema: the tool receives it as given, and the
//! host writes `"[redacted]"` in its place in history, logs and error
//! messages. Inside a struct argument, `#[schemars(extend("writeOnly" =
//! true))]` on a field does the same.
//!
//! `#[tools]` leaves the impl block as written (minus the attributes) and adds:
//!
//! ```ignore
//! const _: () = {
//!     /// Arguments of the tool `add_items`.
//!     #[derive(serde::Deserialize, schemars::JsonSchema)]
//!     #[serde(deny_unknown_fields)]
//!     struct AddItemsArguments {
//!         /// How many, at least 1.
//!         #[schemars(range(min = 1))]
//!         quantity: u32,
//!     }
//!
//!     impl agentbox_sdk::Tools for Shop {
//!         fn tool_specs() -> Vec<ToolSpec> {
//!             vec![tool_spec(schema_of::<AddItemsArguments>(), "add_items", "Adds items to the cart.",
//!                            &["authenticated"], None, None)]
//!         }
//!         fn call_tool(&mut self, name: &str, arguments: Value) -> Option<Result<Value, String>> {
//!             match name {
//!                 "add_items" => Some((|| {
//!                     let arguments: AddItemsArguments = tool_arguments("add_items", arguments)?;
//!                     tool_result("add_items", Self::add_items(self, arguments.quantity))
//!                 })()),
//!                 _ => None,
//!             }
//!         }
//!     }
//! };
//! ```
//!
//! `export_agent!` finds the `Tools` implementation by itself, so no list of
//! tools is written by hand anywhere.
//!
//! # Keeping data across sessions
//!
//! Session state lasts one conversation. What must outlive it (a caller's
//! profile, preferences, counters, caches of slow lookups) goes to KV,
//! through [`kv::Bucket`]: `Bucket::user()` is the caller's, `Bucket::global()`
//! the plugin's, and keys may carry a time-to-live the host enforces. KV
//! writes take effect at once and are not undone if the turn fails.
//!
//! # Calling tools
//!
//! [`registry`] finds and calls tools through the host: the plugin's own,
//! and other plugins' that the operator grants it (`may_call`). The host
//! checks each call as it checks a caller's, and another plugin's tool runs
//! in that plugin's own session of the conversation:
//! `registry::call::<Product>("shop/get_product", &json!({"product_id": "book"}))`.
//!
//! Plugins that want no SDK can use wit-bindgen on the WIT folder directly;
//! [`bindings`] is exactly what wit-bindgen generates for it.
#![deny(missing_docs)]

/// The bindings wit-bindgen generates for the `agentbox:plugin@0.2.0` world.
///
/// `session`, `kv`, `output` and `registry` are the host's imports (with
/// `wasi:http` and `wasi:config`); `exports::…::agent::Guest`
/// is the trait a plugin implements. [`bindings::export_world!`] exports an
/// implementation of it; most plugins use [`export_agent!`] instead.
#[expect(
    missing_docs,
    reason = "generated items; the WIT documents each of them"
)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/v0.2",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "export_world",
        default_bindings_module: "agentbox_sdk::bindings",
        // The WASI interfaces the world imports (`wasi:http`, `wasi:config`
        // and what they use) are generated here too; `http` and `config`
        // wrap them.
        generate_all,
    });
}

pub mod config;
pub mod http;
pub mod kv;
pub mod registry;
pub mod runtime;
pub mod session;

#[doc(hidden)]
pub mod __private;

pub use agentbox_sdk_macros::{tool, tools};

pub use bindings::agentbox::plugin::types::{
    CacheScope, EndReason, Error, Manifest, Message, Outcome, Role, ToolSpec,
};
pub use serde_json::{Value, json};

/// The JSON Schema (draft 2020-12, the dialect the host reads every schema
/// in) of `T`, for [`Agent::state_schema`] or a tool's result:
/// `agentbox_sdk::schema_for::<Self>()` makes the agent struct itself the
/// schema the host checks the state against. It is written as the Python
/// and JavaScript helpers write theirs: no `$schema` and no `title`.
pub fn schema_for<T: schemars::JsonSchema>() -> Value {
    let mut schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>();
    schema.remove("$schema");
    schema.remove("title");
    schema.to_value()
}

/// Sends `text` to the caller at once, while the turn is still running.
///
/// Everything said in a turn becomes one assistant message in the history
/// when the turn commits.
pub fn say(text: impl AsRef<str>) {
    bindings::agentbox::plugin::output::say(text.as_ref());
}

/// An agent whose fields are its session state.
///
/// Before each turn the SDK builds the agent from session state: every field
/// stored under its name, missing fields from [`Default`]. After a turn that
/// returns `Ok`, it writes back each field that changed (a field that
/// serializes to `null`, such as an `Option` that is `None`, is deleted).
/// A turn that returns `Err` or panics changes nothing: the host commits
/// nothing for it.
///
/// Every hook has a default that does nothing.
pub trait Agent: Default + serde::Serialize + serde::de::DeserializeOwned {
    /// Plugin name: `a-z`, `0-9` and `-`, starting with a letter.
    const NAME: &'static str;
    /// Semantic version of the plugin, such as `env!("CARGO_PKG_VERSION")`.
    const VERSION: &'static str;
    /// One line for people listing plugins.
    const DESCRIPTION: &'static str = "";
    /// Version of the state layout; raise it when fields change meaning,
    /// and convert old state in [`Agent::migrate`].
    const STATE_VERSION: u32 = 1;

    /// JSON Schema of the whole session state, checked by the host at
    /// every commit.
    fn state_schema() -> Option<Value> {
        None
    }

    /// Opens the session (turn 0), for example to greet the caller.
    fn on_start(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// Handles one message from the caller.
    fn on_message(&mut self, text: &str) -> Result<Outcome, String> {
        let _ = text;
        Ok(Outcome::Continue)
    }

    /// Closes the session.
    fn on_end(&mut self, reason: EndReason) -> Result<(), String> {
        let _ = reason;
        Ok(())
    }

    /// Converts the state of `from` [`Agent::STATE_VERSION`] to this one.
    fn migrate(from: u32, state: Value) -> Result<Value, String> {
        let _ = from;
        Ok(state)
    }
}

/// The tools of an agent: what [`tools`] generates from `#[tool]` methods.
///
/// Implemented by hand only to declare tools in some other way.
pub trait Tools {
    /// The declaration of every tool, for the manifest.
    fn tool_specs() -> Vec<ToolSpec>;

    /// Runs the tool `name` with arguments the host has validated against
    /// its schema; `None` if there is no such tool.
    fn call_tool(&mut self, name: &str, arguments: Value) -> Option<Result<Value, String>>;
}

/// Exports an [`Agent`] as the plugin's `agent` interface.
///
/// Use it once per plugin crate, at the top level. See the crate docs for
/// what it expands to.
#[macro_export]
macro_rules! export_agent {
    ($agent:ty) => {
        const _: () = {
            struct AgentExport;

            impl $crate::bindings::exports::agentbox::plugin::agent::Guest for AgentExport {
                fn describe() -> $crate::Manifest {
                    use $crate::__private::{WithTools as _, WithoutTools as _};
                    let tools = (&$crate::__private::Probe::<$agent>::new()).tool_specs();
                    $crate::runtime::describe::<$agent>(tools)
                }

                fn on_start() -> ::core::result::Result<(), ::std::string::String> {
                    $crate::runtime::turn::<$agent, _>(|agent| $crate::Agent::on_start(agent))
                }

                fn on_message(
                    text: ::std::string::String,
                ) -> ::core::result::Result<$crate::Outcome, ::std::string::String> {
                    $crate::runtime::turn::<$agent, _>(|agent| {
                        $crate::Agent::on_message(agent, &text)
                    })
                }

                fn call_tool(
                    name: ::std::string::String,
                    args: ::std::string::String,
                ) -> ::core::result::Result<::std::string::String, ::std::string::String> {
                    use $crate::__private::{WithTools as _, WithoutTools as _};
                    let dispatch = (&$crate::__private::Probe::<$agent>::new()).dispatch();
                    $crate::runtime::call_tool::<$agent>(&name, &args, dispatch)
                }

                fn on_end(
                    reason: $crate::EndReason,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::runtime::turn::<$agent, _>(|agent| $crate::Agent::on_end(agent, reason))
                }

                fn migrate(
                    from: u32,
                    state: ::std::string::String,
                ) -> ::core::result::Result<::std::string::String, ::std::string::String> {
                    $crate::runtime::migrate::<$agent>(from, &state)
                }
            }

    $crate::bindings::export_world!(AgentExport with_types_in $crate::bindings);
        };
    };
}
