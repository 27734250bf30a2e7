//! Loading plugins: checking a component against the world, its manifest,
//! and the registry of active versions.
//!
//! Loading a version compiles it (or loads it from the artifact cache),
//! checks its imports and exports against a world this host serves
//! (`agentbox:plugin@0.1.0` or `@0.2.0`), calls
//! `describe()` in a trial instance, validates the manifest and only then
//! makes the version active. A version that fails any step never replaces
//! the active one.

pub mod registry;
pub mod sensitive;
pub mod tools;
pub mod versions;

use wasmtime::component::Linker;

use crate::engine::{Compilation, CompileError, Digest, Engine};
use crate::instance::agent::AgentPre;
use crate::instance::ctx::TurnCtx;
use crate::instance::world::Manifest;
use crate::instance::{v0_1, v0_2};
use crate::names::check_plugin_name;
use crate::plugin::tools::ToolSet;
use crate::store::BackendError;

/// The WIT package every agentbox interface belongs to.
const PACKAGE: &str = "agentbox:plugin";

/// The versions of the world this host serves, oldest first.
const WORLD_VERSIONS: [&str; 2] = [v0_1::WORLD_VERSION, v0_2::WORLD_VERSION];

/// The imports from [`PACKAGE`] a plugin may have.
const PACKAGE_IMPORTS: [&str; 4] = ["types", "session", "kv", "output"];

/// The WASI 0.2 packages the host links, with nothing granted; the linker
/// checks their versions and interfaces.
const WASI_PACKAGES: [&str; 6] = [
    "wasi:cli",
    "wasi:clocks",
    "wasi:filesystem",
    "wasi:io",
    "wasi:random",
    "wasi:sockets",
];

/// One loaded, checked version of a plugin.
pub struct PluginVersion {
    /// The sha256 of the component's bytes.
    pub digest: Digest,
    /// What the plugin said about itself.
    pub manifest: Manifest,
    /// The version of the `agentbox:plugin` world it targets.
    pub world: String,
    /// Whether it was compiled now or loaded from the artifact cache.
    pub compilation: Compilation,
    /// Its tools, with compiled schemas.
    pub tools: ToolSet,
    pub(crate) pre: AgentPre,
}

impl std::fmt::Debug for PluginVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginVersion")
            .field("name", &self.manifest.name)
            .field("version", &self.manifest.version)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// Why a plugin could not be loaded. Each message says what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file: it does not start with the `\\0asm` magic number")]
    NotWasm,
    /// A core module was given where a component is needed.
    #[error(
        "this is a core WebAssembly module, not a component: build the plugin for the `wasm32-wasip2` target \
         (or wrap the module with `wasm-tools component new`)"
    )]
    CoreModule,
    /// The component does not compile or validate.
    #[error("invalid WebAssembly component: {0}")]
    Invalid(String),
    /// Compiling the component took longer than the host's budget.
    #[error(
        "the component was refused: compiling it took longer than the budget of {} ms",
        .0.as_millis()
    )]
    CompileBudget(std::time::Duration),
    /// The host's compiler process failed; the component may be fine.
    #[error("the component could not be compiled: {0}")]
    Compiler(String),
    /// The component targets no world this host serves.
    #[error(
        "not an agentbox plugin for world {PACKAGE}@{served}: {0}",
        served = WORLD_VERSIONS.join(" or @")
    )]
    WrongWorld(String),
    /// `describe()` trapped or ran out of time or memory.
    #[error("`describe()` failed: {0}")]
    Describe(String),
    /// The manifest breaks a rule.
    #[error("invalid manifest: {0}")]
    Manifest(String),
    /// The version is valid, but the store could not keep it or record it active.
    #[error("the store failed: {0}")]
    Store(BackendError),
}

