//! The `agentbox` command as a user runs it: a separate process, plugins
//! given as cargo package folders (which the command builds), output read
//! from its stdout and stderr.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

fn plugin_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins")
        .join(name)
}

/// `agentbox SUBCOMMAND --data-dir DATA`.
fn agentbox(subcommand: &str, data: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agentbox"));
    command
        .arg(subcommand)
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn");
    command
}

fn run_output(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .expect("cannot run agentbox")
}

fn json_lines(output: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("`{line}`: {err}")))
        .collect()
}

/// The last line agentbox wrote to stderr (cargo's build messages come before it).
fn last_stderr_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

/// Reads JSON events from a running `agentbox run --json` on a thread.
fn events(stdout: ChildStdout) -> mpsc::Receiver<Value> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if send
                .send(
                    serde_json::from_str(&line).expect("agentbox printed a line that is not JSON"),
                )
                .is_err()
            {
                break;
            }
        }
    });
    receive
}

fn next_committed(events: &mpsc::Receiver<Value>) -> Value {
    loop {
        let event = events
            .recv_timeout(Duration::from_secs(120))
            .expect("agentbox stopped before committing");
        if event["event"] == "committed" {
            return event;
        }
        assert_ne!(event["event"], "error", "{event}");
    }
}

#[test]
fn a_killed_run_loses_no_committed_turn() {
    let data = tempfile::tempdir().unwrap();
    let mut child: Child = agentbox("run", data.path())
        .args(["--session", "ticket-42", "--json"])
        .arg(plugin_dir("intake"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let events = events(child.stdout.take().unwrap());
    let mut last = next_committed(&events);
    assert_eq!(last["turn"], 0);
    for line in ["my name is Ada", "ada@example.com"] {
        writeln!(stdin, "{line}").unwrap();
        last = next_committed(&events);
    }
    assert_eq!(last["turn"], 2);
    // Kill it with a turn in flight.
    writeln!(stdin, "I need a laptop").unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    while let Ok(event) = events.try_recv() {
        if event["event"] == "committed" {
            last = event;
        }
    }

    let script = data.path().join("script.txt");
    std::fs::write(&script, "/state\n").unwrap();
    let resumed = run_output(
        agentbox("run", data.path())
            .args(["--session", "ticket-42", "--json", "--script"])
            .arg(&script)
            .arg(plugin_dir("intake")),
    );
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let resumed = json_lines(&resumed.stdout);
    assert_eq!(resumed[0]["event"], "session");
    assert_eq!(resumed[0]["resumed"], true);
    let state = &resumed[1];
    assert_eq!(state["event"], "state");
    let seen_turn = last["turn"].as_u64().unwrap();
    let stored_turn = state["turn"].as_u64().unwrap();
    if stored_turn == seen_turn {
        assert_eq!(
            state["state"], last["state"],
            "the last committed turn the caller saw is stored as it was"
        );
    } else {
        // The in-flight turn committed before the kill, unseen by the caller.
        assert_eq!(stored_turn, seen_turn + 1);
        assert_eq!(state["state"]["reason"], "a laptop");
        assert_eq!(state["state"]["email"], last["state"]["email"]);
    }
    assert_eq!(state["state"]["name"], "Ada");
    assert_eq!(state["state"]["email"], "ada@example.com");
}

#[test]
fn run_prints_say_committed_and_error_events_as_json() {
    let data = tempfile::tempdir().unwrap();
    let script = data.path().join("script.txt");
    std::fs::write(&script, "note\ntrap\n\nnote\n/end\n").unwrap();
    let output = run_output(
        agentbox("run", data.path())
            .args(["--store", "memory", "--json", "--script"])
            .arg(&script)
            .arg(plugin_dir("hostile/misbehave")),
    );
    assert!(
        !output.status.success(),
        "a script with a failed turn exits non-zero"
    );
    let events = json_lines(&output.stdout);
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| event["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "session",
            "committed",
            "say",
            "committed",
            "error",
            "say",
            "committed",
            "say",
            "committed"
        ]
    );
    assert_eq!(events[2], json!({ "event": "say", "text": "entry 1" }));
    assert_eq!(events[3]["turn"], 1);
    assert_eq!(events[3]["state"], json!({ "entries": 1 }));
    assert_eq!(events[4]["kind"], "trap");
    assert!(
        events[4]["message"]
            .as_str()
            .unwrap()
            .contains("deliberate trap after a set"),
        "{}",
        events[4]
    );
    assert!(
        events[4]["guest_output"]
            .as_str()
            .is_some_and(|output| output.contains("deliberate trap after a set")),
        "run shows what the plugin wrote before it failed: {}",
        events[4]
    );
    assert_eq!(events[6]["turn"], 2);
    assert_eq!(events[6]["state"], json!({ "entries": 2 }));
    assert_eq!(
        events[7],
        json!({ "event": "say", "text": "goodbye after 2 entries" }),
        "what on-end said is shown"
    );
    assert_eq!(events[8]["state"], json!({ "entries": 2, "ended": true }));
}

#[test]
fn logs_written_to_a_file_or_pipe_carry_no_colour_codes() {
    let data = tempfile::tempdir().unwrap();
    let script = data.path().join("script.txt");
    // No policy allows the fetcher anything: the refusal is logged.
    std::fs::write(&script, "/tool fetch {\"url\": \"http://127.0.0.1:9/\"}\n").unwrap();
    let output = run_output(
        agentbox("run", data.path())
            .args(["--store", "memory", "--script"])
            .arg(&script)
            .arg(plugin_dir("fetcher")),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("outbound request refused"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}

#[test]
fn run_shows_replies_and_state_changes_as_text() {
    let data = tempfile::tempdir().unwrap();
    let script = data.path().join("script.txt");
    std::fs::write(&script, "my name is Ada\n").unwrap();
    let output = run_output(
        agentbox("run", data.path())
            .args(["--var", "name=Grace", "--script"])
            .arg(&script)
            .arg(plugin_dir("intake")),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let expected = "intake> Welcome, Grace! I will take down your request.\n\
                    intake> Still needed: email, reason.\n  \
                    [turn 0 committed: + name = \"Grace\", + turns = 0]\n\
                    you> my name is Ada\n\
                    intake> Noted your name.\n\
                    intake> Still needed: email, reason.\n  \
                    [turn 1 committed: ~ name = \"Ada\", ~ turns = 1]\n";
    assert_eq!(stdout, expected);
    assert!(
        data.path().join("agentbox.db").is_file(),
        "the default store is SQLite in the data folder"
    );
}

#[test]
fn inspect_shows_the_manifest_and_reuses_the_compiled_artifact() {
    let data = tempfile::tempdir().unwrap();
    let first = run_output(
        agentbox("inspect", data.path())
            .args(["--json"])
            .arg(plugin_dir("intake")),
    );
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(first["world"], "agentbox:plugin@0.2.0");
    assert_eq!(first["name"], "intake");
    assert_eq!(first["loads"], true);
    assert_eq!(first["artifact"]["cached"], false);
    assert!(
        first["initial_memory_bytes"].as_u64().unwrap() > 1 << 20,
        "a Rust guest starts with its 1 MiB stack: {first}"
    );
    assert_eq!(first["extra_exports"], json!([]));
    assert_eq!(first["instance"]["memories"], 1);
    assert!(
        first["instance"]["core_instances"].as_u64().unwrap() >= 1,
        "{first}"
    );
    assert_eq!(first["may_call"], json!([]));
    let second = run_output(agentbox("inspect", data.path()).arg(plugin_dir("intake")));
    let text = String::from_utf8_lossy(&second.stdout);
    assert!(
        text.contains("world         agentbox:plugin@0.2.0\n"),
        "{text}"
    );
    assert!(
        text.contains("artifact      loaded precompiled from the cache in "),
        "a second start does not recompile: {text}"
    );
    assert!(text.ends_with("loads         yes\n"), "{text}");
    assert!(
        text.contains(
            "reaches       nothing (the policy names no [plugins.NAME.http] or config for it)\n"
        ),
        "{text}"
    );
    assert!(text.contains("calls         its own tools\n"), "{text}");
}

/// A compiler process given a folder of compiled functions keeps each
/// function there, and compiling the same component again takes them from
/// it: a function compiled again would be written anew, under a new inode.
#[test]
fn a_compiler_keeps_its_functions_in_the_function_cache_and_takes_them_from_it() {
    use std::os::unix::fs::MetadataExt as _;

    let data = tempfile::tempdir().unwrap();
    let built = run_output(agentbox("compile", data.path()).arg(plugin_dir("counter")));
    assert!(built.status.success(), "{}", last_stderr_line(&built));
    let wasm = std::fs::read(plugin_dir("target/wasm32-wasip2/release/counter.wasm")).unwrap();
    let functions = data.path().join("functions");
    let compile_with = |functions: &Path| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentbox"))
            .args(["compile-component", "--memory-bytes", "67108864"])
            .args(["--memory-budget-bytes", "1073741824", "--function-cache"])
            .arg(functions)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A compiler that refuses its settings exits before it reads.
        let _ = child.stdin.take().unwrap().write_all(&wasm);
        child.wait_with_output().unwrap()
    };
    // A folder that is not there is named.
    let missing = compile_with(&functions);
    assert!(!missing.status.success());
    assert!(
        last_stderr_line(&missing).starts_with(&format!(
            "cannot read the function cache {}: ",
            functions.display()
        )),
        "{}",
        last_stderr_line(&missing)
    );
    std::fs::create_dir(&functions).unwrap();
    let compile = || {
        let output = compile_with(&functions);
        assert!(output.status.success(), "{}", last_stderr_line(&output));
        assert!(!output.stdout.is_empty(), "an artifact");
    };
    let inodes = || {
        std::fs::read_dir(&functions)
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                (entry.file_name(), entry.metadata().unwrap().ino())
            })
            .collect::<std::collections::HashMap<_, _>>()
    };
    compile();
    let kept = inodes();
    assert!(kept.len() > 10, "{} functions kept", kept.len());
    compile();
    let again = inodes();
    let reused = kept
        .iter()
        .filter(|(name, inode)| again.get(*name) == Some(inode))
        .count();
    assert!(
        reused * 10 >= kept.len() * 9,
        "only {reused} of {} functions were taken from the cache",
        kept.len()
    );
}

#[test]
fn compile_fills_the_artifact_cache_a_server_on_the_same_settings_uses() {
    let data = tempfile::tempdir().unwrap();
    let compile = || {
        let output = run_output(
            agentbox("compile", data.path())
                .args(["--memory-mib", "64"])
                .arg(plugin_dir("counter")),
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let first = compile();
    let artifacts = data.path().join("artifacts");
    assert!(
        first.contains(" counter 0.1.0 (sha256:")
            && first.contains(": compiled in ")
            && first
                .trim_end()
                .ends_with(&format!(" ms into {}", artifacts.display())),
        "{first}"
    );
    assert!(
        compile()
            .trim_end()
            .ends_with(&format!("already compiled in {}", artifacts.display())),
        "the same settings find the artifact"
    );
    let inspected = run_output(
        agentbox("inspect", data.path())
            .args(["--memory-mib", "64"])
            .arg(plugin_dir("counter")),
    );
    let text = String::from_utf8_lossy(&inspected.stdout);
    assert!(
        text.contains("artifact      loaded precompiled from the cache in "),
        "{text}"
    );
}

#[test]
fn compile_refuses_what_is_not_a_plugin_naming_the_file_and_caches_nothing() {
    let data = tempfile::tempdir().unwrap();
    let script = data.path().join("script.wasm");
    std::fs::write(&script, "#!/bin/sh\necho hello\n").unwrap();
    let output = run_output(agentbox("compile", data.path()).arg(&script));
    assert!(!output.status.success());
    assert_eq!(
        last_stderr_line(&output),
        format!(
            "agentbox: cannot load {}: not a WebAssembly file: it does not start with the `\\0asm` magic number",
            script.display()
        )
    );
    let cached = std::fs::read_dir(data.path().join("artifacts"))
        .unwrap()
        .count();
    assert_eq!(cached, 0, "nothing is cached");
}

#[test]
fn inspect_shows_what_the_policy_lets_a_plugin_reach_without_its_secrets() {
    let data = tempfile::tempdir().unwrap();
    let policy = data.path().join("policy.toml");
    std::fs::write(
        &policy,
        r#"
        [plugins.assistant]
        may_call = ["shop/*", "intake/record_information"]
        [plugins.assistant.http]
        allow = ["https://api.example.com"]
        [[plugins.assistant.http.inject]]
        url = "https://api.example.com"
        header = "authorization"
        value = "Bearer {secret:api_key}"
        [plugins.assistant.config]
        model = "small"
        api_key = { env = "AGENTBOX_TEST_INSPECT_KEY" }
        "#,
    )
    .unwrap();
    let output = run_output(
        agentbox("inspect", data.path())
            .env("AGENTBOX_TEST_INSPECT_KEY", "sk-inspect-31")
            .arg("--policy")
            .arg(&policy)
            .arg(plugin_dir("assistant")),
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(
            "reaches       https://api.example.com:443; config: api_key=[secret], model=small\n"
        ),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("calls         its own tools, and shop/*, intake/record_information\n"),
        "{text}"
    );
    assert!(!text.contains("sk-inspect-31"), "{text}");
    // A missing secret refuses the policy, naming it.
    let output = run_output(
        agentbox("inspect", data.path())
            .env_remove("AGENTBOX_TEST_INSPECT_KEY")
            .arg("--policy")
            .arg(&policy)
            .arg(plugin_dir("assistant")),
    );
    assert!(!output.status.success());
    assert!(
        last_stderr_line(&output).contains(
            "[plugins.assistant] config `api_key`: the environment variable `AGENTBOX_TEST_INSPECT_KEY` is not set"
        ),
        "{}",
        last_stderr_line(&output)
    );
}

#[test]
fn inspect_refuses_what_is_not_an_agentbox_plugin_in_one_line() {
    let data = tempfile::tempdir().unwrap();
    let text = data.path().join("notes.wasm");
    std::fs::write(&text, "hello").unwrap();
    let module = data.path().join("module.wasm");
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    let cases = [
        (text, "not a WebAssembly file"),
        (module, "this is a core WebAssembly module, not a component"),
        (
            plugin_dir("hostile/other-world"),
            "not an agentbox plugin for world agentbox:plugin@0.1.0 or @0.2.0: it does not export `agentbox:plugin/agent@0.2.0`",
        ),
        (
            plugin_dir("hostile/bad-name"),
            "invalid manifest: plugin name `Bad Name!` is not a valid name",
        ),
    ];
    for (path, reason) in cases {
        let output = run_output(agentbox("inspect", data.path()).arg(&path));
        assert!(!output.status.success(), "{} was accepted", path.display());
        let line = last_stderr_line(&output);
        assert!(
            line.starts_with(&format!(
                "agentbox: cannot load {}: {reason}",
                path.display()
            )),
            "{line}"
        );
        assert!(output.stdout.is_empty());
    }
}

/// A component that passes the world check, since it exports the agent
/// interface by name, but exports an instance it does not have: only
/// compiling it finds that.
fn a_component_that_does_not_compile() -> Vec<u8> {
    let name = b"agentbox:plugin/agent@0.1.0";
    let mut export = vec![0x01, 0x00, name.len() as u8];
    export.extend_from_slice(name);
    export.extend([0x05, 0x00, 0x00]); // instance 0, no type ascribed
    let mut component = vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
    component.extend([0x0b, export.len() as u8]);
    component.extend(export);
    component
}

#[test]
fn compiling_runs_in_a_child_process_under_a_time_budget() {
    let data = tempfile::tempdir().unwrap();
    let artifacts = data.path().join("artifacts");
    let cached = || std::fs::read_dir(&artifacts).map_or(0, |dir| dir.count());

    let over = run_output(
        agentbox("inspect", data.path())
            .args(["--compile-timeout-ms", "1"])
            .arg(plugin_dir("intake")),
    );
    assert!(!over.status.success());
    assert!(
        last_stderr_line(&over).ends_with(
            "the component was refused: compiling it took longer than the budget of 1 ms"
        ),
        "{}",
        last_stderr_line(&over)
    );
    assert_eq!(cached(), 0, "a refused component is not cached");

    let broken = data.path().join("broken.wasm");
    std::fs::write(&broken, a_component_that_does_not_compile()).unwrap();
    let invalid = run_output(agentbox("inspect", data.path()).arg(&broken));
    let line = last_stderr_line(&invalid);
    assert!(
        line.starts_with(&format!(
            "agentbox: cannot load {}: invalid WebAssembly component: ",
            broken.display()
        )) && line.contains("instance index out of bounds"),
        "the compiler process says why: {line}"
    );

    let within = run_output(agentbox("inspect", data.path()).arg(plugin_dir("intake")));
    assert!(
        within.status.success(),
        "{}",
        String::from_utf8_lossy(&within.stderr)
    );
    assert_eq!(cached(), 1, "the accepted one is");

    let zero = run_output(
        agentbox("inspect", data.path())
            .args(["--compile-timeout-ms", "0"])
            .arg(plugin_dir("intake")),
    );
    assert!(!zero.status.success());
    assert!(
        String::from_utf8_lossy(&zero.stderr).contains("'--compile-timeout-ms <MS>'"),
        "{}",
        String::from_utf8_lossy(&zero.stderr)
    );
}

#[test]
fn a_compile_budget_out_of_range_in_the_serve_settings_file_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("serve.toml");
    for (setting, reason) in [
        (
            "compile_timeout_ms = 0",
            "compile_timeout_ms must be at least 1",
        ),
        (
            "compile_memory_mib = 16",
            "compile_memory_mib must be 64 to 1048576",
        ),
    ] {
        std::fs::write(&config, format!("{setting}\n")).unwrap();
        let output = run_output(agentbox("serve", data.path()).arg("--config").arg(&config));
        assert!(!output.status.success());
        assert_eq!(
            last_stderr_line(&output),
            format!(
                "agentbox: the config file {} is invalid: {reason}",
                config.display()
            )
        );
    }
}

#[test]
fn run_refuses_a_bad_store_and_a_bad_variable_with_usage_errors() {
    let data = tempfile::tempdir().unwrap();
    let bad_store =
        run_output(agentbox("run", data.path()).args(["--store", "postgres:x", "some.wasm"]));
    assert_eq!(bad_store.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad_store.stderr)
            .contains("`postgres:x` is not a store: use `memory`, `sqlite:PATH`")
    );
    let bad_var = run_output(agentbox("run", data.path()).args(["--var", "novalue", "some.wasm"]));
    assert_eq!(bad_var.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_var.stderr).contains("`novalue` is not KEY=VALUE"));
}

