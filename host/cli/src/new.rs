//! `agentbox new`: a working plugin folder for a language, written from
//! templates in the binary: the agent, the helper library, the WIT world,
//! a build script or cargo package, a sample conversation and a script
//! that replays it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

/// Write a new plugin folder, ready to build and run.
///
/// NAME is the plugin's name (a-z, 0-9 and -, starting with a letter); the folder is NAME in
/// the current one unless --dir says otherwise, and must not exist or be empty. It holds the
/// agent (a greeter with state, a tool and an end), the helper library, the WIT world, a
/// build script (build.sh; for Rust, a cargo package), a sample conversation
/// (conversation.txt) and test.sh, which builds the plugin and replays the conversation
/// through `agentbox run`.
///
///   agentbox new greeter --lang python
///   cd greeter && ./test.sh
///
/// The build scripts install their tool on the first build at the version the helper is
/// tested with: componentize-py into .venv (needs python3 with venv), componentize-js and
/// tsc into node_modules (needs npm). $COMPONENTIZE_PY, $COMPONENTIZE_JS and $TSC name
/// tools installed elsewhere. A Rust plugin keeps agentbox-sdk in its folder, pins the
/// toolchain (rust-toolchain.toml, which rustup installs) and the crates (Cargo.lock) this
/// agentbox is tested with, and is built by cargo.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct NewArgs {
    /// The plugin's name
    #[arg(value_name = "NAME")]
    name: String,

    /// The language to write it in
    #[arg(long, value_enum)]
    lang: Lang,

    /// The folder to write [default: NAME]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Lang {
    Rust,
    Python,
    Js,
    Ts,
}

/// Files embedded under `root`, each paired with its path below it.
macro_rules! embedded {
    ($root:literal; $($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!($root, $path)))),*]
    };
}

/// The WIT world a new plugin is built against, by path in its `wit/`.
const WIT: &[(&str, &str)] = embedded!(
    "../../../wit/v0.2/";
    "plugin.wit",
    "deps/cli/cli.wit",
    "deps/clocks/clocks.wit",
    "deps/config/store.wit",
    "deps/config/world.wit",
    "deps/filesystem/filesystem.wit",
    "deps/http/http.wit",
    "deps/io/io.wit",
    "deps/random/random.wit",
    "deps/sockets/sockets.wit",
);

const PYTHON_HELPER: &str = include_str!("../../../guest-sdk/python/agentbox/__init__.py");
const PYTHON_REQUIREMENTS: &str = include_str!("../../../guest-sdk/python/requirements.txt");
const JS_HELPER: &str = include_str!("../../../guest-sdk/js/agentbox.js");
const JS_TYPES: &str = include_str!("../../../guest-sdk/js/agentbox.d.ts");
/// The helper's own package, whose pinned tools a new plugin's pins.
const JS_PACKAGE: &str = include_str!("../../../guest-sdk/js/package.json");
/// The TypeScript compiler a TypeScript plugin pins: the one the helper's
/// tools install.
const TYPESCRIPT: &str = "7.0.2";

/// The Rust helper library, by path in a new plugin's `agentbox-sdk/`.
const RUST_SDK: &[(&str, &str)] = embedded!(
    "../../../guest-sdk/";
    "src/__private.rs",
    "src/config.rs",
    "src/http.rs",
    "src/kv.rs",
    "src/lib.rs",
    "src/registry.rs",
    "src/runtime.rs",
    "src/session.rs",
    "macros/src/lib.rs",
);
/// The manifests the helper's manifests take their settings from.
const WORKSPACE_MANIFEST: &str = include_str!("../../../Cargo.toml");
const SDK_MANIFEST: &str = include_str!("../../../guest-sdk/Cargo.toml");
const MACROS_MANIFEST: &str = include_str!("../../../guest-sdk/macros/Cargo.toml");
/// The crates the repository's Rust plugins are built and tested with; a
/// new plugin's cargo keeps those it uses.
const PLUGINS_LOCK: &str = include_str!("../../../plugins/Cargo.lock");
const TOOLCHAIN: &str = include_str!("../../../rust-toolchain.toml");

const CONVERSATION: &str = include_str!("../templates/conversation.txt");
const TEST: &str = include_str!("../templates/test.sh");

