//! Sessions in Redis: one hash and one history list per session, committed
//! by `commit.lua`, with indexes by plugin for the reaper and a lease per
//! session.

use std::collections::HashMap;

use redis::{Connection, RedisResult, Script};

use crate::store::error::{BackendError, SessionStoreError};
use crate::store::sessions::SessionStore;
use crate::store::timeline::LogEntry;
use crate::store::types::{
    Commit, HistoryCap, Message, SessionFilter, SessionPage, SessionRecord, Status,
};

use crate::store::redis::RedisStore;
use crate::store::redis::keys::{
    ENDED, by_creation, by_owner, by_update, by_user, history_key, json, log_keys, session_key,
    session_keys,
};
use crate::store::redis::reply::CommitReply;

/// Ended sessions the retention sweep deletes per round trip.
const PURGE_BATCH: usize = 256;

/// Messages as the history list stores them.
fn encode_messages(messages: &[Message]) -> Result<Vec<String>, BackendError> {
    messages
        .iter()
        .map(|message| serde_json::to_string(message).map_err(json))
        .collect()
}

/// The record's fields as the session hash stores them.
fn record_fields(record: &SessionRecord) -> Result<Vec<(&'static str, String)>, BackendError> {
    let mut fields = vec![
        ("id", record.id.clone()),
        ("plugin", record.plugin.clone()),
        ("digest", record.digest.clone()),
        (
            "variables",
            serde_json::to_string(&record.variables).map_err(json)?,
        ),
        ("state", serde_json::to_string(&record.state).map_err(json)?),
        ("state_version", record.state_version.to_string()),
        ("revision", record.revision.to_string()),
        ("turn", record.turn.to_string()),
        ("status", record.status.as_str().to_owned()),
        ("created_at_ms", record.created_at_ms.to_string()),
        ("updated_at_ms", record.updated_at_ms.to_string()),
    ];
    if let Some(user) = &record.user_id {
        fields.push(("user_id", user.clone()));
    }
    if let Some(owner) = &record.owner {
        fields.push(("owner", owner.clone()));
    }
    fields.push(("delegate", record.delegate.clone().unwrap_or_default()));
    Ok(fields)
}

fn parse_record(mut fields: HashMap<String, String>) -> Result<SessionRecord, BackendError> {
    let mut take = |name: &str| {
        fields
            .remove(name)
            .ok_or_else(|| BackendError::new(format!("a session in Redis lacks `{name}`")))
    };
    let number = |text: String| {
        text.parse::<u64>()
            .map_err(|err| BackendError::caused(format!("a session in Redis holds `{text}`"), err))
    };
    Ok(SessionRecord {
        id: take("id")?,
        plugin: take("plugin")?,
        digest: take("digest")?,
        variables: serde_json::from_str(&take("variables")?).map_err(json)?,
        state: serde_json::from_str(&take("state")?).map_err(json)?,
        state_version: u32::try_from(number(take("state_version")?)?)
            .map_err(|err| BackendError::caused("a session in Redis holds a state version", err))?,
        revision: number(take("revision")?)?,
        turn: number(take("turn")?)?,
        status: Status::parse(&take("status")?).unwrap_or(Status::Ended),
        created_at_ms: number(take("created_at_ms")?)?,
        updated_at_ms: number(take("updated_at_ms")?)?,
        user_id: take("user_id").ok(),
        owner: take("owner").ok(),
        // Absent in sessions written before hand-offs had delegates; empty
        // while the session's own plugin answers.
        delegate: take("delegate").ok().filter(|plugin| !plugin.is_empty()),
        // Absent in sessions written before logs were counted.
        log_bytes: take("log_bytes").ok().map(number).transpose()?.unwrap_or(0),
    })
}

