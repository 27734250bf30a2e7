//! Persistent key-value storage that outlives sessions.
//!
//! Session state is the conversation's; KV is for what lasts across
//! conversations: a caller's profile, preferences, counters, caches of slow
//! lookups. Every operation is atomic and takes effect at once, even if the
//! turn fails afterwards.
//!
//! ```no_run
//! use agentbox_sdk::kv::Bucket;
//! use serde::{Deserialize, Serialize};
//! use std::time::Duration;
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Profile {
//!     name: Option<String>,
//!     calls: u32,
//! }
//!
//! # fn example() -> Result<(), agentbox_sdk::Error> {
//! // The caller's profile: one bucket per user, kept by the host.
//! let user = Bucket::user()?;
//! let mut profile: Profile = user.get("profile")?.unwrap_or_default();
//! profile.calls += 1;
//! user.set("profile", &profile)?;
//!
//! // A cache shared by every session of the plugin, entries kept 10 minutes.
//! let forecast: String = Bucket::global()?.cached("forecast:paris", Duration::from_secs(600), || {
//!     Ok("sunny".to_owned())
//! })?;
//!
//! // A counter every session adds to, atomically.
//! let visits = Bucket::global()?.increment("visits", 1)?;
//! # Ok(()) }
//! ```
//!
//! Values are JSON through [`Bucket::get`] and [`Bucket::set`], or raw bytes
//! through the `_bytes` methods. Keys are 1 to 256 bytes of printable ASCII
//! without spaces.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::bindings::agentbox::plugin::kv as wit;

/// An open bucket.
#[derive(Debug)]
pub struct Bucket {
    bucket: wit::Bucket,
}

impl Bucket {
    /// Opens the bucket `name`: `user`, `global`, or one the operator granted
    /// this plugin (see [`Bucket::user`] and [`Bucket::global`]).
    pub fn open(name: &str) -> Result<Bucket, Error> {
        wit::open(name).map(|bucket| Bucket { bucket })
    }

    /// The bucket of the session's user, within this plugin. Fails with
    /// [`Error::Denied`] when the session was started without a user id.
    pub fn user() -> Result<Bucket, Error> {
        Bucket::open("user")
    }

    /// The bucket shared by every session of this plugin.
    pub fn global() -> Result<Bucket, Error> {
        Bucket::open("global")
    }

    /// The JSON value under `key`, deserialized as `T`; `None` when absent.
    /// A value of another shape is [`Error::Invalid`].
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.get_bytes(key)?
            .map(|bytes| decode(key, &bytes))
            .transpose()
    }

    /// Stores `value` as JSON under `key`. A key that expires keeps its
    /// expiry; a new key has none.
    pub fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), Error> {
        self.set_bytes(key, &encode(value)?, None)
    }

    /// Stores `value` as JSON under `key`; the key expires after `ttl`.
    pub fn set_with_ttl<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), Error> {
        self.set_bytes(key, &encode(value)?, Some(ttl))
    }

    /// The bytes under `key`; `None` when absent.
    pub fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.bucket.get(key)
    }

    /// Stores `value` under `key`; with `ttl`, the key expires after it,
    /// and without, the key keeps the expiry it had, if any.
    pub fn set_bytes(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), Error> {
        self.bucket.set(key, value, ttl.map(millis))
    }

    /// Removes `key`; removing an absent key does nothing.
    pub fn delete(&self, key: &str) -> Result<(), Error> {
        self.bucket.delete(key)
    }

    /// Whether `key` holds a value.
    pub fn exists(&self, key: &str) -> Result<bool, Error> {
        self.bucket.exists(key)
    }

    /// Every key that starts with `prefix`, in ascending order, read page by page.
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.bucket.list_keys(prefix, cursor.as_deref())?;
            keys.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// Adds `delta` to the integer under `key` (absent counts as 0) and
    /// returns the new value, atomically.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, Error> {
        self.bucket.increment(key, delta)
    }

    /// Stores `new` under `key` only if the bytes there are `expected` (`None`:
    /// only if absent); returns whether it stored. `ttl` works as in
    /// [`Bucket::set_bytes`].
    pub fn compare_and_swap_bytes(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, Error> {
        self.bucket
            .compare_and_swap(key, expected, new, ttl.map(millis))
    }

    /// Replaces the JSON value under `key` with `change` of it, atomically
    /// even when other sessions update it at the same time: a lost race
    /// runs `change` again on the newer value. Returns the value stored.
    /// The key keeps its expiry, if it has one.
    pub fn update<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        mut change: impl FnMut(Option<T>) -> T,
    ) -> Result<T, Error> {
        loop {
            let current = self.get_bytes(key)?;
            let value = current
                .as_deref()
                .map(|bytes| decode(key, bytes))
                .transpose()?;
            let new = change(value);
            if self.compare_and_swap_bytes(key, current.as_deref(), &encode(&new)?, None)? {
                return Ok(new);
            }
        }
    }

    /// The JSON value under `key`, or else `compute`'s, stored under `key`
    /// for `ttl`: the read-through cache of a slow lookup.
    pub fn cached<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        ttl: Duration,
        compute: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        if let Some(value) = self.get(key)? {
            return Ok(value);
        }
        let value = compute()?;
        self.set_with_ttl(key, &value, ttl)?;
        Ok(value)
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value)
        .map_err(|err| Error::Invalid(format!("cannot encode the value: {err}")))
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|err| {
        Error::Invalid(format!(
            "the value under `{key}` is not of the expected shape: {err}"
        ))
    })
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}