/// Why a version could not be made active. Nothing changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActivateError {
    /// No version with this digest is loaded here or published in the store.
    #[error(
        "plugin `{name}` has no version with digest `{digest}`, loaded here or published in the store"
    )]
    Unknown {
        /// The plugin.
        name: String,
        /// The digest asked for.
        digest: String,
    },
    /// The plugin has had no other active version.
    #[error("plugin `{0}` has no previous version to roll back to")]
    NoPrevious(String),
    /// The version published in the store does not load on this host.
    #[error(
        "version `{digest}` of plugin `{name}`, published in the store, does not load here: {reason}"
    )]
    Load {
        /// The plugin.
        name: String,
        /// The version's digest.
        digest: String,
        /// Why it does not load.
        reason: String,
    },
    /// The store failed.
    #[error("plugin `{name}`: {source}")]
    Store {
        /// The plugin.
        name: String,
        /// What failed.
        source: BackendError,
    },
}

impl PluginVersion {
    /// Loads and checks `bytes`, calling `describe()` in a trial instance of
    /// `linker`, which provides the world's imports.
    pub(crate) fn load(
        engine: &Engine,
        linker: &Linker<TurnCtx>,
        bytes: &[u8],
        describe: impl FnOnce(&AgentPre) -> Result<Manifest, String>,
    ) -> Result<PluginVersion, LoadError> {
        match bytes.get(0..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => return Err(LoadError::CoreModule),
            Some([0, b'a', b's', b'm', ..]) => {}
            _ => return Err(LoadError::NotWasm),
        }
        // The world is read off the bytes before anything is compiled, so a
        // component for another world costs a parse, not a compilation.
        let world = check_world(bytes)?;
        let digest = Digest::of(bytes);
        let (component, compilation) =
            engine.component(bytes, digest).map_err(|err| match err {
                CompileError::Invalid(reason) => LoadError::Invalid(reason),
                CompileError::OverBudget(budget) => LoadError::CompileBudget(budget),
                err @ CompileError::Process(_) => LoadError::Compiler(err.to_string()),
            })?;
        let pre = AgentPre::new(linker, &component, &world)
            .map_err(|err| LoadError::WrongWorld(format!("{err:#}")))?;
        let manifest = describe(&pre).map_err(LoadError::Describe)?;
        check_manifest(&manifest)?;
        let tools = ToolSet::compile(&manifest).map_err(LoadError::Manifest)?;
        // Only an accepted version's artifact is kept; failing to keep it
        // costs the next load a compilation, nothing more.
        if matches!(compilation, Compilation::Compiled(_))
            && let Err(err) = engine.keep(digest, &component)
        {
            tracing::warn!(%digest, "cannot keep the compiled artifact: {err:#}");
        }
        Ok(PluginVersion {
            digest,
            manifest,
            world,
            compilation,
            tools,
            pre,
        })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }
}

