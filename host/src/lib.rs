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
//!
//! The modules are floors, each using only those below it (see
//! `docs/architecture.md`): [`limits`], [`names`], [`clock`], [`hex`], `tls`,
//! [`engine`] and [`metrics`] at the ground; [`store`]; [`policy`]; the [`capability`]
//! contexts; the [`instance`] layer with one binding per WIT version;
//! [`plugin`] and the [`remote`] MCP servers, the two sources of tools,
//! and the [`webhook`]s events are posted to; [`session`], the turn; the
//! [`host`], its front door; and the optional [`server`].
#![deny(missing_docs)]

pub mod capability;
pub mod clock;
pub mod engine;
pub mod hex;
pub mod host;
pub mod instance;
pub mod limits;
pub mod metrics;
pub mod names;
pub mod plugin;
pub mod policy;
pub mod remote;
#[cfg(feature = "server")]
pub mod server;
pub mod session;
pub mod store;
mod tls;
pub mod webhook;

pub use capability::output::Sink;
pub use clock::Clock;
pub use host::reaper::Reaped;
pub use host::{Host, HostBuilder};
pub use limits::{Limit, Limits, Tripped};
pub use plugin::versions::{Followed, Plugins};
pub use plugin::{ActivateError, LoadError, PluginVersion};
pub use session::error::{Cause, SessionError};
pub use session::lifecycle::child_session_id;
pub use session::report::{Outcome, SessionStart, ToolReport, TurnReport};
pub use session::tool_call::ToolRef;
