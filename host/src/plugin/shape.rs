//! What a component's bytes say before it is compiled: the world it
//! targets, what it imports, and how much memory it needs at start. Read
//! with `wasmparser` (the parser wasmtime itself uses) without validating
//! anything, so a component this host cannot run costs a parse, not a
//! compilation.

use crate::instance::{PACKAGE, WORLD_VERSIONS, v0_1, v0_2};
use crate::plugin::error::LoadError;

/// The imports from [`PACKAGE`] a plugin of any world version may have.
const PACKAGE_IMPORTS: [&str; 4] = ["types", "session", "kv", "output"];

/// The import from [`PACKAGE`] a plugin may have from world 0.2.0 on.
const REGISTRY_IMPORT: &str = "registry";

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

/// The packages a plugin may import from world 0.2.0 on, which reach
/// outside the host under its policy: outbound HTTP and configuration.
const OUTBOUND_PACKAGES: [&str; 2] = ["wasi:http", "wasi:config"];

/// What a component's bytes say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Shape {
    /// The version of the world it targets.
    pub(super) world: String,
    /// The largest initial size of a memory its core modules define, in
    /// bytes: what an instance needs before it runs a single instruction.
    pub(super) initial_memory: u64,
    /// What it exports besides the agent interface, which the host never
    /// calls (componentize-py's `init`, for one).
    pub(super) extra_exports: Vec<String>,
    /// The core module instances one instance of it makes.
    pub(super) core_instances: u32,
}

/// What [`declared`] reads.
struct Declared {
    imports: Vec<String>,
    exports: Vec<String>,
    initial_memory: u64,
    core_instances: u32,
}

/// What the component's bytes declare: the names it imports and exports at
/// its top level, the largest initial size of a memory any of its core
/// modules defines, and the core instances it instantiates, read without
/// compiling or validating it (the compiler validates).
fn declared(bytes: &[u8]) -> Result<Declared, LoadError> {
    use wasmparser::{Instance, Parser, Payload};

    let malformed = |err: wasmparser::BinaryReaderError| LoadError::Invalid(err.to_string());
    let (mut imports, mut exports, mut initial_memory) = (Vec::new(), Vec::new(), 0u64);
    let mut core_instances = 0u32;
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
            // Each module instantiation takes a core instance; instances
            // made of exports alone take none.
            Payload::InstanceSection(section) => {
                for instance in section {
                    if let Instance::Instantiate { .. } = instance.map_err(malformed)? {
                        core_instances = core_instances.saturating_add(1);
                    }
                }
            }
            Payload::MemorySection(section) => {
                for memory in section {
                    let memory = memory.map_err(malformed)?;
                    let page = 1u64 << memory.page_size_log2.unwrap_or(16);
                    initial_memory = initial_memory.max(memory.initial.saturating_mul(page));
                }
            }
            _ => {}
        }
    }
    Ok(Declared {
        imports,
        exports,
        initial_memory,
        core_instances,
    })
}

