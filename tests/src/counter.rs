//! The counter plugin, written with raw wit-bindgen: the trivial turn of the benchmarks.

use agentbox_host::engine::Compilation;
use serde_json::json;

use crate::harness::{host, load, send, start};
use crate::plugins::COUNTER;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_increments_its_count_each_turn() {
    let host = host();
    let plugin = load(&host, COUNTER);
    assert_eq!(
        (
            plugin.manifest.name.as_str(),
            plugin.manifest.version.as_str()
        ),
        ("counter", "0.1.0")
    );
    let id = start(&host, "counter", json!({})).await.session;
    for turn in 1..=3 {
        let report = send(&host, &id, "tick").await;
        assert_eq!((report.turn, &report.state["count"]), (turn, &json!(turn)));
    }
}

#[test]
fn a_second_load_of_the_same_bytes_does_not_recompile() {
    let cache = tempfile::tempdir().unwrap();
    let host_with_cache = || {
        let dir =
            cap_std::fs::Dir::open_ambient_dir(cache.path(), cap_std::ambient_authority()).unwrap();
        agentbox_host::Host::builder()
            .artifact_cache(dir)
            .build()
            .unwrap()
    };
    let first = load(&host_with_cache(), COUNTER);
    assert!(
        matches!(first.compilation, Compilation::Compiled(_)),
        "{:?}",
        first.compilation
    );
    let second = load(&host_with_cache(), COUNTER);
    assert!(
        matches!(second.compilation, Compilation::Cached(_)),
        "{:?}",
        second.compilation
    );
    assert_eq!(first.digest, second.digest);
    let artifacts: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    assert!(
        artifacts[0]
            .to_string_lossy()
            .starts_with(&first.digest.to_string()),
        "{artifacts:?}"
    );
}
