//! Barge-in benchmark: `cargo bench -p agentbox-tests --bench interrupt`.
//!
//! On the memory store, with a 60 s deadline so that only the interrupt
//! ends a turn. Measures, one turn at a time:
//! - the baseline: a whole `misbehave` message turn that returns at once;
//! - the interrupt latency of a turn spinning in a loop: from
//!   `Host::interrupt` to the turn's caller holding its failure (the turn
//!   said something first, so it was running);
//! - the same of a `fetcher` tool call waiting on a loopback server that
//!   accepted its request and never answers (the server saw the request,
//!   so the turn was waiting on it).
//!
//! Prints a Markdown table of turns per second, p50 and p99, and each p50
//! against the baseline's; `BENCHMARKS.md` keeps the latest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentbox_host::capability::output::Sink;
use agentbox_host::policy::PolicyFile;
use agentbox_host::{Cause, Host, Limits, SessionError};
use agentbox_tests::measure::{latencies, print_table, started};
use agentbox_tests::{plugin_bytes, plugins};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long each measurement runs.
const RUN: Duration = Duration::from_secs(3);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (address, mut accepted) = runtime.block_on(stalling_server());
    let policy = PolicyFile::parse(&format!(
        "[turns]\ndeadline_ms = 60000\n[plugins.fetcher.http]\nallow = [\"http://{address}\"]\ntimeout_ms = 60000"
    ))
    .and_then(|file| file.apply(Limits::default()))
    .unwrap();
    let host = Host::builder().policy(policy).build().unwrap();
    for plugin in [plugins::MISBEHAVE, plugins::FETCHER] {
        host.load_plugin(&plugin_bytes(plugin)).unwrap();
    }
    let start = |plugin: &str| runtime.block_on(started(&host, plugin));
    let (misbehave, fetcher) = (start("misbehave"), start("fetcher"));

    let turn = latencies(RUN, || {
        runtime
            .block_on(host.send_message(&misbehave, "note", None))
            .unwrap();
    });
    let spinning = interrupted(&runtime, &host, &misbehave, || {
        let (said, mut running) = mpsc::unbounded_channel();
        let sink: Sink = Arc::new(move |_: &str| {
            let _ = said.send(());
        });
        let (host, id) = (host.clone(), misbehave.clone());
        let turn = runtime.spawn(async move {
            host.send_message(&id, "ramble spinning", Some(sink))
                .await
                .map(drop)
        });
        runtime.block_on(running.recv()).unwrap();
        turn
    });
    let waiting = interrupted(&runtime, &host, &fetcher, || {
        let (host, id) = (host.clone(), fetcher.clone());
        let url = format!("http://{address}/stall");
        let turn = runtime.spawn(async move {
            host.call_tool(&id, "fetch", json!({ "url": url }), None)
                .await
                .map(drop)
        });
        runtime.block_on(accepted.recv()).unwrap();
        turn
    });

    print_table(
        "interrupting a turn, memory store",
        "p50 / turn p50",
        RUN,
        &[
            ("a whole turn that returns at once (baseline)", &turn),
            ("interrupt of a turn spinning in a loop", &spinning),
            ("interrupt of a turn waiting on outbound I/O", &waiting),
        ],
    );
}

/// For `RUN`, starts a turn of session `id` with `begin`, which returns
/// once the turn is running, interrupts it, and times from the interrupt
/// to the turn's caller holding its failure.
fn interrupted(
    runtime: &tokio::runtime::Runtime,
    host: &Host,
    id: &str,
    mut begin: impl FnMut() -> JoinHandle<Result<(), SessionError>>,
) -> Vec<Duration> {
    let started = Instant::now();
    let mut latencies = Vec::new();
    while started.elapsed() < RUN {
        let turn = begin();
        let interrupted = Instant::now();
        runtime.block_on(host.interrupt(id)).unwrap();
        let err = runtime.block_on(turn).unwrap().unwrap_err();
        assert!(matches!(err.cause, Cause::Interrupted), "{err}");
        latencies.push(interrupted.elapsed());
    }
    latencies
}

/// A loopback server that reads each request and never answers; the
/// receiver hears of each connection it accepts.
async fn stalling_server() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (accepted, accepts) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                if socket.read(&mut buffer).await.is_ok_and(|read| read > 0) {
                    let _ = accepted.send(());
                }
                while socket.read(&mut buffer).await.is_ok_and(|read| read > 0) {}
            });
        }
    });
    (address, accepts)
}
