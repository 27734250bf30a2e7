//! Following a session's log: the events committed after a given one, as
//! they are committed. A follower reads the log a page at a time from its
//! place on, so it loses nothing and sees nothing twice; it wakes at a
//! commit of the session through this process, and every
//! [`FOLLOW_POLL`] in any case, for the commits other processes of a
//! shared store make.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use crate::session::Host;
use crate::session::error::SessionError;
use crate::session::event::Event;
use crate::session::report::Outcome;
use crate::session::timeline::EVENTS_PAGE;

/// How long a follower waits before it reads the log again without hearing
/// of a commit: the most an event committed by another process waits.
pub const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// Events a follower holds for a reader that has not taken them yet.
const FOLLOW_BUFFER: usize = 64;

/// The sessions this process commits to, as it commits them.
#[derive(Debug)]
pub(crate) struct Commits(broadcast::Sender<Arc<str>>);

impl Default for Commits {
    fn default() -> Commits {
        Commits(broadcast::channel(1024).0)
    }
}

impl Host {
    /// Tells the followers of session `id` that it committed.
    pub(crate) fn committed(&self, id: &str) {
        // Nobody following is no failure.
        let _ = self.inner.commits.0.send(id.into());
    }

    /// The events of session `id` numbered after `after`, then each one as
    /// it commits, until the session ends or the receiver is dropped.
    pub fn follow(&self, id: &str, after: u64) -> mpsc::Receiver<Result<Event, SessionError>> {
        let (events, received) = mpsc::channel(FOLLOW_BUFFER);
        let mut commits = self.inner.commits.0.subscribe();
        let (host, id) = (self.clone(), id.to_owned());
        tokio::spawn(async move {
            let mut after = after;
            loop {
                let page = match host.events(&id, after, EVENTS_PAGE).await {
                    Ok(page) => page,
                    Err(err) => {
                        let _ = events.send(Err(err)).await;
                        return;
                    }
                };
                let full = page.len() == EVENTS_PAGE;
                for event in page {
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
                    () = committed_to(&mut commits, &id) => {}
                    () = tokio::time::sleep(FOLLOW_POLL) => {}
                }
            }
        });
        received
    }
}

/// Waits for a commit of session `id` through this process (or for having
/// missed some, which may have been one).
async fn committed_to(commits: &mut broadcast::Receiver<Arc<str>>, id: &str) {
    loop {
        match commits.recv().await {
            Ok(session) if &*session == id => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}
