//! `agentbox sessions`: a session's timeline through a running server's
//! session API: its events (or a plugin's, live), its state as of a turn, a
//! fork, a rewind, and an interrupt of its running turn.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::admin::Client;

/// Read a session's timeline on a running `agentbox serve`, and travel in it.
///
/// Every committed turn of a session is an event in its log. These commands go through the
/// session API as the caller whose token they send (an API key, a JWT, or the admin token,
/// which reaches every session); a server open on loopback with no keys needs none. Examples:
///
///   agentbox sessions events 3f1c…                 # one line per event
///   agentbox sessions events 3f1c… --after 20 --json
///   agentbox sessions events 3f1c… --follow        # and each new one as it commits
///   agentbox sessions feed --plugin intake         # every intake session's, live
///   agentbox sessions state 3f1c… --turn 2         # the state as of turn 2
///   agentbox sessions fork 3f1c… --turn 2          # a new session from turn 2
///   agentbox sessions rewind 3f1c… --turn 2        # back to turn 2
///   agentbox sessions interrupt 3f1c…              # stop its running turn
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(super) struct SessionsArgs {
    #[command(subcommand)]
    command: SessionsCommand,

    /// The server
    #[arg(
        long,
        value_name = "URL",
        env = "AGENTBOX_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,

    /// The bearer token to send: an API key, a JWT or the admin token
    #[arg(
        long,
        value_name = "TOKEN",
        env = "AGENTBOX_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
}

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// List a session's events, oldest first: number, turn, kind, what was sent and said
    Events {
        /// The session id
        session: String,
        /// Only the events numbered after this one
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many events (1 to 1000)
        #[arg(long, default_value_t = 100, conflicts_with = "follow")]
        limit: usize,
        /// Go on printing each event as it commits, until the session ends
        #[arg(long)]
        follow: bool,
        /// Print each event as a line of JSON
        #[arg(long)]
        json: bool,
    },
    /// Print each event of a plugin's sessions as it commits (yours, or every one with the admin
    /// token), until interrupted
    Feed {
        /// The plugin
        #[arg(long)]
        plugin: String,
        /// Print each event as a line of JSON
        #[arg(long)]
        json: bool,
    },
    /// Stop a session's running turn: it fails as interrupted and commits no state, and what
    /// the agent had said is kept in the history, marked interrupted
    Interrupt {
        /// The session id
        session: String,
    },
    /// Print a session's state as of a turn (the latest without --turn), rebuilt from its log
    State {
        /// The session id
        session: String,
        /// The turn
        #[arg(long)]
        turn: Option<u64>,
    },
    /// Make a new session with a session's state and history as of a turn
    Fork {
        /// The session id
        session: String,
        /// The turn to fork from
        #[arg(long)]
        turn: u64,
        /// The new session's id [default: a random one]
        #[arg(long)]
        id: Option<String>,
    },
    /// Set an active session back to an earlier turn; the turns after it stay in its log, marked
    /// rewound
    Rewind {
        /// The session id
        session: String,
        /// The turn to go back to
        #[arg(long)]
        turn: u64,
    },
}

pub(super) fn sessions(args: SessionsArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.server, args.token);
    let post = |path: String, body: Value| {
        let body = body.to_string().into_bytes();
        client.call("POST", &path, Some(("application/json", body)))
    };
    match args.command {
        SessionsCommand::Events {
            session,
            after,
            follow: true,
            json,
            ..
        } => {
            let path = format!("/v1/sessions/{session}/events?follow=true&after={after}");
            client.follow(&path, |event| print_event(event, json))?;
        }
        SessionsCommand::Feed { plugin, json } => {
            let path = format!("/v1/events?plugin={plugin}&follow=true");
            client.follow(&path, |event| {
                if json {
                    println!("{event}");
                } else {
                    let session = event["session"].as_str().unwrap_or("?");
                    println!("{session} {}", event_line(event));
                }
            })?;
        }
        SessionsCommand::Interrupt { session } => {
            post(format!("/v1/sessions/{session}/interrupt"), json!({}))?;
            println!("interrupted the running turn of {session}");
        }
        SessionsCommand::Events {
            session,
            after,
            limit,
            json,
            ..
        } => {
            let path = format!("/v1/sessions/{session}/events?after={after}&limit={limit}");
            let page = client.call("GET", &path, None)?;
            for event in page["events"].as_array().into_iter().flatten() {
                print_event(event, json);
            }
            if let (false, Some(next)) = (json, page["next"].as_u64()) {
                println!("(more: --after {next})");
            }
        }
        SessionsCommand::State { session, turn } => {
            let query = turn.map(|turn| format!("?turn={turn}")).unwrap_or_default();
            let state =
                client.call("GET", &format!("/v1/sessions/{session}/state{query}"), None)?;
            println!("{:#}", state["state"]);
        }
        SessionsCommand::Fork { session, turn, id } => {
            let forked = post(
                format!("/v1/sessions/{session}/fork"),
                json!({ "turn": turn, "id": id }),
            )?;
            println!(
                "forked {session} at turn {turn} into {}",
                forked["session"].as_str().unwrap_or("?")
            );
        }
        SessionsCommand::Rewind { session, turn } => {
            post(
                format!("/v1/sessions/{session}/rewind"),
                json!({ "turn": turn }),
            )?;
            println!(
                "rewound {session} to turn {turn}; its next turn is {}",
                turn + 1
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `event` as a line of JSON, or as [`event_line`] says it.
fn print_event(event: &Value, json: bool) {
    if json {
        println!("{event}");
    } else {
        println!("{}", event_line(event));
    }
}

/// `#SEQ turn N KIND[ (rewound)]: INPUT → SAID`.
fn event_line(event: &Value) -> String {
    let input = match event["kind"].as_str() {
        Some("message") => event["input"]["text"].to_string(),
        Some("tool") => format!(
            "{}({})",
            event["input"]["tool"].as_str().unwrap_or("?"),
            event["input"]["arguments"]
        ),
        _ => String::new(),
    };
    let said: Vec<&str> = event["said"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    format!(
        "#{} turn {} {}{}{}{}",
        event["seq"],
        event["turn"],
        event["kind"].as_str().unwrap_or("?"),
        if event["rewound"] == true {
            " (rewound)"
        } else {
            ""
        },
        if input.is_empty() {
            String::new()
        } else {
            format!(": {input}")
        },
        if said.is_empty() {
            String::new()
        } else {
            format!(" → {}", said.join(" / "))
        },
    )
}
