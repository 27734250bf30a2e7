//! Loading plugins: checking a component against the world, its manifest,
//! and the registry of active versions.
//!
//! Loading a version reads its world, imports and memory at start off its
//! bytes ([`shape`]) against a world this host serves
//! (`agentbox:plugin@0.1.0` or `@0.2.0`) and its limits, compiles it (or
//! loads it from the artifact cache), calls `describe()` in a trial
//! instance, validates the manifest and only then makes the version
//! active. A version that fails any step never replaces the active one.

mod error;
pub mod registry;
pub mod sensitive;
mod shape;
pub mod tools;
pub mod versions;

use wasmtime::component::Linker;

use crate::engine::pool::Footprint;
use crate::engine::{Compilation, CompileError, Digest, Engine};
use crate::instance::agent::AgentPre;
use crate::instance::ctx::TurnCtx;
use crate::instance::world::Manifest;
use crate::names::check_plugin_name;
pub use crate::plugin::error::{ActivateError, LoadError};
use crate::plugin::shape::{Shape, shape};
use crate::plugin::tools::ToolSet;

/// One loaded, checked version of a plugin.
pub struct PluginVersion {
    /// The sha256 of the component's bytes.
    pub digest: Digest,
    /// What the plugin said about itself.
    pub manifest: Manifest,
    /// The version of the `agentbox:plugin` world it targets.
    pub world: String,
    /// The memory an instance of it needs at start, in bytes.
    pub initial_memory: u64,
    /// What it exports besides the agent interface.
    pub extra_exports: Vec<String>,
    /// What one instance of it takes from the instance pool.
    pub footprint: Footprint,
    /// Whether it was compiled now or loaded from the artifact cache.
    pub compilation: Compilation,
    /// Its tools, with compiled schemas.
    pub tools: ToolSet,
    pub(crate) pre: AgentPre,
    /// `digest` as text, written once: every turn records it.
    digest_hex: String,
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
        // The world and the memory it needs are read off the bytes before
        // anything is compiled, so a component this host cannot run costs a
        // parse, not a compilation.
        let Shape {
            world,
            initial_memory,
            extra_exports,
            core_instances,
        } = shape(bytes)?;
        if initial_memory > engine.memory_bytes() as u64 {
            return Err(LoadError::Memory {
                plugin: None,
                needs: initial_memory,
                limit: engine.memory_bytes(),
            });
        }
        let digest = Digest::of(bytes);
        let (component, compilation) =
            engine.component(bytes, digest).map_err(|err| match err {
                CompileError::Invalid(reason) => LoadError::Invalid(reason),
                CompileError::OverBudget(budget) => LoadError::CompileBudget(budget),
                CompileError::OverMemory(bytes) => LoadError::CompileMemory(bytes),
                err @ CompileError::Process(_) => LoadError::Compiler(err.to_string()),
            })?;
        // The memories and tables come from the compiled component, which
        // knows which modules it instantiates; one that instantiates a
        // module it imports cannot tell, and is held to a slot's worth.
        let resources = component.resources_required();
        let footprint = Footprint {
            core_instances,
            memories: resources
                .as_ref()
                .map_or(u32::MAX, |needs| needs.num_memories),
            tables: resources.map_or(u32::MAX, |needs| needs.num_tables),
        };
        let over = footprint.over_slot();
        if !over.is_empty() {
            return Err(LoadError::Footprint(over.join(", ")));
        }
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
        // Interpreters export their own functions beside the world's (every
        // Python plugin does): worth knowing, not worth a warning at every
        // load. `agentbox inspect` lists them.
        if !extra_exports.is_empty() {
            tracing::info!(
                plugin = manifest.name,
                exports = extra_exports.join(", "),
                "the component exports more than the agent interface; the host never calls the rest"
            );
        }
        Ok(PluginVersion {
            digest_hex: digest.to_string(),
            digest,
            manifest,
            world,
            initial_memory,
            extra_exports,
            footprint,
            compilation,
            tools,
            pre,
        })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Its digest in lowercase hex, as sessions and events record it.
    pub fn digest_hex(&self) -> &str {
        &self.digest_hex
    }
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
                    prop_assert!(crate::names::check_mcp_name(&manifest.name, None).is_ok());
                    for spec in &manifest.tools {
                        prop_assert!(check_tool_name(&spec.name).is_ok());
                        prop_assert!(crate::names::check_mcp_name(&manifest.name, Some(&spec.name)).is_ok());
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
    fn a_name_over_mcp_past_64_characters_is_refused_at_load_naming_the_tool() {
        let manifest = |plugin: &str, tool: &str| Manifest {
            name: plugin.into(),
            version: "1.0.0".into(),
            description: String::new(),
            state_version: 1,
            state_schema: None,
            tools: vec![ToolSpec {
                name: tool.into(),
                description: String::new(),
                parameters: json!({ "type": "object" }).to_string(),
                result_schema: None,
                requires: Vec::new(),
                cache_ttl_ms: None,
                cache_scope: Default::default(),
            }],
        };
        let (plugin, tool) = ("p".repeat(32), "t".repeat(31));
        ToolSet::compile(&manifest(&plugin, &tool)).expect("64 characters fit");
        let err = ToolSet::compile(&manifest(&plugin, &format!("{tool}s"))).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "tool `{tool}s`: its name over MCP, `{plugin}_{tool}s`, is 65 characters"
            )),
            "{err}"
        );
        let err = ToolSet::compile(&manifest(&"p".repeat(59), "t")).unwrap_err();
        assert!(
            err.contains("its name over MCP") && err.contains("__chat`, is 65 characters"),
            "{err}"
        );
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
