//! A concierge that shops for its caller through the tool registry: it
//! finds the shop's tools and calls them as the caller asks, and never
//! holds the cart itself. The cart lives in the shop's own session of the
//! conversation, which the concierge cannot read.
//!
//! Messages:
//! - `login USER PASSWORD`: logs in at the shop;
//! - `login USER PASSWORD and fail`: logs in, then fails its own turn (the
//!   shop's session keeps the login: the child commits on its own);
//! - `add PRODUCT QUANTITY`: puts a product in the cart;
//! - `total`: says what the cart costs;
//! - anything else: says which shop tools it can reach.
//!
//! Its tools hand the registry to tests and operators: `discover` lists
//! what it may call, `relay` calls any tool and answers the result or the
//! registry's error as it came, and `note` writes this session's state and
//! says so, for calls of its own tools.

use agentbox_sdk::registry::{self, CallError};
use agentbox_sdk::{Agent, Outcome, Value, json, say, session, tools};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Concierge {
    /// Messages handled, so the concierge's own state shows beside the shop's.
    handled: u32,
}

impl Agent for Concierge {
    const NAME: &'static str = "concierge";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Shops for its caller through the tool registry";

    fn on_message(&mut self, text: &str) -> Result<Outcome, String> {
        self.handled += 1;
        let words: Vec<&str> = text.split_whitespace().collect();
        if let ["login", username, password, "and", "fail"] = words.as_slice() {
            shop::<Value>(
                "shop/login",
                json!({ "username": username, "password": password }),
            )
            .map_err(|err| err.to_string())?;
            return Err(format!("logged in as {username}, and failing as asked"));
        }
        let answer = match words.as_slice() {
            ["login", username, password] => shop::<Value>(
                "shop/login",
                json!({ "username": username, "password": password }),
            )
            .map(|_| format!("You are logged in as {username}.")),
            ["add", product, quantity] => quantity
                .parse::<u32>()
                .map_err(|_| CallError::Failed(format!("`{quantity}` is not a quantity")))
                .and_then(|quantity| {
                    shop::<Value>(
                        "shop/add_to_cart",
                        json!({ "product_id": product, "quantity": quantity }),
                    )
                })
                .map(|_| format!("Added {quantity} × {product}.")),
            ["total"] => shop::<Value>("shop/get_cart_total", json!({}))
                .map(|total| format!("Your cart comes to {} cents.", total["total_cents"])),
            _ => Ok(format!(
                "I can reach {}.",
                registry::list("shop/")
                    .into_iter()
                    .map(|tool| tool.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        };
        say(answer.unwrap_or_else(|err| format!("The shop said no: {err}")));
        Ok(Outcome::Continue)
    }
}

/// Calls the shop's tool `name`.
fn shop<T: serde::de::DeserializeOwned>(name: &str, args: Value) -> Result<T, CallError> {
    registry::call(name, &args)
}

#[tools]
impl Concierge {
    /// The addresses of the tools this plugin may call that start with `prefix`.
    #[tool]
    fn discover(&mut self, prefix: String) -> Result<Vec<String>, String> {
        Ok(registry::list(&prefix)
            .into_iter()
            .map(|tool| tool.name)
            .collect())
    }

    /// Calls the tool at `name` with `args` through the registry; answers
    /// `{"ok": result}` or `{"error": {"kind", "detail"}}`.
    #[tool]
    fn relay(&mut self, name: String, args: Value) -> Result<Value, String> {
        Ok(match registry::call::<Value>(&name, &args) {
            Ok(result) => json!({ "ok": result }),
            Err(err) => json!({ "error": err }),
        })
    }

    /// Appends `text` to `notes` in this session's state, says it, and
    /// answers how many notes there are.
    #[tool]
    fn note(&mut self, text: String) -> Result<usize, String> {
        let mut notes: Vec<String> = session::get("notes").unwrap_or_default();
        say(format!("noted: {text}"));
        notes.push(text);
        session::set("notes", &notes).map_err(|err| err.to_string())?;
        Ok(notes.len())
    }
}

agentbox_sdk::export_agent!(Concierge);
