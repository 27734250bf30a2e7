//! A user's data in Redis: erased in one `MULTI`/`EXEC` transaction,
//! watched so that a session started for the user meanwhile restarts it.

use redis::Connection;

use crate::store::error::BackendError;
use crate::store::redis::RedisStore;
use crate::store::redis::keys::{
    ENDED, OWNERS, by_creation, by_owner, by_update, by_user, session_key, session_keys,
};
use crate::store::types::Namespace;
use crate::store::users::{Erased, UserStore};

impl UserStore for RedisStore {
    fn erase_user(&self, user: &str) -> Result<Erased, BackendError> {
        let sessions_key = by_user(user);
        self.with(|conn| {
            // A script inside MULTI is not loaded on demand.
            self.kv.prepare_invoke().load(conn)?;
            redis::transaction(conn, &[&sessions_key, OWNERS], |conn, pipe| {
                erase_in(self, conn, pipe, user, &sessions_key)
            })
        })
    }
}

/// Reads what `user` has, then queues its deletion on `pipe` (atomic) and
/// runs it: `None` when a watched key changed first, and the transaction
/// is to be tried again.
fn erase_in(
    store: &RedisStore,
    conn: &mut Connection,
    pipe: &mut redis::Pipeline,
    user: &str,
    sessions_key: &str,
) -> redis::RedisResult<Option<Erased>> {
    let ids: Vec<String> = redis::cmd("SMEMBERS").arg(sessions_key).query(conn)?;
    let owners: Vec<String> = redis::cmd("SMEMBERS").arg(OWNERS).query(conn)?;
    let mut fields = redis::pipe();
    for id in &ids {
        fields
            .cmd("HMGET")
            .arg(session_key(id))
            .arg("plugin")
            .arg("owner");
    }
    let fields: Vec<(Option<String>, Option<String>)> = if ids.is_empty() {
        Vec::new()
    } else {
        fields.query(conn)?
    };
    let mut sessions = 0;
    for (id, (plugin, owner)) in ids.iter().zip(fields) {
        pipe.del(session_keys(id)).ignore().zrem(ENDED, id).ignore();
        if let Some(plugin) = plugin {
            sessions += 1;
            pipe.zrem(by_update(&plugin), id)
                .ignore()
                .zrem(by_creation(&plugin), id)
                .ignore();
        }
        if let Some(owner) = owner {
            pipe.srem(by_owner(&owner), id).ignore();
        }
    }
    pipe.del(sessions_key).ignore();
    let scope = format!("user/{user}/");
    let calls: Vec<_> = owners
        .into_iter()
        .map(|owner| {
            let ns = Namespace {
                owner,
                scope: String::new(),
            };
            store.kv_call(&ns, &scope, "forget-scope", 0)
        })
        .collect();
    for call in &calls {
        pipe.invoke_script(call);
    }
    let forgotten: Option<Vec<u64>> = pipe.query(conn)?;
    Ok(forgotten.map(|forgotten| Erased {
        sessions,
        kv_entries: forgotten.iter().sum(),
    }))
}
