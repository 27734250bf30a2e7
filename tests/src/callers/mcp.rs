//! MCP over HTTP as a caller meets it: the user an MCP session's sessions
//! belong to, named under the rule of a start's; the agent's greeting with
//! its first answer; and a closed MCP session answered 204.

use agentbox_host::server::auth::Callers;
use agentbox_host::server::auth::jwt::JwtVerifier;
use serde_json::json;

use super::{Served, es256_settings, keys, mcp_open, mcp_rpc, serve, token};
use crate::harness::agent;

/// The texts of the answer to a `plugin__chat` call of `plugin` with `text`.
fn chat(served: &Served, token: &str, mcp: &str, plugin: &str, text: &str) -> Vec<String> {
    let answer = mcp_rpc(
        served,
        token,
        mcp,
        &json!({
            "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": { "name": format!("{plugin}__chat"), "arguments": { "text": text } }
        }),
    );
    assert_eq!(answer["result"]["isError"], json!(false), "{answer}");
    answer["result"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|block| block["text"].as_str().unwrap().to_owned())
        .collect()
}

/// Opens an MCP session as `token` with `query`, ready for calls.
fn opened(served: &Served, token: &str, query: &str) -> String {
    let (status, id, body) = mcp_open(served, token, query);
    assert_eq!(status, 200, "{query}: {body}");
    let id = id.expect("an MCP session has an id");
    let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    mcp_rpc(served, token, &id, &initialized);
    id
}

#[test]
fn an_mcp_session_serves_the_user_its_opener_may_name_and_greets_with_the_first_answer() {
    let (file, [backend, app, _]) = keys();
    let verifier = JwtVerifier::new(&es256_settings()).unwrap();
    let served = serve(Callers::new(Some(&file), Some(verifier)));

    // A key that may act for users names one: the profile knows the
    // session has a user, and its greeting comes before the first reply.
    let mcp = opened(&served, &backend, "?user_id=%2B15551234567");
    assert_eq!(
        chat(&served, &backend, &mcp, "profile", "My name is Ada"),
        ["Hello! What's your name?", "Nice to meet you, Ada."]
    );
    assert_eq!(chat(&served, &backend, &mcp, "profile", "hm"), ["Noted."]);
    // Ending the conversation keeps the name in that user's bucket, where
    // the next MCP session naming the user finds it, and another's does not.
    assert_eq!(
        chat(&served, &backend, &mcp, "profile", "bye"),
        ["Goodbye!"]
    );
    let again = opened(&served, &backend, "?user_id=%2B15551234567");
    let said = chat(&served, &backend, &again, "profile", "hm");
    assert!(said[0].starts_with("Welcome back, Ada!"), "{said:?}");
    let other = opened(&served, &backend, "?user_id=%2B15550000000");
    let said = chat(&served, &backend, &other, "profile", "hm");
    assert_eq!(said[0], "Hello! What's your name?");

    // Without one, the session is anonymous.
    let anonymous = opened(&served, &backend, "");
    let said = chat(&served, &backend, &anonymous, "profile", "hi");
    assert!(said[0].contains("anonymous callers"), "{said:?}");

    // A JWT's sessions are its user's; naming its own user is no claim.
    let ada = token("ada@example.com", json!({}));
    let mcp = opened(&served, &ada, "?user_id=ada%40example.com");
    let said = chat(&served, &ada, &mcp, "profile", "hi");
    assert_eq!(said[0], "Hello! What's your name?");

    // Refused at initialize: a key that may not act for users, a token
    // naming another user, a malformed id and an unknown parameter.
    for (token, query, status, saying) in [
        (&app, "?user_id=ada", 403, "may not act for users"),
        (
            &ada,
            "?user_id=bob",
            403,
            "not the user the token was issued to",
        ),
        (&backend, "?user_id=a%20b", 400, "user id"),
        (&backend, "?user=ada", 400, "unknown field `user`"),
    ] {
        let (got, id, body) = mcp_open(&served, token, query);
        assert_eq!(got, status, "{query}: {body}");
        assert!(id.is_none(), "{query}");
        assert!(
            body["message"].as_str().unwrap().contains(saying),
            "{query}: {body}"
        );
    }

    // A closed MCP session is answered 204, as MCP clients expect.
    let closed = agent()
        .delete(format!("{}/mcp", served.base))
        .header("authorization", format!("Bearer {backend}"))
        .header("mcp-session-id", &anonymous)
        .call()
        .unwrap();
    assert_eq!(closed.status().as_u16(), 204);
}