/// Writes the folder `args` asks for.
pub(crate) fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    agentbox_host::names::check_plugin_name(&args.name)
        .map_err(|reason| anyhow::anyhow!("cannot name a plugin `{}`: {reason}", args.name))?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    if dir
        .read_dir()
        .is_ok_and(|mut entries| entries.next().is_some())
    {
        bail!(
            "{} exists and is not empty: choose another NAME or --dir",
            dir.display()
        );
    }
    let files = files(args.lang, &args.name)?;
    for (path, text) in &files {
        write(&dir.join(path), text)?;
    }
    println!(
        "agentbox: wrote the {} plugin `{}` in {}:",
        args.lang.word(),
        args.name,
        dir.display()
    );
    for (path, _) in files.iter().filter(|(path, _)| !path.starts_with("wit/")) {
        println!("  {path}");
    }
    println!("  wit/ (the agentbox:plugin@0.2.0 world)");
    println!(
        "next:\n  cd {}\n  {}\n  ./test.sh           # builds, then replays conversation.txt\n  agentbox dev        # serves it; builds and swaps it in at each change",
        dir.display(),
        args.lang.build_and_run(&args.name),
    );
    Ok(ExitCode::SUCCESS)
}

impl Lang {
    fn word(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
            Lang::Ts => "TypeScript",
        }
    }

    /// The commands that build and run a new plugin `name`, as `new`
    /// suggests them.
    fn build_and_run(self, name: &str) -> String {
        let first_build = match self {
            Lang::Rust => {
                return "agentbox run . --var name=Ada     # builds with cargo, then runs"
                    .to_owned();
            }
            Lang::Python => "installs componentize-py into .venv the first time",
            Lang::Js => "installs componentize-js into node_modules the first time",
            Lang::Ts => "installs tsc and componentize-js into node_modules the first time",
        };
        format!("./build.sh          # {first_build}\n  agentbox run {name}.wasm --var name=Ada")
    }
}

/// The files of a new plugin `name` in `lang`, by path in its folder.
fn files(lang: Lang, name: &str) -> anyhow::Result<Vec<(String, String)>> {
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{Class}}", &class_name(name))
    };
    let mut files = vec![("conversation.txt".to_owned(), CONVERSATION.to_owned())];
    let ignored = match lang {
        Lang::Rust => {
            files.extend([
                (
                    "test.sh".to_owned(),
                    fill(include_str!("../templates/rust/test.sh")),
                ),
                (
                    "Cargo.toml".to_owned(),
                    fill(include_str!("../templates/rust/Cargo.toml")),
                ),
                ("Cargo.lock".to_owned(), PLUGINS_LOCK.to_owned()),
                (
                    "src/lib.rs".to_owned(),
                    fill(include_str!("../templates/rust/lib.rs")),
                ),
                (
                    ".cargo/config.toml".to_owned(),
                    include_str!("../templates/rust/config.toml").to_owned(),
                ),
                ("rust-toolchain.toml".to_owned(), TOOLCHAIN.to_owned()),
            ]);
            files.extend(rust_sdk()?);
            "target/\n"
        }
        Lang::Python => {
            files.extend([
                ("test.sh".to_owned(), fill(TEST)),
                (
                    "app.py".to_owned(),
                    fill(include_str!("../templates/python/app.py")),
                ),
                (
                    "build.sh".to_owned(),
                    fill(include_str!("../templates/python/build.sh")),
                ),
                ("agentbox/__init__.py".to_owned(), PYTHON_HELPER.to_owned()),
                (
                    "requirements.txt".to_owned(),
                    PYTHON_REQUIREMENTS.to_owned(),
                ),
            ]);
            ".venv/\n__pycache__/\n"
        }
        Lang::Js | Lang::Ts => {
            let (agent, build) = match lang {
                Lang::Ts => (
                    ("agent.ts", include_str!("../templates/ts/agent.ts")),
                    include_str!("../templates/ts/build.sh"),
                ),
                _ => (
                    ("agent.js", include_str!("../templates/js/agent.js")),
                    include_str!("../templates/js/build.sh"),
                ),
            };
            files.extend([
                ("test.sh".to_owned(), fill(TEST)),
                (agent.0.to_owned(), fill(agent.1)),
                ("build.sh".to_owned(), fill(build)),
                ("agentbox.js".to_owned(), JS_HELPER.to_owned()),
                ("agentbox.d.ts".to_owned(), JS_TYPES.to_owned()),
                ("package.json".to_owned(), package_json(lang, name)?),
            ]);
            if lang == Lang::Ts {
                files.push((
                    "tsconfig.json".to_owned(),
                    include_str!("../templates/ts/tsconfig.json").to_owned(),
                ));
            }
            "node_modules/\nout/\n"
        }
    };
    files.push((
        ".gitignore".to_owned(),
        format!("{ignored}*.wasm\nagentbox-data/\n"),
    ));
    files.extend(
        WIT.iter()
            .map(|(path, text)| (format!("wit/{path}"), (*text).to_owned())),
    );
    Ok(files)
}

