//! A plugin that attacks the host from every export, written against the
//! WIT alone so that it can return what no SDK would: malformed JSON, state
//! of the wrong shape. What it does is chosen from outside:
//!
//! - `on-start` spins forever when the initial variables hold `"spin": true`;
//! - a message orders the turn: `spin`, `recurse` (unbounded recursion),
//!   `deep` (unbounded recursion in wasm locals), `stdout N` and `stderr N` (write N MiB, then say `wrote N MiB`),
//!   `chatter` (write to stdout forever), `calls N` (call the host N times),
//!   `hog` (allocate without bound), `escape ADDRESS` (try to read a file,
//!   connect to ADDRESS, read the environment and arguments), `remember KEY VALUE` (store VALUE
//!   under KEY), or anything else (count it in `seen`);
//! - tools: `spin` spins, `junk` returns text that is not JSON;
//! - `on-end` spins when `end` is `"spin"` in the state, and panics when it
//!   is `"trap"`;
//! - `migrate` (from state version 1 to its 2) spins when `migrate` is
//!   `"spin"` in the state, returns text that is not JSON for `"junk"` and a
//!   JSON array for `"array"`, and otherwise keeps the state as it is.

wit_bindgen::generate!({ path: "../../../wit/v0.1", world: "plugin" });

use std::io::Write as _;

use agentbox::plugin::session;
use agentbox::plugin::types::{EndReason, Manifest, Outcome, ToolSpec};
use exports::agentbox::plugin::agent::Guest;

struct Rogue;

fn spin() -> ! {
    loop {
        std::hint::black_box(());
    }
}

/// Recurses until the wasm call stack runs out: its frames hold only wasm
/// locals.
fn deep(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    std::hint::black_box(deep(std::hint::black_box(depth + 1))) + 1
}

/// Recurses until the stack in linear memory runs out; `black_box` keeps
/// the frames there.
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    let frame = std::hint::black_box([depth; 64]);
    recurse(frame[depth as usize % 64] + 1) + frame[0]
}

fn write_mib(out: &mut dyn std::io::Write, mib: usize) -> Result<(), String> {
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..mib {
        out.write_all(&chunk).map_err(|err| err.to_string())?;
    }
    Ok(())
}

fn tool(name: &str, description: &str) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: description.into(),
        parameters: r#"{"type": "object"}"#.into(),
        result_schema: None,
        requires: Vec::new(),
        cache_ttl_ms: None,
    }
}

/// Whether the state (as JSON text) holds `"key": "value"`.
fn holds(state: &str, key: &str, value: &str) -> bool {
    state.contains(&format!(r#""{key}":"{value}""#))
}

impl Guest for Rogue {
    fn describe() -> Manifest {
        Manifest {
            name: "rogue".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Attacks the host from every export".into(),
            state_version: 2,
            state_schema: None,
            tools: vec![
                tool("spin", "Never returns"),
                tool("junk", "Returns text that is not JSON"),
            ],
        }
    }

    fn on_start() -> Result<(), String> {
        if session::initial_variables().contains(r#""spin":true"#) {
            spin();
        }
        Ok(())
    }

    fn on_message(text: String) -> Result<Outcome, String> {
        let (order, rest) = text.split_once(' ').unwrap_or((&text, ""));
        match order {
            "spin" => spin(),
            "recurse" => {
                recurse(0);
            }
            "deep" => {
                deep(0);
            }
            "chatter" => loop {
                let _ = std::io::stdout().write_all(b"chatter chatter chatter\n");
            },
            "stdout" | "stderr" => {
                let mib = rest
                    .parse()
                    .map_err(|_| format!("`{rest}` is not a number"))?;
                if order == "stdout" {
                    write_mib(&mut std::io::stdout(), mib)?;
                } else {
                    write_mib(&mut std::io::stderr(), mib)?;
                }
                agentbox::plugin::output::say(&format!("wrote {mib} MiB"));
            }
            "calls" => {
                let calls: u64 = rest
                    .parse()
                    .map_err(|_| format!("`{rest}` is not a number"))?;
                for _ in 0..calls {
                    std::hint::black_box(session::turn());
                }
                agentbox::plugin::output::say(&format!("made {calls} calls"));
            }
            "hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            "escape" => {
                // Everything the host does not grant: files, the network,
                // the host's environment and arguments.
                let fs = std::fs::read("/etc/passwd").map_or("refused", |_| "READ");
                let net = std::net::TcpStream::connect(rest).map_or("refused", |_| "CONNECTED");
                let env = std::env::vars().count();
                let args = std::env::args().count();
                agentbox::plugin::output::say(&format!(
                    "fs: {fs}, net: {net}, env: {env} vars, args: {args}"
                ));
            }
            "remember" => {
                let (key, value) = rest.split_once(' ').ok_or("remember KEY VALUE")?;
                session::set(key, value).map_err(|err| format!("{err:?}"))?;
            }
            _ => {
                let seen: u64 = session::get("seen")
                    .and_then(|json| json.parse().ok())
                    .unwrap_or(0);
                session::set("seen", &(seen + 1).to_string()).map_err(|err| format!("{err:?}"))?;
            }
        }
        Ok(Outcome::Continue)
    }

    fn call_tool(name: String, _args: String) -> Result<String, String> {
        match name.as_str() {
            "spin" => spin(),
            "junk" => Ok("{\"unterminated\": ".into()),
            other => Err(format!("no tool `{other}`")),
        }
    }

    fn on_end(_reason: EndReason) -> Result<(), String> {
        match session::get("end").as_deref() {
            Some(r#""spin""#) => spin(),
            Some(r#""trap""#) => panic!("trapping in on-end"),
            _ => Ok(()),
        }
    }

    fn migrate(_from: u32, state: String) -> Result<String, String> {
        if holds(&state, "migrate", "spin") {
            spin();
        }
        if holds(&state, "migrate", "junk") {
            return Ok("{\"state\": [1, 2".into());
        }
        if holds(&state, "migrate", "array") {
            return Ok("[1, 2, 3]".into());
        }
        Ok(state)
    }
}

export!(Rogue);
