//! `agentbox run`: talk to a plugin in the terminal or from a script.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use agentbox_host::session::report::TurnEvent;
use agentbox_host::store::{State, StoreSpec};
use agentbox_host::{Host, Outcome, SessionError, SessionStart, Sink, TurnReport};
use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::{Map, Value, json};

use crate::{HostArgs, PluginArg, REAP_EVERY, compilation_text, load, parse_var};

/// Talk to a plugin in the terminal.
///
/// Starts a session (or resumes one with --session) and sends it one message per line, read
/// from the terminal or from --script. Shows what the agent says as it says it, and the
/// state change of each committed turn. Lines starting with `/` are commands:
///
///   /tool NAME {JSON}  call the plugin's tool NAME with JSON arguments ({} if left out)
///   /state             print the session's committed state
///   /end               end the session (the plugin's on-end runs) and exit
///   /quit              exit, leaving the session open to resume with --session
///
/// Sessions live in the store: with the default SQLite store, `--session ID` resumes a
/// session where it left off, even after the process was killed.
///
/// Exit status: 0, or 1 when a turn failed and the input was not a terminal (a --script,
/// or lines piped in), so a script whose conversation breaks fails its caller.
///
/// Examples:
///
///   agentbox run plugins/intake
///   agentbox run intake.wasm --var name=Ada --script conversation.txt
///   agentbox run intake.wasm --session ticket-42 --json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    plugin: PluginArg,

    /// An initial variable for a new session; VALUE is JSON if it parses as JSON, else a string
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_var)]
    vars: Vec<(String, Value)>,

    /// The user the session belongs to
    #[arg(long, value_name = "ID")]
    user: Option<String>,

    /// Session id: resumes the session if the store has it, else starts one with this id
    #[arg(long, value_name = "ID")]
    session: Option<String>,

    /// Where sessions live: `memory`, `sqlite:PATH`, or `redis://HOST:PORT` to share them with
    /// other hosts [default: sqlite:DATA_DIR/agentbox.db]
    #[arg(long, value_name = "SPEC")]
    store: Option<StoreSpec>,

    /// Read the caller's messages from FILE, one per line, instead of the terminal
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,

    /// Print one JSON object per line per event (say, committed, tool-result, state, session, error) instead of text
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    host: HostArgs,
}

/// Prints the events of a conversation, as text or JSON lines: the turn's
/// own events ([`TurnEvent`]) as every front end serializes them, and the
/// terminal's `session` and `state` events.
#[derive(Debug, Clone, Copy)]
struct Printer {
    json: bool,
}

