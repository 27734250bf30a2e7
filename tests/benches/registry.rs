//! Registry benchmark: `cargo bench -p agentbox-tests --bench registry`.
//!
//! Measures, in one run on a memory store, one at a time:
//! - the baseline: misbehave's trivial `repeat` tool called from outside
//!   (`Host::call_tool`), a whole tool turn;
//! - the same tool called by the concierge through `registry.call`: the
//!   concierge's `relay` tool turn, which calls `misbehave/repeat` in the
//!   misbehave child session of its session;
//! - the concierge's `relay` turn calling its own `discover` instead: a
//!   turn and a nested call of its own tool, without a child session;
//! - the concierge calling `mcp:local/misbehave_repeat`: the same tool
//!   through this host's own `/mcp` on a loopback port, declared as a
//!   remote MCP server (a `relay` turn, an MCP round trip over the relay
//!   session's own MCP session, and the tool's turn in that MCP session's
//!   misbehave session).
//!
//! Prints a Markdown table of calls per second, p50 and p99, and each p50
//! against the baseline's; `BENCHMARKS.md` keeps the latest.

use std::time::Duration;

use agentbox_host::policy::PolicyFile;
use agentbox_host::{Host, Limits};
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
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let policy = format!(
        "[mcp.local]\nurl = \"http://{}/mcp\"\n[plugins.concierge]\nmay_call = [\"misbehave/*\", \"mcp:local/*\"]\n",
        listener.local_addr().unwrap()
    );
    let policy = PolicyFile::parse(&policy)
        .and_then(|file| file.apply(Limits::default()))
        .unwrap();
    let host = Host::builder().policy(policy).build().unwrap();
    for plugin in [plugins::CONCIERGE, plugins::MISBEHAVE] {
        host.load_plugin(&plugin_bytes(plugin)).unwrap();
    }
    let router = agentbox_host::server::router(host.clone(), Default::default());
    runtime.spawn(async move {
        agentbox_host::server::serve(listener, router, Default::default(), std::future::pending())
            .await
            .unwrap()
    });
    let start = |plugin: &str| runtime.block_on(started(&host, plugin));
    let (misbehave, concierge) = (start("misbehave"), start("concierge"));
    let tool = |session: &str, name: &str, args: Value| {
        runtime
            .block_on(host.call_tool(session, name, args, None))
            .unwrap()
            .result
    };
    let repeat = json!({ "text": "ab", "times": 2 });

    let outside = latencies(RUN, || {
        assert_eq!(tool(&misbehave, "repeat", repeat.clone()), "abab");
    });
    let through = json!({ "name": "misbehave/repeat", "args": repeat });
    let registry = latencies(RUN, || {
        assert_eq!(
            tool(&concierge, "relay", through.clone()),
            json!({ "ok": "abab" })
        );
    });
    let own = json!({ "name": "concierge/discover", "args": { "prefix": "misbehave/r" } });
    let nested = latencies(RUN, || {
        let answer = tool(&concierge, "relay", own.clone());
        assert_eq!(
            answer,
            json!({ "ok": ["misbehave/record", "misbehave/repeat"] })
        );
    });

    let remote = json!({ "name": "mcp:local/misbehave_repeat", "args": repeat });
    // A result that is no object crosses MCP as its JSON text.
    let over_mcp = latencies(RUN, || {
        let answer = tool(&concierge, "relay", remote.clone());
        assert_eq!(answer, json!({ "ok": "\"abab\"" }), "{answer}");
    });

    print_table(
        "a trivial tool call, memory store",
        "p50 / outside p50",
        RUN,
        &[
            (
                "`misbehave/repeat` from outside (`Host::call_tool`)",
                &outside,
            ),
            (
                "the same through `registry.call` (the concierge's `relay` turn, a child session)",
                &registry,
            ),
            (
                "the concierge's `relay` turn calling its own `discover` (nested, no child)",
                &nested,
            ),
            (
                "the same tool as `mcp:local/misbehave_repeat` (this host's `/mcp` on loopback)",
                &over_mcp,
            ),
        ],
    );
}
