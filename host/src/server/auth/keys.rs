//! API keys: the file that keeps them, hashed, and the ring the server
//! looks presented keys up in.
//!
//! ```toml
//! # Written by `agentbox keys`; only the keys' SHA-256 digests are kept.
//! [keys.shop-backend]
//! sha256 = "9f86d08..."            # of the key itself
//! principal = "shop"               # owns the sessions started with it
//! plugins = ["shop", "profile"]    # or ["*"] for every plugin
//! act_for_users = true             # may name the user of a session
//! choose_ids = false               # may choose session ids
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::hex::{hex, sha256_hex};

use crate::names::check_plugin_name;
use crate::server::auth::principal::{Grant, Principal, Standing};

/// What every API key starts with, so that one is recognized in a header,
/// a log or a secret scanner.
pub const KEY_PREFIX: &str = "abk_";

/// Random bytes in a key.
const KEY_BYTES: usize = 32;

/// One key as the file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// The principal the key authenticates: a tenant or an app, which owns
    /// the sessions started with any of its keys.
    pub principal: String,
    /// What the key may do.
    #[serde(flatten)]
    pub grant: Grant,
}

/// The API keys file: keys by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// Every key, by its name.
    #[serde(default)]
    pub keys: BTreeMap<String, KeyEntry>,
}

impl KeyFile {
    /// Reads and checks the file at `path`.
    pub fn read(path: &Path) -> Result<KeyFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read the API keys file {}: {err}", path.display()))?;
        KeyFile::parse(&text)
            .map_err(|reason| format!("the API keys file {} is invalid: {reason}", path.display()))
    }

    /// Parses and checks a keys file's text.
    pub fn parse(text: &str) -> Result<KeyFile, String> {
        let file: KeyFile = toml::from_str(text).map_err(|err| err.message().to_owned())?;
        for (name, entry) in &file.keys {
            check_entry(name, entry).map_err(|reason| format!("key `{name}`: {reason}"))?;
        }
        Ok(file)
    }

    /// Writes the file to `path`, readable by its owner only, replacing
    /// what was there at once (through a file beside it, then a rename).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = format!(
            "# API keys of agentbox serve, written by `agentbox keys`; only the keys' SHA-256 digests are kept.\n{}",
            toml::to_string(self).map_err(std::io::Error::other)?
        );
        let partial = path.with_extension("toml.partial");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        std::io::Write::write_all(&mut options.open(&partial)?, text.as_bytes())?;
        std::fs::rename(&partial, path)
    }

    /// Adds a key named `name` for `principal` and returns the key itself,
    /// which is kept nowhere: the file holds its digest only.
    pub fn create(&mut self, name: &str, principal: &str, grant: Grant) -> Result<String, String> {
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes).map_err(|err| format!("no randomness for a key: {err}"))?;
        let key = format!("{KEY_PREFIX}{}", hex(&bytes));
        let entry = KeyEntry {
            sha256: digest(&key),
            principal: principal.to_owned(),
            grant,
        };
        check_entry(name, &entry)?;
        if self.keys.contains_key(name) {
            return Err(format!(
                "a key named `{name}` exists; revoke it first or choose another name"
            ));
        }
        self.keys.insert(name.to_owned(), entry);
        Ok(key)
    }

    /// Removes the key named `name`; whether there was one.
    pub fn revoke(&mut self, name: &str) -> bool {
        self.keys.remove(name).is_some()
    }
}

fn check_entry(name: &str, entry: &KeyEntry) -> Result<(), String> {
    check_plugin_name(name).map_err(|reason| format!("key name {reason}"))?;
    check_plugin_name(&entry.principal).map_err(|reason| format!("principal {reason}"))?;
    let hex_digest = entry.sha256.len() == 64
        && entry
            .sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex_digest {
        return Err("`sha256` must be 64 lowercase hex digits".into());
    }
    entry.grant.check()
}

/// Hex SHA-256 of `key`.
fn digest(key: &str) -> String {
    sha256_hex(key.as_bytes())
}

/// The principals of a keys file, by the digest of their keys.
#[derive(Debug, Default)]
pub struct KeyRing {
    by_digest: HashMap<String, Arc<Principal>>,
}

impl KeyRing {
    /// The ring of the keys in `file`.
    pub fn new(file: &KeyFile) -> KeyRing {
        let by_digest = file
            .keys
            .values()
            .map(|entry| {
                let principal = Principal {
                    owner: format!("key:{}", entry.principal),
                    name: entry.principal.clone(),
                    grant: entry.grant.clone(),
                    user: None,
                    standing: Standing::Key {
                        sha256: entry.sha256.clone(),
                    },
                };
                (entry.sha256.clone(), Arc::new(principal))
            })
            .collect();
        KeyRing { by_digest }
    }

    /// The principal whose key `presented` is. Only digests are compared,
    /// so how long this takes says nothing of the keys held.
    pub(crate) fn principal(&self, presented: &str) -> Option<Arc<Principal>> {
        self.by_digest.get(&digest(presented)).cloned()
    }

    /// Whether `principal`'s key is in the ring still, with its grant.
    pub(crate) fn holds(&self, principal: &Principal) -> bool {
        let Standing::Key { sha256 } = &principal.standing else {
            return false;
        };
        self.by_digest
            .get(sha256)
            .is_some_and(|held| held.owner == principal.owner && held.grant == principal.grant)
    }
}
