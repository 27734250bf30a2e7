//! The plugin folder of `agentbox serve`: the components in it, read as
//! an upload is, and `--watch`, which loads each one that changes.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};

use agentbox_host::limits::MAX_COMPONENT_BYTES;
use agentbox_host::{Host, LoadError, PluginVersion};

/// How often `--watch` looks at the plugin folder.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// How long a file must stay unchanged before `--watch` loads it, unless
/// told otherwise.
pub(crate) const SETTLE: Duration = Duration::from_secs(1);

/// When a file was last seen changed, and how.
pub(crate) type Stamp = (SystemTime, u64);

/// The plugin folder, and the entries of it refused as they were last
/// read, so that each is said once while it stays.
pub(crate) struct Folder {
    dir: PathBuf,
    refused: HashSet<PathBuf>,
}

impl Folder {
    pub(crate) fn new(dir: PathBuf) -> Folder {
        Folder {
            dir,
            refused: HashSet::new(),
        }
    }

    /// The `.wasm` files in the folder and their stamps, by path: regular
    /// files only, never a symlink (which may lead out of the folder), a
    /// FIFO or a device; an entry refused for the first time is said.
    pub(crate) fn components(&mut self) -> anyhow::Result<HashMap<PathBuf, Stamp>> {
        let entries = std::fs::read_dir(&self.dir)
            .with_context(|| format!("cannot read the plugin folder {}", self.dir.display()))?;
        let mut refused = HashSet::new();
        let mut found = HashMap::new();
        for path in entries.filter_map(|entry| Some(entry.ok()?.path())) {
            if path.extension().is_none_or(|ext| ext != "wasm") {
                continue;
            }
            let Ok(metadata) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if !metadata.is_file() {
                if !self.refused.contains(&path) {
                    tracing::warn!(path = %path.display(), "not a regular file: the plugin folder loads regular files only");
                }
                refused.insert(path);
                continue;
            }
            if let Ok(modified) = metadata.modified() {
                found.insert(path, (modified, metadata.len()));
            }
        }
        self.refused = refused;
        Ok(found)
    }
}

/// Reads the component at `path` in the plugin folder: a regular file
/// opened without following a symlink and without waiting on a FIFO, of at
/// most [`MAX_COMPONENT_BYTES`], as an upload.
fn read_component(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("cannot open {} (a symlink is not followed)", path.display()))?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    if metadata.len() > MAX_COMPONENT_BYTES as u64 {
        bail!(
            "{} is {} bytes, over the limit of {MAX_COMPONENT_BYTES} bytes",
            path.display(),
            metadata.len()
        );
    }
    let mut bytes = Vec::new();
    file.take(MAX_COMPONENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() > MAX_COMPONENT_BYTES {
        bail!(
            "{} grew over the limit of {MAX_COMPONENT_BYTES} bytes while read",
            path.display()
        );
    }
    Ok(bytes)
}

/// Loads the component at `path` of the plugin folder with `load`.
pub(crate) fn load_from_folder(
    path: &Path,
    load: impl FnOnce(&[u8]) -> Result<Arc<PluginVersion>, LoadError>,
) -> anyhow::Result<Arc<PluginVersion>> {
    let bytes = read_component(path)?;
    load(&bytes).with_context(|| format!("cannot load {}", path.display()))
}

/// Loads and activates each `.wasm` of `folder` that changed since `seen`, once
/// it has stayed unchanged for `settle` ([`SETTLE`] unless the files are
/// renamed into place whole); a half-written file is either still changing
/// or fails to load, and never replaces the active version.
pub(crate) async fn watch(
    host: Host,
    mut folder: Folder,
    mut seen: HashMap<PathBuf, Stamp>,
    settle: Duration,
) {
    let mut changing: HashMap<PathBuf, (Stamp, Instant)> = HashMap::new();
    let mut ticks = tokio::time::interval(WATCH_EVERY);
    loop {
        ticks.tick().await;
        let now = match folder.components() {
            Ok(now) => now,
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "cannot watch the plugin folder");
                continue;
            }
        };
        changing.retain(|path, _| now.contains_key(path));
        for (path, stamp) in now {
            if seen.get(&path) == Some(&stamp) {
                continue;
            }
            match changing.get(&path) {
                // A file renamed into place whole is loaded at first sight.
                _ if settle.is_zero() => {}
                Some((last, since)) if *last == stamp && since.elapsed() >= settle => {}
                Some((last, _)) if *last == stamp => continue,
                _ => {
                    changing.insert(path, (stamp, Instant::now()));
                    continue;
                }
            }
            changing.remove(&path);
            seen.insert(path.clone(), stamp);
            let loading = host.clone();
            let file = path.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                load_from_folder(&file, |bytes| loading.load_plugin(bytes))
            })
            .await
            .expect("loading a plugin panicked");
            match loaded {
                Ok(plugin) => eprintln!(
                    "agentbox: {} changed: plugin {} {} is active (sha256:{:.12})",
                    path.display(),
                    plugin.name(),
                    plugin.manifest.version,
                    plugin.digest_hex()
                ),
                Err(err) => eprintln!(
                    "agentbox: {} changed but does not load, so the active version keeps serving: {}",
                    path.display(),
                    super::one_line(&format!("{err:#}"))
                ),
            }
        }
    }
}
