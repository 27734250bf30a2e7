//! Tools: their declarations with compiled JSON Schemas, and the checks the
//! host makes before and after a tool runs.

use std::collections::BTreeMap;
use std::time::Duration;

use jsonschema::Validator;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::instance::world::{CacheScope, Manifest};
use crate::names::{check_mcp_name, check_state_key, check_tool_name};
use crate::plugin::sensitive;
use crate::store::{Execution, State, ToolOutcome};

/// A tool as a plugin declared it, with its schemas compiled.
#[derive(Debug)]
pub struct Tool {
    /// The tool's name, unique within its plugin.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: Value,
    /// JSON Schema of its result, if declared.
    pub result_schema: Option<Value>,
    /// Session-state keys that must be set before it may run.
    pub requires: Vec<String>,
    /// How long its results are cached, if at all.
    pub cache_ttl: Option<Duration>,
    /// Who may be served a cached result.
    pub cache_scope: CacheScope,
    /// Whether its parameter schema marks any argument write-only.
    pub sensitive: bool,
    parameters_validator: Validator,
    result_validator: Option<Validator>,
}

/// One way a value breaks a schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// JSON pointer to the offending part of the value (empty for the whole).
    pub pointer: String,
    /// What is wrong there.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "(root)"
        } else {
            &self.pointer
        };
        write!(f, "{pointer}: {}", self.message)
    }
}

/// The tools of one plugin version and its state schema.
#[derive(Debug, Default)]
pub struct ToolSet {
    tools: BTreeMap<String, Tool>,
    state_schema: Option<Validator>,
}

impl ToolSet {
    /// Compiles the tools and state schema of `manifest`, refusing duplicate
    /// or invalid names and schemas that do not compile.
    pub fn compile(manifest: &Manifest) -> Result<ToolSet, String> {
        let mut tools = BTreeMap::new();
        check_mcp_name(&manifest.name, None).map_err(|reason| {
            format!("the conversation with plugin `{}`: {reason}", manifest.name)
        })?;
        for spec in &manifest.tools {
            check_tool_name(&spec.name).map_err(|reason| format!("tool name {reason}"))?;
            let name = &spec.name;
            check_mcp_name(&manifest.name, Some(name))
                .map_err(|reason| format!("tool `{name}`: {reason}"))?;
            let parameters = parse_schema(&spec.parameters)
                .map_err(|err| format!("tool `{name}`: parameters {err}"))?;
            let parameters_validator = compile_schema(&parameters).map_err(|err| {
                format!("tool `{name}`: parameter schema does not compile: {err}")
            })?;
            let result_schema = spec
                .result_schema
                .as_deref()
                .map(parse_schema)
                .transpose()
                .map_err(|err| format!("tool `{name}`: result {err}"))?;
            let result_validator = result_schema
                .as_ref()
                .map(compile_schema)
                .transpose()
                .map_err(|err| format!("tool `{name}`: result schema does not compile: {err}"))?;
            for key in &spec.requires {
                check_state_key(key).map_err(|reason| {
                    format!("tool `{name}` requires an invalid session key: {reason}")
                })?;
            }
            let sensitive = sensitive::marks_sensitive(&parameters);
            if sensitive && spec.cache_ttl_ms.is_some() {
                return Err(format!(
                    "tool `{name}` marks arguments write-only (sensitive) and declares cache_ttl_ms: the cache would keep a digest of them; drop one"
                ));
            }
            let tool = Tool {
                sensitive,
                name: name.clone(),
                description: spec.description.clone(),
                parameters,
                result_schema,
                requires: spec.requires.clone(),
                cache_ttl: spec.cache_ttl_ms.map(Duration::from_millis),
                cache_scope: spec.cache_scope,
                parameters_validator,
                result_validator,
            };
            if tools.insert(name.clone(), tool).is_some() {
                return Err(format!("tool `{name}` is declared more than once"));
            }
        }
        let state_schema = manifest
            .state_schema
            .as_deref()
            .map(|text| {
                let schema = parse_schema(text).map_err(|err| format!("state {err}"))?;
                compile_schema(&schema)
                    .map_err(|err| format!("state schema does not compile: {err}"))
            })
            .transpose()?;
        Ok(ToolSet {
            tools,
            state_schema,
        })
    }

    /// The tool called `name`.
    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.tools.get(name)
    }

    /// Every tool, ordered by name.
    pub fn iter(&self) -> impl Iterator<Item = &Tool> {
        self.tools.values()
    }

    /// Checks a whole session state against the plugin's state schema.
    pub fn check_state(&self, state: &State) -> Result<(), Vec<Violation>> {
        match &self.state_schema {
            Some(validator) => violations(validator, &Value::Object(state.clone())),
            None => Ok(()),
        }
    }
}

impl Tool {
    /// Whether `state` satisfies [`Tool::requires`]; else the keys that are
    /// missing. A key counts as set unless it is absent, `null` or `false`.
    pub fn missing_requirements(&self, state: &State) -> Vec<String> {
        self.requires
            .iter()
            .filter(|key| {
                matches!(
                    state.get(key.as_str()),
                    None | Some(Value::Null | Value::Bool(false))
                )
            })
            .cloned()
            .collect()
    }

