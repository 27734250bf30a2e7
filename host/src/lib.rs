//! The agentbox host: runs agent plugins as WebAssembly components.
//!
//! A [`Host`] loads plugin versions, starts sessions and runs their turns,
//! each in a fresh instance, as transactions against a [`store::Store`].
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use agentbox_host::{Host, SessionStart};
//!
//! let host = Host::builder().build()?;
//! let plugin = host.load_plugin(&std::fs::read("intake.wasm")?)?;
//! let start = SessionStart { plugin: plugin.name().to_owned(), ..Default::default() };
//! let greeting = host.start_session(start, None).await?;
//! let reply = host.send_message(&greeting.session, "my name is Ada", None).await?;
//! println!("{:?} -> {:?}", reply.said, reply.state);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod bindings;
pub mod cli;
pub mod clock;
pub mod engine;
pub mod kv;
pub mod metrics;
pub mod plugin;
pub mod policy;
pub mod server;
pub mod session;
pub mod store;
pub mod tools;

pub use clock::Clock;
pub use plugin::{ActivateError, LoadError, PluginVersion};
pub use policy::Limits;
pub use session::{
    Cause, Followed, Host, HostBuilder, Outcome, Reaped, SessionError, SessionStart, Sink,
    ToolReport, TurnReport,
};