impl Printer {
    fn emit(&self, event: Value, text: impl FnOnce() -> String) {
        let line = if self.json { event.to_string() } else { text() };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    fn event(&self, event: &TurnEvent, text: impl FnOnce() -> String) {
        self.emit(serde_json::to_value(event).expect("an event is JSON"), text);
    }

    /// An event only machine readers need: the text output says it on stderr.
    fn json_only(&self, event: Value) {
        if self.json {
            self.emit(event, String::new);
        }
    }

    fn sink(self, plugin: String) -> Sink {
        Arc::new(move |text: &str| {
            let event = TurnEvent::Say {
                text: text.to_owned(),
            };
            self.event(&event, || format!("{plugin}> {text}"));
        })
    }

    fn committed(&self, report: &TurnReport) {
        self.event(&TurnEvent::committed(report), || {
            let changes = state_changes(&report.before, &report.state);
            let changes = if changes.is_empty() {
                "no state change".to_owned()
            } else {
                changes.join(", ")
            };
            format!("  [turn {} committed: {changes}]", report.turn)
        });
    }

    fn error(&self, err: &SessionError) {
        self.event(&TurnEvent::failed(err), || {
            let mut text = format!("  [error: {err}; nothing was committed]");
            if let Some(output) = &err.guest_output {
                text.push_str("\n  [the plugin's output before it failed:]");
                for line in output.lines() {
                    text.push_str("\n    ");
                    text.push_str(line);
                }
            }
            text
        });
    }
}

/// The changes from `before` to `after`, as `+ key = value`, `~ key = value` and `- key`.
fn state_changes(before: &State, after: &State) -> Vec<String> {
    let mut changes = Vec::new();
    for (key, value) in after {
        match before.get(key) {
            None => changes.push(format!("+ {key} = {value}")),
            Some(old) if old != value => changes.push(format!("~ {key} = {value}")),
            Some(_) => {}
        }
    }
    changes.extend(
        before
            .keys()
            .filter(|key| !after.contains_key(*key))
            .map(|key| format!("- {key}")),
    );
    changes
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let spec = args
        .store
        .clone()
        .unwrap_or_else(|| args.host.default_store());
    let host = args.host.host(&spec, true)?;
    let plugin = load(&args.plugin.path, |bytes| host.stage_plugin(bytes))?;
    let name = plugin.name().to_owned();
    let printer = Printer { json: args.json };
    // Sessions of this plugin past their time-to-live end while this runs.
    let _reaper = host.spawn_reaper(REAP_EVERY);
    crate::announce_mcp_servers(&host);
    eprintln!(
        "agentbox: plugin {name} {} (sha256:{:.12}, {})",
        plugin.manifest.version,
        plugin.digest.to_string(),
        compilation_text(plugin.compilation)
    );
    let existing = match &args.session {
        Some(id) => host
            .session(id)
            .await
            .with_context(|| format!("cannot read session {id}"))?,
        None => None,
    };
    let session = match existing {
        Some(record) => {
            if record.plugin != name {
                bail!(
                    "session `{}` belongs to plugin `{}`, not `{name}`",
                    record.id,
                    record.plugin
                );
            }
            if !args.vars.is_empty() || args.user.is_some() {
                eprintln!(
                    "agentbox: --var and --user apply to new sessions; session {} keeps its own",
                    record.id
                );
            }
            eprintln!(
                "agentbox: resuming session {} after turn {} (store {spec})",
                record.id, record.turn
            );
            printer.json_only(json!({ "event": "session", "session": record.id, "resumed": true, "turn": record.turn }));
            record.id
        }
        None => {
            let start = SessionStart {
                plugin: name.clone(),
                id: args.session.clone(),
                user_id: args.user.clone(),
                owner: None,
                variables: args.vars.iter().cloned().collect::<Map<_, _>>(),
            };
            let report = host
                .start_session(start, Some(printer.sink(name.clone())))
                .await?;
            eprintln!(
                "agentbox: started session {} (store {spec})",
                report.session
            );
            printer.json_only(json!({ "event": "session", "session": report.session, "resumed": false, "turn": 0 }));
            printer.committed(&report);
            report.session
        }
    };
    converse(&host, &session, &name, &args, printer).await
}

/// Splits `/tool NAME {JSON}` into the tool's name and its arguments (`{}`
/// when left out).
fn parse_tool_line(line: &str) -> Result<(String, Value), String> {
    let usage = "usage: /tool NAME {JSON arguments}, for example /tool add_to_cart {\"product_id\": \"book\", \"quantity\": 2}";
    let rest = line
        .strip_prefix("/tool")
        .filter(|rest| rest.is_empty() || rest.starts_with(' '))
        .ok_or(usage)?
        .trim();
    let (name, arguments) = rest.split_once(char::is_whitespace).unwrap_or((rest, "{}"));
    if name.is_empty() {
        return Err(usage.to_owned());
    }
    let arguments = serde_json::from_str(arguments.trim())
        .map_err(|err| format!("the arguments of /tool {name} are not JSON ({err}); {usage}"))?;
    Ok((name.to_owned(), arguments))
}

/// Sends each line of the script or terminal to the session until the input
/// ends, `/quit`, `/end`, or the agent ends the conversation.
async fn converse(
    host: &Host,
    session: &str,
    plugin: &str,
    args: &RunArgs,
    printer: Printer,
) -> anyhow::Result<ExitCode> {
    let interactive = args.script.is_none() && std::io::stdin().is_terminal();
    let input: Box<dyn std::io::BufRead> = match &args.script {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .with_context(|| format!("cannot open the script {}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    if interactive {
        eprintln!(
            "agentbox: type a message and press Enter; /tool NAME {{JSON}}, /state, /end or /quit"
        );
    }
    let mut failed = false;
    let mut lines = input.lines();
    loop {
        if interactive {
            eprint!("you> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("cannot read input")?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if !interactive && !printer.json {
            println!("you> {line}");
        }
        let sink = Some(printer.sink(plugin.to_owned()));
        // What the line committed: a turn, or nothing (a cached tool result).
        let result: Result<Option<TurnReport>, SessionError> = match line {
            "/quit" => break,
            "/state" => {
                let record = host
                    .session(session)
                    .await?
                    .context("the session is gone from the store")?;
                printer.emit(
                    json!({ "event": "state", "turn": record.turn, "state": record.state }),
                    || {
                        format!(
                            "  [state after turn {}: {}]",
                            record.turn,
                            Value::Object(record.state.clone())
                        )
                    },
                );
                continue;
            }
            "/end" => host.end_session(session).await.map(|report| {
                // What `on-end` said, as a message turn's replies are shown.
                if let Some(sink) = &sink {
                    report.said.iter().for_each(|text| sink(text));
                }
                Some(report)
            }),
            _ if line.starts_with("/tool") => match parse_tool_line(line) {
                Ok((name, arguments)) => {
                    host.call_tool(session, &name, arguments, sink)
                        .await
                        .map(|report| {
                            printer.event(&TurnEvent::tool_result(&name, &report), || {
                                format!(
                                    "  [tool {name}{}: {}]",
                                    if report.cached { " (cached)" } else { "" },
                                    report.result
                                )
                            });
                            (!report.cached).then_some(report.turn)
                        })
                }
                Err(usage) => {
                    failed = true;
                    let refusal = TurnEvent::refused("bad-request", usage.clone());
                    printer.event(&refusal, || format!("  [error: {usage}]"));
                    continue;
                }
            },
            _ => host.send_message(session, line, sink).await.map(Some),
        };
        match result {
            Ok(Some(report)) => {
                printer.committed(&report);
                if report.outcome == Outcome::End {
                    eprintln!("agentbox: session {session} has ended");
                    break;
                }
            }
            Ok(None) => {}
            Err(err) => {
                failed = true;
                printer.error(&err);
            }
        }
    }
    Ok(if failed && !interactive {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
