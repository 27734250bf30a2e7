//! Remembers callers across conversations, the pattern voice-agent
//! frameworks build by hand on Redis: on start, load the caller's profile
//! from the `user` bucket and greet a returning caller by name; during the
//! call, learn; on end (hang-up, agent's goodbye or expiry), merge what was
//! learned into the stored profile.
//!
//! `forecast` shows the cache pattern: a slow lookup stored in the plugin's
//! `global` bucket with a time-to-live, shared by every caller.

use std::time::Duration;

use agentbox_sdk::kv::Bucket;
use agentbox_sdk::{Agent, EndReason, Error, Outcome, say, session, tools};
use serde::{Deserialize, Serialize};

/// How long a forecast stays cached.
const FORECAST_TTL: Duration = Duration::from_secs(10 * 60);

/// What the plugin keeps about a caller between conversations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Profile {
    name: Option<String>,
    calls: u32,
    last_interaction: Option<String>,
}

/// The conversation's state.
#[derive(Default, Serialize, Deserialize)]
struct Caller {
    /// The profile as loaded when the call started.
    known: Profile,
    /// A name the caller gave in this call.
    learned_name: Option<String>,
    /// The caller's latest message.
    last_message: Option<String>,
}

impl Agent for Caller {
    const NAME: &'static str = "profile";
    const VERSION: &'static str = "0.1.0";
    const DESCRIPTION: &'static str =
        "Greets returning callers by name; remembers them across calls";

    fn on_start(&mut self) -> Result<(), String> {
        let Some(user) = user_bucket()? else {
            say("Hello! I can't remember anything about anonymous callers, but go ahead.");
            return Ok(());
        };
        self.known = user
            .get::<Profile>("profile")
            .map_err(|err| format!("cannot load the profile: {err:?}"))?
            .unwrap_or_default();
        match &self.known.name {
            Some(name) => say(format!(
                "Welcome back, {name}! This is call number {}.",
                self.known.calls + 1
            )),
            None => say("Hello! What's your name?"),
        }
        Ok(())
    }

    fn on_message(&mut self, text: &str) -> Result<Outcome, String> {
        self.last_message = Some(text.to_owned());
        let lower = text.to_lowercase();
        if let Some(name) = lower.strip_prefix("my name is ") {
            let name = capitalize(name.trim());
            say(format!("Nice to meet you, {name}."));
            self.learned_name = Some(name);
        } else if lower == "bye" {
            say("Goodbye!");
            return Ok(Outcome::End);
        } else {
            say("Noted.");
        }
        Ok(Outcome::Continue)
    }

    fn on_end(&mut self, reason: EndReason) -> Result<(), String> {
        let Some(user) = user_bucket()? else {
            return Ok(());
        };
        // Another call of the same caller may end at the same time: merge
        // into whatever is stored now, not into what was loaded at the start.
        user.update("profile", |stored: Option<Profile>| {
            let mut profile = stored.unwrap_or_default();
            profile.calls += 1;
            if let Some(name) = &self.learned_name {
                profile.name = Some(name.clone());
            }
            if let Some(message) = &self.last_message {
                profile.last_interaction = Some(format!("{message} ({reason:?})"));
            }
            profile
        })
        .map(drop)
        .map_err(|err| format!("cannot save the profile: {err:?}"))
    }
}

#[tools]
impl Caller {
    /// Tomorrow's weather in `city`, from a slow lookup cached for 10 minutes.
    #[tool]
    fn forecast(&mut self, city: String) -> Result<String, String> {
        let global = Bucket::global().map_err(|err| format!("{err:?}"))?;
        let key = format!("forecast:{}", city.to_lowercase());
        global
            .cached(&key, FORECAST_TTL, || {
                // Stands in for a slow call to a weather service; the count
                // shows how often the cache missed.
                global.increment("lookups", 1)?;
                Ok(format!("{city}: sunny, {}°C", 15 + city.len() % 10))
            })
            .map_err(|err| format!("{err:?}"))
    }
}

/// The caller's bucket, or `None` for a session without a user id.
fn user_bucket() -> Result<Option<Bucket>, String> {
    if session::user_id().is_none() {
        return Ok(None);
    }
    match Bucket::user() {
        Ok(bucket) => Ok(Some(bucket)),
        Err(Error::Denied(_)) => Ok(None),
        Err(err) => Err(format!("cannot open the caller's bucket: {err:?}")),
    }
}

fn capitalize(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

agentbox_sdk::export_agent!(Caller);
