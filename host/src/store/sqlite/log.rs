//! A session's event log read from the reader pool (see
//! [`crate::store::timeline`]): a page of it, its line, and the line as it
//! stood at an event. The writer's side is `events.rs`.

use rusqlite::{Connection, params};

use crate::store::error::SessionStoreError;
use crate::store::sqlite::SqliteStore;
use crate::store::timeline::{EventLog, LoggedEvent};

fn logged(row: &rusqlite::Row<'_>) -> rusqlite::Result<LoggedEvent> {
    Ok(LoggedEvent {
        seq: row.get(0)?,
        turn: row.get(1)?,
        rewound: row.get(2)?,
        body: row.get(3)?,
    })
}

/// Up to `limit` events of `session` numbered after `after`, none after
/// the one that brings their bodies to `max_bytes`.
fn page(
    conn: &Connection,
    session: &str,
    after: u64,
    limit: usize,
    max_bytes: usize,
) -> rusqlite::Result<Vec<LoggedEvent>> {
    // SQLite's integers are signed: no event is numbered past i64::MAX.
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut statement = conn.prepare_cached(
        "SELECT seq, turn, rewound, body FROM events
         WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let mut rows = statement.query(params![session, after, limit])?;
    let (mut page, mut bytes) = (Vec::new(), 0);
    while bytes < max_bytes {
        let Some(row) = rows.next()? else {
            break;
        };
        let event = logged(row)?;
        bytes += event.body.len();
        page.push(event);
    }
    Ok(page)
}

/// The line of `session` from its latest snapshot at or before `turn`
/// through `turn`: from that snapshot on by number (the line's turns rise
/// with its numbers), as many events as there are turns to `turn`.
fn line(conn: &Connection, session: &str, turn: u64) -> rusqlite::Result<Vec<LoggedEvent>> {
    let turn = i64::try_from(turn).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "SELECT seq, turn, rewound, body FROM events
         WHERE session_id = ?1 AND on_line AND turn <= ?2 AND seq >= (
             SELECT seq FROM events
             WHERE session_id = ?1 AND on_line AND snapshot AND turn <= ?2
             ORDER BY turn DESC LIMIT 1)
         ORDER BY seq
         LIMIT COALESCE(?2 + 1 - (
             SELECT turn FROM events
             WHERE session_id = ?1 AND on_line AND snapshot AND turn <= ?2
             ORDER BY turn DESC LIMIT 1), 0)",
    )?
    .query_map(params![session, turn], logged)?
    .collect()
}

/// The events that stood on `session`'s line for the `count` turns before
/// `turn` when event `seq` was appended: per turn, the latest event
/// numbered below `seq` that is not a rewind (a rewind is neither on the
/// line nor rewound).
fn line_before(
    conn: &Connection,
    session: &str,
    seq: u64,
    turn: u64,
    count: u64,
) -> rusqlite::Result<Vec<LoggedEvent>> {
    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
    let turn = i64::try_from(turn).unwrap_or(i64::MAX);
    let first = turn.saturating_sub(i64::try_from(count).unwrap_or(i64::MAX));
    conn.prepare_cached(
        "SELECT seq, turn, rewound, body FROM events
         WHERE session_id = ?1 AND seq IN (
             SELECT MAX(seq) FROM events
             WHERE session_id = ?1 AND seq < ?2 AND turn >= ?3 AND turn < ?4
                 AND (on_line OR rewound)
             GROUP BY turn)
         ORDER BY seq",
    )?
    .query_map(params![session, seq, first, turn], logged)?
    .collect()
}

impl EventLog for SqliteStore {
    fn events(
        &self,
        id: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<LoggedEvent>, SessionStoreError> {
        Ok(self.read(|conn| page(conn, id, after, limit, max_bytes))?)
    }

    fn line(&self, id: &str, turn: u64) -> Result<Vec<LoggedEvent>, SessionStoreError> {
        Ok(self.read(|conn| line(conn, id, turn))?)
    }

    fn line_before(
        &self,
        id: &str,
        seq: u64,
        turn: u64,
        count: u64,
    ) -> Result<Vec<LoggedEvent>, SessionStoreError> {
        Ok(self.read(|conn| line_before(conn, id, seq, turn, count))?)
    }
}
