//! Which pages may open a WebSocket, and how many sockets each session has
//! open.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use serde::Deserialize;

use crate::server::bounds::{Place, Places};

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
#[derive(Debug)]
pub(crate) struct Sockets {
    pub(crate) settings: WebSocketSettings,
    open: Arc<Places>,
}

impl Sockets {
    pub(crate) fn new(settings: WebSocketSettings) -> Sockets {
        Sockets {
            open: Places::new(settings.max_per_session, usize::MAX),
            settings,
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

    /// Counts a socket opening on `session` until the place is dropped, or
    /// refuses it when the session has as many as it may.
    pub(crate) fn open(&self, session: &str) -> Option<Place> {
        self.open.take(Some(session)).ok()
    }
}
