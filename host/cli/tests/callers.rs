//! Callers of `agentbox serve` as a separate process: keys made with
//! `agentbox keys`, JWTs verified with an HMAC secret from the environment,
//! each caller refused the others' sessions, a revoked key refused while
//! the server runs, a server that will not open its API by mistake (nor
//! keep it open once keys are made, nor open it when the keys file breaks),
//! and a password that is kept nowhere.

mod common;
// Shared with the agentbox-tests crate; these tests use only part of it.
#[allow(dead_code)]
#[path = "../../../tests/src/redis_server.rs"]
mod redis_server;

use common::{Server, agentbox, json_of, plugin_dir, request};
use serde_json::json;

const SECRET: &str = "a-secret-of-the-callers-tests-at-least-32-bytes";

/// An HS256 token for `user` from the issuer the test's server trusts,
/// valid for an hour.
fn token(user: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims =
        json!({ "sub": user, "iss": "https://auth.test", "aud": "agentbox", "exp": now + 3600 });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// Starts a session of profile as the caller with `token`, for `user`.
fn start(server: &Server, token: &str, user: Option<&str>) -> String {
    let body = json!({ "plugin": "profile", "user_id": user }).to_string();
    let (status, body) = request(
        "POST",
        &server.url("/v1/sessions"),
        Some(&body),
        Some(token),
    );
    assert_eq!(status, 201, "{body}");
    json_of(&body)["session"].as_str().unwrap().to_owned()
}

#[test]
fn a_jwt_caller_and_an_api_key_backend_are_each_refused_the_others_sessions() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let (ok, key, stderr) = agentbox(
        &[
            "keys",
            "create",
            "backend",
            "--plugin",
            "profile",
            "--act-for-users",
            "--data-dir",
            dir,
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    let key = key.trim().to_owned();
    assert!(key.starts_with("abk_") && key.len() == 68, "{key}");
    assert!(stderr.contains("it is shown this once"), "{stderr}");
    let kept = std::fs::read_to_string(data.path().join("keys.toml")).unwrap();
    assert!(
        !kept.contains(&key),
        "the file keeps the digest only: {kept}"
    );
    let (ok, listed, stderr) = agentbox(&["keys", "list", "--data-dir", dir], &[]);
    assert!(ok, "{stderr}");
    assert!(
        listed.contains("backend") && !listed.contains(&key),
        "{listed}"
    );

    let config = data.path().join("serve.toml");
    std::fs::write(
        &config,
        r#"
[jwt]
algorithm = "HS256"
secret_env = "AGENTBOX_TEST_JWT_SECRET"
issuer = "https://auth.test"
audience = "agentbox"
plugins = ["profile"]
"#,
    )
    .unwrap();
    let profile = plugin_dir("profile");
    let server = Server::start_with_env(
        data.path(),
        &[
            "--plugin",
            profile.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        &[
            ("AGENTBOX_TEST_JWT_SECRET", SECRET),
            ("AGENTBOX_ADMIN_TOKEN", "admin-token-of-the-callers-tests"),
        ],
    );
    server.wait_for("callers authenticate with an API key from");

    let (status, body) = request("GET", &server.url("/v1/tools"), None, None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(json_of(&body)["kind"], "unauthorized");

    let ada = token("ada@example.com");
    let by_token = start(&server, &ada, None);
    let by_key = start(&server, &key, Some("+15551234567"));
    for (token, own, other) in [(&ada, &by_token, &by_key), (&key, &by_key, &by_token)] {
        let (status, body) = request(
            "GET",
            &server.url(&format!("/v1/sessions/{own}")),
            None,
            Some(token),
        );
        assert_eq!(status, 200, "{body}");
        for path in [
            format!("/v1/sessions/{other}"),
            format!("/v1/sessions/{other}/history"),
            format!("/v1/sessions/{other}/events"),
            format!("/v1/sessions/{other}/state?turn=0"),
        ] {
            let (status, body) = request("GET", &server.url(&path), None, Some(token));
            assert_eq!(status, 404, "{path}: {body}");
        }
        for path in [
            format!("/v1/sessions/{other}/fork"),
            format!("/v1/sessions/{other}/rewind"),
        ] {
            let (status, body) = request(
                "POST",
                &server.url(&path),
                Some(r#"{"turn": 0}"#),
                Some(token),
            );
            assert_eq!(status, 404, "{path}: {body}");
        }

        // Its own session's timeline: the start, its state, a fork of it
        // that is its own too, and a rewind with nowhere to go back to.
        let (status, body) = request(
            "GET",
            &server.url(&format!("/v1/sessions/{own}/events")),
            None,
            Some(token),
        );
        assert_eq!(status, 200, "{body}");
        let events = json_of(&body);
        assert_eq!(events["events"][0]["kind"], "start", "{body}");
        assert_eq!(events["next"], serde_json::Value::Null);
        for query in ["limit=0", "limit=1001", "after=-1", "turn=1"] {
            let (status, body) = request(
                "GET",
                &server.url(&format!("/v1/sessions/{own}/events?{query}")),
                None,
                Some(token),
            );
            assert_eq!(status, 400, "{query}: {body}");
            assert_eq!(json_of(&body)["kind"], "bad-request", "{query}: {body}");
        }
        let (status, body) = request(
            "GET",
            &server.url(&format!("/v1/sessions/{own}/state?turn=0")),
            None,
            Some(token),
        );
        assert_eq!(
            (status, json_of(&body)["event"].clone()),
            (200, json!(1)),
            "{body}"
        );
        let (status, body) = request(
            "POST",
            &server.url(&format!("/v1/sessions/{own}/fork")),
            Some(r#"{"turn": 0}"#),
            Some(token),
        );
        assert_eq!(status, 201, "{body}");
        let fork = json_of(&body)["session"].as_str().unwrap().to_owned();
        for (reader, reaches) in [(token, 200), (if token == &ada { &key } else { &ada }, 404)] {
            let (status, body) = request(
                "GET",
                &server.url(&format!("/v1/sessions/{fork}")),
                None,
                Some(reader),
            );
            assert_eq!(status, reaches, "{body}");
        }
        let (status, body) = request(
            "POST",
            &server.url(&format!("/v1/sessions/{own}/rewind")),
            Some(r#"{"turn": 0}"#),
            Some(token),
        );
        assert_eq!(status, 400, "{body}");
        assert!(
            json_of(&body)["message"]
                .as_str()
                .unwrap()
                .contains("a rewind goes back to an earlier one"),
            "{body}"
        );
        let (status, body) = request(
            "POST",
            &server.url(&format!("/v1/sessions/{other}/messages")),
            Some(r#"{"text": "my name is mallory"}"#),
            Some(token),
        );
        assert_eq!(status, 404, "{body}");
    }
    let (_, record) = request(
        "GET",
        &server.url(&format!("/v1/sessions/{by_token}")),
        None,
        Some(&ada),
    );
    assert_eq!(json_of(&record)["user_id"], "ada@example.com");
    let (_, record) = request(
        "GET",
        &server.url(&format!("/v1/sessions/{by_key}")),
        None,
        Some("admin-token-of-the-callers-tests"),
    );
    assert_eq!(
        json_of(&record)["user_id"],
        "+15551234567",
        "the admin reaches all"
    );

    let (ok, _, stderr) = agentbox(&["keys", "revoke", "backend", "--data-dir", dir], &[]);
    assert!(ok, "{stderr}");
    server.wait_for("keys.toml changed: 0 API keys");
    let (status, body) = request(
        "GET",
        &server.url(&format!("/v1/sessions/{by_key}")),
        None,
        Some(&key),
    );
    assert_eq!(status, 401, "{body}");
    let (status, _) = request(
        "GET",
        &server.url(&format!("/v1/sessions/{by_token}")),
        None,
        Some(&ada),
    );
    assert_eq!(status, 200, "the token still serves");
}

#[test]
fn an_open_server_requires_keys_once_the_file_appears_and_no_key_once_it_no_longer_reads() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let profile = plugin_dir("profile");
    let server = Server::start(data.path(), &["--plugin", profile.to_str().unwrap()]);
    server.wait_for("the session API is open");
    let (status, body) = request("GET", &server.url("/v1/tools"), None, None);
    assert_eq!(status, 200, "{body}");

    let (ok, key, stderr) = agentbox(
        &[
            "keys",
            "create",
            "app",
            "--plugin",
            "profile",
            "--data-dir",
            dir,
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    let key = key.trim().to_owned();
    server.wait_for("keys.toml changed: 1 API keys; the session API requires one from now on");
    let (status, body) = request("GET", &server.url("/v1/tools"), None, None);
    assert_eq!(status, 401, "{body}");
    let (status, body) = request("GET", &server.url("/v1/tools"), None, Some(&key));
    assert_eq!(status, 200, "{body}");

    // A file that no longer reads leaves no key standing, and never
    // opens the API again.
    std::fs::write(data.path().join("keys.toml"), "[keys.app\n").unwrap();
    server.wait_for("every API key is refused until the file reads again");
    for token in [Some(key.as_str()), None] {
        let (status, body) = request("GET", &server.url("/v1/tools"), None, token);
        assert_eq!(status, 401, "{body}");
    }
    std::fs::remove_file(data.path().join("keys.toml")).unwrap();
    server.wait_for("every API key is refused until the file reads again");
    let (status, body) = request("GET", &server.url("/v1/tools"), None, None);
    assert_eq!(status, 401, "{body}");
}

#[test]
fn serve_will_not_open_its_api_beyond_loopback_nor_take_a_short_or_missing_secret() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let config = |name: &str, text: &str| {
        let path = data.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let short_secret = config(
        "short-secret.toml",
        "[jwt]\nalgorithm = \"HS256\"\nsecret_env = \"AGENTBOX_TEST_JWT_SECRET\"\nissuer = \"i\"\naudience = \"a\"\n",
    );
    let refused = |args: &[&str], env: &[(&str, &str)], reason: &str| {
        let mut command = vec!["serve", "--data-dir", dir];
        command.extend(args);
        let (ok, _, stderr) = agentbox(&command, env);
        assert!(!ok, "{args:?} started");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    };
    refused(
        &["--listen", "0.0.0.0:0"],
        &[],
        "refusing to serve the session API on 0.0.0.0:0 without authentication: create an API key with `agentbox keys create`",
    );
    refused(
        &[
            "--config",
            &config("empty-token.toml", "admin_token = \"\"\n"),
        ],
        &[],
        "the admin token is shorter than 32 characters (it has 0)",
    );
    refused(
        &[],
        &[("AGENTBOX_ADMIN_TOKEN", "a")],
        "the admin token is shorter than 32 characters (it has 1)",
    );
    refused(
        &["--keys", &format!("{dir}/missing.toml")],
        &[],
        "cannot read the API keys file",
    );
    refused(
        &["--config", &short_secret],
        &[("AGENTBOX_TEST_JWT_SECRET", "short")],
        "the [jwt] settings are invalid: the secret in `AGENTBOX_TEST_JWT_SECRET` is 5 bytes; an HMAC secret needs at least 32",
    );
}

#[test]
fn keys_refuses_a_taken_name_an_unknown_one_and_a_bad_file_saying_which() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let create = [
        "keys",
        "create",
        "app",
        "--plugin",
        "intake",
        "--data-dir",
        dir,
    ];
    let (ok, _, stderr) = agentbox(&create, &[]);
    assert!(ok, "{stderr}");
    for (args, reason) in [
        (
            &create[..],
            "a key named `app` exists; revoke it first or choose another name",
        ),
        (
            &["keys", "revoke", "nobody", "--data-dir", dir][..],
            "no key named `nobody` in",
        ),
        (
            &[
                "keys",
                "create",
                "other",
                "--plugin",
                "Intake",
                "--data-dir",
                dir,
            ][..],
            "`Intake` is not a valid name",
        ),
    ] {
        let (ok, _, stderr) = agentbox(args, &[]);
        assert!(!ok && stderr.contains(reason), "{args:?}: {stderr}");
    }
    let file = data.path().join("keys.toml");
    std::fs::write(&file, "[keys.app]\nprincipal = \"app\"\n").unwrap();
    let (ok, _, stderr) = agentbox(&["keys", "list", "--data-dir", dir], &[]);
    assert!(
        !ok && stderr.contains(&format!("the API keys file {} is invalid", file.display())),
        "{stderr}"
    );
}

/// Every text the store keeps, outside the components it stores (which
/// hold the shop's demo credentials): each SQLite table's rows, or each
/// Redis key's value whatever its type.
fn stored_text(store: &str) -> String {
    if let Some(path) = store.strip_prefix("sqlite:") {
        let db = rusqlite::Connection::open(path).unwrap();
        let tables: Vec<String> = db
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(tables.contains(&"history".to_owned()), "{tables:?}");
        let mut text = String::new();
        for table in tables.iter().filter(|table| *table != "plugin_versions") {
            let mut rows = db.prepare(&format!("SELECT * FROM {table}")).unwrap();
            let columns = rows.column_count();
            let mut rows = rows.query([]).unwrap();
            while let Some(row) = rows.next().unwrap() {
                for column in 0..columns {
                    let value = row.get_ref(column).unwrap();
                    text.push_str(&String::from_utf8_lossy(match value {
                        rusqlite::types::ValueRef::Text(bytes)
                        | rusqlite::types::ValueRef::Blob(bytes) => bytes,
                        _ => b"",
                    }));
                    text.push('\n');
                }
            }
        }
        return text;
    }
    let mut redis = redis::Client::open(store)
        .unwrap()
        .get_connection()
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut redis).unwrap();
    assert!(!keys.is_empty());
    let mut text = String::new();
    for key in keys
        .iter()
        .filter(|key| !key.starts_with("agentbox:plugin:"))
    {
        let kind: String = redis::cmd("TYPE").arg(key).query(&mut redis).unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![redis::cmd("GET").arg(key).query(&mut redis).unwrap()],
            "hash" => redis::cmd("HGETALL").arg(key).query(&mut redis).unwrap(),
            "list" => redis::cmd("LRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query(&mut redis)
                .unwrap(),
            "set" => redis::cmd("SMEMBERS").arg(key).query(&mut redis).unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query(&mut redis)
                .unwrap(),
            other => panic!("key {key} is a {other}, which this test cannot read"),
        };
        text.push_str(key);
        for value in values {
            text.push_str(&String::from_utf8_lossy(&value));
            text.push('\n');
        }
    }
    text
}

#[test]
fn a_password_is_nowhere_after_a_login_not_in_the_store_the_log_or_any_answer() {
    let data = tempfile::tempdir().unwrap();
    let database = format!("sqlite:{}", data.path().join("agentbox.db").display());
    let redis = redis_server::RedisServer::start();
    let mut stores = vec![database];
    stores.extend(redis.as_ref().map(|redis| redis.url().to_owned()));
    for store in stores {
        let shop = plugin_dir("shop");
        let server = Server::start_with_env(
            data.path(),
            &["--plugin", shop.to_str().unwrap(), "--store", &store],
            &[("RUST_LOG", "trace")],
        );
        let id = server.start_session("shop");
        let mut answers = Vec::new();
        let mut call = |path: &str, body: serde_json::Value| {
            let (status, answer) =
                request("POST", &server.url(path), Some(&body.to_string()), None);
            answers.push(answer.clone());
            (status, answer)
        };
        let login = format!("/v1/sessions/{id}/tools/login");
        // A wrong password, one that breaks the schema, then the right one.
        let (status, answer) = call(
            &login,
            json!({ "username": "ada", "password": "not-Ada's-1st-guess" }),
        );
        assert_eq!(status, 422, "the shop refuses it: {answer}");
        assert!(answer.contains("\"kind\":\"guest-error\""), "{answer}");
        let (status, answer) = call(&login, json!({ "username": "ada", "password": 4_213_370 }));
        assert_eq!(status, 422, "{answer}");
        assert!(
            answer.contains("/password") && answer.contains("[redacted]"),
            "the refusal says where, not what: {answer}"
        );
        assert_eq!(
            json_of(&answer)["violations"][0]["pointer"],
            "/password",
            "{answer}"
        );
        let (status, answer) = call(&login, json!({ "username": "ada", "password": "lovelace" }));
        assert_eq!(status, 200, "{answer}");
        for path in ["", "/history"] {
            let (status, answer) = request(
                "GET",
                &server.url(&format!("/v1/sessions/{id}{path}")),
                None,
                None,
            );
            assert_eq!(status, 200, "{answer}");
            answers.push(answer);
        }
        let history = answers.last().unwrap().clone();
        assert!(
            history.contains(r#"\"password\":\"[redacted]\""#) && history.contains("ada"),
            "the history keeps the call, the username and not the password: {history}"
        );
        let (_, log) = server.terminate();
        let log = log.join("\n");
        assert!(
            log.contains("login"),
            "the log at trace names the tool call"
        );
        for (place, text) in [
            ("an API answer", answers.join("\n")),
            ("the log", log),
            ("the store", stored_text(&store)),
        ] {
            for secret in ["lovelace", "not-Ada's-1st-guess", "4213370"] {
                assert!(!text.contains(secret), "{store}: {place} holds `{secret}`");
            }
        }
    }
    drop(redis);
}