/// The Rust helper library, by path in a new plugin's folder: its sources,
/// reading the world from the plugin's `wit/`, and its manifests, standing
/// on their own.
fn rust_sdk() -> anyhow::Result<Vec<(String, String)>> {
    let workspace: toml::Table = toml::from_str(WORKSPACE_MANIFEST)?;
    let mut files = vec![
        (
            "agentbox-sdk/Cargo.toml".to_owned(),
            standalone(SDK_MANIFEST, &workspace)?,
        ),
        (
            "agentbox-sdk/macros/Cargo.toml".to_owned(),
            standalone(MACROS_MANIFEST, &workspace)?,
        ),
    ];
    for (path, text) in RUST_SDK {
        let text = text.replace(r#"path: "../wit/v0.2""#, r#"path: "../wit""#);
        files.push((format!("agentbox-sdk/{path}"), text));
    }
    Ok(files)
}

/// The manifest `manifest` of a crate of the workspace `workspace`,
/// standing on its own: what it takes from the workspace written out, the
/// helper's macros where a new plugin keeps them (`macros/`), and neither
/// the workspace's lints nor the crate's dev-dependencies.
fn standalone(manifest: &str, workspace: &toml::Table) -> anyhow::Result<String> {
    use toml::Value;

    let shared = |section: &str| {
        workspace
            .get("workspace")
            .and_then(|table| table.get(section))
            .and_then(Value::as_table)
            .with_context(|| format!("the workspace has no [workspace.{section}]"))
    };
    let inherited = |value: &Value| value.get("workspace").and_then(Value::as_bool) == Some(true);
    let mut crate_manifest: toml::Table = toml::from_str(manifest)?;
    crate_manifest.remove("lints");
    crate_manifest.remove("dev-dependencies");
    if let Some(package) = crate_manifest
        .get_mut("package")
        .and_then(Value::as_table_mut)
    {
        for (key, value) in package.iter_mut() {
            if inherited(value) {
                *value = shared("package")?
                    .get(key)
                    .with_context(|| format!("the workspace has no package.{key}"))?
                    .clone();
            }
        }
    }
    if let Some(dependencies) = crate_manifest
        .get_mut("dependencies")
        .and_then(Value::as_table_mut)
    {
        for (name, dependency) in dependencies.iter_mut() {
            if !inherited(dependency) {
                continue;
            }
            let mut resolved = match shared("dependencies")?.get(name) {
                Some(Value::String(version)) => {
                    toml::Table::from_iter([("version".to_owned(), version.clone().into())])
                }
                Some(Value::Table(table)) => table.clone(),
                _ => bail!("the workspace has no dependency {name}"),
            };
            if resolved.contains_key("path") {
                resolved.insert("path".to_owned(), "macros".into());
            }
            *dependency = Value::Table(resolved);
        }
    }
    Ok(toml::to_string(&crate_manifest)?)
}

/// The `package.json` of a JavaScript or TypeScript plugin: its tools at
/// the versions the helper's own package pins.
fn package_json(lang: Lang, name: &str) -> anyhow::Result<String> {
    let helper: Value = serde_json::from_str(JS_PACKAGE).context("the helper's package.json")?;
    let mut tools = helper["devDependencies"].clone();
    if lang == Lang::Ts {
        tools["typescript"] = json!(TYPESCRIPT);
    }
    let package = json!({
        "name": name,
        "version": "0.1.0",
        "private": true,
        "type": "module",
        "scripts": { "build": "sh build.sh", "test": "sh test.sh" },
        "devDependencies": tools,
    });
    Ok(serde_json::to_string_pretty(&package)? + "\n")
}

/// The agent class's name for plugin `name`: `greeter` is `GreeterAgent`,
/// `my-agent` is `MyAgent`, so that it never takes a name the helpers
/// export (`Agent`, `Fail`).
fn class_name(name: &str) -> String {
    let camel: String = name
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    if camel.ends_with("Agent") && camel != "Agent" {
        camel
    } else {
        camel + "Agent"
    }
}

/// Writes `text` at `path`, making its folder; a script is made executable.
fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot make {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    if path.extension().is_some_and(|ext| ext == "sh") {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_never_take_a_helpers_name() {
        assert_eq!(class_name("greeter"), "GreeterAgent");
        assert_eq!(class_name("my-agent"), "MyAgent");
        assert_eq!(class_name("agent"), "AgentAgent");
        assert_eq!(class_name("fail"), "FailAgent");
        assert_eq!(class_name("a2-b"), "A2BAgent");
    }

    #[test]
    fn the_embedded_world_is_the_whole_newest_one() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit");
        let mut versions: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        versions.sort();
        let newest = versions.pop().unwrap();
        assert_eq!(
            newest, "v0.2",
            "a new plugin is written against the newest world"
        );
        let mut on_disk = Vec::new();
        let mut folders = vec![root.join(&newest)];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                } else {
                    let relative = path.strip_prefix(root.join(&newest)).unwrap();
                    on_disk.push(relative.to_string_lossy().into_owned());
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = WIT.iter().map(|(path, _)| (*path).to_owned()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }

    #[test]
    fn the_embedded_rust_helper_is_the_whole_sdk() {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest-sdk");
        let mut on_disk: Vec<String> = ["src", "macros/src"]
            .iter()
            .flat_map(|folder| {
                std::fs::read_dir(sdk.join(folder))
                    .unwrap()
                    .map(move |entry| {
                        let name = entry.unwrap().file_name().into_string().unwrap();
                        format!("{folder}/{name}")
                    })
            })
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = RUST_SDK
            .iter()
            .map(|(path, _)| (*path).to_owned())
            .collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }

    #[test]
    fn the_rust_helpers_manifests_stand_on_their_own() {
        let files = rust_sdk().unwrap();
        let manifest = |path: &str| -> toml::Table {
            let (_, text) = files.iter().find(|(found, _)| found == path).unwrap();
            toml::from_str(text).unwrap()
        };
        let sdk = manifest("agentbox-sdk/Cargo.toml");
        assert_eq!(sdk["package"]["version"].as_str(), Some("0.1.0"));
        assert_eq!(
            sdk["dependencies"]["agentbox-sdk-macros"]["path"].as_str(),
            Some("macros")
        );
        assert!(sdk["dependencies"]["wit-bindgen"]["version"].is_str());
        assert!(!sdk.contains_key("lints"));
        let macros = manifest("agentbox-sdk/macros/Cargo.toml");
        assert_eq!(macros["package"]["edition"].as_str(), Some("2024"));
        assert!(!macros.contains_key("dev-dependencies"));
        let (_, lib) = files
            .iter()
            .find(|(path, _)| path == "agentbox-sdk/src/lib.rs")
            .unwrap();
        assert!(
            lib.contains(r#"path: "../wit","#),
            "the world in the plugin's wit/"
        );
    }

    #[test]
    fn the_guides_show_the_agent_agentbox_new_writes() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/guests");
        for (lang, guide, file) in [
            (Lang::Rust, "rust.md", "src/lib.rs"),
            (Lang::Python, "python.md", "app.py"),
            (Lang::Js, "javascript.md", "agent.js"),
        ] {
            let text = std::fs::read_to_string(docs.join(guide)).unwrap();
            let intro = format!("`{file}`, as `agentbox new` wrote it:\n\n```");
            let block = text
                .split_once(&intro)
                .and_then(|(_, rest)| rest.split_once('\n'))
                .and_then(|(_, rest)| rest.split_once("```\n"))
                .map(|(block, _)| block)
                .unwrap_or_else(|| panic!("{guide} shows no {file}"));
            let written = files(lang, "greeter").unwrap();
            let (_, agent) = written.iter().find(|(path, _)| path == file).unwrap();
            assert_eq!(block, agent, "{guide}");
        }
    }

    #[test]
    fn typescript_is_pinned_where_the_helpers_tools_install_it() {
        let lock: Value =
            serde_json::from_str(include_str!("../../../guest-sdk/js/package-lock.json")).unwrap();
        assert_eq!(
            lock["packages"]["node_modules/typescript"]["version"],
            json!(TYPESCRIPT)
        );
    }
}
