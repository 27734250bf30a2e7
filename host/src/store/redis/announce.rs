//! Telling every process of the store of each commit and each interrupt:
//! `commit.lua` publishes a commit on [`COMMITS`], `lease.lua` an
//! interrupt on [`INTERRUPTS`], and each process listens to both on a
//! connection and a thread of its own, connecting again when Redis goes
//! away. What is published while a process is not listening is not heard
//! again: followers of a session also read its log on their own every so
//! often, a plugin's feed is live only, and an interrupt is the caller's
//! to repeat.

use std::sync::mpsc;
use std::time::Duration;

use redis::{Client, RedisResult};

use crate::store::coordination::{Announcement, AnnouncementSink, Committed};
use crate::store::redis::{CONNECT_TIMEOUT, RedisStore};

/// The channel `commit.lua` publishes each commit on.
const COMMITS: &str = "agentbox:commits";

/// The channel `lease.lua` publishes each interrupt on: the session's id.
const INTERRUPTS: &str = "agentbox:interrupts";

/// How long a read waits before it looks again (a process with nothing to
/// hear still notices a dead connection at this pace).
const READ_TICK: Duration = Duration::from_secs(1);

/// The longest pause before connecting again.
const MOST_PAUSE: Duration = Duration::from_secs(5);

impl RedisStore {
    /// Tells `sink` of every commit and interrupt published from now on, from a thread
    /// of its own, until `sink` answers `false`. Returns once listening,
    /// or after the connect timeout if Redis does not answer (the thread
    /// goes on trying).
    pub(super) fn listen(&self, sink: AnnouncementSink) {
        let (client, address) = (self.client.clone(), self.address.clone());
        let (listening, heard) = mpsc::channel();
        std::thread::Builder::new()
            .name("agentbox-redis-commits".into())
            .spawn(move || {
                let mut pause = Duration::from_millis(100);
                loop {
                    match listen_once(&client, &sink, &listening) {
                        Ok(()) => return,
                        Err(err) => {
                            tracing::warn!(redis = %address, error = %err, "lost the channel of commits; listening again");
                            std::thread::sleep(pause);
                            pause = (pause * 2).min(MOST_PAUSE);
                        }
                    }
                }
            })
            .expect("spawning the thread that hears of commits");
        let _ = heard.recv_timeout(CONNECT_TIMEOUT);
    }
}

/// Listens on one connection until `sink` answers `false` (`Ok`) or the
/// connection fails; says so on `listening` once subscribed.
fn listen_once(
    client: &Client,
    sink: &AnnouncementSink,
    listening: &mpsc::Sender<()>,
) -> RedisResult<()> {
    let mut conn = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    let mut pubsub = conn.as_pubsub();
    pubsub.set_read_timeout(Some(READ_TICK))?;
    pubsub.subscribe(&[COMMITS, INTERRUPTS])?;
    let _ = listening.send(());
    loop {
        let message = match pubsub.get_message() {
            Ok(message) => message,
            Err(err) if err.is_timeout() => continue,
            Err(err) => return Err(err),
        };
        let payload: String = message.get_payload()?;
        let heard = if message.get_channel_name() == INTERRUPTS {
            Announcement::Interrupt(payload)
        } else {
            match serde_json::from_str::<Committed>(&payload) {
                Ok(committed) => Announcement::Committed(committed),
                Err(err) => {
                    tracing::warn!(error = %err, payload, "a commit published on {COMMITS} is malformed");
                    continue;
                }
            }
        };
        if !sink(heard) {
            return Ok(());
        }
    }
}
