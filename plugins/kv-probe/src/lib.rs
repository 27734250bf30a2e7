//! Reaches every function of the `kv` interface through tools, so tests and
//! operators can drive KV from outside: any bucket, any key, any TTL. KV
//! errors come back as the tool's error, naming the kind the host returned.

use std::time::Duration;

use agentbox_sdk::kv::Bucket;
use agentbox_sdk::{Agent, Error, tools};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct KvProbe {}

impl Agent for KvProbe {
    const NAME: &'static str = "kv-probe";
    const VERSION: &'static str = "0.1.0";
    const DESCRIPTION: &'static str = "Every KV operation as a tool, for tests and operators";
}

/// The tool error for a refused KV operation: its kind, then the host's reason.
fn refused(err: Error) -> String {
    match err {
        Error::Invalid(reason) => format!("invalid: {reason}"),
        Error::QuotaExceeded(reason) => format!("quota-exceeded: {reason}"),
        Error::Denied(reason) => format!("denied: {reason}"),
        Error::Conflict => "conflict".to_owned(),
        Error::Unavailable(reason) => format!("unavailable: {reason}"),
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tools]
impl KvProbe {
    /// Stores `value` under `key` in `bucket`, expiring after `ttl_ms` if given.
    #[tool]
    fn put(
        &mut self,
        bucket: String,
        key: String,
        value: String,
        ttl_ms: Option<u64>,
    ) -> Result<(), String> {
        let ttl = ttl_ms.map(Duration::from_millis);
        Bucket::open(&bucket)
            .and_then(|bucket| bucket.set_bytes(&key, value.as_bytes(), ttl))
            .map_err(refused)
    }

    /// The value under `key` in `bucket`, or null.
    #[tool]
    fn get(&mut self, bucket: String, key: String) -> Result<Option<String>, String> {
        Bucket::open(&bucket)
            .and_then(|bucket| bucket.get_bytes(&key))
            .map(|value| value.map(text))
            .map_err(refused)
    }

    /// Whether `key` holds a value in `bucket`.
    #[tool]
    fn exists(&mut self, bucket: String, key: String) -> Result<bool, String> {
        Bucket::open(&bucket)
            .and_then(|bucket| bucket.exists(&key))
            .map_err(refused)
    }

    /// Removes `key` from `bucket`.
    #[tool]
    fn delete(&mut self, bucket: String, key: String) -> Result<(), String> {
        Bucket::open(&bucket)
            .and_then(|bucket| bucket.delete(&key))
            .map_err(refused)
    }

    /// Every key of `bucket` that starts with `prefix`, read page by page.
    #[tool]
    fn keys(&mut self, bucket: String, prefix: String) -> Result<Vec<String>, String> {
        Bucket::open(&bucket)
            .and_then(|bucket| bucket.keys(&prefix))
            .map_err(refused)
    }

    /// Stores `value` under `key` only if it holds `expected` (null: only if
    /// absent); returns whether it stored.
    #[tool]
    fn compare_and_swap(
        &mut self,
        bucket: String,
        key: String,
        expected: Option<String>,
        value: String,
    ) -> Result<bool, String> {
        Bucket::open(&bucket)
            .and_then(|bucket| {
                bucket.compare_and_swap_bytes(
                    &key,
                    expected.as_deref().map(str::as_bytes),
                    value.as_bytes(),
                    None,
                )
            })
            .map_err(refused)
    }

    /// Appends `suffix` to the JSON string under `key` (absent: empty)
    /// through the SDK's `update`, and returns the string stored.
    #[tool]
    fn append(&mut self, bucket: String, key: String, suffix: String) -> Result<String, String> {
        Bucket::open(&bucket)
            .and_then(|bucket| {
                bucket.update(&key, |value: Option<String>| {
                    value.unwrap_or_default() + &suffix
                })
            })
            .map_err(refused)
    }

    /// Adds 1 to the counter under `key`, `times` times over, and returns
    /// the last value.
    #[tool]
    fn bump(&mut self, bucket: String, key: String, times: u32) -> Result<i64, String> {
        let bucket = Bucket::open(&bucket).map_err(refused)?;
        let mut last = 0;
        for _ in 0..times {
            last = bucket.increment(&key, 1).map_err(refused)?;
        }
        Ok(last)
    }

    /// Adds `delta` to the counter under `key` and returns the new value.
    #[tool]
    fn increment(&mut self, bucket: String, key: String, delta: i64) -> Result<i64, String> {
        Bucket::open(&bucket)
            .and_then(|bucket| bucket.increment(&key, delta))
            .map_err(refused)
    }

    /// Stores `value` under `prefix0`, `prefix1`, ... up to `count` keys, and
    /// returns how many it stored.
    #[tool]
    fn fill(
        &mut self,
        bucket: String,
        prefix: String,
        count: u32,
        value: String,
    ) -> Result<u32, String> {
        let bucket = Bucket::open(&bucket).map_err(refused)?;
        for n in 0..count {
            bucket
                .set_bytes(&format!("{prefix}{n}"), value.as_bytes(), None)
                .map_err(refused)?;
        }
        Ok(count)
    }

    /// Reads `prefix0`, `prefix1`, ... up to `count` keys, and returns how
    /// many held a value.
    #[tool]
    fn read(&mut self, bucket: String, prefix: String, count: u32) -> Result<u32, String> {
        let bucket = Bucket::open(&bucket).map_err(refused)?;
        let mut found = 0;
        for n in 0..count {
            if bucket
                .get_bytes(&format!("{prefix}{n}"))
                .map_err(refused)?
                .is_some()
            {
                found += 1;
            }
        }
        Ok(found)
    }

    /// Opens `bucket` `times` times and keeps every handle open until the end.
    #[tool]
    fn open_many(&mut self, bucket: String, times: u32) -> Result<u32, String> {
        let mut open = Vec::new();
        for _ in 0..times {
            open.push(Bucket::open(&bucket).map_err(refused)?);
        }
        Ok(open.len() as u32)
    }
}

agentbox_sdk::export_agent!(KvProbe);
