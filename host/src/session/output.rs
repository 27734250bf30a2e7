//! The `output` capability, and the guest's standard output and error.

use std::sync::{Arc, Mutex};

use tracing::instrument;
use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::bindings::agentbox::plugin::output as wit;
use crate::session::Tripped;

/// Receives what a plugin says, while its turn runs.
pub type Sink = Arc<dyn Fn(&str) + Send + Sync>;

/// A turn's `output`: passes each `say` to the caller's sink and keeps it for
/// the history, up to the output limit.
pub(crate) struct OutputCtx {
    /// False while a plugin is described: there is nobody to talk to.
    in_session: bool,
    sink: Option<Sink>,
    said: Vec<String>,
    bytes: usize,
    limit: usize,
}

impl OutputCtx {
    /// Output going to `sink` (or nowhere), at most `limit` bytes per turn.
    pub(crate) fn new(sink: Option<Sink>, limit: usize) -> Self {
        OutputCtx {
            in_session: true,
            sink,
            said: Vec::new(),
            bytes: 0,
            limit,
        }
    }

    /// Output outside a session, for calling `describe`: `say` traps.
    pub(crate) fn detached() -> Self {
        OutputCtx {
            in_session: false,
            ..OutputCtx::new(None, 0)
        }
    }

    /// Everything said during the turn, one entry per `say`.
    pub(crate) fn into_said(self) -> Vec<String> {
        self.said
    }
}

/// Adds the `output` interface to `linker`, reaching the context through `get`.
pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut OutputCtx,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasSelf<OutputCtx>>(linker, get)
}

impl wit::Host for OutputCtx {
    #[instrument(skip_all)]
    fn say(&mut self, text: String) -> wasmtime::Result<()> {
        if !self.in_session {
            return Err(wasmtime::format_err!(
                "`output.say` was called outside a session (plugins must not say anything in `describe`)"
            ));
        }
        self.bytes += text.len();
        if self.bytes > self.limit {
            return Err(Tripped::Output(self.limit).into());
        }
        if let Some(sink) = &self.sink {
            sink(&text);
        }
        self.said.push(text);
        Ok(())
    }
}

/// The guest's stdout and stderr for one turn: kept in memory up to a bound,
/// then logged with the plugin and session. Bytes past the bound are counted
/// and dropped, never refused, so a chatty guest does not fail its turn.
#[derive(Clone)]
pub(crate) struct GuestLog {
    inner: Arc<Mutex<LogBuffer>>,
}

struct LogBuffer {
    bytes: Vec<u8>,
    dropped: usize,
    limit: usize,
}

impl GuestLog {
    pub(crate) fn new(limit: usize) -> Self {
        GuestLog {
            inner: Arc::new(Mutex::new(LogBuffer {
                bytes: Vec::new(),
                dropped: 0,
                limit,
            })),
        }
    }

    /// What the guest last said about its own failure: the message of a Rust
    /// panic if it printed one, else its last line of output.
    pub(crate) fn last_words(&self) -> Option<String> {
        let buffer = self.inner.lock().expect("guest log poisoned");
        let text = String::from_utf8_lossy(&buffer.bytes);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with("note: run with `RUST_BACKTRACE"))
            .collect();
        // Rust prints "thread '…' panicked at FILE:LINE:COL:" and the message
        // on the next line.
        match lines.iter().rposition(|line| line.contains("panicked at ")) {
            Some(at) => {
                let place = lines[at]
                    .split_once("panicked at ")
                    .map_or(lines[at], |(_, place)| place);
                Some(
                    format!("panicked at {place} {}", lines[at + 1..].join(" "))
                        .trim_end()
                        .to_owned(),
                )
            }
            None => lines.last().map(|line| (*line).to_owned()),
        }
    }

    /// Logs what the guest wrote, one event per line.
    pub(crate) fn flush_to_tracing(&self, plugin: &str, session: &str) {
        let buffer = self.inner.lock().expect("guest log poisoned");
        for line in String::from_utf8_lossy(&buffer.bytes).lines() {
            tracing::info!(target: "agentbox::guest", plugin, session, "{line}");
        }
        if buffer.dropped > 0 {
            tracing::warn!(target: "agentbox::guest", plugin, session, dropped = buffer.dropped, "guest output over the limit was dropped");
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        unreachable!("agentbox links WASIp2 only, which uses `p2_stream`")
    }
}

impl OutputStream for GuestLog {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        let mut buffer = self.inner.lock().expect("guest log poisoned");
        let room = buffer
            .limit
            .saturating_sub(buffer.bytes.len())
            .min(bytes.len());
        buffer.bytes.extend_from_slice(&bytes[..room]);
        buffer.dropped += bytes.len() - room;
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always accept: writes past the bound are dropped in `write`.
        Ok(64 << 10)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}
