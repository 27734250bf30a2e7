//! MCP benchmark: `cargo bench -p agentbox-tests --bench mcp`.
//!
//! Measures, in one run against the same in-process server on a loopback
//! port (memory store, one keep-alive connection, one call at a time), a
//! trivial tool (misbehave's `repeat`):
//! - called through the session API, `POST /v1/sessions/ID/tools/repeat`,
//!   the baseline;
//! - called as `misbehave_repeat` with MCP's `tools/call` on `/mcp`, in one
//!   MCP session, answered as a server-sent event.
//!
//! Prints a Markdown table of calls per second, p50 and p99, and each p50
//! against the baseline's; `BENCHMARKS.md` keeps the latest.

use std::time::Duration;

use agentbox_host::Host;
use agentbox_tests::measure::{latencies, print_table, started};
use agentbox_tests::{plugin_bytes, plugins};
use serde_json::{Value, json};

/// How long each measurement runs.
const RUN: Duration = Duration::from_secs(3);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let host = Host::builder().build().unwrap();
    host.load_plugin(&plugin_bytes(plugins::MISBEHAVE)).unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = agentbox_host::server::router(host.clone(), Default::default());
    runtime.spawn(async move {
        agentbox_host::server::serve(listener, router, Default::default(), std::future::pending())
            .await
            .unwrap()
    });
    let session = runtime.block_on(started(&host, "misbehave"));
    let agent = ureq::Agent::new_with_defaults();
    let arguments = json!({ "text": "ab", "times": 2 });

    let plain_url = format!("{base}/v1/sessions/{session}/tools/repeat");
    let plain = latencies(RUN, || {
        let body = agent
            .post(&plain_url)
            .header("content-type", "application/json")
            .send(arguments.to_string())
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        assert!(body.contains("abab"), "{body}");
    });

    let mcp = format!("{base}/mcp");
    let post = |message: Value, session: Option<&str>| {
        let mut request = agent
            .post(&mcp)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", "2025-11-25");
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request.send(message.to_string()).unwrap()
    };
    let initialize = json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": { "name": "bench", "version": "1" } }
    });
    let mut answer = post(initialize, None);
    let mcp_session = answer.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    answer.body_mut().read_to_string().unwrap();
    post(
        json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
        Some(&mcp_session),
    );
    let call = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": "misbehave_repeat", "arguments": arguments }
    });
    let over_mcp = latencies(RUN, || {
        let body = post(call.clone(), Some(&mcp_session))
            .body_mut()
            .read_to_string()
            .unwrap();
        assert!(
            body.contains("abab") && body.contains("\"isError\":false"),
            "{body}"
        );
    });

    print_table(
        "a trivial tool call over loopback HTTP",
        "p50 / session API p50",
        RUN,
        &[
            ("`POST /v1/sessions/ID/tools/repeat`", &plain),
            (
                "MCP `tools/call` of `misbehave_repeat` on `/mcp`",
                &over_mcp,
            ),
        ],
    );
}