    /// The result-cache key of a call of this tool of plugin version
    /// `digest` with `arguments`, made in `session` for `user`: a hash of
    /// the version, the tool, who may share the result (the session, the
    /// user, or anyone, as the tool's scope says) and the arguments in
    /// canonical JSON (keys sorted, no whitespace).
    pub fn cache_key(
        &self,
        digest: &str,
        session: &str,
        user: Option<&str>,
        arguments: &Value,
    ) -> String {
        let sharer = match (self.cache_scope, user) {
            (CacheScope::Global, _) => "global".to_owned(),
            (CacheScope::User, Some(user)) => format!("user/{user}"),
            (CacheScope::User, None) | (CacheScope::Session, _) => format!("session/{session}"),
        };
        let mut hasher = Sha256::new();
        for part in [digest, self.name.as_str(), &sharer, &arguments.to_string()] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        crate::hex::hex(&hasher.finalize())
    }

    /// Checks arguments against the parameter schema, listing every
    /// violation; a message never shows a sensitive argument.
    pub fn check_arguments(&self, arguments: &Value) -> Result<(), Vec<Violation>> {
        let found = violations(&self.parameters_validator, arguments);
        if !self.sensitive {
            return found;
        }
        found.map_err(|violations| {
            let redacted = sensitive::redact(&self.parameters, &mut arguments.clone());
            violations
                .into_iter()
                .map(|violation| Violation {
                    message: sensitive::scrub(&violation.message, &violation.pointer, &redacted),
                    ..violation
                })
                .collect()
        })
    }

    /// The arguments as the host keeps and shows them: every part the
    /// parameter schema marks write-only replaced by
    /// [`sensitive::REDACTED`].
    pub fn redacted(&self, mut arguments: Value) -> Value {
        if self.sensitive {
            sensitive::redact(&self.parameters, &mut arguments);
        }
        arguments
    }

    /// Checks a result against the result schema, if one is declared.
    pub fn check_result(&self, result: &Value) -> Result<(), Vec<Violation>> {
        match &self.result_validator {
            Some(validator) => violations(validator, result),
            None => Ok(()),
        }
    }
}

fn parse_schema(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|err| format!("schema is not valid JSON: {err}"))
}

/// A JSON Schema (draft 2020-12, formats checked) compiled for checks.
pub(crate) fn compile_schema(schema: &Value) -> Result<Validator, String> {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|err| err.to_string())
}

/// Every way `value` breaks the schema `validator` checks.
pub(crate) fn violations(validator: &Validator, value: &Value) -> Result<(), Vec<Violation>> {
    let found: Vec<Violation> = validator
        .iter_errors(value)
        .map(|err| Violation {
            pointer: err.instance_path().to_string(),
            message: err.to_string(),
        })
        .collect();
    if found.is_empty() { Ok(()) } else { Err(found) }
}

/// Statistics of one tool over its recorded calls.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ToolStats {
    /// The plugin.
    pub plugin: String,
    /// The tool.
    pub tool: String,
    /// Calls recorded, whatever their outcome.
    pub calls: u64,
    /// Calls per outcome, in the order of [`ToolOutcome::ALL`]; outcomes
    /// without calls are left out.
    pub outcomes: Vec<(ToolOutcome, u64)>,
    /// Share of calls that returned a result (run or from the cache).
    pub success_rate: f64,
    /// Share of calls served from the cache.
    pub cache_hit_rate: f64,
    /// Median duration, in microseconds.
    pub p50_us: u64,
    /// 95th-percentile duration, in microseconds.
    pub p95_us: u64,
}

/// Statistics per tool, ordered by plugin and tool.
pub fn stats(executions: &[Execution]) -> Vec<ToolStats> {
    let mut by_tool: BTreeMap<(&str, &str), Vec<&Execution>> = BTreeMap::new();
    for execution in executions {
        by_tool
            .entry((&execution.plugin, &execution.tool))
            .or_default()
            .push(execution);
    }
    by_tool
        .into_iter()
        .map(|((plugin, tool), calls)| {
            let count =
                |outcome| calls.iter().filter(|call| call.outcome == outcome).count() as u64;
            let total = calls.len() as u64;
            let mut durations: Vec<u64> = calls.iter().map(|call| call.duration_us).collect();
            durations.sort_unstable();
            let hits = count(ToolOutcome::CacheHit);
            ToolStats {
                plugin: plugin.to_owned(),
                tool: tool.to_owned(),
                calls: total,
                outcomes: ToolOutcome::ALL
                    .into_iter()
                    .map(|outcome| (outcome, count(outcome)))
                    .filter(|(_, n)| *n > 0)
                    .collect(),
                success_rate: (count(ToolOutcome::Ok) + hits) as f64 / total as f64,
                cache_hit_rate: hits as f64 / total as f64,
                p50_us: percentile(&durations, 50),
                p95_us: percentile(&durations, 95),
            }
        })
        .collect()
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], percent: usize) -> u64 {
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}