/// Keeps the expiry indexes in step with a commit of a session that the
/// plugin `served` served until now. The indexes live in other slots than
/// the session, so they follow the commit; the reaper checks the record
/// itself before it acts.
fn index_commit(conn: &mut Connection, commit: &Commit, served: &str) -> RedisResult<()> {
    let id = &commit.session;
    let moved = served != commit.plugin;
    let mut pipe = redis::pipe();
    if moved || commit.status != Status::Active {
        pipe.zrem(by_update(served), id)
            .zrem(by_creation(served), id);
    }
    if commit.status == Status::Ended {
        pipe.zadd(ENDED, id, commit.at_ms);
        let owner: Option<String> = redis::cmd("HGET")
            .arg(session_key(id))
            .arg("owner")
            .query(conn)?;
        if let Some(owner) = owner {
            pipe.srem(by_owner(&owner), id);
        }
    }
    if commit.status == Status::Active {
        pipe.zadd(by_update(&commit.plugin), id, commit.at_ms);
        if moved {
            // The session keeps its age under its new plugin.
            let created_at_ms: u64 = redis::cmd("HGET")
                .arg(session_key(id))
                .arg("created_at_ms")
                .query(conn)?;
            pipe.zadd(by_creation(&commit.plugin), id, created_at_ms);
        }
    }
    pipe.query(conn)
}

/// What one run of `commit.lua` writes besides the record's fields.
struct Written<'a> {
    read: &'a str,
    cap: HistoryCap,
    event: &'a LogEntry,
    dropped_messages: u64,
    messages: &'a [String],
}

/// Runs `commit.lua` and reads its answer.
fn run_commit(
    conn: &mut Connection,
    script: &Script,
    id: &str,
    fields: &[(&str, String)],
    written: Written<'_>,
) -> RedisResult<CommitReply> {
    let mut call = script.prepare_invoke();
    call.key(session_key(id)).key(history_key(id));
    for key in log_keys(id) {
        call.key(key);
    }
    call.arg(written.read)
        .arg(written.cap.messages)
        .arg(written.cap.bytes)
        .arg(fields.len() * 2)
        .arg(written.event.turn)
        .arg(match written.event {
            LogEntry { rewind: true, .. } => "rewind",
            LogEntry { snapshot: true, .. } => "snapshot",
            _ => "",
        })
        .arg(&written.event.body)
        .arg(written.dropped_messages);
    for (name, value) in fields {
        call.arg(*name).arg(value);
    }
    for message in written.messages {
        call.arg(message);
    }
    call.invoke(conn)
}

impl SessionStore for RedisStore {
    fn create(
        &self,
        session: &SessionRecord,
        messages: &[Message],
        event: &LogEntry,
    ) -> Result<(), SessionStoreError> {
        let fields = record_fields(session)?;
        let messages = encode_messages(messages)?;
        let answer = self.with(|conn| {
            let written = Written {
                read: "create",
                cap: HistoryCap {
                    messages: u64::MAX,
                    bytes: u64::MAX,
                },
                event,
                dropped_messages: 0,
                messages: &messages,
            };
            let answer = run_commit(conn, &self.commit, &session.id, &fields, written)?;
            if matches!(answer, CommitReply::Done(_))
                && let Some(user) = &session.user_id
            {
                redis::cmd("SADD")
                    .arg(by_user(user))
                    .arg(&session.id)
                    .query::<()>(conn)?;
            }
            if matches!(answer, CommitReply::Done(_)) && session.status == Status::Active {
                let mut pipe = redis::pipe();
                pipe.zadd(
                    by_update(&session.plugin),
                    &session.id,
                    session.updated_at_ms,
                )
                .zadd(
                    by_creation(&session.plugin),
                    &session.id,
                    session.created_at_ms,
                );
                if let Some(owner) = &session.owner {
                    pipe.sadd(by_owner(owner), &session.id);
                }
                pipe.query::<()>(conn)?;
            }
            Ok(answer)
        })?;
        match answer {
            CommitReply::Done(_) => Ok(()),
            CommitReply::Exists => Err(SessionStoreError::Exists(session.id.clone())),
            other => {
                Err(BackendError::new(format!("Redis answered a create with {other:?}")).into())
            }
        }
    }

