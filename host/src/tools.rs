//! Tools: their declarations with compiled JSON Schemas, and the checks the
//! host makes before and after a tool runs.

use std::collections::BTreeMap;
use std::time::Duration;

use jsonschema::Validator;
use serde_json::Value;

use crate::bindings::Manifest;
use crate::plugin::check_name;
use crate::session::check_key;
use crate::store::State;

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
        for spec in &manifest.tools {
            check_name(&spec.name, '_').map_err(|reason| format!("tool name {reason}"))?;
            let name = &spec.name;
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
                check_key(key).map_err(|reason| {
                    format!("tool `{name}` requires an invalid session key: {reason}")
                })?;
            }
            let tool = Tool {
                name: name.clone(),
                description: spec.description.clone(),
                parameters,
                result_schema,
                requires: spec.requires.clone(),
                cache_ttl: spec.cache_ttl_ms.map(Duration::from_millis),
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
    /// Checks arguments against the parameter schema, listing every violation.
    pub fn check_arguments(&self, arguments: &Value) -> Result<(), Vec<Violation>> {
        violations(&self.parameters_validator, arguments)
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

fn compile_schema(schema: &Value) -> Result<Validator, String> {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|err| err.to_string())
}

fn violations(validator: &Validator, value: &Value) -> Result<(), Vec<Violation>> {
    let found: Vec<Violation> = validator
        .iter_errors(value)
        .map(|err| Violation {
            pointer: err.instance_path().to_string(),
            message: err.to_string(),
        })
        .collect();
    if found.is_empty() { Ok(()) } else { Err(found) }
}
