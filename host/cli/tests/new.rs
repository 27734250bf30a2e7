//! `agentbox new` and `agentbox dev` as a newcomer runs them: a plugin
//! folder for each language, built by its own build script and replayed by
//! its own test script, then served and swapped in at each change, with
//! the guest tools the repository's tests build with.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Server, json_of, request};
use serde_json::{Value, json};

/// A guest tool as `guest-sdk/install-tools` installs it for the tests'
/// build, which the build scripts take from the environment instead of
/// installing their own; else `name`, from `PATH`.
fn tool(installed: &str, name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../guest-sdk")
        .join(installed);
    if path.exists() {
        path
    } else {
        PathBuf::from(name)
    }
}

/// `command` with the guest tools the tests build with in the variables
/// the build scripts read, and no input.
fn with_guest_tools(command: &mut Command) -> &mut Command {
    command
        .env(
            "COMPONENTIZE_PY",
            tool("python/.venv/bin/componentize-py", "componentize-py"),
        )
        .env(
            "COMPONENTIZE_JS",
            tool("js/node_modules/.bin/componentize-js", "componentize-js"),
        )
        .env("TSC", tool("js/node_modules/.bin/tsc", "tsc"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
}

fn agentbox_new(dir: &Path, name: &str, lang: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentbox"))
        .args(["new", name, "--lang", lang])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run agentbox")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether the tests' build left the Python and JavaScript plugins out,
/// as `AGENTBOX_SKIP_GUEST_LANGUAGES=1` asks; then so do these tests.
fn without_guest_languages() -> bool {
    let skip = std::env::var_os("AGENTBOX_SKIP_GUEST_LANGUAGES").is_some_and(|value| value == "1");
    if skip {
        eprintln!("AGENTBOX_SKIP_GUEST_LANGUAGES=1: no Python or JavaScript plugin is built");
    }
    skip
}

/// Python and JavaScript plugins are made, built and replayed by their
/// guides' commands (below); a TypeScript one by its own scripts here.
#[test]
fn a_new_typescript_plugin_builds_and_replays_its_conversation() {
    if without_guest_languages() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (scratch, lang, name) = (dir.path(), "ts", "typed");
    let made = agentbox_new(scratch, name, lang);
    assert!(made.status.success(), "{lang}: {}", text(&made.stderr));
    let said = text(&made.stdout);
    assert!(
        said.contains(&format!("agentbox run {name}.wasm")),
        "{said}"
    );
    let folder = scratch.join(name);
    let mut test = Command::new(folder.join("test.sh"));
    replays_the_conversation(with_guest_tools(&mut test), lang, name);
}

/// A Rust plugin is a cargo package with the helper library in it, built
/// with the toolchain and crates it pins; those crates are compiled once,
/// for the repository's plugins and this one alike.
#[test]
fn a_new_rust_plugin_builds_with_cargo_and_replays_its_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let (scratch, lang, name) = (dir.path(), "rust", "crabby");
    let made = agentbox_new(scratch, name, lang);
    assert!(made.status.success(), "{lang}: {}", text(&made.stderr));
    assert!(
        text(&made.stdout).contains("agentbox run . --var name=Ada"),
        "{}",
        text(&made.stdout)
    );
    let folder = scratch.join(name);
    let mut test = Command::new(folder.join("test.sh"));
    replays_the_conversation(test.env("CARGO_TARGET_DIR", plugins_target()), lang, name);
}

/// The repository plugins' cargo target folder: a new Rust plugin built
/// there compiles none of the crates they share again.
fn plugins_target() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/target")
}

/// Runs the `test.sh` of a new plugin `name` in `lang`, which builds it
/// and replays the sample conversation, and checks what it said.
fn replays_the_conversation(test: &mut Command, lang: &str, name: &str) {
    let replayed = test
        .env("AGENTBOX", env!("CARGO_BIN_EXE_agentbox"))
        .output()
        .unwrap();
    // What the agent said is on stdout, what agentbox says on stderr.
    let out = text(&replayed.stdout) + &text(&replayed.stderr);
    assert!(replayed.status.success(), "{lang}: {out}");
    for line in [
        format!("{name}> Hello, Ada!"),
        format!("{name}> Visit 1: you said hello"),
        "[tool rename: {\"name\":\"Grace\"}]".to_owned(),
        format!("{name}> Visit 2: you said bye"),
        "has ended".to_owned(),
    ] {
        assert!(out.contains(&line), "{lang}: no `{line}` in\n{out}");
    }
}

#[test]
fn a_new_plugin_needs_a_plugin_name_and_a_folder_of_its_own_and_dev_a_plugins_folder() {
    let scratch = tempfile::tempdir().unwrap();
    let refused = agentbox_new(scratch.path(), "Bad_Name", "python");
    assert!(!refused.status.success());
    let said = text(&refused.stderr);
    assert!(said.contains("cannot name a plugin `Bad_Name`"), "{said}");

    std::fs::create_dir(scratch.path().join("taken")).unwrap();
    std::fs::write(scratch.path().join("taken/notes.txt"), "mine").unwrap();
    let refused = agentbox_new(scratch.path(), "taken", "js");
    assert!(!refused.status.success());
    let said = text(&refused.stderr);
    assert!(said.contains("exists and is not empty"), "{said}");
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("taken/notes.txt")).unwrap(),
        "mine"
    );
    assert_eq!(
        std::fs::read_dir(scratch.path().join("taken"))
            .unwrap()
            .count(),
        1
    );

    // A folder that is no plugin is not served.
    let refused = Command::new(env!("CARGO_BIN_EXE_agentbox"))
        .arg("dev")
        .arg(scratch.path().join("taken"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(scratch.path().join("data"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = text(&refused.stderr);
    assert!(
        said.contains("has neither a build.sh (as `agentbox new` writes) nor a Cargo.toml"),
        "{said}"
    );

    let refused = agentbox_new(scratch.path(), "other", "cobol");
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("invalid value 'cobol'"));
}

/// Sends `text` to session `id` of `server`: what the agent said, and the
/// state it committed.
fn message(server: &Server, id: &str, text: &str) -> (String, Value) {
    let (status, body) = request(
        "POST",
        &server.url(&format!("/v1/sessions/{id}/messages")),
        Some(&json!({ "text": text }).to_string()),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let events: Vec<Value> = body.lines().map(json_of).collect();
    let said = events
        .iter()
        .filter(|event| event["event"] == "say")
        .map(|event| event["text"].as_str().unwrap())
        .collect();
    let committed = events.last().unwrap();
    assert_eq!(committed["event"], "committed", "{body}");
    (said, committed["state"].clone())
}

#[test]
fn a_plugin_under_dev_is_built_again_and_swapped_in_at_each_change_keeping_its_sessions() {
    if without_guest_languages() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    assert!(
        agentbox_new(scratch.path(), "greeter", "python")
            .status
            .success()
    );
    let folder = scratch.path().join("greeter");
    let componentize = tool("python/.venv/bin/componentize-py", "componentize-py");
    let server = Server::start_dev(
        &folder,
        &scratch.path().join("data"),
        &[("COMPONENTIZE_PY", componentize.to_str().unwrap())],
    );
    let (status, body) = request(
        "POST",
        &server.url("/v1/sessions"),
        Some(&json!({ "plugin": "greeter", "variables": { "name": "Ada" } }).to_string()),
        None,
    );
    assert_eq!(status, 201, "{body}");
    let id = json_of(&body)["session"].as_str().unwrap().to_owned();
    assert_eq!(message(&server, &id, "hello").0, "Visit 1: you said hello");

    // A change of the source is built and swapped in; the session goes on.
    let app = folder.join("app.py");
    let source = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, source.replace("say(f\"Visit ", "say(f\"Turn ")).unwrap();
    server.wait_for("app.py changed");
    server.wait_for("is active");
    let (said, state) = message(&server, &id, "again");
    assert_eq!(said, "Turn 2: you said again");
    assert_eq!(state, json!({ "name": "Ada", "visits": 2 }));
    // The builds were compiled keeping their functions, for the next.
    let functions = std::fs::read_dir(scratch.path().join("data/dev-functions")).unwrap();
    assert!(functions.count() > 1000, "the interpreter's functions");

    // A change that does not build leaves the running version serving.
    std::fs::write(
        &app,
        source.replace("say(f\"Visit ", "say(f\"Turn ") + "def broken(:\n",
    )
    .unwrap();
    let lines = server.lines_until("the build failed, so the running version keeps serving");
    assert!(
        !lines.iter().any(|line| line.contains("is active")),
        "{lines:?}"
    );
    assert_eq!(message(&server, &id, "still").0, "Turn 3: you said still");
    let (status, _) = server.terminate();
    assert!(status.success());
}

/// The shell blocks of guide `guide` (in `docs/guests`), in order: what a
/// reader types. Blocks that only show a command are `text`, not `sh`.
fn shell_blocks(guide: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/guests")
        .join(guide);
    let text = std::fs::read_to_string(path).unwrap();
    text.split("```sh\n")
        .skip(1)
        .map(|rest| rest.split_once("```").expect("a block ends").0.to_owned())
        .collect()
}

/// Runs guide `guide`'s shell blocks as one script in a scratch folder,
/// with `agentbox` on `PATH`, the server the guide starts with `agentbox
/// dev` on free port `port` in the background; what the script printed.
fn run_guide(guide: &str, port: u16) -> String {
    let mut script = String::from("set -eu\n");
    for block in shell_blocks(guide) {
        for line in block
            .replace("localhost:8080", &format!("localhost:{port}"))
            .lines()
        {
            if line.trim() == "agentbox dev" {
                script += &format!(
                    "agentbox dev --listen 127.0.0.1:{port} >dev.log 2>&1 &\n\
                     DEV=$!\n\
                     trap 'kill $DEV' EXIT\n\
                     for _ in $(seq 600); do curl -sf localhost:{port}/healthz >/dev/null && break; sleep 0.5; done\n"
                );
            } else {
                script += line;
                script += "\n";
            }
        }
    }
    let scratch = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_agentbox")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ran = with_guest_tools(Command::new("bash").args(["-c", &script]))
        .current_dir(scratch.path())
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", plugins_target())
        .output()
        .unwrap();
    let out = text(&ran.stdout);
    assert!(
        ran.status.success(),
        "{guide} stops running:\n{script}\n{out}\n{}",
        text(&ran.stderr)
    );
    out
}

#[test]
fn each_guides_commands_run_as_written_from_nothing_to_a_served_plugin() {
    if without_guest_languages() {
        return;
    }
    std::thread::scope(|scope| {
        for guide in ["python.md", "javascript.md", "rust.md"] {
            scope.spawn(move || {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                let out = run_guide(guide, port);
                for said in [
                    "greeter> Hello, Ada!",
                    "greeter> Visit 2: you said bye",
                    "\"said\":[\"Hello, Ada!\"],\"session\":\"ada-1\"",
                    "Visit 1: you said hello",
                    "\"result\":{\"name\":\"Grace\"}",
                    // Over MCP: a conversation of its own, greeting first.
                    "[{\"type\":\"text\",\"text\":\"Hello, stranger!\"},{\"type\":\"text\",\"text\":\"Visit 1: you said hi\"}]",
                ] {
                    assert!(out.contains(said), "{guide}: no `{said}` in\n{out}");
                }
            });
        }
    });
}
