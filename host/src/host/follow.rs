//! Following the log: a session's events after a given one, as they are
//! committed, and a plugin's feed of the events of its sessions.
//!
//! A session's follower reads the log a page at a time from its place on,
//! so it loses nothing and sees nothing twice. It wakes when it hears of a
//! commit of the session, and every [`FOLLOW_POLL`] in any case. Commits
//! are heard of from this process, and from every process of a store that
//! announces them (Redis publishes each one).
//!
//! A plugin's feed is live: each event of the plugin's sessions committed
//! while it is open, read from the log as it is heard of. A feed that
//! falls behind by more than [`HEARD_COMMITS`] commits skips the oldest.
//!
//! [`HEARD_COMMITS`]: crate::session::parts::HEARD_COMMITS

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use crate::host::timeline::EVENTS_PAGE;
use crate::host::timeline::Timeline;
use crate::session::error::SessionError;
use crate::session::event::Event;
use crate::session::report::Outcome;
use crate::store::Committed;

/// How long a follower waits before it reads the log again without hearing
/// of a commit: the most an event waits if its announcement is lost.
pub const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// Events a follower holds for a reader that has not taken them yet,
/// beside the page it reads from (at most [`EVENTS_PAGE_BYTES`] and one
/// event): few, since an event may be as large as a message.
///
/// [`EVENTS_PAGE_BYTES`]: crate::host::timeline::EVENTS_PAGE_BYTES
const FOLLOW_BUFFER: usize = 4;

impl Timeline<'_> {
    /// The events of session `id` numbered after `after`, then each one as
    /// it commits, until the session ends or the receiver is dropped.
    pub fn follow(&self, id: &str, after: u64) -> mpsc::Receiver<Result<Event, SessionError>> {
        let (events, received) = mpsc::channel(FOLLOW_BUFFER);
        let mut commits = self.host.parts.commits.subscribe();
        let (host, id) = (self.host.clone(), id.to_owned());
        tokio::spawn(async move {
            let mut after = after;
            loop {
                let page = match host.timeline().events(&id, after, EVENTS_PAGE).await {
                    Ok(page) => page,
                    Err(err) => {
                        let _ = events.send(Err(err)).await;
                        return;
                    }
                };
                let full = page.next.is_some();
                for event in page.events {
                    after = event.seq;
                    let ended = event.outcome == Outcome::End;
                    if events.send(Ok(event)).await.is_err() || ended {
                        return;
                    }
                }
                if full {
                    continue;
                }
                tokio::select! {
                    () = events.closed() => return,
                    _ = heard(&mut commits, |committed| committed.session == id) => {}
                    () = tokio::time::sleep(FOLLOW_POLL) => {}
                }
            }
        });
        received
    }

    /// Each event of `plugin`'s sessions committed from now on (of those
    /// `owner` started, if given), until the receiver is dropped.
    pub fn follow_plugin(
        &self,
        plugin: &str,
        owner: Option<String>,
    ) -> mpsc::Receiver<Result<Event, SessionError>> {
        let (events, received) = mpsc::channel(FOLLOW_BUFFER);
        let mut commits = self.host.parts.commits.subscribe();
        let (host, plugin) = (self.host.clone(), plugin.to_owned());
        tokio::spawn(async move {
            let ours = |committed: &Committed| {
                committed.plugin == plugin
                    && owner
                        .as_ref()
                        .is_none_or(|owner| committed.owner.as_ref() == Some(owner))
            };
            loop {
                let committed = tokio::select! {
                    () = events.closed() => return,
                    committed = heard(&mut commits, ours) => committed,
                };
                let Some(committed) = committed else {
                    continue;
                };
                let event = host
                    .timeline()
                    .events(&committed.session, committed.seq - 1, 1)
                    .await
                    .map(|page| page.events.into_iter().next());
                let sent = match event {
                    Ok(Some(event)) => events.send(Ok(event)).await,
                    // Deleted since: there is nothing to tell.
                    Ok(None) => Ok(()),
                    Err(err) => events.send(Err(err)).await,
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        received
    }
}

/// Waits for a commit heard of that `wanted` picks: `Some` of it, or `None`
/// when some were missed, which may have been one.
async fn heard(
    commits: &mut broadcast::Receiver<Arc<Committed>>,
    wanted: impl Fn(&Committed) -> bool,
) -> Option<Arc<Committed>> {
    loop {
        match commits.recv().await {
            Ok(committed) if wanted(&committed) => return Some(committed),
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return None,
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}
