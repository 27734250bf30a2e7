//! Which pages may open a WebSocket, and how many sockets each session has
//! open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, header};
use serde::Deserialize;

/// The `[websocket]` settings of `agentbox serve`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketSettings {
    /// The `Origin`s whose pages may open a socket (`https://app.example.com`);
    /// a client that sends no `Origin` (not a browser) is not asked.
    pub origins: Vec<String>,
    /// Sockets one session may have open at once.
    pub max_per_session: usize,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        WebSocketSettings {
            origins: Vec::new(),
            max_per_session: 4,
        }
    }
}

/// The sockets open on each session, and the settings they are held to.
#[derive(Debug, Default)]
pub(crate) struct Sockets {
    pub(crate) settings: WebSocketSettings,
    open: Mutex<HashMap<String, usize>>,
}

impl Sockets {
    pub(crate) fn new(settings: WebSocketSettings) -> Sockets {
        Sockets {
            settings,
            open: Mutex::default(),
        }
    }

    /// Why a socket with `headers` may not open, if it may not.
    pub(crate) fn refuse_origin(&self, headers: &HeaderMap) -> Option<String> {
        let origin = headers.get(header::ORIGIN)?;
        let allowed = origin.to_str().is_ok_and(|origin| {
            self.settings
                .origins
                .iter()
                .any(|allowed| allowed == origin)
        });
        (!allowed).then(|| {
            format!(
                "a page from origin `{}` may not open a socket here; the operator allows {:?}",
                String::from_utf8_lossy(origin.as_bytes()).escape_debug(),
                self.settings.origins
            )
        })
    }

    /// Counts a socket opening on `session`, or refuses it when the session
    /// has as many as it may.
    pub(crate) fn open(self: &Arc<Self>, session: &str) -> Option<OpenSocket> {
        let mut open = self.open.lock().expect("socket counts poisoned");
        let count = open.entry(session.to_owned()).or_default();
        if *count >= self.settings.max_per_session {
            return None;
        }
        *count += 1;
        Some(OpenSocket {
            sockets: Arc::clone(self),
            session: session.to_owned(),
        })
    }
}

/// A socket counted as open on its session until it is dropped.
#[derive(Debug)]
pub(crate) struct OpenSocket {
    sockets: Arc<Sockets>,
    session: String,
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        let mut open = self.sockets.open.lock().expect("socket counts poisoned");
        if let Some(count) = open.get_mut(&self.session) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.session);
            }
        }
    }
}
