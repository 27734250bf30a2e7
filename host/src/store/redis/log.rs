//! A session's event log in Redis (see [`crate::store::timeline`]):
//! `commit.lua` appends, `events.lua` pages, `line.lua` reads the line and
//! `line_before.lua` the line as it stood at an event, each in one script
//! so that a read sees no half of a commit.

use redis::{Connection, RedisResult, Script};

use crate::store::error::{BackendError, SessionStoreError};
use crate::store::timeline::{EventLog, LoggedEvent};

use crate::store::redis::RedisStore;
use crate::store::redis::keys::{log_keys, session_key};

/// Up to `limit` events of session `id` numbered after `after`.
fn page(
    conn: &mut Connection,
    script: &Script,
    id: &str,
    after: u64,
    limit: usize,
    max_bytes: usize,
) -> RedisResult<Vec<String>> {
    let [log, events, _, _, rewound] = log_keys(id);
    script
        .key(log)
        .key(events)
        .key(rewound)
        .arg(after)
        .arg(limit)
        .arg(max_bytes)
        .invoke(conn)
}

/// Session `id`'s line from its latest snapshot at or before `turn`.
fn line(conn: &mut Connection, script: &Script, id: &str, turn: u64) -> RedisResult<Vec<String>> {
    let [_, events, line, snapshots, _] = log_keys(id);
    script
        .key(session_key(id))
        .key(line)
        .key(snapshots)
        .key(events)
        .arg(turn)
        .invoke(conn)
}

/// The events on session `id`'s line for the `count` turns before `turn`
/// when event `seq` was appended.
fn line_before(
    conn: &mut Connection,
    script: &Script,
    id: &str,
    seq: u64,
    turn: u64,
    count: u64,
) -> RedisResult<Vec<String>> {
    let [log, events, line, _, rewound] = log_keys(id);
    script
        .key(log)
        .key(events)
        .key(line)
        .key(rewound)
        .arg(seq)
        .arg(turn)
        .arg(count)
        .invoke(conn)
}

/// The events of a script's answer: three items each, its number,
/// `TURN BODY`, and `1` if rewound.
fn parse(items: Vec<String>) -> Result<Vec<LoggedEvent>, BackendError> {
    let malformed = || BackendError::new("Redis holds a malformed event");
    items
        .chunks(3)
        .map(|item| {
            let [seq, event, rewound] = item else {
                return Err(malformed());
            };
            let (turn, body) = event.split_once(' ').ok_or_else(malformed)?;
            Ok(LoggedEvent {
                seq: seq.parse().map_err(|_| malformed())?,
                turn: turn.parse().map_err(|_| malformed())?,
                rewound: rewound == "1",
                body: body.to_owned(),
            })
        })
        .collect()
}

impl EventLog for RedisStore {
    fn events(
        &self,
        id: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<LoggedEvent>, SessionStoreError> {
        let items = self.with(|conn| page(conn, &self.events, id, after, limit, max_bytes))?;
        Ok(parse(items)?)
    }

    fn line(&self, id: &str, turn: u64) -> Result<Vec<LoggedEvent>, SessionStoreError> {
        let items = self.with(|conn| line(conn, &self.line, id, turn))?;
        Ok(parse(items)?)
    }

    fn line_before(
        &self,
        id: &str,
        seq: u64,
        turn: u64,
        count: u64,
    ) -> Result<Vec<LoggedEvent>, SessionStoreError> {
        let items = self.with(|conn| line_before(conn, &self.line_before, id, seq, turn, count))?;
        Ok(parse(items)?)
    }
}