/// Reads the component's shape, checking its imports and exports against
/// the world before it is compiled. An import from a package the host does
/// not link is named here; the versions and interfaces of the WASI packages
/// it links are checked by the linker.
pub(super) fn shape(bytes: &[u8]) -> Result<Shape, LoadError> {
    let Declared {
        imports,
        exports,
        initial_memory,
        core_instances,
    } = declared(bytes)?;
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
            if OUTBOUND_PACKAGES.contains(&package) {
                if world == v0_1::WORLD_VERSION {
                    return Err(LoadError::WrongWorld(format!(
                        "it imports `{name}` but targets {PACKAGE}@{world}: outbound HTTP and \
                         configuration come with world {}",
                        v0_2::WORLD_VERSION
                    )));
                }
                continue;
            }
            if !WASI_PACKAGES.contains(&package) {
                // `types` holds only types; the rest are what a plugin calls.
                return Err(LoadError::WrongWorld(format!(
                    "it imports `{name}`, which this host does not provide; a plugin may import \
                     {PACKAGE}'s {}, WASI 0.2's {} (with nothing granted) and, from world {}, \
                     {} (under its policy)",
                    PACKAGE_IMPORTS[1..].join(", "),
                    WASI_PACKAGES
                        .map(|package| package.trim_start_matches("wasi:"))
                        .join(", "),
                    v0_2::WORLD_VERSION,
                    OUTBOUND_PACKAGES.join(" and "),
                )));
            }
            continue;
        };
        let known = rest.split_once('@').is_some_and(|(interface, version)| {
            version == world
                && (PACKAGE_IMPORTS.contains(&interface)
                    || (interface == REGISTRY_IMPORT && world != v0_1::WORLD_VERSION))
        });
        if !known {
            return Err(LoadError::WrongWorld(format!(
                "it imports `{name}`, which the world does not provide"
            )));
        }
    }
    let agent = format!("{agent_prefix}{world}");
    Ok(Shape {
        world: world.to_owned(),
        initial_memory,
        extra_exports: exports.into_iter().filter(|name| *name != agent).collect(),
        core_instances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component's top level exporting `names`, each an instance it does
    /// not have: enough to read, not to compile.
    fn exporting(names: &[&str]) -> Vec<u8> {
        let mut section = vec![names.len() as u8];
        for name in names {
            section.extend([0x00, name.len() as u8]);
            section.extend_from_slice(name.as_bytes());
            section.extend([0x05, 0x00, 0x00]);
        }
        let mut component = vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
        component.extend([0x0b, section.len() as u8]);
        component.extend(section);
        component
    }

    /// `exporting(exports)` importing `imports` too, each an instance type
    /// it does not have.
    fn importing(imports: &[&str], exports: &[&str]) -> Vec<u8> {
        let mut section = vec![imports.len() as u8];
        for name in imports {
            section.extend([0x00, name.len() as u8]);
            section.extend_from_slice(name.as_bytes());
            section.extend([0x05, 0x00]);
        }
        let mut component = exporting(exports);
        component.extend([0x0a, section.len() as u8]);
        component.extend(section);
        component
    }

    #[test]
    fn outbound_imports_come_with_world_0_2_only() {
        let imports = [
            "wasi:http/outgoing-handler@0.2.12",
            "wasi:config/store@0.2.0-rc.1",
        ];
        shape(&importing(&imports, &["agentbox:plugin/agent@0.2.0"])).unwrap();
        for import in imports {
            let err = shape(&importing(&[import], &["agentbox:plugin/agent@0.1.0"])).unwrap_err();
            assert!(
                err.to_string().contains(&format!(
                    "it imports `{import}` but targets agentbox:plugin@0.1.0"
                )),
                "{err}"
            );
        }
        let err = shape(&importing(
            &["wasi:keyvalue/store@0.2.0-draft"],
            &["agentbox:plugin/agent@0.2.0"],
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("wasi:http and wasi:config"),
            "{err}"
        );
    }

    #[test]
    fn the_registry_comes_with_world_0_2_only() {
        shape(&importing(
            &["agentbox:plugin/registry@0.2.0"],
            &["agentbox:plugin/agent@0.2.0"],
        ))
        .unwrap();
        let err = shape(&importing(
            &["agentbox:plugin/registry@0.1.0"],
            &["agentbox:plugin/agent@0.1.0"],
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains(
                "imports `agentbox:plugin/registry@0.1.0`, which the world does not provide"
            ),
            "{err}"
        );
    }

    #[test]
    fn exports_besides_the_agent_are_listed() {
        let read = shape(&exporting(&["agentbox:plugin/agent@0.2.0", "init"])).unwrap();
        assert_eq!(
            (read.world.as_str(), read.extra_exports),
            ("0.2.0", vec!["init".to_owned()])
        );
        let read = shape(&exporting(&["agentbox:plugin/agent@0.1.0"])).unwrap();
        assert!(read.extra_exports.is_empty());
    }
}
