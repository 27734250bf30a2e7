//! The SQL of KV entries: reading a live value, storing an entry within
//! its owner's quota, and reclaiming expired entries, with each owner's
//! usage kept beside its entries.

use rusqlite::{Connection, OptionalExtension as _, params};

use crate::store::sqlite::sql::{Failed, backend, ms};
use crate::store::types::{Namespace, Quota, Usage, entry_bytes, is_live};

/// Every key of a `kv` scope sorts below its prefix followed by this: keys
/// are printable ASCII, below DEL.
pub(super) const KEY_END: char = '\u{7f}';

pub(super) fn live_value(
    conn: &Connection,
    ns: &Namespace,
    key: &str,
    now_ms: u64,
) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached(
        "SELECT value FROM kv WHERE owner = ?1 AND scope = ?2 AND key = ?3
           AND (expires_at_ms IS NULL OR expires_at_ms > ?4)",
    )?
    .query_row(params![ns.owner, ns.scope, key, ms(now_ms)], |row| {
        row.get(0)
    })
    .optional()
}

pub(super) fn usage(conn: &Connection, owner: &str) -> rusqlite::Result<Usage> {
    Ok(conn
        .prepare_cached("SELECT keys, bytes FROM kv_usage WHERE owner = ?1")?
        .query_row([owner], |row| {
            Ok(Usage {
                keys: row.get(0)?,
                bytes: row.get(1)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

pub(super) fn set_usage(conn: &Connection, owner: &str, usage: Usage) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO kv_usage (owner, keys, bytes) VALUES (?1, ?2, ?3)
         ON CONFLICT (owner) DO UPDATE SET keys = excluded.keys, bytes = excluded.bytes",
    )?
    .execute(params![owner, usage.keys, usage.bytes])
    .map(drop)
}

/// What the user's scope `ns` holds; nothing for a scope of no user.
fn user_usage(conn: &Connection, ns: &Namespace) -> rusqlite::Result<Usage> {
    if ns.user().is_none() {
        return Ok(Usage::default());
    }
    Ok(conn
        .prepare_cached("SELECT keys, bytes FROM kv_user_usage WHERE owner = ?1 AND scope = ?2")?
        .query_row([&ns.owner, &ns.scope], |row| {
            Ok(Usage {
                keys: row.get(0)?,
                bytes: row.get(1)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

/// Records what the scope `scope` of `owner` holds, if it is a user's.
fn set_user_usage(
    conn: &Connection,
    owner: &str,
    scope: &str,
    usage: Usage,
) -> rusqlite::Result<()> {
    if !scope.starts_with("user/") {
        return Ok(());
    }
    if usage.keys == 0 {
        conn.prepare_cached("DELETE FROM kv_user_usage WHERE owner = ?1 AND scope = ?2")?
            .execute([owner, scope])?;
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO kv_user_usage (owner, scope, keys, bytes) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (owner, scope) DO UPDATE SET keys = excluded.keys, bytes = excluded.bytes",
    )?
    .execute(params![owner, scope, usage.keys, usage.bytes])
    .map(drop)
}

/// Takes `freed` (the sizes of entries deleted from the user's scope
/// `scope` of `owner`) out of its usage.
pub(super) fn uncount_user(
    conn: &Connection,
    owner: &str,
    scope: &str,
    freed: &[u64],
) -> rusqlite::Result<()> {
    let ns = Namespace {
        owner: owner.to_owned(),
        scope: scope.to_owned(),
    };
    if ns.user().is_none() || freed.is_empty() {
        return Ok(());
    }
    let current = user_usage(conn, &ns)?;
    let left = Usage {
        keys: current.keys.saturating_sub(freed.len() as u64),
        bytes: current.bytes.saturating_sub(freed.iter().sum()),
    };
    set_user_usage(conn, owner, scope, left)
}

/// Stores one KV entry and keeps its owner's usage (and its user scope's),
/// within `quota`: an owner that would go over it first loses its expired
/// entries, then is refused. Without `expires_at_ms`, a live entry keeps
/// its expiry.
pub(super) fn kv_store(
    conn: &Connection,
    ns: &Namespace,
    key: &str,
    value: &[u8],
    expires_at_ms: Option<u64>,
    now_ms: u64,
    quota: &Quota,
) -> Result<(), Failed> {
    let stored: Option<(u64, Option<u64>)> = conn
        .prepare_cached(
            "SELECT octet_length(value), expires_at_ms FROM kv
             WHERE owner = ?1 AND scope = ?2 AND key = ?3",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![ns.owner, ns.scope, key], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()
        })
        .map_err(backend)?;
    let old = stored.map(|(len, _)| len);
    // A write that names no expiry keeps the live key's.
    let expires_at_ms = expires_at_ms.or_else(|| {
        stored
            .and_then(|(_, at)| at)
            .filter(|&at| is_live(Some(at), now_ms))
    });
    let after = |usage: Usage| Usage {
        keys: usage.keys + u64::from(old.is_none()),
        bytes: usage.bytes + entry_bytes(key, value) - old.map_or(0, |len| key.len() as u64 + len),
    };
    let current = |conn: &Connection| -> Result<(Usage, Usage), Failed> {
        Ok((
            after(usage(conn, &ns.owner).map_err(backend)?),
            after(user_usage(conn, ns).map_err(backend)?),
        ))
    };
    let check = |(owner, user): (Usage, Usage)| {
        quota
            .check(&ns.owner, owner)
            .and_then(|()| quota.check_user(ns, user))
    };
    let mut counted = current(conn)?;
    if check(counted).is_err() {
        reclaim(conn, &ns.owner, now_ms)?;
        counted = current(conn)?;
    }
    check(counted)?;
    let (current, user) = counted;
    conn.prepare_cached(
        "INSERT INTO kv (owner, scope, key, value, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (owner, scope, key) DO UPDATE
         SET value = excluded.value, expires_at_ms = excluded.expires_at_ms",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            ns.owner,
            ns.scope,
            key,
            value,
            expires_at_ms.map(ms)
        ])
    })
    .map_err(backend)?;
    set_user_usage(conn, &ns.owner, &ns.scope, user).map_err(backend)?;
    set_usage(conn, &ns.owner, current).map_err(backend)
}

/// Deletes `owner`'s entries expired at `now_ms` and returns how many.
pub(super) fn reclaim(conn: &Connection, owner: &str, now_ms: u64) -> Result<u64, Failed> {
    let freed: Vec<(String, u64)> = conn
        .prepare_cached(
            "DELETE FROM kv WHERE owner = ?1 AND expires_at_ms <= ?2
             RETURNING scope, octet_length(key) + octet_length(value)",
        )
        .and_then(|mut statement| {
            statement
                .query_map(params![owner, ms(now_ms)], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?
                .collect()
        })
        .map_err(backend)?;
    if !freed.is_empty() {
        let mut current = usage(conn, owner).map_err(backend)?;
        current.keys -= freed.len() as u64;
        current.bytes -= freed.iter().map(|(_, size)| size).sum::<u64>();
        set_usage(conn, owner, current).map_err(backend)?;
        let mut by_scope: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
        for (scope, size) in &freed {
            by_scope.entry(scope).or_default().push(*size);
        }
        for (scope, sizes) in by_scope {
            uncount_user(conn, owner, scope, &sizes).map_err(backend)?;
        }
    }
    Ok(freed.len() as u64)
}
