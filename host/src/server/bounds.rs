//! Bounds on what callers hold open: the requests a principal has under
//! way, the streams it keeps (event follows, plugin feeds, WebSockets), the
//! follows of one session, and the MCP sessions of a principal and of
//! everyone. Each is a place taken when
//! the thing opens and given back when it ends; one past its bound is
//! refused 429 with `Retry-After`, so that no caller holds the server's
//! connections or memory from the others.
//!
//! ```toml
//! [bounds]
//! requests_per_principal = 1024     # requests under way at once, streams included
//!                                   # (a quarter of [server] max_connections if left out)
//! streams_per_principal = 64        # follows, feeds and WebSockets open at once
//! follows_per_session = 8           # follows of one session's events at once
//! mcp_sessions_per_principal = 64   # MCP sessions one principal holds
//! mcp_sessions = 1024               # MCP sessions of every caller
//! mcp_idle_ms = 300000              # an MCP session unused this long is closed
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use crate::server::auth::Caller;
use crate::server::refusal::NoRoom;

/// The `[bounds]` settings of `agentbox serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bounds {
    /// Requests one principal has under way at once, from the moment it is
    /// authenticated to its response's last byte (a follow's stream is one
    /// until it ends): its share of the server's connections. `None`: a
    /// quarter of `[server] max_connections`.
    pub requests_per_principal: Option<usize>,
    /// Event follows, plugin feeds and WebSockets one principal holds open
    /// at once: its share of the server's connections.
    pub streams_per_principal: usize,
    /// Follows of one session's events open at once, of every caller.
    pub follows_per_session: usize,
    /// MCP sessions one principal holds open at once.
    pub mcp_sessions_per_principal: usize,
    /// MCP sessions open at once, of every caller (an open server's too).
    pub mcp_sessions: usize,
    /// Milliseconds an MCP session may go unused before it is closed.
    pub mcp_idle_ms: u64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            requests_per_principal: None,
            streams_per_principal: 64,
            follows_per_session: 8,
            mcp_sessions_per_principal: 64,
            mcp_sessions: 1024,
            mcp_idle_ms: 300_000,
        }
    }
}

impl Bounds {
    /// Refuses a bound of 0, which would refuse everyone.
    pub fn check(&self) -> Result<(), String> {
        for (name, value) in [
            (
                "requests_per_principal",
                self.requests_per_principal.map_or(1, |most| most as u64),
            ),
            ("streams_per_principal", self.streams_per_principal as u64),
            ("follows_per_session", self.follows_per_session as u64),
            (
                "mcp_sessions_per_principal",
                self.mcp_sessions_per_principal as u64,
            ),
            ("mcp_sessions", self.mcp_sessions as u64),
            ("mcp_idle_ms", self.mcp_idle_ms),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Places, counted per key up to `each`, and in all up to `all`.
#[derive(Debug)]
pub(crate) struct Places {
    each: usize,
    all: usize,
    taken: Mutex<Taken>,
}

#[derive(Debug, Default)]
struct Taken {
    by_key: HashMap<String, usize>,
    all: usize,
}

/// Which bound a place was refused by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The key holds `each` places.
    Each(usize),
    /// All keys together hold `all`.
    All(usize),
}

impl Places {
    pub(crate) fn new(each: usize, all: usize) -> Arc<Places> {
        Arc::new(Places {
            each,
            all,
            taken: Mutex::default(),
        })
    }

    /// A place for `key` (counted in all only, if `None`) until the place
    /// is dropped, or the bound it would cross.
    pub(crate) fn take(self: &Arc<Self>, key: Option<&str>) -> Result<Place, Full> {
        let mut taken = self.taken.lock().expect("places poisoned");
        if taken.all >= self.all {
            return Err(Full::All(self.all));
        }
        if let Some(key) = key {
            let count = taken.by_key.entry(key.to_owned()).or_default();
            if *count >= self.each {
                return Err(Full::Each(self.each));
            }
            *count += 1;
        }
        taken.all += 1;
        Ok(Place {
            places: Arc::clone(self),
            key: key.map(str::to_owned),
        })
    }
}

/// A place taken until it is dropped.
#[derive(Debug)]
pub(crate) struct Place {
    places: Arc<Places>,
    key: Option<String>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut taken = self.places.taken.lock().expect("places poisoned");
        taken.all -= 1;
        if let Some(key) = &self.key
            && let Some(count) = taken.by_key.get_mut(key)
        {
            *count -= 1;
            if *count == 0 {
                taken.by_key.remove(key);
            }
        }
    }
}

/// What callers hold open, each against its bound.
#[derive(Debug)]
pub(crate) struct Open {
    pub(crate) bounds: Bounds,
    /// Each principal's requests under way, and how many it may have.
    requests: Arc<Places>,
    requests_per_principal: usize,
    /// Each principal's streams.
    streams: Arc<Places>,
    /// Each session's follows.
    follows: Arc<Places>,
    /// Each principal's MCP sessions, and everyone's.
    mcp_sessions: Arc<Places>,
}

impl Open {
    /// What callers hold open on a server of `max_connections`.
    pub(crate) fn new(bounds: Bounds, max_connections: usize) -> Open {
        let requests_per_principal = bounds
            .requests_per_principal
            .unwrap_or((max_connections / 4).max(1));
        Open {
            bounds,
            requests: Places::new(requests_per_principal, usize::MAX),
            requests_per_principal,
            streams: Places::new(bounds.streams_per_principal, usize::MAX),
            follows: Places::new(bounds.follows_per_session, usize::MAX),
            mcp_sessions: Places::new(bounds.mcp_sessions_per_principal, bounds.mcp_sessions),
        }
    }

