//! The SQL that deletes a session, and everything stored for a user.

use rusqlite::Connection;

use crate::store::sqlite::entries::{set_usage, uncount_user, usage};
use crate::store::sqlite::events::delete_events;
use crate::store::sqlite::sql::{Failed, backend};
use crate::store::users::Erased;

/// Deletes a session's record, history and log.
pub(super) fn delete_session(conn: &Connection, id: &str) -> rusqlite::Result<()> {
    delete_events(conn, id)?;
    conn.prepare_cached("DELETE FROM history WHERE session_id = ?1")?
        .execute([id])?;
    conn.prepare_cached("DELETE FROM sessions WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// Deletes `user`'s sessions and the user's scope of every KV owner, with
/// their bookkeeping; the writer runs it inside one savepoint, so it lands
/// whole or not at all.
pub(super) fn erase_user(conn: &Connection, user: &str) -> Result<Erased, Failed> {
    let sessions: Vec<String> = conn
        .prepare_cached("SELECT id FROM sessions WHERE user_id = ?1")
        .and_then(|mut statement| statement.query_map([user], |row| row.get(0))?.collect())
        .map_err(backend)?;
    for id in &sessions {
        delete_session(conn, id).map_err(backend)?;
    }
    let scope = format!("user/{user}");
    let owners: Vec<String> = conn
        .prepare_cached("SELECT owner FROM kv_usage")
        .and_then(|mut statement| statement.query_map([], |row| row.get(0))?.collect())
        .map_err(backend)?;
    let mut kv_entries = 0;
    for owner in owners {
        let freed: Vec<u64> = conn
            .prepare_cached(
                "DELETE FROM kv WHERE owner = ?1 AND scope = ?2
                 RETURNING octet_length(key) + octet_length(value)",
            )
            .and_then(|mut statement| {
                statement
                    .query_map([&owner, &scope], |row| row.get(0))?
                    .collect()
            })
            .map_err(backend)?;
        if freed.is_empty() {
            continue;
        }
        let mut current = usage(conn, &owner).map_err(backend)?;
        current.keys -= freed.len() as u64;
        current.bytes -= freed.iter().sum::<u64>();
        set_usage(conn, &owner, current).map_err(backend)?;
        uncount_user(conn, &owner, &scope, &freed).map_err(backend)?;
        kv_entries += freed.len() as u64;
    }
    Ok(Erased {
        sessions: sessions.len() as u64,
        kv_entries,
    })
}
