//! An LLM agent: the conversation lives in session state, each message goes
//! to an OpenAI-compatible `/chat/completions` endpoint whose tokens are
//! said to the caller as they arrive, and when the model asks for one of the
//! agent's own tools, the agent runs it, hands back the result and asks
//! again, a bounded number of times.
//!
//! Configuration (`[plugins.assistant.config]`): `base_url` (default
//! `https://api.openai.com/v1`), `model` (default `gpt-4o-mini`) and
//! `booking_url`, the endpoint `book_appointment` posts to. The API key is
//! never the plugin's: the operator binds it to the endpoint's origin as an
//! injected header (see README.md).

use agentbox_sdk::kv::Bucket;
use agentbox_sdk::{Agent, Outcome, Tools, Value, http, json, say, tools};
use serde::{Deserialize, Serialize};

/// Messages kept in state; older ones are folded into the summary.
const KEPT_MESSAGES: usize = 24;
/// Bytes of those messages as JSON, at most: half the host's default cap
/// on one state value (64 KiB), so that a few long answers or tool results
/// never make a turn fail.
const KEPT_BYTES: usize = 32 << 10;
/// The longest summary kept, in bytes; its oldest lines go first.
const SUMMARY_BYTES: usize = 2000;
/// Rounds of tool calls one message may take before the agent gives up.
const TOOL_ROUNDS: usize = 4;

/// One message of the conversation, as the chat completions API takes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
struct ChatMessage {
    role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<String>,
}

impl ChatMessage {
    fn new(role: &str, content: String) -> ChatMessage {
        ChatMessage {
            role: role.to_owned(),
            content: Some(content),
            ..ChatMessage::default()
        }
    }
}

/// A tool call the model asked for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
struct ToolCall {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    function: FunctionCall,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
struct FunctionCall {
    name: String,
    /// JSON text, as the model wrote it.
    arguments: String,
}

/// The conversation: its latest messages, and a summary of the rest.
#[derive(Default, Serialize, Deserialize, schemars::JsonSchema)]
struct Assistant {
    messages: Vec<ChatMessage>,
    summary: String,
}

impl Agent for Assistant {
    const NAME: &'static str = "assistant";
    const VERSION: &'static str = "0.1.0";
    const DESCRIPTION: &'static str = "An LLM agent with a knowledge base and appointment booking, over any OpenAI-compatible API";

    fn state_schema() -> Option<Value> {
        Some(agentbox_sdk::schema_for::<Self>())
    }

    fn on_message(&mut self, text: &str) -> Result<Outcome, String> {
        self.messages
            .push(ChatMessage::new("user", text.to_owned()));
        for _ in 0..TOOL_ROUNDS {
            let reply = self.complete()?;
            let calls = reply.tool_calls.clone();
            self.messages.push(reply);
            if calls.is_empty() {
                self.trim();
                return Ok(Outcome::Continue);
            }
            for call in calls {
                let result = self.run(&call);
                self.messages.push(ChatMessage {
                    tool_call_id: Some(call.id),
                    ..ChatMessage::new("tool", result)
                });
            }
        }
        Err(format!(
            "the model asked for tools {TOOL_ROUNDS} times without answering; the message is dropped"
        ))
    }
}

#[tools]
impl Assistant {
    /// Stores `text` in the knowledge base under `topic`, for every conversation.
    #[tool]
    fn remember(&mut self, topic: String, text: String) -> Result<(), String> {
        Bucket::global()
            .and_then(|kb| kb.set(&kb_key(&topic), &text))
            .map_err(|err| format!("cannot store it: {err:?}"))
    }

    /// What the knowledge base says about `topic`, if anything.
    #[tool]
    fn look_up(&mut self, topic: String) -> Result<Option<String>, String> {
        Bucket::global()
            .and_then(|kb| kb.get(&kb_key(&topic)))
            .map_err(|err| format!("cannot read it: {err:?}"))
    }

    /// Books an appointment for `name` on `day` at `time` with the booking
    /// service; answers its confirmation.
    #[tool]
    fn book_appointment(
        &mut self,
        day: String,
        time: String,
        name: String,
    ) -> Result<Value, String> {
        let url = agentbox_sdk::config::get("booking_url")
            .ok_or("no booking service is configured (config `booking_url`)")?;
        http::post(&url)
            .json(&json!({ "day": day, "time": time, "name": name }))
            .send()
            .and_then(http::Response::error_for_status)
            .and_then(http::Response::json)
            .map_err(|err| err.to_string())
    }
}

/// The knowledge base's key of `topic`: its words, lowercase.
fn kb_key(topic: &str) -> String {
    let words: Vec<String> = topic.split_whitespace().map(str::to_lowercase).collect();
    format!("kb:{}", words.join("-"))
}

impl Assistant {
    /// Asks the model for the next message, saying its text as it streams.
    fn complete(&self) -> Result<ChatMessage, String> {
        let base = agentbox_sdk::config::get("base_url")
            .unwrap_or_else(|| "https://api.openai.com/v1".to_owned());
        let model = agentbox_sdk::config::get("model").unwrap_or_else(|| "gpt-4o-mini".to_owned());
        let mut system = "You are a helpful assistant. Use the tools to look things up \
                          and to book appointments."
            .to_owned();
        if !self.summary.is_empty() {
            system.push_str("\nEarlier in this conversation:\n");
            system.push_str(&self.summary);
        }
        let mut messages = vec![ChatMessage::new("system", system)];
        messages.extend(self.messages.iter().cloned());
        let body = json!({
            "model": model,
            "stream": true,
            "messages": messages,
            "tools": tool_list(),
        });
        let response = http::post(&format!("{}/chat/completions", base.trim_end_matches('/')))
            .json(&body)
            .send()
            .and_then(http::Response::error_for_status)
            .map_err(|err| err.to_string())?;
        let kind = response
            .header("content-type")
            .unwrap_or("none")
            .to_ascii_lowercase();
        let mut reply = if kind.starts_with("text/event-stream") {
            streamed(response)?
        } else if kind.starts_with("application/json") {
            // A server that does not stream answers one `chat.completion`.
            let completion: Value = response.json().map_err(|err| err.to_string())?;
            whole(&completion)?
        } else {
            return Err(format!(
                "the model server answered with content type `{kind}`, \
                 neither server-sent events nor JSON"
            ));
        };
        if reply.content.as_deref() == Some("") {
            reply.content = None;
        }
        if reply.content.is_none() && reply.tool_calls.is_empty() {
            return Err("the model answered neither text nor a tool call".to_owned());
        }
        Ok(reply)
    }

