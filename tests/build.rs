//! Builds every plugin in `plugins/` from source and writes `plugins.rs`:
//! one constant per plugin holding the path of its component, and
//! `for_each_plugin!`, which the tests use to insist that every plugin has a
//! test module.
//!
//! The Rust plugins build for `wasm32-wasip2`; those in `plugins/python/`
//! and `plugins/js/` with componentize-py and componentize-js
//! ([`guests`]), as `python_NAME` and `js_NAME`.

#[path = "build/guests.rs"]
mod guests;

use std::path::PathBuf;
use std::process::{Command, Stdio};

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let root = manifest_dir
        .parent()
        .expect("the tests crate sits in the workspace");
    let plugins = root.join("plugins");
    // Watch the sources, not `plugins/target`, which this build writes.
    let sources = std::fs::read_dir(&plugins)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", plugins.display()))
        .map(|entry| entry.expect("cannot read plugins/").path())
        .filter(|path| !path.ends_with("target"));
    // Not the tools installed under guest-sdk/, which a build never changes.
    let sdk = [
        "Cargo.toml",
        "src",
        "macros",
        "python/agentbox",
        "python/requirements.txt",
        "js/agentbox.js",
        "js/package-lock.json",
    ]
    .map(|part| root.join("guest-sdk").join(part));
    for watched in sources.chain(sdk).chain([root.join("wit")]) {
        println!("cargo:rerun-if-changed={}", watched.display());
    }
    println!("cargo:rerun-if-env-changed={}", guests::SKIP);
    println!("cargo::rustc-check-cfg=cfg(guest_languages)");
    check_target();
    // The interpreters' plugins build on threads of their own meanwhile.
    let guests = guests::build(root);

    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--workspace",
            "--target",
            TARGET,
            "--message-format",
            "json-render-diagnostics",
        ])
        .stderr(Stdio::inherit());
    // Settings meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cargo.env_remove(var);
    }
    let output = cargo
        .output()
        .expect("cannot run cargo to build the plugins");
    if !output.status.success() {
        panic!(
            "building the plugins in {} for {TARGET} failed; cargo's messages are above",
            plugins.display()
        );
    }

    let mut components: Vec<(String, PathBuf)> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| {
            message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "cdylib"))
        })
        .filter_map(|message| {
            let name = message["target"]["name"].as_str()?.replace('-', "_");
            let wasm = message["filenames"]
                .as_array()?
                .iter()
                .filter_map(|file| file.as_str())
                .find(|file| file.ends_with(".wasm"))?;
            Some((name, PathBuf::from(wasm)))
        })
        .collect();
    components.extend(guests.join().expect("the guest builds panicked"));
    components.sort();
    components.dedup();

    let mut generated = String::new();
    for (name, wasm) in &components {
        generated += &format!(
            "/// The `{name}` plugin, built from `plugins/`.\npub const {}: &str = {:?};\n",
            name.to_uppercase(),
            wasm.display().to_string()
        );
    }
    let names: Vec<&str> = components.iter().map(|(name, _)| name.as_str()).collect();
    generated += &format!(
        "/// Calls `$m!(name)` for each plugin.\n#[macro_export]\nmacro_rules! for_each_plugin {{ ($m:ident) => {{ {} }} }}\n",
        names
            .iter()
            .map(|name| format!("$m!({name});"))
            .collect::<String>()
    );
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("plugins.rs"), generated).expect("cannot write plugins.rs");
}

/// Fails with a message that says what to do when the target is missing,
/// naming the toolchain that is really building: the one `RUSTC` belongs to
/// (rustup may lay it out as a link to another folder, whose name the
/// sysroot would show instead).
fn check_target() {
    let rustc = PathBuf::from(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()));
    let run = |arg: &str| {
        let output = Command::new(&rustc)
            .arg(arg)
            .output()
            .expect("cannot run rustc");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let sysroot = PathBuf::from(run("--print=sysroot"));
    if sysroot.join("lib/rustlib").join(TARGET).exists() {
        return;
    }
    // `…/toolchains/NAME/bin/rustc`: NAME is what rustup calls it.
    let toolchain = rustc
        .parent()
        .and_then(|bin| bin.parent())
        .filter(|dir| dir.parent().is_some_and(|up| up.ends_with("toolchains")))
        .and_then(|dir| dir.file_name())
        .map(|name| name.to_string_lossy().into_owned());
    let add = match &toolchain {
        Some(name) => format!("rustup target add {TARGET} --toolchain {name}"),
        None => format!("rustup target add {TARGET}"),
    };
    panic!(
        "the Rust target {TARGET} is not installed for {} ({}), which builds this workspace; \
         the plugins in plugins/ need it. Run `{add}` (rustup adds it by itself from \
         rust-toolchain.toml when it installs the toolchain).",
        toolchain.as_deref().unwrap_or("the active toolchain"),
        run("--version"),
    );
}
