//! Outbound HTTP benchmark: `cargo bench -p agentbox-tests --bench outbound`.
//!
//! Measures, in one run, a GET of 1 KiB from a server on a loopback port
//! made three ways, one at a time, each on a new connection:
//! - native Rust (ureq), the baseline;
//! - a guest: the fetcher plugin's `fetch` tool, a whole tool call (fresh
//!   instance, the host's checks, the request, the commit) in a memory-store
//!   session;
//! - the same tool call without the request (`config`), the turn alone.
//!
//! Prints a Markdown table of calls per second, p50 and p99, and the ratio
//! of each p50 to the native request's; `BENCHMARKS.md` keeps the latest.

use std::time::Duration;

use agentbox_host::policy::PolicyFile;
use agentbox_host::{Host, Limits};
use agentbox_tests::measure::{latencies, print_table, started};
use agentbox_tests::{plugin_bytes, plugins};
use serde_json::json;

/// How long each measurement runs.
const RUN: Duration = Duration::from_secs(3);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let address = runtime.block_on(async {
        let app =
            axum::Router::new().route("/kib", axum::routing::get(|| async { vec![b'x'; 1024] }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        address
    });
    let url = format!("http://{address}/kib");

    let native = latencies(RUN, || {
        // A new agent each time: a new connection, as each guest call makes.
        let body = ureq::Agent::new_with_defaults()
            .get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_vec()
            .unwrap();
        assert_eq!(body.len(), 1024);
    });

    let policy = PolicyFile::parse(&format!(
        "[plugins.fetcher.http]\nallow = [\"http://{address}\"]\n[plugins.fetcher.config]\nmodel = \"m\""
    ))
    .and_then(|file| file.apply(Limits::default()))
    .unwrap();
    let host = Host::builder().policy(policy).build().unwrap();
    host.load_plugin(&plugin_bytes(plugins::FETCHER)).unwrap();
    let session = runtime.block_on(started(&host, "fetcher"));
    let tool = |name: &str, args: serde_json::Value| {
        runtime
            .block_on(host.call_tool(&session, name, args, None))
            .unwrap()
            .result
    };
    let guest = latencies(RUN, || {
        let fetched = tool("fetch", json!({ "url": url }));
        assert_eq!(fetched["body"].as_str().unwrap().len(), 1024);
    });
    let turn = latencies(RUN, || {
        assert_eq!(tool("config", json!({ "key": "model" })), "m");
    });

    print_table(
        "GET of 1 KiB on loopback, a new connection each",
        "p50 / native p50",
        RUN,
        &[
            ("native Rust (ureq)", &native),
            ("through a guest: the `fetch` tool call", &guest),
            ("the same tool call without the request (`config`)", &turn),
        ],
    );
}
