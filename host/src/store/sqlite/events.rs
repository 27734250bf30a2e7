//! The SQL of a session's event log (see [`crate::store::timeline`]): the
//! writer appends an event in the transaction of its commit, and a rewind
//! drops the newest messages of the history; readers page the log and read
//! the line.

use rusqlite::{Connection, params};

use crate::store::error::SessionStoreError;
use crate::store::sqlite::SqliteStore;
use crate::store::timeline::{EventLog, LogEntry, LoggedEvent};

/// Appends `entry` to `session`'s log as event number `seq`: on the line,
/// or for a rewind, taking the events of later turns off it.
pub(super) fn append_event(
    conn: &Connection,
    session: &str,
    seq: u64,
    entry: &LogEntry,
) -> rusqlite::Result<()> {
    if entry.rewind {
        conn.prepare_cached(
            "UPDATE events SET on_line = 0, rewound = 1
             WHERE session_id = ?1 AND on_line AND turn > ?2",
        )?
        .execute(params![session, entry.turn])?;
    }
    conn.prepare_cached(
        "INSERT INTO events (session_id, seq, turn, on_line, snapshot, rewound, body)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
    )?
    .execute(params![
        session,
        seq,
        entry.turn,
        !entry.rewind,
        entry.snapshot,
        entry.body
    ])?;
    Ok(())
}

/// Drops the newest `count` messages of `session`'s history, and records
/// what is left.
pub(super) fn drop_newest_messages(
    conn: &Connection,
    session: &str,
    count: u64,
) -> rusqlite::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "DELETE FROM history WHERE session_id = ?1
         AND seq >= (SELECT history_len FROM sessions WHERE id = ?1) - ?2",
    )?
    .execute(params![session, count])?;
    conn.prepare_cached(
        "UPDATE sessions SET history_len = MAX(history_len - ?2, 0),
             history_bytes = (SELECT COALESCE(SUM(octet_length(content)), 0)
                              FROM history WHERE session_id = ?1)
         WHERE id = ?1",
    )?
    .execute(params![session, count])?;
    Ok(())
}

/// Deletes a session's log.
pub(super) fn delete_events(conn: &Connection, session: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM events WHERE session_id = ?1")?
        .execute([session])?;
    Ok(())
}

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
