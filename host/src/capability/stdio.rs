//! The guest's standard output and error: bounded, kept for the log and
//! for naming the cause of a trap.

use std::sync::{Arc, Mutex};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

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

    /// The last `max` bytes (or fewer, to start on a character) of what the
    /// guest wrote; `None` if it wrote nothing.
    pub(crate) fn tail(&self, max: usize) -> Option<String> {
        let buffer = self.inner.lock().expect("guest log poisoned");
        let text = String::from_utf8_lossy(&buffer.bytes);
        let mut start = text.len().saturating_sub(max);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        let tail = text[start..].trim();
        (!tail.is_empty()).then(|| tail.to_owned())
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
