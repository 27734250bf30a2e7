//! The answers of the Lua scripts, typed: each script answers a tagged
//! array (`{'done', PLUGIN}`, `{'over-quota', 'keys', 3}`, ...), which
//! these types parse, so no answer is a string parsed by hand.

use redis::{FromRedisValue, ParsingError, Value};

use crate::store::error::{BackendError, KvStoreError};
use crate::store::types::{Namespace, Quota, Usage};

/// What `commit.lua` answers.
#[derive(Debug)]
pub(super) enum CommitReply {
    /// Stored; for a commit, with the plugin that served the session until now.
    Done(Option<String>),
    /// A session with this id exists (create).
    Exists,
    /// No session has this id (commit).
    Missing,
    /// The stored revision is another than the one the turn read.
    Conflict(u64),
}

/// What `kv.lua` answers to a write.
#[derive(Debug)]
pub(super) enum KvReply {
    /// Whether a put stored (its condition held).
    Stored(bool),
    /// An increment's new value.
    Counter(i64),
    /// An increment of a value that is not an integer: the value.
    NotInteger(Vec<u8>),
    /// The write would leave the owner, or a user's scope of it (`what`:
    /// `keys`, `bytes`, `user-keys`, `user-bytes`), holding `total`.
    OverQuota { what: String, total: u64 },
}

/// A script's tagged array reply: its tag and the values after it.
fn tagged(value: Value) -> Result<(String, std::vec::IntoIter<Value>), ParsingError> {
    let mut items = Vec::<Value>::from_redis_value(value)?.into_iter();
    let tag = items.next().ok_or("an empty reply from a script")?;
    Ok((String::from_redis_value(tag)?, items))
}

/// The next value of a tagged reply, as `T`.
fn next<T: FromRedisValue>(items: &mut std::vec::IntoIter<Value>) -> Result<T, ParsingError> {
    T::from_redis_value(items.next().ok_or("a script's reply ends too soon")?)
}

impl FromRedisValue for CommitReply {
    fn from_redis_value(value: Value) -> Result<CommitReply, ParsingError> {
        let (tag, mut items) = tagged(value)?;
        match tag.as_str() {
            "done" => Ok(CommitReply::Done(match items.next() {
                Some(served) => Some(String::from_redis_value(served)?),
                None => None,
            })),
            "exists" => Ok(CommitReply::Exists),
            "missing" => Ok(CommitReply::Missing),
            "conflict" => Ok(CommitReply::Conflict(next(&mut items)?)),
            other => Err(format!("`{other}` is no answer of commit.lua").into()),
        }
    }
}

impl FromRedisValue for KvReply {
    fn from_redis_value(value: Value) -> Result<KvReply, ParsingError> {
        let (tag, mut items) = tagged(value)?;
        match tag.as_str() {
            "stored" => Ok(KvReply::Stored(next::<i64>(&mut items)? == 1)),
            "counter" => Ok(KvReply::Counter(next(&mut items)?)),
            "not-integer" => Ok(KvReply::NotInteger(next(&mut items)?)),
            "over-quota" => Ok(KvReply::OverQuota {
                what: next(&mut items)?,
                total: next(&mut items)?,
            }),
            other => Err(format!("`{other}` is no answer of kv.lua to a write").into()),
        }
    }
}

impl KvReply {
    /// The error of a write this reply refused, or of a reply that does not
    /// answer `asked`.
    pub(super) fn refusal(self, ns: &Namespace, quota: &Quota, asked: &str) -> KvStoreError {
        match self {
            KvReply::OverQuota { what, total } => {
                let keys = Usage {
                    keys: total,
                    bytes: 0,
                };
                let bytes = Usage {
                    keys: 0,
                    bytes: total,
                };
                let checked = match what.as_str() {
                    "keys" => quota.check(&ns.owner, keys),
                    "bytes" => quota.check(&ns.owner, bytes),
                    "user-keys" => quota.check_user(ns, keys),
                    "user-bytes" => quota.check_user(ns, bytes),
                    _ => Ok(()),
                };
                match checked {
                    Err(err) => err,
                    Ok(()) => BackendError::new(format!(
                        "Redis refused a write of `{ns}` over a quota it keeps: {total} {what}"
                    ))
                    .into(),
                }
            }
            other => BackendError::new(format!("Redis answered {asked} with {other:?}")).into(),
        }
    }
}
