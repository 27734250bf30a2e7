//! Compiled functions kept on disk, for Cranelift's incremental
//! compilation: a component that differs from one compiled before in a few
//! functions compiles only those, and takes the rest from here.
//!
//! A plugin rebuilt after a small change is such a component, and so is an
//! interpreter guest with a new script: its interpreter's thousands of
//! functions are the same bytes in every build. `agentbox dev` compiles
//! each new build this way.
//!
//! Each function is one file, named by the hash Cranelift keys it by and
//! written whole under a name of its own before it is renamed into place,
//! so compilers in several processes share the folder safely. An entry
//! that does not read back as a compiled function is compiled again.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use cap_std::fs::Dir;

use crate::hex::hex;

/// A folder of compiled functions, holding at most `limit` bytes: past it,
/// new functions are compiled but not kept.
#[derive(Debug)]
pub(super) struct FunctionCache {
    dir: Dir,
    held: AtomicU64,
    limit: u64,
}

impl FunctionCache {
    /// The functions in `dir`, which holds at most `limit` bytes of them.
    pub(super) fn open(dir: Dir, limit: u64) -> std::io::Result<FunctionCache> {
        let mut held = 0;
        for entry in dir.entries()? {
            held += entry?.metadata()?.len();
        }
        Ok(FunctionCache {
            dir,
            held: AtomicU64::new(held),
            limit,
        })
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        self.dir.read(hex(key)).ok().map(Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let size = value.len() as u64;
        if self.held.fetch_add(size, Ordering::Relaxed) + size > self.limit {
            self.held.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        // A name of this write's own: the compiler's threads may keep the
        // same function at once.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let name = hex(key);
        let partial = format!(
            "{name}.partial-{}-{}",
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        );
        let kept = self
            .dir
            .write(&partial, &value)
            .and_then(|()| self.dir.rename(&partial, &self.dir, &name));
        if kept.is_err() {
            let _ = self.dir.remove_file(&partial);
            self.held.fetch_sub(size, Ordering::Relaxed);
        }
        kept.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::CacheStore as _;

    fn folder() -> (tempfile::TempDir, Dir) {
        let temp = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(temp.path(), cap_std::ambient_authority()).unwrap();
        (temp, dir)
    }

    #[test]
    fn a_function_kept_is_found_by_its_key_and_others_are_not() {
        let (_temp, dir) = folder();
        let cache = FunctionCache::open(dir, 1 << 20).unwrap();
        assert!(cache.insert(&[1, 2], b"code".to_vec()));
        assert_eq!(cache.get(&[1, 2]).as_deref(), Some(&b"code"[..]));
        assert_eq!(cache.get(&[1, 3]), None);
    }

    #[test]
    fn functions_past_the_limit_are_not_kept_and_what_the_folder_held_counts() {
        let (temp, dir) = folder();
        let cache = FunctionCache::open(dir, 10).unwrap();
        assert!(cache.insert(&[1], vec![0; 6]));
        assert!(!cache.insert(&[2], vec![0; 6]), "12 bytes are past 10");
        assert!(cache.insert(&[3], vec![0; 4]), "10 bytes are not");
        assert_eq!(cache.get(&[2]), None);
        // Opened again, it counts what the folder holds: full already.
        let again = Dir::open_ambient_dir(temp.path(), cap_std::ambient_authority()).unwrap();
        let reopened = FunctionCache::open(again, 10).unwrap();
        assert!(!reopened.insert(&[4], vec![0; 1]));
        assert_eq!(reopened.get(&[3]).as_deref(), Some(&[0; 4][..]));
    }
}