/// The names a component's bytes import and export at its top level,
/// read without compiling or validating it (the compiler validates).
fn world_names(bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), LoadError> {
    use wasmparser::{Parser, Payload};

    let malformed = |err: wasmparser::BinaryReaderError| LoadError::Invalid(err.to_string());
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    // Modules and components nested inside have names of their own.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(malformed)? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) if depth == 0 => break,
            Payload::End(_) => depth -= 1,
            Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    imports.push(import.map_err(malformed)?.name.full_name().into_owned());
                }
            }
            Payload::ComponentExportSection(section) if depth == 0 => {
                for export in section {
                    exports.push(export.map_err(malformed)?.name.full_name().into_owned());
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

/// Checks the component's imports and exports against the world, before it
/// is compiled, and returns the world version it targets. An import from a
/// package the host does not link is named here; the versions and
/// interfaces of the WASI packages it links are checked by the linker.
fn check_world(bytes: &[u8]) -> Result<String, LoadError> {
    let (imports, exports) = world_names(bytes)?;
    let agent_prefix = format!("{PACKAGE}/agent@");
    let Some(world) = exports
        .iter()
        .find_map(|name| name.strip_prefix(&agent_prefix))
    else {
        let names = &exports;
        return Err(LoadError::WrongWorld(format!(
            "it does not export `{}` (its exports: {})",
            v0_2::AGENT_EXPORT,
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        )));
    };
    if !WORLD_VERSIONS.contains(&world) {
        return Err(LoadError::WrongWorld(format!(
            "it targets {PACKAGE}@{world}, which this host does not serve",
        )));
    }
    for name in imports.iter().map(String::as_str) {
        let Some(rest) = name
            .strip_prefix(PACKAGE)
            .and_then(|rest| rest.strip_prefix('/'))
        else {
            let package = name.split_once('/').map_or(name, |(package, _)| package);
            if !WASI_PACKAGES.contains(&package) {
                // `types` holds only types; the rest are what a plugin calls.
                return Err(LoadError::WrongWorld(format!(
                    "it imports `{name}`, which this host does not provide; a plugin may import \
                     {PACKAGE}'s {} and WASI 0.2's {} (with nothing granted)",
                    PACKAGE_IMPORTS[1..].join(", "),
                    WASI_PACKAGES
                        .map(|package| package.trim_start_matches("wasi:"))
                        .join(", "),
                )));
            }
            continue;
        };
        let known = rest.split_once('@').is_some_and(|(interface, version)| {
            version == world && PACKAGE_IMPORTS.contains(&interface)
        });
        if !known {
            return Err(LoadError::WrongWorld(format!(
                "it imports `{name}`, which the world does not provide"
            )));
        }
    }
    Ok(world.to_owned())
}

fn check_manifest(manifest: &Manifest) -> Result<(), LoadError> {
    check_plugin_name(&manifest.name)
        .map_err(|reason| LoadError::Manifest(format!("plugin name {reason}")))?;
    semver::Version::parse(&manifest.version).map_err(|err| {
        LoadError::Manifest(format!(
            "plugin `{}` has version `{}`, which is not a semantic version such as 1.2.0: {err}",
            manifest.name,
            manifest.version.escape_debug()
        ))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Property tests of manifest checking: whatever a guest's `describe()`
    //! returns, the host refuses it with a reason or accepts only what the
    //! rules allow; it never panics and never reaches outside for a schema.

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::instance::world::ToolSpec;
    use crate::names::check_tool_name;

    /// JSON that looks like a schema: keywords that compile to validators,
    /// nested, with references inside the document and out of it, regular
    /// expressions that do not parse, and now and then a value of the
    /// wrong type where a schema belongs.
    fn schema() -> impl Strategy<Value = Value> {
        let wrong = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,8}".prop_map(Value::from),
        ];
        let leaf = prop_oneof![
            4 => prop_oneof![Just(json!({})), Just(json!(true)), Just(json!(false))],
            4 => prop_oneof![
                Just("string"),
                Just("object"),
                Just("integer"),
                Just("array"),
                Just("nope")
            ]
            .prop_map(|ty| json!({ "type": ty })),
            2 => prop_oneof![
                Just("#"),
                Just("#/$defs/a"),
                Just("#/nowhere"),
                Just("http://169.254.169.254/latest/meta-data"),
                Just("file:///etc/passwd"),
                Just("urn:agentbox:x"),
            ]
            .prop_map(|target| json!({ "$ref": target })),
            2 => prop_oneof![
                Just("^[a-z]+$"),
                Just("(a+)+$"),
                Just("["),
                Just("\\p{Nope}"),
                Just("(?<=a)b")
            ]
            .prop_map(|pattern| json!({ "type": "string", "pattern": pattern })),
            1 => prop_oneof![Just("email"), Just("date-time"), Just("no-such-format")]
                .prop_map(|format| json!({ "format": format })),
            2 => wrong.clone().prop_map(|bound| json!({ "minimum": bound })),
            2 => prop::collection::vec(wrong.clone(), 0..3).prop_map(|values| json!({ "enum": values })),
            1 => wrong,
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                (
                    prop::collection::btree_map("[a-z]{1,3}", inner.clone(), 0..4),
                    prop::collection::vec("[a-z]{1,3}", 0..3),
                )
                    .prop_map(|(properties, required)| {
                        json!({ "type": "object", "properties": properties, "required": required })
                    }),
                inner
                    .clone()
                    .prop_map(|items| json!({ "type": "array", "items": items })),
                prop::collection::vec(inner.clone(), 1..3).prop_map(|all| json!({ "allOf": all })),
                prop::collection::vec(inner.clone(), 1..3).prop_map(|any| json!({ "anyOf": any })),
                inner.clone().prop_map(|not| json!({ "not": not })),
                inner.prop_map(|a| json!({ "$defs": { "a": a }, "$ref": "#/$defs/a" })),
            ]
        })
    }

    /// A schema as a guest sends it: JSON text, or any text at all.
    fn schema_text() -> impl Strategy<Value = String> {
        prop_oneof![9 => schema().prop_map(|value| value.to_string()), 1 => ".{0,16}"]
    }

    fn tool() -> impl Strategy<Value = ToolSpec> {
        (
            prop_oneof![9 => "[a-z][a-z0-9_]{0,8}", 1 => ".{0,8}"],
            schema_text(),
            prop::option::of(schema_text()),
            prop::collection::vec(prop_oneof![9 => "[a-z]{1,6}", 1 => ".{0,6}"], 0..3),
        )
            .prop_map(|(name, parameters, result_schema, requires)| ToolSpec {
                name,
                description: String::new(),
                parameters,
                result_schema,
                requires,
                cache_ttl_ms: None,
                cache_scope: Default::default(),
            })
    }

    fn manifest() -> impl Strategy<Value = Manifest> {
        (
            prop_oneof![8 => "[a-z][a-z0-9-]{0,8}", 1 => "[a-z]{60,70}", 1 => ".{0,10}"],
            prop_oneof![9 => "(0|[1-9][0-9]?)\\.(0|[1-9])\\.(0|[1-9])(-[a-z]{1,4})?", 1 => ".{0,10}"],
            prop::option::of(schema_text()),
            prop::collection::vec(tool(), 0..4),
        )
            .prop_map(|(name, version, state_schema, tools)| Manifest {
                name,
                version,
                description: String::new(),
                state_version: 1,
                state_schema,
                tools,
            })
    }

    proptest! {
        #[test]
        fn any_manifest_is_accepted_by_the_rules_or_refused_with_a_reason(manifest in manifest()) {
            let checked = check_manifest(&manifest)
                .and_then(|()| ToolSet::compile(&manifest).map_err(LoadError::Manifest));
            match checked {
                Ok(tools) => {
                    prop_assert!(check_plugin_name(&manifest.name).is_ok());
                    prop_assert!(semver::Version::parse(&manifest.version).is_ok());
                    prop_assert_eq!(tools.iter().count(), manifest.tools.len());
                    for spec in &manifest.tools {
                        prop_assert!(check_tool_name(&spec.name).is_ok());
                        prop_assert!(serde_json::from_str::<Value>(&spec.parameters).is_ok());
                    }
                }
                Err(err) => {
                    prop_assert!(err.to_string().starts_with("invalid manifest: "), "{}", err);
                }
            }
        }
    }

    #[test]
    fn a_tool_with_sensitive_arguments_may_not_be_cached() {
        let tool = |cache_ttl_ms| ToolSpec {
            name: "login".into(),
            description: String::new(),
            parameters: json!({ "properties": { "password": { "writeOnly": true } } }).to_string(),
            result_schema: None,
            requires: Vec::new(),
            cache_ttl_ms,
            cache_scope: Default::default(),
        };
        let manifest = |tool| Manifest {
            name: "shop".into(),
            version: "1.0.0".into(),
            description: String::new(),
            state_version: 1,
            state_schema: None,
            tools: vec![tool],
        };
        let tools = ToolSet::compile(&manifest(tool(None))).unwrap();
        assert!(tools.get("login").unwrap().sensitive);
        let err = ToolSet::compile(&manifest(tool(Some(1_000)))).unwrap_err();
        assert!(
            err.starts_with("tool `login` marks arguments write-only")
                && err.contains("cache_ttl_ms"),
            "{err}"
        );
    }

    #[test]
    fn a_schema_that_refers_outside_itself_is_refused_without_fetching_it() {
        for target in [
            "http://169.254.169.254/latest/meta-data",
            "file:///etc/passwd",
        ] {
            let manifest = Manifest {
                name: "remote".into(),
                version: "1.0.0".into(),
                description: String::new(),
                state_version: 1,
                state_schema: Some(json!({ "$ref": target }).to_string()),
                tools: Vec::new(),
            };
            let err = ToolSet::compile(&manifest).unwrap_err();
            assert!(
                err.starts_with("state schema does not compile") && err.contains(target),
                "{err}"
            );
        }
    }
}
