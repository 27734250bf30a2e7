//! Callers of `agentbox serve` as a separate process: keys made with
//! `agentbox keys`, JWTs verified with an HMAC secret from the environment,
//! each caller refused the others' sessions, a revoked key refused while
//! the server runs, and a server that will not open its API by mistake.

mod common;

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
        ] {
            let (status, body) = request("GET", &server.url(&path), None, Some(token));
            assert_eq!(status, 404, "{path}: {body}");
        }
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
fn serve_will_not_open_its_api_beyond_loopback_nor_take_an_empty_or_missing_secret() {
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
        "the admin token is empty",
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
