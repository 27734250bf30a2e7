//! A plugin that misbehaves on request, for the sandbox tests. Each message
//! is an order:
//!
//! - `loop`: spins forever (the host's deadline must stop it);
//! - `hog`: allocates memory without bound (the memory limit must stop it);
//! - `trap`: sets `poisoned` in session state, then panics in the same turn
//!   (the host must commit nothing);
//! - `flood`: says more than the output limit allows;
//! - `huge`: stores a value over the host's size limit and fails with the
//!   host's refusal;
//! - `set KEY JSON`: stores JSON under KEY, reporting the host's answer;
//! - `get KEY`: says the value under KEY;
//! - `handoff PLUGIN`: hands the conversation to PLUGIN;
//! - anything else: counts it in `entries`.
//!
//! Its tool `record` adds to `entries` too, so a test can tell whether a
//! call reached the guest; `score` returns whatever it is given against a
//! result schema that allows at most 10 points, and `repeat` returns as long
//! a result as it is asked for. Its state schema allows `mood` to be only
//! `calm` or `cross`. `on-end` says goodbye with the count of entries and
//! sets `ended`, or fails when `refuse_end` is set.

use agentbox_sdk::{Agent, Outcome, Value, json, say, session, tools};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A score, declared to be at most 10, which `score` does not enforce.
#[derive(Serialize, JsonSchema)]
struct Score {
    #[schemars(range(max = 10))]
    points: u32,
}

#[derive(Default, Serialize, Deserialize)]
struct Misbehave {}

impl Agent for Misbehave {
    const NAME: &'static str = "misbehave";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Misbehaves on request, to test the host's limits";

    fn state_schema() -> Option<Value> {
        Some(json!({ "type": "object", "properties": { "mood": { "enum": ["calm", "cross"] } } }))
    }

    fn on_end(&mut self, _reason: agentbox_sdk::EndReason) -> Result<(), String> {
        if session::get::<bool>("refuse_end") == Some(true) {
            return Err("refusing to end".into());
        }
        say(format!(
            "goodbye after {} entries",
            session::get::<u64>("entries").unwrap_or(0)
        ));
        session::set("ended", &true).map_err(|err| err.to_string())
    }

    fn on_message(&mut self, text: &str) -> Result<Outcome, String> {
        match text.split_once(' ').unwrap_or((text, "")) {
            ("loop", _) => loop {
                std::hint::black_box(());
            },
            ("ramble", words) => {
                session::set("rambling", &true).map_err(|err| err.to_string())?;
                say(words);
                loop {
                    std::hint::black_box(());
                }
            }
            ("remark", text) => {
                for part in text.split('|') {
                    if part == "!fail" {
                        return Err("failing after a note".into());
                    }
                    if let Err(err) = session::note(part) {
                        say(format!("refused: {err:?}"));
                        return Ok(Outcome::Continue);
                    }
                }
                say("noted");
            }
            ("recall", _) => {
                for message in session::history(None) {
                    say(format!("{:?}: {}", message.role, message.content));
                }
            }
            ("forget", rest) => {
                let (keep, summary) = rest.split_once(' ').unwrap_or((rest, ""));
                let keep = keep.parse().map_err(|_| format!("`{keep}` is no count"))?;
                let summary = (!summary.is_empty()).then_some(summary);
                match session::prune(keep, summary) {
                    Ok(()) => say("pruned"),
                    Err(err) => say(format!("refused: {err:?}")),
                }
            }
            ("recap", keep) => {
                let keep = keep.parse().map_err(|_| format!("`{keep}` is no count"))?;
                session::keep_last(keep, |summary, dropped| {
                    let earlier = summary.map(str::to_owned).into_iter();
                    let lines = dropped.iter().map(|message| message.content.clone());
                    earlier.chain(lines).collect::<Vec<_>>().join(" / ")
                })
                .map_err(|err| format!("{err:?}"))?;
                say("recapped");
            }
            ("hog", _) => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            ("trap", _) => {
                session::set("poisoned", &true).map_err(|err| err.to_string())?;
                panic!("deliberate trap after a set");
            }
            ("flood", _) => loop {
                say("x".repeat(64 << 10));
            },
            ("huge", _) => {
                session::set("huge", &"x".repeat(1 << 20)).map_err(|err| err.to_string())?;
            }
            ("set", rest) => {
                let (key, json) = rest.split_once(' ').unwrap_or((rest, "null"));
                let value: agentbox_sdk::Value =
                    serde_json::from_str(json).map_err(|err| err.to_string())?;
                match session::set(key, &value) {
                    Ok(()) => say(format!("set {key}")),
                    Err(err) => say(format!("refused: {err}")),
                }
            }
            ("handoff", plugin) => return Ok(Outcome::HandOff(plugin.to_owned())),
            ("get", key) => say(format!(
                "{key} = {}",
                session::get::<agentbox_sdk::Value>(key).unwrap_or_default()
            )),
            _ => {
                let entries = session::get::<u64>("entries").unwrap_or(0) + 1;
                session::set("entries", &entries).map_err(|err| err.to_string())?;
                say(format!("entry {entries}"));
            }
        }
        Ok(Outcome::Continue)
    }
}

#[tools]
impl Misbehave {
    /// Adds `count` to `entries` and returns the new total.
    #[tool]
    fn record(
        /// How many entries to add.
        #[schemars(range(min = 1, max = 10))]
        count: u64,
        /// What the entries are about.
        label: String,
    ) -> Result<u64, String> {
        let _ = label;
        let entries = session::get::<u64>("entries").unwrap_or(0) + count;
        session::set("entries", &entries).map_err(|err| err.to_string())?;
        Ok(entries)
    }

    /// Returns `points` as a score, breaking its result schema above 10.
    #[tool(result_schema)]
    fn score(points: u32) -> Result<Score, String> {
        Ok(Score { points })
    }

    /// Returns `text` repeated `times` times.
    #[tool]
    fn repeat(text: String, times: usize) -> Result<String, String> {
        Ok(text.repeat(times))
    }
}

agentbox_sdk::export_agent!(Misbehave);
