//! Builds the Python and JavaScript plugins: each folder of
//! `plugins/python/` with componentize-py from its `app.py`, and each of
//! `plugins/js/` with componentize-js from its `NAME.js`, both against
//! `wit/v0.2` and the helper library in `guest-sdk/`. A component newer
//! than everything it is built from is not built again.
//!
//! The tools come from `guest-sdk/install-tools`, or from `PATH`. When
//! either is missing, the build runs `guest-sdk/install-tools` itself (it
//! needs python3 with venv, and npm, and fails naming the Debian package to
//! install when one is missing), unless [`SKIP`] is set, when these plugins
//! and their tests are left out.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::SystemTime;

/// Set to `1` to build without the Python and JavaScript plugins.
pub const SKIP: &str = "AGENTBOX_SKIP_GUEST_LANGUAGES";

/// How to do without the tools.
const INSTEAD: &str = "or set AGENTBOX_SKIP_GUEST_LANGUAGES=1 to build and test without the Python and JavaScript plugins";

/// One language: where its plugins are, how each is built.
#[derive(Clone, Copy)]
struct Language {
    name: &'static str,
    folder: &'static str,
    tool: &'static str,
    /// The tool as `guest-sdk/install-tools` installs it.
    installed: &'static str,
}

const PYTHON: Language = Language {
    name: "python",
    folder: "plugins/python",
    tool: "componentize-py",
    installed: "guest-sdk/python/.venv/bin/componentize-py",
};

const JS: Language = Language {
    name: "js",
    folder: "plugins/js",
    tool: "componentize-js",
    installed: "guest-sdk/js/node_modules/.bin/componentize-js",
};

/// Starts building every plugin of both languages, one thread each; the
/// handle gives each plugin's constant name and component path.
pub fn build(root: &Path) -> JoinHandle<Vec<(String, PathBuf)>> {
    let skip = std::env::var_os(SKIP).is_some_and(|value| value == "1");
    if !skip {
        println!("cargo:rustc-cfg=guest_languages");
    }
    let root = root.to_owned();
    std::thread::spawn(move || {
        if skip {
            println!("cargo:warning={SKIP}=1: the Python and JavaScript plugins are not built");
            return Vec::new();
        }
        install_missing(&root);
        let out = root.join("plugins/target/guests");
        std::fs::create_dir_all(&out)
            .unwrap_or_else(|err| panic!("cannot create {}: {err}", out.display()));
        let builds: Vec<_> = [PYTHON, JS]
            .into_iter()
            .flat_map(|language| {
                plugins(&root, &language)
                    .into_iter()
                    .map(move |plugin| (language, plugin))
            })
            .map(|(language, plugin)| {
                let (root, out) = (root.clone(), out.clone());
                std::thread::spawn(move || language.build(&root, &plugin, &out))
            })
            .collect();
        builds
            .into_iter()
            .map(|build| {
                build
                    .join()
                    .unwrap_or_else(|_| panic!("a guest build panicked"))
            })
            .collect()
    })
}

