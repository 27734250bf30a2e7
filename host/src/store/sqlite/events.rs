//! The writer's SQL of a session's event log (see
//! [`crate::store::timeline`]): it appends an event in the transaction of
//! its commit, a rewind drops the newest messages of the history, and a
//! removal deletes the log. Readers read it in `log.rs`.

use rusqlite::{Connection, params};

use crate::store::timeline::LogEntry;

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
