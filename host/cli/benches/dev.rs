//! How long `agentbox dev` takes from a change of a plugin's source to the
//! new version serving, against its build alone: a Python plugin written by
//! `agentbox new`, built by its `build.sh` three times, then changed three
//! times under `agentbox dev`; and of each change, the time from the end of
//! its build (dev's `built` line) to the new version serving, which is what
//! dev adds to the build. Needs componentize-py where the tests' build
//! installs it (`guest-sdk/install-tools`) or on `PATH`.
//!
//!   cargo bench -p agentbox --bench dev

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ROUNDS: usize = 3;

fn main() {
    let scratch = tempfile::tempdir().unwrap();
    let folder = scratch.path().join("greeter");
    let agentbox = env!("CARGO_BIN_EXE_agentbox");
    let installed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../guest-sdk/python/.venv/bin/componentize-py");
    let componentize = if installed.exists() {
        installed
    } else {
        PathBuf::from("componentize-py")
    };
    let made = Command::new(agentbox)
        .args(["new", "greeter", "--lang", "python", "--dir"])
        .arg(&folder)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let builds: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            let built = Command::new("sh")
                .arg("build.sh")
                .current_dir(&folder)
                .env("COMPONENTIZE_PY", &componentize)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(built.success());
            started.elapsed()
        })
        .collect();

    let mut dev = Command::new(agentbox)
        .arg("dev")
        .arg(&folder)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(scratch.path().join("data"))
        .env("COMPONENTIZE_PY", &componentize)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (send, lines) = mpsc::channel();
    let stderr = dev.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if send.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    // When dev said a line containing `text`.
    let wait_for = |text: &str| loop {
        let (at, line) = lines
            .recv_timeout(Duration::from_secs(300))
            .unwrap_or_else(|_| panic!("agentbox dev never said `{text}`"));
        if line.contains(text) {
            return at;
        }
    };
    wait_for("listening on");
    let app = folder.join("app.py");
    let source = std::fs::read_to_string(&app).unwrap();
    let (swaps, after_builds): (Vec<Duration>, Vec<Duration>) = (0..ROUNDS)
        .map(|round| {
            let changed = source.replace("say(f\"Visit ", &format!("say(f\"Visit {round}: "));
            let started = Instant::now();
            std::fs::write(&app, changed).unwrap();
            let built = wait_for("built;");
            let active = wait_for("is active");
            (active - started, active - built)
        })
        .unzip();
    let _ = dev.kill();
    let _ = dev.wait();

    let median = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let (build, swap, after_build) = (median(builds), median(swaps), median(after_builds));
    println!("agentbox dev, a Python plugin from `agentbox new`, median of {ROUNDS}:");
    println!(
        "  build.sh alone                  {:>6.1} s",
        build.as_secs_f64()
    );
    println!(
        "  change to the new version live  {:>6.1} s",
        swap.as_secs_f64()
    );
    println!(
        "  its build's end to live         {:>6.1} s (the aim: under 1 s)",
        after_build.as_secs_f64()
    );
    println!(
        "  ratio                           {:>6.2}x (the aim: under build + 1 s, {:.1} s)",
        swap.as_secs_f64() / build.as_secs_f64(),
        build.as_secs_f64() + 1.0
    );
}