/// Runs `guest-sdk/install-tools` when either language's tool is missing,
/// after checking what it needs, so that the README's test command is all a
/// new machine with Rust, Python 3 and npm runs.
fn install_missing(root: &Path) {
    if [PYTHON, JS]
        .iter()
        .all(|language| language.tool(root).is_some())
    {
        return;
    }
    let python_venv = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .output()
        .is_ok_and(|output| output.status.success());
    let npm = Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    for (present, package) in [(python_venv, "python3-venv"), (npm, "npm")] {
        assert!(
            present,
            "componentize-py and componentize-js, which build the plugins in plugins/python and \
             plugins/js, are not installed, and installing them needs {package}: install it \
             (`apt-get install {package}` on Debian and Ubuntu) and build again, {INSTEAD}"
        );
    }
    let script = root.join("guest-sdk/install-tools");
    println!(
        "cargo:warning=componentize-py or componentize-js was missing: installed them with {} \
         at the pinned versions",
        script.display()
    );
    let output = Command::new(&script)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", script.display()));
    assert!(
        output.status.success(),
        "{} failed:\n{}{}\nrun it again by hand to see why, {INSTEAD}",
        script.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The plugin folders of `language`.
fn plugins(root: &Path, language: &Language) -> Vec<PathBuf> {
    let folder = root.join(language.folder);
    let mut found: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", folder.display()))
        .map(|entry| entry.expect("cannot read a plugin folder").path())
        .filter(|path| path.is_dir())
        .collect();
    found.sort();
    found
}

impl Language {
    /// Builds the plugin in `plugin` into `out`, unless its component is
    /// newer than its sources.
    fn build(&self, root: &Path, plugin: &Path, out: &Path) -> (String, PathBuf) {
        let name = plugin
            .file_name()
            .and_then(|name| name.to_str())
            .expect("plugin folders have UTF-8 names");
        let constant = format!("{}_{}", self.name, name.replace('-', "_"));
        let wasm = out.join(format!("{}-{name}.wasm", self.name));
        let sdk = root.join("guest-sdk").join(self.name);
        let wit = root.join("wit/v0.2");
        let built = modified(&wasm);
        if built.is_some() && built > newest([plugin, &sdk, &wit]) {
            return (constant, wasm);
        }
        let tool = self.tool(root).unwrap_or_else(|| {
            panic!(
                "{} is needed to build the plugins in {}, and is neither in {} nor on PATH after \
                 running guest-sdk/install-tools; {INSTEAD}",
                self.tool, self.folder, self.installed
            )
        });
        let mut command = Command::new(&tool);
        command.current_dir(root);
        if self.name == PYTHON.name {
            // Built from a copy: Python writes `__pycache__` next to the
            // modules it imports, which would make cargo run this script
            // again at every build.
            let staged = out.join(format!("{}-{name}-src", self.name));
            let _ = std::fs::remove_dir_all(&staged);
            copy(plugin, &staged);
            copy(&sdk.join("agentbox"), &staged.join("agentbox"));
            command
                .args(["-d", "wit/v0.2", "-w", "plugin", "componentize", "-p"])
                .arg(&staged)
                .args(["app", "-o"])
                .arg(&wasm);
        } else {
            command
                .arg(plugin.join(format!("{name}.js")))
                .args(["-w", "wit/v0.2", "-n", "plugin", "-o"])
                .arg(&wasm);
        }
        let output = command.output().unwrap_or_else(|err| {
            panic!(
                "cannot run {} to build {}: {err}; run guest-sdk/install-tools again, {INSTEAD}",
                tool.display(),
                plugin.display()
            )
        });
        if !output.status.success() {
            let _ = std::fs::remove_file(&wasm);
            panic!(
                "building {} with {} failed:\n{}{}",
                plugin.display(),
                self.tool,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        (constant, wasm)
    }

    /// The installed tool, or the one on `PATH`.
    fn tool(&self, root: &Path) -> Option<PathBuf> {
        let installed = root.join(self.installed);
        if installed.exists() {
            return Some(installed);
        }
        std::env::var_os("PATH")
            .map(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(self.tool))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .find(|candidate| candidate.exists())
    }
}

/// Copies the files under `from` to `to`.
fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to)
        .unwrap_or_else(|err| panic!("cannot create {}: {err}", to.display()));
    for entry in std::fs::read_dir(from)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", from.display()))
    {
        let path = entry.expect("cannot read a source folder").path();
        let target = to.join(path.file_name().expect("entries have names"));
        if path.is_dir() {
            copy(&path, &target);
        } else {
            std::fs::copy(&path, &target)
                .unwrap_or_else(|err| panic!("cannot copy {}: {err}", path.display()));
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
}

/// The newest modification time of any file under `paths`, skipping
/// `__pycache__` and `node_modules`.
fn newest<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Option<SystemTime> {
    fn walk(path: &Path, newest: &mut Option<SystemTime>) {
        if path.ends_with("__pycache__")
            || path.ends_with("node_modules")
            || path.ends_with(".venv")
        {
            return;
        }
        *newest = (*newest).max(modified(path));
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                walk(&entry.path(), newest);
            }
        }
    }
    let mut found = None;
    for path in paths {
        walk(path, &mut found);
    }
    found
}