    /// A place among `caller`'s requests under way (only a principal's are
    /// bounded), or its refusal.
    pub(crate) fn request(&self, caller: &Caller) -> Result<Option<Place>, NoRoom> {
        principal_place(&self.requests, caller, || {
            NoRoom::new(
                "too-many-requests",
                format!(
                    "this caller has {} requests under way, as many as it may; retry when one has finished",
                    self.requests_per_principal
                ),
            )
        })
    }

    /// A place among `caller`'s streams (only a principal's are bounded),
    /// or its refusal.
    pub(crate) fn stream(&self, caller: &Caller) -> Result<Option<Place>, NoRoom> {
        principal_place(&self.streams, caller, || {
            NoRoom::new(
                "too-many-streams",
                format!(
                    "this caller has {} follows, feeds and sockets open, as many as it may; close one first",
                    self.bounds.streams_per_principal
                ),
            )
        })
    }

    /// A place among session `id`'s follows and `caller`'s streams, or its
    /// refusal.
    pub(crate) fn follow(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(Place, Option<Place>), NoRoom> {
        let follow = self.follows.take(Some(id)).map_err(|_| {
            NoRoom::new(
                "too-many-follows",
                format!(
                    "session `{id}` has {} follows open, as many as it may; close one first",
                    self.bounds.follows_per_session
                ),
            )
        })?;
        Ok((follow, self.stream(caller)?))
    }

    /// A place for one more MCP session of `caller` (a principal's count
    /// against its bound, everyone's against the server's), or what it is
    /// told.
    pub(crate) fn mcp_session(&self, caller: &Caller) -> Result<Place, NoRoom> {
        let owner = match caller {
            Caller::Principal(principal) => Some(principal.owner.as_str()),
            Caller::Anyone | Caller::Admin => None,
        };
        self.mcp_sessions.take(owner).map_err(|full| {
            let message = match full {
                Full::Each(most) => format!(
                    "this caller has {most} MCP sessions open, as many as it may; close one (DELETE /mcp) or wait for one to go idle"
                ),
                Full::All(most) => format!(
                    "the server has {most} MCP sessions open, as many as it holds; retry once one closes"
                ),
            };
            NoRoom::new("too-many-mcp-sessions", message)
        })
    }
}

/// A place for `caller` among `places`, counted by its principal (none
/// for the admin or an open server's callers), or `refused`.
fn principal_place(
    places: &Arc<Places>,
    caller: &Caller,
    refused: impl FnOnce() -> NoRoom,
) -> Result<Option<Place>, NoRoom> {
    let Caller::Principal(principal) = caller else {
        return Ok(None);
    };
    places
        .take(Some(&principal.owner))
        .map(Some)
        .map_err(|_| refused())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_per_key_and_in_all_and_given_back_when_dropped() {
        let places = Places::new(2, 3);
        let a1 = places.take(Some("a")).unwrap();
        let _a2 = places.take(Some("a")).unwrap();
        assert_eq!(places.take(Some("a")).unwrap_err(), Full::Each(2));
        let _b = places.take(Some("b")).unwrap();
        assert_eq!(places.take(Some("c")).unwrap_err(), Full::All(3));
        assert_eq!(places.take(None).unwrap_err(), Full::All(3));
        drop(a1);
        let _anyone = places.take(None).unwrap();
        assert_eq!(places.take(Some("a")).unwrap_err(), Full::All(3));
    }

    #[test]
    fn a_principals_requests_are_a_quarter_of_the_connections_unless_set() {
        let share =
            |bounds, max_connections| Open::new(bounds, max_connections).requests_per_principal;
        assert_eq!(share(Bounds::default(), 4096), 1024);
        assert_eq!(share(Bounds::default(), 3), 1);
        let set = Bounds {
            requests_per_principal: Some(7),
            ..Bounds::default()
        };
        assert_eq!(share(set, 4096), 7);
    }

    #[test]
    fn a_bound_of_zero_is_refused_by_name() {
        let bounds = Bounds {
            follows_per_session: 0,
            ..Bounds::default()
        };
        assert_eq!(
            bounds.check().unwrap_err(),
            "follows_per_session must be at least 1"
        );
        assert_eq!(Bounds::default().check(), Ok(()));
    }
}