    /// Runs the tool `call` names; answers its result or error as text.
    fn run(&mut self, call: &ToolCall) -> String {
        let arguments = match serde_json::from_str(&call.function.arguments) {
            Ok(arguments) => arguments,
            Err(err) => return format!("error: the arguments are not JSON: {err}"),
        };
        match self.call_tool(&call.function.name, arguments) {
            Some(Ok(result)) => result.to_string(),
            Some(Err(err)) => format!("error: {err}"),
            None => format!("error: there is no tool `{}`", call.function.name),
        }
    }

    /// Keeps the latest messages, from a user message on, within
    /// [`KEPT_MESSAGES`] and [`KEPT_BYTES`], folding the oldest exchanges (a
    /// user message and what followed it) into the summary.
    fn trim(&mut self) {
        let bytes =
            |messages: &[ChatMessage]| serde_json::to_vec(messages).map_or(0, |json| json.len());
        while self.messages.len() > KEPT_MESSAGES || bytes(&self.messages) > KEPT_BYTES {
            let exchange = self
                .messages
                .iter()
                .skip(1)
                .position(|message| message.role == "user")
                .map_or(self.messages.len(), |next| next + 1);
            for dropped in self.messages.drain(..exchange) {
                // A tool's answer went to the model; the answer it gave counts.
                if let Some(text) = dropped.content.filter(|_| dropped.role != "tool") {
                    let line: String = text.chars().take(120).collect();
                    self.summary
                        .push_str(&format!("{}: {line}\n", dropped.role));
                }
            }
        }
        while self.summary.len() > SUMMARY_BYTES {
            match self.summary.find('\n') {
                Some(end) => drop(self.summary.drain(..=end)),
                None => self.summary.clear(),
            }
        }
    }
}

/// The answer of a streamed completion, its text said as it arrives.
fn streamed(response: http::Response) -> Result<ChatMessage, String> {
    let mut reply = ChatMessage::new("assistant", String::new());
    for event in response.events() {
        let event = event.map_err(|err| err.to_string())?;
        if event.data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(&event.data)
            .map_err(|err| format!("the model sent a chunk that is not JSON: {err}"))?;
        refused(&chunk)?;
        merge(&mut reply, &chunk["choices"][0]["delta"]);
    }
    Ok(reply)
}

/// The answer of a completion that came whole, its text said at once.
fn whole(completion: &Value) -> Result<ChatMessage, String> {
    refused(completion)?;
    let message = completion["choices"][0]["message"].clone();
    if !message.is_object() {
        return Err("the model server's answer has no `choices[0].message`".to_owned());
    }
    let reply: ChatMessage = serde_json::from_value(message)
        .map_err(|err| format!("the model server's message is not a chat message: {err}"))?;
    if let Some(text) = reply.content.as_deref().filter(|text| !text.is_empty()) {
        say(text);
    }
    Ok(reply)
}

/// Fails with the message of an `error` object the model server sent.
fn refused(answer: &Value) -> Result<(), String> {
    match answer.get("error") {
        None | Some(Value::Null) => Ok(()),
        Some(error) => Err(format!(
            "the model server answered an error: {}",
            error["message"]
                .as_str()
                .map_or_else(|| error.to_string(), str::to_owned)
        )),
    }
}

/// Adds one streamed delta to `reply`: text is said at once; tool calls
/// arrive in pieces, by index.
fn merge(reply: &mut ChatMessage, delta: &Value) {
    if let Some(text) = delta["content"].as_str().filter(|text| !text.is_empty()) {
        say(text);
        reply.content.get_or_insert_default().push_str(text);
    }
    for piece in delta["tool_calls"].as_array().into_iter().flatten() {
        let index = piece["index"].as_u64().unwrap_or(0) as usize;
        if reply.tool_calls.len() <= index {
            reply.tool_calls.resize_with(index + 1, || ToolCall {
                kind: "function".to_owned(),
                ..ToolCall::default()
            });
        }
        let call = &mut reply.tool_calls[index];
        if let Some(id) = piece["id"].as_str() {
            call.id = id.to_owned();
        }
        let function = &piece["function"];
        if let Some(name) = function["name"].as_str() {
            call.function.name.push_str(name);
        }
        if let Some(arguments) = function["arguments"].as_str() {
            call.function.arguments.push_str(arguments);
        }
    }
}

/// The agent's tools as the chat completions API lists them.
fn tool_list() -> Vec<Value> {
    <Assistant as Tools>::tool_specs()
        .into_iter()
        .map(|spec| {
            let mut parameters: Value =
                serde_json::from_str(&spec.parameters).unwrap_or_else(|_| json!({}));
            if let Some(schema) = parameters.as_object_mut() {
                schema.remove("$schema");
            }
            json!({
                "type": "function",
                "function": {
                    "name": spec.name,
                    "description": spec.description,
                    "parameters": parameters,
                },
            })
        })
        .collect()
}

agentbox_sdk::export_agent!(Assistant);