#[test]
fn a_policy_file_grants_buckets_and_a_bad_one_is_refused_naming_the_mistake() {
    let data = tempfile::tempdir().unwrap();
    let policy = data.path().join("policy.toml");
    std::fs::write(&policy, "[plugins.kv-probe]\nbuckets = [\"crm\"]\n").unwrap();
    let script = data.path().join("script.txt");
    std::fs::write(
        &script,
        "/tool put {\"bucket\":\"crm\",\"key\":\"k\",\"value\":\"v\"}\n\
         /tool get {\"bucket\":\"crm\",\"key\":\"k\"}\n\
         /tool get {\"bucket\":\"sales\",\"key\":\"k\"}\n",
    )
    .unwrap();
    let output = run_output(
        agentbox("run", data.path())
            .args(["--json", "--policy"])
            .arg(&policy)
            .arg("--script")
            .arg(&script)
            .arg(plugin_dir("kv-probe")),
    );
    let events = json_lines(&output.stdout);
    let tools: Vec<&Value> = events
        .iter()
        .filter(|event| event["event"] == "tool-result")
        .collect();
    assert_eq!(tools[1]["result"], "v", "{events:?}");
    let error = events.last().unwrap();
    assert_eq!(error["event"], "error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .ends_with("denied: plugin `kv-probe` is not granted bucket `sales` (the operator grants buckets in the policy file)"),
        "{error}"
    );

    for (text, mistake) in [
        (
            "[sessions]\nidel_ttl_ms = 5\n",
            "unknown field `idel_ttl_ms`, expected one of `idle_ttl_ms`, `max_lifetime_ms`, `max_live`",
        ),
        (
            "[plugins.kv-probe]\nbuckets = [\"global\"]\n",
            "[plugins.kv-probe] buckets: bucket `global` is every plugin's own and cannot be granted",
        ),
        (
            "[kv]\nmax_keys = \"many\"\n",
            "invalid type: string \"many\", expected u64",
        ),
    ] {
        std::fs::write(&policy, text).unwrap();
        let output = run_output(
            agentbox("run", data.path())
                .arg("--policy")
                .arg(&policy)
                .arg(plugin_dir("kv-probe")),
        );
        assert!(!output.status.success());
        let line = last_stderr_line(&output);
        assert!(
            line.contains(&format!("the policy {} is invalid", policy.display())),
            "{line}"
        );
        assert!(line.contains(mistake), "{line}");
    }
}