    fn load(&self, id: &str) -> Result<Option<SessionRecord>, SessionStoreError> {
        let fields: HashMap<String, String> =
            self.with(|conn| redis::cmd("HGETALL").arg(session_key(id)).query(conn))?;
        if fields.is_empty() {
            return Ok(None);
        }
        parse_record(fields).map(Some).map_err(Into::into)
    }

    fn commit(&self, commit: &Commit) -> Result<(), SessionStoreError> {
        let fields = vec![
            ("state", serde_json::to_string(&commit.state).map_err(json)?),
            ("turn", commit.turn.to_string()),
            ("plugin", commit.plugin.clone()),
            ("delegate", commit.delegate.clone().unwrap_or_default()),
            ("digest", commit.digest.clone()),
            ("state_version", commit.state_version.to_string()),
            ("status", commit.status.as_str().to_owned()),
            ("updated_at_ms", commit.at_ms.to_string()),
        ];
        let messages = encode_messages(&commit.messages)?;
        let read = commit.read_revision.to_string();
        let answer = self.with(|conn| {
            let written = Written {
                read: &read,
                cap: commit.history_cap,
                event: &commit.event,
                dropped_messages: commit.dropped_messages,
                messages: &messages,
            };
            let answer = run_commit(conn, &self.commit, &commit.session, &fields, written)?;
            if let CommitReply::Done(Some(served)) = &answer {
                index_commit(conn, commit, served)?;
            }
            Ok(answer)
        })?;
        match answer {
            CommitReply::Done(Some(_)) => Ok(()),
            CommitReply::Missing => Err(SessionStoreError::NotFound(commit.session.clone())),
            CommitReply::Conflict(stored) => Err(SessionStoreError::Conflict {
                session: commit.session.clone(),
                read: commit.read_revision,
                stored,
            }),
            other => {
                Err(BackendError::new(format!("Redis answered a commit with {other:?}")).into())
            }
        }
    }

    fn history(&self, id: &str, last: usize) -> Result<Vec<Message>, SessionStoreError> {
        if last == 0 {
            return Ok(Vec::new());
        }
        let start = -i64::try_from(last).unwrap_or(i64::MAX);
        let texts: Vec<String> = self.with(|conn| {
            redis::cmd("LRANGE")
                .arg(history_key(id))
                .arg(start)
                .arg(-1)
                .query(conn)
        })?;
        texts
            .iter()
            .map(|text| Ok(serde_json::from_str(text).map_err(json)?))
            .collect()
    }

