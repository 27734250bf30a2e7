//! A data-collection agent: gathers a caller's name, email and reason over
//! several messages, then validates and submits them.
//!
//! Everything it knows lives in the fields of [`Intake`], which the SDK
//! keeps in session state, so a conversation survives restarts of the host.

use agentbox_sdk::{Agent, Outcome, Value, say, session, tools};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The request being taken down; also the schema of the session state,
/// which the host checks at every commit.
#[derive(Default, Serialize, Deserialize, JsonSchema)]
struct Intake {
    #[schemars(length(min = 1, max = 200))]
    name: Option<String>,
    #[schemars(length(max = 254))]
    email: Option<String>,
    #[schemars(length(min = 1, max = 2000))]
    reason: Option<String>,
    turns: u32,
}

/// The fields of a request.
#[derive(Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Field {
    Name,
    Email,
    Reason,
}

impl Agent for Intake {
    const NAME: &'static str = "intake";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Collects a caller's name, email and reason, then submits them";

    fn state_schema() -> Option<Value> {
        Some(agentbox_sdk::schema_for::<Self>())
    }

    fn on_start(&mut self) -> Result<(), String> {
        self.name =
            session::initial_variable::<String>("name").filter(|name| !name.trim().is_empty());
        match &self.name {
            Some(name) => say(format!("Welcome, {name}! I will take down your request.")),
            None => say("Welcome! I will take down your request."),
        }
        say(self.progress());
        Ok(())
    }

    fn on_message(&mut self, text: &str) -> Result<Outcome, String> {
        self.turns += 1;
        if text.trim().eq_ignore_ascii_case("submit") {
            return Ok(self.submit());
        }
        let learned = self.learn(text);
        if learned.is_empty() {
            say(
                "I did not catch that. Try \"my name is ...\", your email address, or \"I need ...\".",
            );
        } else {
            say(format!("Noted your {}.", learned.join(" and ")));
        }
        say(self.progress());
        Ok(Outcome::Continue)
    }
}

#[tools]
impl Intake {
    /// Records one field of the request, replacing what was there.
    #[tool]
    fn record_information(
        &mut self,
        /// Which field to record.
        field: Field,
        /// Its value.
        value: String,
    ) -> Result<Value, String> {
        let value = Some(value.trim().to_owned());
        match field {
            Field::Name => self.name = value,
            Field::Email => self.email = value,
            Field::Reason => self.reason = value,
        }
        Ok(agentbox_sdk::json!({ "recorded": field, "missing": self.missing() }))
    }

    /// Validates the request and submits it, or lists every error.
    #[tool]
    fn submit_form(&mut self) -> Result<Value, String> {
        let errors = self.errors();
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        Ok(
            agentbox_sdk::json!({ "submitted": true, "name": self.name, "email": self.email, "reason": self.reason }),
        )
    }
}

impl Intake {
    /// Takes whatever fields `text` gives, and names them.
    fn learn(&mut self, text: &str) -> Vec<&'static str> {
        let mut learned = Vec::new();
        let lower = text.to_lowercase();
        for prefix in ["my name is ", "i am ", "i'm "] {
            if let Some(at) = lower.find(prefix) {
                let rest = &text[at + prefix.len()..];
                let name: Vec<&str> = rest
                    .split([',', '.', '!'])
                    .next()
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter(|word| !word.contains('@'))
                    .collect();
                if !name.is_empty() {
                    self.name = Some(name.join(" "));
                    learned.push("name");
                    break;
                }
            }
        }
        if let Some(email) = text
            .split_whitespace()
            .map(|word| word.trim_matches(|c: char| !(c.is_alphanumeric() || "@._-+".contains(c))))
            .map(|word| word.trim_end_matches('.'))
            .find(|word| word.contains('@'))
        {
            self.email = Some(email.to_owned());
            learned.push("email");
        }
        if let Some(at) = lower.find("i need ") {
            let reason = text[at + "i need ".len()..]
                .trim()
                .trim_end_matches(['.', '!']);
            if !reason.is_empty() {
                self.reason = Some(reason.to_owned());
                learned.push("reason");
            }
        }
        learned
    }

    fn missing(&self) -> Vec<&'static str> {
        [
            ("name", &self.name),
            ("email", &self.email),
            ("reason", &self.reason),
        ]
        .into_iter()
        .filter(|(_, value)| value.is_none())
        .map(|(field, _)| field)
        .collect()
    }

    fn progress(&self) -> String {
        let missing = self.missing();
        if missing.is_empty() {
            "I have everything I need. Say \"submit\" to send it.".to_owned()
        } else {
            format!("Still needed: {}.", missing.join(", "))
        }
    }

    /// Every reason the request cannot be submitted yet.
    fn errors(&self) -> Vec<String> {
        let mut errors: Vec<String> = self
            .missing()
            .iter()
            .map(|field| format!("{field} is missing"))
            .collect();
        if let Some(email) = self.email.as_deref().filter(|email| !valid_email(email)) {
            errors.push(format!("email `{email}` needs an @ and a dot after it"));
        }
        errors
    }

    /// Validates the form: on errors lists them and keeps the session open;
    /// on success confirms and ends the conversation.
    fn submit(&mut self) -> Outcome {
        let mut errors: Vec<String> = self
            .missing()
            .iter()
            .map(|field| format!("{field} is missing"))
            .collect();
        if let Some(email) = &self.email
            && !valid_email(email)
        {
            errors.push(format!("email `{email}` needs an @ and a dot after it"));
        }
        if !errors.is_empty() {
            say(format!("I cannot submit yet: {}.", errors.join("; ")));
            return Outcome::Continue;
        }
        let (name, email, reason) = (
            self.name.as_deref().unwrap_or_default(),
            self.email.as_deref().unwrap_or_default(),
            self.reason.as_deref().unwrap_or_default(),
        );
        say(format!(
            "Submitted. Thank you, {name}: we will write to {email} about \"{reason}\"."
        ));
        Outcome::End
    }
}

/// An `@` with something before it, and a dot with something on both sides after it.
fn valid_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain
                    .split_once('.')
                    .is_some_and(|(host, tld)| !host.is_empty() && !tld.is_empty())
        }
        None => false,
    }
}

agentbox_sdk::export_agent!(Intake);
