//! What the tests of the `agentbox` command share: a running `agentbox
//! serve` on a free port, an HTTP client, and the command itself.

// Each test file uses part of this.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

pub fn plugin_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins")
        .join(name)
}

/// A running `agentbox serve` and its address.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub stderr: std::sync::mpsc::Receiver<String>,
}

impl Server {
    /// Starts `agentbox serve` on a free port with `args`, and waits until it listens.
    pub fn start(data: &Path, args: &[&str]) -> Server {
        Server::start_with_env(data, args, &[])
    }

    /// [`Server::start`] with the environment variables `env` set.
    pub fn start_with_env(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_program(Path::new(env!("CARGO_BIN_EXE_agentbox")), data, args, env)
    }

    /// [`Server::start_with_env`] running the `agentbox` at `program`.
    pub fn start_program(
        program: &Path,
        data: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        Server::start_at(program, "127.0.0.1:0", data, args, env)
    }

    /// [`Server::start_program`] listening at `listen`.
    pub fn start_at(
        program: &Path,
        listen: &str,
        data: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut command = Command::new(program);
        command
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data)
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied());
        Server::spawned(command)
    }

    /// Starts `agentbox dev FOLDER` on a free port with its data in `data`
    /// and the environment variables `env`, and waits until it listens.
    pub fn start_dev(folder: &Path, data: &Path, env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_agentbox"));
        command
            .arg("dev")
            .arg(folder)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied());
        Server::spawned(command)
    }

    /// Runs `command`, reading its stderr, and waits until it listens.
    fn spawned(mut command: Command) -> Server {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start agentbox");
        let (lines, stderr) = std::sync::mpsc::channel();
        let output = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        // From here on, dropping the server (on a failed expectation too) stops the process.
        let mut server = Server {
            child,
            base: String::new(),
            stderr,
        };
        loop {
            let line = server
                .stderr
                .recv_timeout(std::time::Duration::from_secs(300))
                .expect("agentbox stopped before it listened");
            if let Some(rest) = line.strip_prefix("agentbox: listening on ") {
                server.base = rest.split_whitespace().next().unwrap().to_owned();
                return server;
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits for a line of stderr containing `text` and returns it.
    pub fn wait_for(&self, text: &str) -> String {
        self.lines_until(text).pop().unwrap()
    }

    /// The lines of stderr up to the first containing `text`, that one
    /// included.
    pub fn lines_until(&self, text: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self
                .stderr
                // Long enough for a busy machine to compile an interpreter
                // guest that `agentbox dev` rebuilt.
                .recv_timeout(std::time::Duration::from_secs(180))
                .unwrap_or_else(|_| panic!("agentbox never said `{text}`"));
            let found = line.contains(text);
            lines.push(line);
            if found {
                return lines;
            }
        }
    }

    /// Starts a session of `plugin` and returns its id.
    pub fn start_session(&self, plugin: &str) -> String {
        let (status, body) = request(
            "POST",
            &self.url("/v1/sessions"),
            Some(&json!({ "plugin": plugin }).to_string()),
            None,
        );
        assert_eq!(status, 201, "{body}");
        json_of(&body)["session"].as_str().unwrap().to_owned()
    }

    /// Stops the server with SIGTERM and returns its exit status and the rest of its stderr.
    pub fn terminate(self) -> (std::process::ExitStatus, Vec<String>) {
        self.signal("TERM")
    }

    /// Sends the server `signal` (`TERM`, `KILL`) and returns its exit
    /// status and the rest of its stderr; fails if it has not exited a
    /// minute later (and is then killed).
    pub fn signal(mut self, signal: &str) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        let given_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < given_up,
                "agentbox serve did not exit within a minute of SIG{signal}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        (status, self.stderr.try_iter().collect())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Status and body of a request with an optional JSON body and bearer token.
pub fn request(method: &str, url: &str, body: Option<&str>, token: Option<&str>) -> (u16, String) {
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(body.unwrap_or_default().to_owned()).unwrap();
    let mut response = agent().run(request).unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

/// POSTs to `path` a request that declares a 2 MiB body and sends only its
/// first bytes (an HTTP client would otherwise race the server's early
/// answer with its writes), and returns the status and body of the answer.
pub fn declare_oversized_body(server: &Server, path: &str) -> (u16, String) {
    use std::io::{Read, Write};

    let address = server.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    // A server that waited for the whole body would never answer: fail instead.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{{\"text\": \"",
        2 << 20
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

pub fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("`{text}`: {err}"))
}

/// Runs the `agentbox` command with `args` and returns whether it
/// succeeded, its stdout and its stderr.
pub fn agentbox(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_agentbox"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