    fn expired_sessions(
        &self,
        plugin: &str,
        idle_since_ms: u64,
        created_since_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>, SessionStoreError> {
        let page = isize::try_from(limit).unwrap_or(isize::MAX);
        let (mut idle, created): (Vec<String>, Vec<String>) = self.with(|conn| {
            redis::pipe()
                .zrangebyscore_limit(by_update(plugin), "-inf", idle_since_ms, 0, page)
                .zrangebyscore_limit(by_creation(plugin), "-inf", created_since_ms, 0, page)
                .query(conn)
        })?;
        for id in created {
            if !idle.contains(&id) {
                idle.push(id);
            }
        }
        idle.truncate(limit);
        Ok(idle)
    }

    fn live_sessions(&self, plugin: &str) -> Result<u64, SessionStoreError> {
        // The idle index holds exactly the active sessions of the plugin.
        self.with(|conn| redis::cmd("ZCARD").arg(by_update(plugin)).query(conn))
            .map_err(Into::into)
    }

    fn list_sessions(
        &self,
        filter: &SessionFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<SessionPage, SessionStoreError> {
        // A SCAN over the session records. SCAN may answer more keys than
        // asked for; a page past `limit` ends at its last id, and its
        // cursor reads the same batch again after that id:
        // `SCAN-CURSOR` or `SCAN-CURSOR-LAST-ID` (a SCAN cursor is digits).
        let limit = limit.max(1);
        let (scan, after) = match cursor.map(|cursor| cursor.split_once('-')) {
            None => ("0", None),
            Some(None) => (cursor.unwrap_or("0"), None),
            Some(Some((scan, after))) => (scan, Some(after)),
        };
        if scan.is_empty() || !scan.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SessionStoreError::BadCursor(
                cursor.unwrap_or_default().to_owned(),
            ));
        }
        let (next, keys): (String, Vec<String>) = self.with(|conn| {
            redis::cmd("SCAN")
                .arg(scan)
                .arg("MATCH")
                .arg(session_key("*"))
                .arg("COUNT")
                .arg(limit)
                .query(conn)
        })?;
        let records: Vec<HashMap<String, String>> = if keys.is_empty() {
            Vec::new()
        } else {
            self.with(|conn| {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.hgetall(key);
                }
                pipe.query(conn)
            })?
        };
        let mut sessions = Vec::new();
        for fields in records.into_iter().filter(|fields| !fields.is_empty()) {
            let record = parse_record(fields)?;
            if filter.admits(&record) && after.is_none_or(|after| record.id.as_str() > after) {
                sessions.push(record);
            }
        }
        sessions.sort_by(|a, b| a.id.cmp(&b.id));
        if sessions.len() > limit {
            sessions.truncate(limit);
            let last = &sessions[sessions.len() - 1].id;
            return Ok(SessionPage {
                next: Some(format!("{scan}-{last}")),
                sessions,
            });
        }
        Ok(SessionPage {
            sessions,
            next: (next != "0").then_some(next),
        })
    }

    fn sessions_of_user(&self, user: &str) -> Result<Vec<String>, SessionStoreError> {
        let mut ids: Vec<String> =
            self.with(|conn| redis::cmd("SMEMBERS").arg(by_user(user)).query(conn))?;
        ids.sort();
        Ok(ids)
    }

    fn live_sessions_of(&self, owner: &str) -> Result<u64, SessionStoreError> {
        self.with(|conn| redis::cmd("SCARD").arg(by_owner(owner)).query(conn))
            .map_err(Into::into)
    }

    fn purge_ended(&self, ended_before_ms: u64) -> Result<u64, BackendError> {
        let mut purged = 0;
        loop {
            let ended: Vec<String> = self.with(|conn| {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(ENDED)
                    .arg("-inf")
                    .arg(ended_before_ms)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(PURGE_BATCH)
                    .query(conn)
            })?;
            if ended.is_empty() {
                return Ok(purged);
            }
            // The index lists a session once it ended, and an ended session
            // never changes: each is deleted with its history and lease, and
            // taken out of its user's sessions.
            let deleted: Vec<u64> = self.with(|conn| {
                let mut users = redis::pipe();
                for id in &ended {
                    users.hget(session_key(id), "user_id");
                }
                let users: Vec<Option<String>> = users.query(conn)?;
                let mut pipe = redis::pipe();
                for (id, user) in ended.iter().zip(users) {
                    pipe.del(session_keys(id)).zrem(ENDED, id).ignore();
                    if let Some(user) = user {
                        pipe.srem(by_user(&user), id).ignore();
                    }
                }
                pipe.query(conn)
            })?;
            purged += deleted.iter().filter(|&&keys| keys > 0).count() as u64;
        }
    }

    fn delete_session(&self, id: &str) -> Result<(), SessionStoreError> {
        self.with(|conn| {
            let (plugin, owner, user): (Option<String>, Option<String>, Option<String>) =
                redis::cmd("HMGET")
                    .arg(session_key(id))
                    .arg("plugin")
                    .arg("owner")
                    .arg("user_id")
                    .query(conn)?;
            let mut pipe = redis::pipe();
            pipe.del(session_keys(id)).zrem(ENDED, id);
            if let Some(plugin) = plugin {
                pipe.zrem(by_update(&plugin), id)
                    .zrem(by_creation(&plugin), id);
            }
            if let Some(owner) = owner {
                pipe.srem(by_owner(&owner), id);
            }
            if let Some(user) = user {
                pipe.srem(by_user(&user), id);
            }
            pipe.query::<()>(conn)
        })
        .map_err(Into::into)
    }
}
