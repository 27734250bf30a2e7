//! A `redis-server` for tests and benchmarks.

/// A `redis-server` of the caller's own on a free loopback port, stopped
/// (by its pid) when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: std::process::Child,
    url: String,
    port: u16,
    durable: bool,
    dir: tempfile::TempDir,
}

/// Starts `redis-server` on `port`, working in `dir`: without persistence,
/// or `durable`, with every write in its append-only file before it answers.
fn spawn(port: u16, dir: &std::path::Path, durable: bool) -> std::process::Child {
    let appendonly = if durable { "yes" } else { "no" };
    std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", appendonly])
        .args(["--appendfsync", "always"])
        .arg("--dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("cannot start redis-server")
}

/// Set by CI: a missing `redis-server` fails the Redis tests instead of
/// skipping them.
const REQUIRE_REDIS: &str = "AGENTBOX_REQUIRE_REDIS";

impl RedisServer {
    /// Starts a server, or says plainly why the calling test is skipped and
    /// returns `None` when `redis-server` is not installed (unless
    /// `AGENTBOX_REQUIRE_REDIS` is set, which makes that a failure).
    pub fn start() -> Option<RedisServer> {
        RedisServer::start_with(false)
    }

    /// Like [`RedisServer::start`], but the server keeps every write in an
    /// append-only file before it answers, so a restart loses nothing.
    pub fn start_durable() -> Option<RedisServer> {
        RedisServer::start_with(true)
    }

    fn start_with(durable: bool) -> Option<RedisServer> {
        if std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os(REQUIRE_REDIS).is_none(),
                "redis-server is not installed, and {REQUIRE_REDIS} requires the Redis tests to run"
            );
            eprintln!(
                "SKIPPED {}: redis-server is not installed (apt-get install redis-server runs these tests)",
                std::thread::current().name().unwrap_or("a Redis test")
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("cannot create a folder for redis-server");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("no free loopback port")
            .port();
        let mut server = RedisServer {
            child: spawn(port, dir.path(), durable),
            url: format!("redis://127.0.0.1:{port}"),
            port,
            durable,
            dir,
        };
        server.wait_until_it_answers();
        Some(server)
    }

    /// Stops the server, as a crash would: it loses everything.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the stopped server again on the same port: empty, or, if
    /// durable, with every write it acknowledged.
    pub fn start_again(&mut self) {
        self.child = spawn(self.port, self.dir.path(), self.durable);
        self.wait_until_it_answers();
    }

    fn wait_until_it_answers(&mut self) {
        let started = std::time::Instant::now();
        while agentbox_host::store::RedisStore::open(&self.url).is_err() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "redis-server on port {} did not answer within 10 s",
                self.port
            );
            std::thread::yield_now();
        }
    }

    /// Its address, `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs one command and returns its reply as text.
    pub fn command(&self, args: &[&str]) -> String {
        let mut conn = redis::Client::open(self.url.as_str())
            .and_then(|client| client.get_connection())
            .expect("cannot connect to redis-server");
        let reply: redis::Value = redis::cmd(args[0])
            .arg(&args[1..])
            .query(&mut conn)
            .unwrap_or_else(|err| panic!("{args:?} failed: {err}"));
        match reply {
            redis::Value::Int(n) => n.to_string(),
            redis::Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            redis::Value::SimpleString(text) => text,
            other => format!("{other:?}"),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
