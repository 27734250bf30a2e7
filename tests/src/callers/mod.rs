//! Callers of the session API, served in process on loopback: API keys and
//! JWTs authenticate them, each reaches only the sessions it started, user
//! ids come from the token or a key allowed to name them, and token times
//! are read off the host's clock. The ES256 key pair in `tests/fixtures`
//! exists for these tests only.

use std::sync::Arc;
use std::time::Duration;

use agentbox_host::policy::PolicyFile;
use agentbox_host::server::auth::jwt::{JwtSettings, JwtVerifier};
use agentbox_host::server::auth::keys::KeyFile;
use agentbox_host::server::auth::rates::Rates;
use agentbox_host::server::auth::{Callers, Grant};
use agentbox_host::server::bounds::Bounds;
use agentbox_host::server::sockets::WebSocketSettings;
use agentbox_host::store::MemoryStore;
use agentbox_host::{Clock, Host, Limits};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::harness::{agent, host_builder, load};
use crate::plugins::{CONCIERGE, INTAKE, MISBEHAVE, PROFILE, SHOP};

mod mcp;
mod standing;
mod under_way;

const ADMIN: &str = "admin-token-of-the-callers-tests";

/// Seconds since the epoch on the test clock when each test begins.
const NOW_S: u64 = 1_800_000_000;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A server of intake, shop, profile, misbehave and a concierge that may
/// call the shop for `callers`, on a free loopback port, with its host's
/// clock. Turns have 30 s: only an
/// interrupt stops misbehave's `ramble` in a test's time.
struct Served {
    _runtime: tokio::runtime::Runtime,
    base: String,
    clock: Clock,
    callers: Arc<Callers>,
    _host: Host,
}

fn serve(callers: Callers) -> Served {
    serve_with(callers, WebSocketSettings::default(), Bounds::default())
}

/// [`serve`] with WebSockets held to `websocket` and what callers hold
/// open to `bounds`.
fn serve_with(callers: Callers, websocket: WebSocketSettings, bounds: Bounds) -> Served {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let clock = Clock::manual(NOW_S * 1000);
    let limits = Limits {
        deadline: Duration::from_secs(30),
        fuel: None,
        ..Limits::default()
    };
    let policy = PolicyFile::parse("[plugins.concierge]\nmay_call = [\"shop/*\"]")
        .and_then(|file| file.apply(limits))
        .unwrap();
    let host = host_builder(clock.clone())
        .policy(policy)
        .store(Arc::new(MemoryStore::default()))
        .build()
        .unwrap();
    for plugin in [INTAKE, SHOP, PROFILE, MISBEHAVE, CONCIERGE] {
        load(&host, plugin);
    }
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let callers = Arc::new(callers);
    let access = agentbox_host::server::Access {
        admin_token: Some(ADMIN.into()),
        callers: callers.clone(),
        websocket,
        bounds,
        connections: Default::default(),
        any_host: false,
    };
    let router = agentbox_host::server::router(host.clone(), access);
    runtime.spawn(agentbox_host::server::serve(
        listener,
        router,
        Default::default(),
        std::future::pending(),
    ));
    Served {
        _runtime: runtime,
        base,
        clock,
        callers,
        _host: host,
    }
}

impl Served {
    /// Status, JSON body and headers of a request sent with `authorization`
    /// as is.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        authorization: Option<&str>,
    ) -> (u16, Value, ureq::http::HeaderMap) {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        let mut response = agent().run(request.body(body).unwrap()).unwrap();
        let headers = response.headers().clone();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        // A JSON document, else the last line of a stream of them; a body
        // that is no JSON (`/healthz`, `/metrics`) comes as a string.
        let json = serde_json::from_str(&text).unwrap_or_else(|_| {
            text.lines().last().map_or(Value::Null, |line| {
                serde_json::from_str(line).unwrap_or_else(|_| Value::String(line.to_owned()))
            })
        });
        (status, json, headers)
    }

    /// Starts a session of `plugin` as `token`: its id.
    fn start(&self, token: &str, plugin: &str) -> String {
        let (status, body) = self.as_caller(
            token,
            "POST",
            "/v1/sessions",
            Some(json!({ "plugin": plugin })),
        );
        assert_eq!(status, 201, "{body}");
        body["session"].as_str().unwrap().to_owned()
    }

    /// [`Served::call`] with `token` as the bearer token.
    fn as_caller(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, json, _) = self.call(method, path, body, Some(&format!("Bearer {token}")));
        (status, json)
    }
}

/// Asserts that `token` reaches session `id` through none of the session
/// routes, each answering as for a session that does not exist.
fn reaches_nothing_of(served: &Served, token: &str, id: &str) {
    let nothing = format!("session `{id}`: no such session");
    for (method, path, body) in [
        ("GET", format!("/v1/sessions/{id}"), None),
        ("GET", format!("/v1/sessions/{id}/history"), None),
        (
            "POST",
            format!("/v1/sessions/{id}/messages"),
            Some(json!({ "text": "hello" })),
        ),
        (
            "POST",
            format!("/v1/sessions/{id}/tools/add_to_cart"),
            Some(json!({ "book": "Dune", "quantity": 99 })),
        ),
        ("GET", format!("/v1/sessions/{id}/ws"), None),
        ("POST", format!("/v1/sessions/{id}/interrupt"), None),
        ("DELETE", format!("/v1/sessions/{id}"), None),
    ] {
        let (status, body) = served.as_caller(token, method, &path, body);
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["kind"], "not-found", "{method} {path}: {body}");
        assert!(
            body["message"].as_str().unwrap().ends_with(&nothing),
            "{method} {path}: {body}"
        );
    }
}

fn keys() -> (KeyFile, [String; 3]) {
    let mut file = KeyFile::default();
    let grant = |plugins: &[&str], act_for_users, choose_ids| Grant {
        plugins: plugins.iter().map(|plugin| (*plugin).to_owned()).collect(),
        act_for_users,
        choose_ids,
    };
    let backend = file
        .create(
            "backend",
            "shop-backend",
            grant(&["shop", "profile"], true, false),
        )
        .unwrap();
    let app = file
        .create("app", "app", grant(&["intake"], false, false))
        .unwrap();
    let chooser = file
        .create("chooser", "chooser", grant(&["*"], false, true))
        .unwrap();
    (file, [backend, app, chooser])
}

#[test]
fn api_keys_own_their_sessions_and_name_users_only_when_allowed() {
    let (file, [backend, app, chooser]) = keys();
    let text = toml_of(&file);
    assert!(!text.contains(&backend) && !text.contains(&app), "{text}");
    let served = serve(Callers::new(Some(&file), None));

    for (authorization, reason) in [
        (None, "the session API needs `Authorization: Bearer ...`"),
        (
            Some("Bearer abk_0000".to_owned()),
            "the API key is unknown or revoked",
        ),
        (Some(format!("Basic {backend}")), "the session API needs"),
        (
            Some("Bearer not.a.jwt".to_owned()),
            "this server takes API keys only",
        ),
    ] {
        let (status, body, headers) = served.call(
            "POST",
            "/v1/sessions",
            Some(json!({ "plugin": "shop" })),
            authorization.as_deref(),
        );
        assert_eq!(
            (
                status,
                headers
                    .get("www-authenticate")
                    .map(|value| value.to_str().unwrap())
            ),
            (401, Some("Bearer")),
            "{body}"
        );
        assert_eq!(body["kind"], "unauthorized");
        assert!(
            body["message"].as_str().unwrap().starts_with(reason),
            "{body}"
        );
    }

    // A backend that authenticated its users names them; the scheme is
    // matched in any case.
    let (status, body, _) = served.call(
        "POST",
        "/v1/sessions",
        Some(json!({ "plugin": "profile", "user_id": "+15551234567" })),
        Some(&format!("bearer {backend}")),
    );
    assert_eq!(status, 201, "{body}");
    let profile = body["session"].as_str().unwrap().to_owned();
    assert!(uuid_like(&profile), "a minted id, not `{profile}`");
    let (status, record) =
        served.as_caller(&backend, "GET", &format!("/v1/sessions/{profile}"), None);
    assert_eq!(status, 200, "{record}");
    assert_eq!(
        (&record["user_id"], &record["owner"]),
        (&json!("+15551234567"), &json!("key:shop-backend"))
    );

    // Another principal reaches nothing of it, and is told nothing of it.
    reaches_nothing_of(&served, &app, &profile);
    reaches_nothing_of(&served, &chooser, &profile);
    let (status, _) = served.as_caller(ADMIN, "GET", &format!("/v1/sessions/{profile}"), None);
    assert_eq!(status, 200, "the admin reaches every session");

    for (token, start, reason) in [
        (
            &app,
            json!({ "plugin": "intake", "user_id": "ada" }),
            "this API key may not act for users; leave `user_id` out",
        ),
        (
            &app,
            json!({ "plugin": "shop" }),
            "this caller may not use plugin `shop`",
        ),
        (
            &app,
            json!({ "plugin": "intake", "id": "1" }),
            "this caller may not choose session ids",
        ),
    ] {
        let (status, body) = served.as_caller(token, "POST", "/v1/sessions", Some(start.clone()));
        assert_eq!(
            (status, &body["kind"]),
            (403, &json!("forbidden")),
            "{start}: {body}"
        );
        assert!(
            body["message"].as_str().unwrap().starts_with(reason),
            "{body}"
        );
    }

    // A chosen id is kept under the principal's name, out of others' way.
    let (status, body) = served.as_caller(
        &chooser,
        "POST",
        "/v1/sessions",
        Some(json!({ "plugin": "intake", "id": "1" })),
    );
    assert_eq!(
        (status, &body["session"]),
        (201, &json!("chooser:1")),
        "{body}"
    );
    reaches_nothing_of(&served, &app, "chooser:1");

    // The tools listed are those of the plugins the key may use.
    let (_, tools) = served.as_caller(&app, "GET", "/v1/tools", None);
    let addresses: Vec<&str> = tools
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["address"].as_str().unwrap())
        .collect();
    assert!(!addresses.is_empty());
    assert!(
        addresses
            .iter()
            .all(|address| address.starts_with("intake/")),
        "{addresses:?}"
    );

    // A revoked key is refused from the next request on.
    let mut revoked = file.clone();
    assert!(revoked.revoke("backend"));
    served.callers.reload_keys(&revoked);
    let (status, body) =
        served.as_caller(&backend, "GET", &format!("/v1/sessions/{profile}"), None);
    assert_eq!(
        (status, &body["message"]),
        (401, &json!("the API key is unknown or revoked"))
    );
    let (status, _) = served.as_caller(&app, "GET", "/v1/tools", None);
    assert_eq!(status, 200, "the other keys stay");
}

/// Whether `id` is a minted random id (a UUID's 122 random bits).
fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.chars().filter(|c| *c == '-').count() == 4
}

fn toml_of(file: &KeyFile) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    file.write(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        KeyFile::parse(&text).unwrap(),
        *file,
        "the file reads back as written"
    );
    text
}

fn es256_settings() -> JwtSettings {
    JwtSettings {
        algorithm: Algorithm::ES256,
        secret_env: None,
        public_key: Some(fixture("jwt-es256-public.pem")),
        jwks: None,
        issuer: "https://auth.example.com".into(),
        audience: "agentbox".into(),
        user_claim: "sub".into(),
        plugins: vec!["profile".into(), "intake".into()],
        leeway_s: 30,
    }
}

/// A token for `user` signed with the fixture's ES256 key, valid for an
/// hour from the test clock's start, with `changes` made to its claims.
fn token(user: &str, changes: Value) -> String {
    let mut claims = json!({
        "sub": user,
        "iss": "https://auth.example.com",
        "aud": "agentbox",
        "iat": NOW_S,
        "exp": NOW_S + 3600,
    });
    for (claim, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(claim);
        } else {
            claims[claim] = value.clone();
        }
    }
    let key = EncodingKey::from_ec_pem(&std::fs::read(fixture("jwt-es256-private.pem")).unwrap())
        .unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap()
}

#[test]
fn a_jwt_caller_is_its_tokens_user_and_its_times_follow_the_host_clock() {
    let (file, [backend, ..]) = keys();
    let verifier = JwtVerifier::new(&es256_settings()).unwrap();
    let served = serve(Callers::new(Some(&file), Some(verifier)));
    let ada = token("ada@example.com", json!({}));

    let (status, body) = served.as_caller(
        &ada,
        "POST",
        "/v1/sessions",
        Some(json!({ "plugin": "profile" })),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["session"].as_str().unwrap().to_owned();
    let (_, record) = served.as_caller(&ada, "GET", &format!("/v1/sessions/{id}"), None);
    assert_eq!(
        (&record["user_id"], &record["owner"]),
        (&json!("ada@example.com"), &json!("jwt:ada@example.com"))
    );
    let (status, body) = served.as_caller(
        &ada,
        "POST",
        "/v1/sessions",
        Some(json!({ "plugin": "profile", "user_id": "ada@example.com" })),
    );
    assert_eq!(status, 201, "naming its own user is no claim: {body}");
    let (status, body) = served.as_caller(
        &ada,
        "POST",
        "/v1/sessions",
        Some(json!({ "plugin": "profile", "user_id": "grace@example.com" })),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["message"],
        "user id `grace@example.com` is not the user the token was issued to"
    );
    let (status, _) = served.as_caller(
        &ada,
        "POST",
        "/v1/sessions",
        Some(json!({ "plugin": "shop" })),
    );
    assert_eq!(status, 403, "shop is not among the token holders' plugins");

    // Another user's token and an API key reach nothing of Ada's session,
    // and her token nothing of the key's.
    reaches_nothing_of(&served, &token("grace@example.com", json!({})), &id);
    reaches_nothing_of(&served, &backend, &id);
    let (_, body) = served.as_caller(
        &backend,
        "POST",
        "/v1/sessions",
        Some(json!({ "plugin": "shop" })),
    );
    reaches_nothing_of(&served, &ada, body["session"].as_str().unwrap());

    let refused = |token: &str| {
        let (status, body) = served.as_caller(token, "GET", "/v1/tools", None);
        assert_eq!(
            (status, &body["kind"]),
            (401, &json!("unauthorized")),
            "{body}"
        );
        body["message"].as_str().unwrap().to_owned()
    };
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": "ada", "iss": "https://auth.example.com", "aud": "agentbox", "exp": NOW_S + 60 }),
        &EncodingKey::from_secret(&std::fs::read(fixture("jwt-es256-public.pem")).unwrap())
            .unwrap(),
    )
    .unwrap();
    // Grace's claims under the signature of Ada's token.
    let grace = token("grace@example.com", json!({}));
    let [header, _, signature]: [&str; 3] = ada.split('.').collect::<Vec<_>>().try_into().unwrap();
    let tampered = format!("{header}.{}.{signature}", grace.split('.').nth(1).unwrap());
    for (token, reason) in [
        (
            token("ada", json!({ "aud": "another-service" })),
            "its audience is not this server",
        ),
        (
            token("ada", json!({ "iss": "https://evil.example.com" })),
            "its issuer is not the one the server trusts",
        ),
        (
            token("ada", json!({ "exp": null })),
            "it has no `exp` claim",
        ),
        (
            token("ada", json!({ "sub": null })),
            "it has no `sub` claim naming its user",
        ),
        (
            token("ada", json!({ "sub": "ada lovelace" })),
            "its `sub` claim: user id `ada lovelace` is invalid",
        ),
        (
            token("ada", json!({ "nbf": NOW_S + 120 })),
            "it is not valid yet",
        ),
        (
            hs256,
            "it is signed with another algorithm than the server's",
        ),
        (tampered, "its signature does not verify"),
        ("a.b.c".to_owned(), "it is not a well-formed JWT"),
    ] {
        let message = refused(&token);
        assert!(
            message.starts_with(&format!("the token is refused: {reason}")),
            "{message}"
        );
    }

    // Expiry is read off the host's clock, with the leeway allowed.
    served.clock.advance(Duration::from_secs(3600 + 29));
    let (status, _) = served.as_caller(&ada, "GET", &format!("/v1/sessions/{id}"), None);
    assert_eq!(status, 200, "within the leeway");
    served.clock.advance(Duration::from_secs(1));
    assert_eq!(refused(&ada), "the token is refused: it has expired");
}

#[test]
fn each_principal_is_held_to_its_rates_by_the_host_clock() {
    let (file, [backend, app, _]) = keys();
    let rates = Rates {
        session_starts_per_minute: Some(2),
        turns_per_second: Some(3),
        reads_per_second: Some(4),
        live_sessions: None,
    };
    let served = serve(Callers::new(Some(&file), None).with_rates(rates));
    let start = |token: &str| {
        served.call(
            "POST",
            "/v1/sessions",
            Some(json!({ "plugin": "intake" })),
            Some(&format!("Bearer {token}")),
        )
    };
    let (status, first, _) = start(&app);
    assert_eq!(status, 201, "{first}");
    assert_eq!(start(&app).0, 201);
    let (status, body, _) = start(&app);
    assert_eq!(
        (status, &body["kind"]),
        (429, &json!("rate-limited")),
        "{body}"
    );
    assert_eq!(
        body["message"],
        "this caller is over its rate of 2 session starts a minute; retry in 30000 ms"
    );
    assert_eq!(start(ADMIN).0, 201, "the admin is not held");
    served.clock.advance(Duration::from_secs(30));
    assert_eq!(start(&app).0, 201, "a token came back after 30 s");

    let id = first["session"].as_str().unwrap().to_owned();
    let message = || {
        served.as_caller(
            &app,
            "POST",
            &format!("/v1/sessions/{id}/messages"),
            Some(json!({ "text": "my name is Ada" })),
        )
    };
    for _ in 0..3 {
        let (status, body) = message();
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = message();
    assert_eq!(
        (status, &body["kind"]),
        (429, &json!("rate-limited")),
        "{body}"
    );
    let (status, _) = served.as_caller(
        &backend,
        "POST",
        "/v1/sessions",
        Some(json!({ "plugin": "shop" })),
    );
    assert_eq!(status, 201, "another principal has buckets of its own");
    served.clock.advance(Duration::from_millis(334));
    assert_eq!(
        message().0,
        200,
        "a turn's token comes back in a third of a second"
    );

    // Reading a session, its history, its events and its state are reads,
    // counted in a bucket of their own.
    let reads = [
        format!("/v1/sessions/{id}"),
        format!("/v1/sessions/{id}/history"),
        format!("/v1/sessions/{id}/events"),
        format!("/v1/sessions/{id}/state"),
    ];
    for path in &reads {
        let (status, body) = served.as_caller(&app, "GET", path, None);
        assert_eq!(status, 200, "{path}: {body}");
    }
    for path in &reads {
        let (status, body, headers) =
            served.call("GET", path, None, Some(&format!("Bearer {app}")));
        assert_eq!(
            (status, &body["kind"]),
            (429, &json!("rate-limited")),
            "{path}: {body}"
        );
        assert_eq!(headers["retry-after"], "1", "{path}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("4 reads a second"),
            "{body}"
        );
    }
    served.clock.advance(Duration::from_millis(250));
    let (status, body) = served.as_caller(&app, "GET", &reads[1], None);
    assert_eq!(
        status, 200,
        "a read's token comes back in a quarter second: {body}"
    );
}

#[test]
fn a_principal_holds_a_bounded_number_of_live_sessions_and_others_are_not_held_by_it() {
    let (file, [backend, app, _]) = keys();
    let rates = Rates {
        live_sessions: Some(2),
        ..Rates::default()
    };
    let served = serve(Callers::new(Some(&file), None).with_rates(rates));
    let start = |token: &str, plugin: &str| {
        served.as_caller(
            token,
            "POST",
            "/v1/sessions",
            Some(json!({ "plugin": plugin })),
        )
    };
    let (_, first) = start(&app, "intake");
    assert_eq!(start(&app, "intake").0, 201);
    let (status, body) = start(&app, "intake");
    assert_eq!(
        (status, &body["kind"]),
        (429, &json!("live-sessions")),
        "{body}"
    );
    assert_eq!(
        body["message"],
        "`key:app` has 2 live sessions, its limit of 2: end one first"
    );
    assert_eq!(
        start(&backend, "shop").0,
        201,
        "another principal has room of its own"
    );
    assert_eq!(start(ADMIN, "intake").0, 201, "the admin is not held");
    let id = first["session"].as_str().unwrap();
    let (status, body) = served.as_caller(&app, "DELETE", &format!("/v1/sessions/{id}"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        start(&app, "intake").0,
        201,
        "an ended session frees its place"
    );
}

#[test]
fn the_admin_exports_and_erases_one_users_data_and_no_one_elses() {
    let (file, [backend, _, _]) = keys();
    let served = serve(Callers::new(Some(&file), None));
    let converse = |user: &str, name: &str| {
        let (status, started) = served.as_caller(
            &backend,
            "POST",
            "/v1/sessions",
            Some(json!({ "plugin": "profile", "user_id": user })),
        );
        assert_eq!(status, 201, "{started}");
        let id = started["session"].as_str().unwrap().to_owned();
        let text = format!("my name is {name}");
        let path = format!("/v1/sessions/{id}/messages");
        assert_eq!(
            served
                .as_caller(&backend, "POST", &path, Some(json!({ "text": text })))
                .0,
            200
        );
        // The profile is kept in the user's bucket as the call ends.
        let ended = served.as_caller(&backend, "DELETE", &format!("/v1/sessions/{id}"), None);
        assert_eq!(ended.0, 200, "{}", ended.1);
    };
    converse("+15551234567", "Grace");
    converse("ada@example.com", "Ada");
    let admin = |method: &str, path: &str| {
        served.call(method, path, None, Some(&format!("Bearer {ADMIN}")))
    };
    let export = |user: &str| {
        let (status, data, _) = admin("GET", &format!("/v1/admin/users/{user}/export"));
        assert_eq!(status, 200, "{data}");
        data
    };

    let grace = export("+15551234567");
    assert_eq!(grace["user"], "+15551234567");
    let sessions = grace["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{grace}");
    assert_eq!(sessions[0]["session"]["user_id"], "+15551234567");
    assert!(
        sessions[0]["history"]
            .to_string()
            .contains("my name is Grace"),
        "{grace}"
    );
    let kv = grace["kv"].as_array().unwrap();
    assert_eq!(kv.len(), 1, "{grace}");
    assert_eq!(
        (&kv[0]["plugin"], &kv[0]["key"]),
        (&json!("profile"), &json!("profile"))
    );
    assert!(
        kv[0]["value"].as_str().unwrap().contains("Grace"),
        "{grace}"
    );

    let (status, _) =
        served.as_caller(&backend, "GET", "/v1/admin/users/+15551234567/export", None);
    assert_eq!(status, 401, "a caller's key is no admin token");

    let (status, erased, _) = admin("DELETE", "/v1/admin/users/+15551234567");
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["erased"], json!({ "sessions": 1, "kv_entries": 1 }));
    let gone = export("+15551234567");
    assert_eq!(
        (
            gone["sessions"].as_array().unwrap().len(),
            gone["kv"].as_array().unwrap().len()
        ),
        (0, 0),
        "{gone}"
    );
    let ada = export("ada@example.com");
    assert_eq!(
        (
            ada["sessions"].as_array().unwrap().len(),
            ada["kv"].as_array().unwrap().len()
        ),
        (1, 1),
        "{ada}"
    );

    let (status, refused, _) = admin("GET", "/v1/admin/users/not%20a%20user/export");
    assert_eq!(
        (status, &refused["kind"]),
        (400, &json!("bad-request")),
        "{refused}"
    );
}

#[test]
fn the_admin_reads_writes_and_lists_a_plugins_kv_under_its_rules() {
    let (file, [backend, _, _]) = keys();
    let served = serve(Callers::new(Some(&file), None));
    let admin = |method: &str, path: &str, body: Option<Value>| {
        served.call(method, path, body, Some(&format!("Bearer {ADMIN}")))
    };
    // The operator preloads a returning caller's profile; the plugin greets her.
    let profile = json!({ "name": "Grace", "calls": 3 });
    let (status, stored, _) = admin(
        "PUT",
        "/v1/admin/plugins/profile/kv/user/profile?user=%2B15551234567",
        Some(profile.clone()),
    );
    assert_eq!(status, 200, "{stored}");
    let (status, started) = served.as_caller(
        &backend,
        "POST",
        "/v1/sessions",
        Some(json!({ "plugin": "profile", "user_id": "+15551234567" })),
    );
    assert_eq!(status, 201, "{started}");
    assert!(
        started["said"]
            .to_string()
            .contains("Welcome back, Grace! This is call number 4."),
        "{started}"
    );
    let (status, read, _) = admin(
        "GET",
        "/v1/admin/plugins/profile/kv/user/profile?user=%2B15551234567",
        None,
    );
    assert_eq!(
        (status, &read["value"]),
        (200, &json!(profile.to_string())),
        "{read}"
    );

    for key in ["customer:1", "customer:2", "customer:3", "order:1"] {
        let (status, body, _) = admin(
            "PUT",
            &format!("/v1/admin/plugins/profile/kv/crm/{key}"),
            Some(json!({ "key": key })),
        );
        assert_eq!(status, 200, "{body}");
    }
    let (_, page, _) = admin(
        "GET",
        "/v1/admin/plugins/profile/kv/crm?prefix=customer:&limit=2",
        None,
    );
    assert_eq!(
        page,
        json!({ "keys": ["customer:1", "customer:2"], "next": "customer:2" })
    );
    let (_, page, _) = admin(
        "GET",
        "/v1/admin/plugins/profile/kv/crm?prefix=customer:&limit=2&after=customer:2",
        None,
    );
    assert_eq!(page, json!({ "keys": ["customer:3"], "next": null }));
    let (status, _, _) = admin("DELETE", "/v1/admin/plugins/profile/kv/crm/order:1", None);
    assert_eq!(status, 200);
    let (status, gone, _) = admin("GET", "/v1/admin/plugins/profile/kv/crm/order:1", None);
    assert_eq!(
        (status, &gone["kind"]),
        (404, &json!("not-found")),
        "{gone}"
    );

    // A TTL is read off the host clock.
    let (status, _, _) = admin(
        "PUT",
        "/v1/admin/plugins/profile/kv/global/brief?ttl_ms=1000",
        Some(json!(1)),
    );
    assert_eq!(status, 200);
    served.clock.advance(Duration::from_millis(1000));
    assert_eq!(
        admin("GET", "/v1/admin/plugins/profile/kv/global/brief", None).0,
        404
    );

    for (path, body, expected) in [
        (
            "/v1/admin/plugins/profile/kv/user/k",
            json!(1),
            "bucket `user` needs the user: add `?user=ID`",
        ),
        (
            "/v1/admin/plugins/profile/kv/global/k?user=ada",
            json!(1),
            "only bucket `user` takes a user, not `global`",
        ),
        (
            "/v1/admin/plugins/Profile/kv/global/k",
            json!(1),
            "the plugin name `Profile` is not a valid name",
        ),
        (
            "/v1/admin/plugins/profile/kv/global/k?ttl_ms=0",
            json!(1),
            "ttl_ms must be at least 1",
        ),
        (
            "/v1/admin/plugins/profile/kv/global/big",
            json!("x".repeat(70_000)),
            "over the limit of 65536 bytes",
        ),
    ] {
        let (status, refused, _) = admin("PUT", path, Some(body));
        assert_eq!(
            (status, &refused["kind"]),
            (400, &json!("bad-request")),
            "{path}: {refused}"
        );
        assert!(
            refused["message"].as_str().unwrap().contains(expected),
            "{path}: {refused}"
        );
    }
    let (status, _) = served.as_caller(&backend, "GET", "/v1/admin/plugins/profile/kv/crm", None);
    assert_eq!(status, 401, "a caller's key is no admin token");

    // Every caller's sessions, listed for the operator without their state.
    let id = started["session"].as_str().unwrap();
    let (status, page, _) = admin(
        "GET",
        "/v1/admin/sessions?plugin=profile&user=%2B15551234567&status=active",
        None,
    );
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["sessions"][0]["id"], json!(id), "{page}");
    assert_eq!(page["sessions"][0]["owner"], json!("key:shop-backend"));
    assert!(page["sessions"][0].get("state").is_none(), "{page}");
    let (status, page, _) = admin("GET", "/v1/admin/sessions?status=ended", None);
    assert_eq!(
        (status, page["sessions"].as_array().unwrap().len()),
        (200, 0),
        "{page}"
    );
    let (status, refused, _) = admin("GET", "/v1/admin/sessions?status=gone", None);
    assert_eq!(
        (status, &refused["kind"]),
        (400, &json!("bad-request")),
        "{refused}"
    );
    let (status, _) = served.as_caller(&backend, "GET", "/v1/admin/sessions", None);
    assert_eq!(status, 401);
}

/// Opens a WebSocket on session `id`, sending `origin` as a browser would;
/// the status of a refused upgrade.
fn open_socket(
    served: &Served,
    id: &str,
    origin: Option<&str>,
) -> Result<tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>, u16> {
    use tungstenite::client::IntoClientRequest as _;

    let url = format!(
        "{}/v1/sessions/{id}/ws",
        served.base.replace("http://", "ws://")
    );
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match tungstenite::connect(request) {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(err) => panic!("{err}"),
    }
}

#[test]
fn a_socket_opens_only_from_allowed_pages_and_a_session_has_few_at_once() {
    let served = serve_with(
        Callers::default(),
        WebSocketSettings {
            origins: vec!["https://app.example.com".into()],
            max_per_session: 2,
        },
        Bounds::default(),
    );
    let (status, body) = served.as_caller(
        ADMIN,
        "POST",
        "/v1/sessions",
        Some(json!({ "plugin": "intake" })),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["session"].as_str().unwrap().to_owned();

    assert_eq!(
        open_socket(&served, &id, Some("https://evil.example.com")).err(),
        Some(403),
        "a page of another origin is refused"
    );
    let mut from_app = open_socket(&served, &id, Some("https://app.example.com")).unwrap();
    let _from_backend = open_socket(&served, &id, None).unwrap();
    assert_eq!(
        open_socket(&served, &id, None).err(),
        Some(429),
        "a third socket"
    );

    from_app.close(None).unwrap();
    while from_app.read().is_ok() {}
    // The server counts the socket closed once its side has seen the close.
    let reopened = (0..500).find_map(|_| {
        std::thread::sleep(Duration::from_millis(10));
        open_socket(&served, &id, None).ok()
    });
    assert!(reopened.is_some(), "a closed socket makes room for another");
}

type Socket = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

/// Opens a WebSocket that starts a session as `token`, with `query`; the
/// status of a refused upgrade.
fn start_socket(served: &Served, token: &str, query: &str) -> Result<Socket, u16> {
    use tungstenite::client::IntoClientRequest as _;

    let url = format!("{}/v1/ws?{query}", served.base.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tungstenite::connect(request) {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(err) => panic!("{err}"),
    }
}

/// The events a socket sends up to and including the turn's last
/// (`committed`, `tool-result` or `error`).
fn turn_events(socket: &mut Socket) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let frame = socket.read().unwrap();
        let Ok(text) = frame.to_text() else { continue };
        let event: Value = serde_json::from_str(text).unwrap();
        let last = event["event"] != "say";
        events.push(event);
        if last {
            return events;
        }
    }
}

#[test]
fn a_socket_starts_its_own_session_under_the_same_checks_as_a_post() {
    let (file, [backend, app, _]) = keys();
    let rates = Rates {
        session_starts_per_minute: Some(2),
        ..Rates::default()
    };
    let served = serve(Callers::new(Some(&file), None).with_rates(rates));

    // One step: the start's events, then the conversation on the same socket.
    let mut socket = start_socket(
        &served,
        &app,
        "plugin=intake&variables=%7B%22name%22%3A%22Ada%22%7D",
    )
    .unwrap();
    let started = turn_events(&mut socket);
    assert_eq!(
        started[0],
        json!({ "event": "say", "text": "Welcome, Ada! I will take down your request." })
    );
    let last = started.last().unwrap();
    assert_eq!(
        (&last["event"], &last["turn"]),
        (&json!("committed"), &json!(0)),
        "{started:?}"
    );
    let id = last["session"].as_str().unwrap().to_owned();
    socket
        .send(tungstenite::Message::Text(
            json!({ "type": "message", "text": "my email is ada@example.com" })
                .to_string()
                .into(),
        ))
        .unwrap();
    let answered = turn_events(&mut socket);
    let last = answered.last().unwrap();
    assert_eq!(
        (&last["event"], &last["turn"]),
        (&json!("committed"), &json!(1)),
        "{answered:?}"
    );
    // A tool frame with bad arguments is refused with each violation.
    socket
        .send(tungstenite::Message::Text(
            json!({ "type": "tool", "tool": "record_information",
                    "arguments": { "field": "shoe size", "value": "42" } })
            .to_string()
            .into(),
        ))
        .unwrap();
    let refused = turn_events(&mut socket);
    let last = refused.last().unwrap();
    assert_eq!(
        (&last["kind"], &last["violations"][0]["pointer"]),
        (&json!("invalid-arguments"), &json!("/field")),
        "{refused:?}"
    );
    // The session is the caller's own, as a POSTed one would be.
    let (status, body) = served.as_caller(&app, "GET", &format!("/v1/sessions/{id}"), None);
    assert_eq!((status, &body["turn"]), (200, &json!(1)), "{body}");
    reaches_nothing_of(&served, &backend, &id);

    // The checks of a POST hold, before the upgrade.
    assert_eq!(
        start_socket(&served, &app, "plugin=shop").err(),
        Some(403),
        "not granted shop"
    );
    assert_eq!(
        start_socket(&served, &app, "plugin=intake&user_id=ada").err(),
        Some(403),
        "may not act for users"
    );
    assert_eq!(
        start_socket(&served, &app, "plugin=intake&variables=%5B1%5D").err(),
        Some(400)
    );
    assert_eq!(
        start_socket(&served, &app, "user_id=ada").err(),
        Some(400),
        "no plugin"
    );
    assert_eq!(
        start_socket(&served, "wrong-key", "plugin=intake").err(),
        Some(401)
    );
    let (status, body) = served.as_caller(&app, "GET", "/v1/ws?plugin=intake", None);
    assert_eq!(
        (status, &body["kind"]),
        (400, &json!("bad-request")),
        "not an upgrade: {body}"
    );
    // Sockets and POSTs draw on the one rate of session starts.
    let (status, body) = served.as_caller(
        &app,
        "POST",
        "/v1/sessions",
        Some(json!({ "plugin": "intake" })),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        start_socket(&served, &app, "plugin=intake").err(),
        Some(429)
    );

    assert_eq!(
        start_socket(&served, &backend, "plugin=shop&id=mine").err(),
        Some(403),
        "may not choose ids"
    );

    // A start that fails says why on the socket, which then closes.
    let mut socket = start_socket(&served, ADMIN, "plugin=nope").unwrap();
    let failed = turn_events(&mut socket);
    assert_eq!(
        (&failed[0]["event"], &failed[0]["kind"]),
        (&json!("error"), &json!("plugin-not-loaded")),
        "{failed:?}"
    );
    assert!(
        matches!(socket.read(), Ok(tungstenite::Message::Close(_)) | Err(_)),
        "the socket closes"
    );
}

/// A stream of server-sent events.
type Stream = Box<dyn std::io::BufRead>;

/// Opens the server-sent events at `path` as `token`: their reader, or the
/// refusal's status, body and `Retry-After`.
fn open_stream(
    served: &Served,
    token: &str,
    path: &str,
) -> Result<Stream, (u16, Value, Option<String>)> {
    let response = agent()
        .get(format!("{}{path}", served.base))
        .header("authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    let status = response.status().as_u16();
    if status == 200 {
        return Ok(Box::new(std::io::BufReader::new(
            response.into_body().into_reader(),
        )));
    }
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    let body = response.into_body().read_to_string().unwrap();
    Err((status, serde_json::from_str(&body).unwrap(), retry_after))
}

/// Opens the feed of `plugin` as `token`, or the refusal's status.
fn open_feed(served: &Served, token: &str, plugin: &str) -> Result<Stream, u16> {
    open_stream(
        served,
        token,
        &format!("/v1/events?plugin={plugin}&follow=true"),
    )
    .map_err(|(status, _, _)| status)
}

/// Opens the follow of session `id`'s events as `token`.
fn open_follow(
    served: &Served,
    token: &str,
    id: &str,
) -> Result<Stream, (u16, Value, Option<String>)> {
    open_stream(
        served,
        token,
        &format!("/v1/sessions/{id}/events?follow=true"),
    )
}

/// Reads `stream` until it ends.
fn read_to_end(stream: &mut Stream) {
    use std::io::Read as _;

    let mut rest = String::new();
    stream.read_to_string(&mut rest).unwrap();
}

#[test]
fn follows_feeds_and_sockets_are_bounded_per_session_and_per_principal() {
    let (file, [backend, app, _]) = keys();
    let served = serve_with(
        Callers::new(Some(&file), None),
        WebSocketSettings::default(),
        Bounds {
            streams_per_principal: 3,
            follows_per_session: 2,
            ..Bounds::default()
        },
    );
    let start = |token: &str, plugin: &str| served.start(token, plugin);
    let (first, second) = (start(&backend, "shop"), start(&backend, "shop"));

    let mut first_follows = vec![
        open_follow(&served, &backend, &first).unwrap(),
        open_follow(&served, &backend, &first).unwrap(),
    ];
    let (status, body, retry_after) = open_follow(&served, &backend, &first).err().unwrap();
    assert_eq!(
        (status, &body["kind"]),
        (429, &json!("too-many-follows")),
        "{body}"
    );
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(
        body["message"].as_str().unwrap().contains("2 follows open"),
        "{body}"
    );

    // The third stream of the key is its feed; a fourth of any kind is one
    // too many, and another key's streams are its own.
    let _feed = open_feed(&served, &backend, "shop").unwrap();
    let (status, body, retry_after) = open_follow(&served, &backend, &second).err().unwrap();
    assert_eq!(
        (status, &body["kind"]),
        (429, &json!("too-many-streams")),
        "{body}"
    );
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(open_feed(&served, &backend, "profile").err(), Some(429));
    let socket = start_socket(&served, &backend, "plugin=shop").err();
    assert_eq!(socket, Some(429), "a WebSocket is a stream too");
    let (status, body) = served.as_caller(
        &backend,
        "GET",
        &format!("/v1/sessions/{second}/history"),
        None,
    );
    assert_eq!(status, 200, "what is not a stream goes on: {body}");
    let theirs = start(&app, "intake");
    let _their_follow = open_follow(&served, &app, &theirs).unwrap();

    // A follow ends with its session, and gives its places back.
    let (status, body) =
        served.as_caller(&backend, "DELETE", &format!("/v1/sessions/{first}"), None);
    assert_eq!(status, 200, "{body}");
    for follow in &mut first_follows {
        read_to_end(follow);
    }
    let reopened = (0..500).find_map(|_| {
        std::thread::sleep(Duration::from_millis(10));
        open_follow(&served, &backend, &second).ok()
    });
    assert!(reopened.is_some(), "an ended follow makes room for another");
}

/// Opens an MCP session as `token`: the status, the session's id, and the
/// kind of a refusal.
fn mcp_initialize(served: &Served, token: &str) -> (u16, Option<String>, Value) {
    mcp_open(served, token, "")
}

/// [`mcp_initialize`] with `query` (`?...`, or empty) on `/mcp`.
fn mcp_open(served: &Served, token: &str, query: &str) -> (u16, Option<String>, Value) {
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": { "name": "counted", "version": "1" } }
    });
    let response = agent()
        .post(format!("{}/mcp{query}", served.base))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .send(initialize.to_string())
        .unwrap();
    let status = response.status().as_u16();
    let id = response
        .headers()
        .get("mcp-session-id")
        .map(|id| id.to_str().unwrap().to_owned());
    if status == 200 {
        return (status, id, Value::Null);
    }
    let body = response.into_body().read_to_string().unwrap();
    (status, id, serde_json::from_str(&body).unwrap())
}

/// Sends `body` to MCP session `session` as `token`: the JSON-RPC answer,
/// or null for a notification.
fn mcp_rpc(served: &Served, token: &str, session: &str, body: &Value) -> Value {
    let mut response = agent()
        .post(format!("{}/mcp", served.base))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", session)
        .send(body.to_string())
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let text = response.body_mut().read_to_string().unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .find(|answer| answer.get("id").is_some())
        .unwrap_or(Value::Null)
}

#[test]
fn mcp_sessions_are_bounded_per_principal_and_in_all_count_as_starts_and_are_their_callers_alone() {
    let (file, [backend, app, _]) = keys();
    let rates = Rates {
        session_starts_per_minute: Some(3),
        ..Rates::default()
    };
    let served = serve_with(
        Callers::new(Some(&file), None).with_rates(rates),
        WebSocketSettings::default(),
        Bounds {
            mcp_sessions_per_principal: 2,
            mcp_sessions: 3,
            ..Bounds::default()
        },
    );
    let (status, first, _) = mcp_initialize(&served, &backend);
    assert_eq!(status, 200);
    let first = first.expect("an MCP session has an id");
    assert_eq!(mcp_initialize(&served, &backend).0, 200);
    let refused = |token: &str, saying: &str| {
        let (status, _, body) = mcp_initialize(&served, token);
        assert_eq!(
            (status, &body["kind"]),
            (429, &json!("too-many-mcp-sessions")),
            "{body}"
        );
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(saying), "{body}");
    };
    refused(&backend, "this caller has 2 MCP sessions");
    assert_eq!(mcp_initialize(&served, &app).0, 200);
    refused(&app, "the server has 3 MCP sessions");

    // Another caller that holds the session's id neither calls in it,
    // closes it nor opens its stream: to it the session does not exist.
    let listing = json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" }).to_string();
    for (method, body) in [("POST", listing.as_str()), ("DELETE", ""), ("GET", "")] {
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}/mcp", served.base))
            .header("authorization", format!("Bearer {app}"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &first)
            .body(body)
            .unwrap();
        let mut refused = agent().run(request).unwrap();
        let body: Value =
            serde_json::from_str(&refused.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(
            (refused.status().as_u16(), &body["kind"]),
            (404, &json!("not-found")),
            "{method}: {body}"
        );
    }
    let rpc = |body: Value| mcp_rpc(&served, &backend, &first, &body);
    rpc(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
    let listed = rpc(json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" }));
    assert!(listed["result"]["tools"].is_array(), "{listed}");

    // An MCP session closed gives its place back; opening one is a start,
    // counted against the caller's rate of them.
    let closed = agent()
        .delete(format!("{}/mcp", served.base))
        .header("authorization", format!("Bearer {backend}"))
        .header("mcp-session-id", &first)
        .call()
        .unwrap();
    assert!(closed.status().is_success(), "{}", closed.status());
    let (status, _, body) = mcp_initialize(&served, &backend);
    assert_eq!(
        (status, &body["kind"]),
        (429, &json!("rate-limited")),
        "{body}"
    );
    let reopened = (0..500).any(|_| {
        served.clock.advance(Duration::from_secs(20));
        let (status, _, body) = mcp_initialize(&served, &backend);
        assert!(
            status == 200 || body["kind"] == "too-many-mcp-sessions",
            "{body}"
        );
        std::thread::sleep(Duration::from_millis(10));
        status == 200
    });
    assert!(reopened, "a closed MCP session makes room for another");
}

/// The session of the next event a feed carries.
fn next_session(feed: &mut Stream) -> String {
    loop {
        let mut line = String::new();
        assert!(feed.read_line(&mut line).unwrap() > 0, "the feed ended");
        if let Some(data) = line.strip_prefix("data:") {
            let event: Value = serde_json::from_str(data.trim()).unwrap();
            return event["session"].as_str().unwrap().to_owned();
        }
    }
}

#[test]
fn a_plugins_feed_carries_the_callers_own_sessions_and_the_admin_every_one() {
    let (file, [backend, app, chooser]) = keys();
    let served = serve(Callers::new(Some(&file), None));
    let mut own = open_feed(&served, &backend, "shop").unwrap();
    let mut every = open_feed(&served, ADMIN, "shop").unwrap();
    assert_eq!(
        open_feed(&served, &app, "shop").err(),
        Some(403),
        "app may not use shop"
    );

    let start = |token: &str| served.start(token, "shop");
    let others = start(&chooser);
    let mine = start(&backend);
    assert_eq!(
        next_session(&mut own),
        mine,
        "another caller's session is not in the feed"
    );
    assert_eq!(next_session(&mut every), others);
    assert_eq!(next_session(&mut every), mine);
}

/// The next JSON text frame of a socket.
fn next_frame(
    socket: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
) -> Value {
    match socket.read().unwrap() {
        tungstenite::Message::Text(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("not a text frame: {other:?}"),
    }
}

#[test]
fn a_caller_interrupts_its_running_turn_by_socket_or_request_and_an_idle_one_is_409() {
    let served = serve(Callers::default());
    let (status, body) = served.as_caller(
        ADMIN,
        "POST",
        "/v1/sessions",
        Some(json!({ "plugin": "misbehave" })),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["session"].as_str().unwrap().to_owned();
    let interrupt = format!("/v1/sessions/{id}/interrupt");
    let (status, body) = served.as_caller(ADMIN, "POST", &interrupt, None);
    assert_eq!((status, &body["kind"]), (409, &json!("idle")), "{body}");

    let mut socket = open_socket(&served, &id, None).unwrap();
    let send = |socket: &mut tungstenite::WebSocket<_>, frame: Value| {
        socket
            .send(tungstenite::Message::Text(frame.to_string().into()))
            .unwrap();
    };
    // Barge-in on the socket the turn runs on.
    send(
        &mut socket,
        json!({ "type": "message", "text": "ramble hello there" }),
    );
    assert_eq!(
        next_frame(&mut socket),
        json!({ "event": "say", "text": "hello there" })
    );
    send(&mut socket, json!({ "type": "interrupt" }));
    let failed = next_frame(&mut socket);
    assert_eq!(
        (&failed["event"], &failed["kind"]),
        (&json!("error"), &json!("interrupted")),
        "{failed}"
    );
    // And by a request while the socket waits for the turn.
    send(
        &mut socket,
        json!({ "type": "message", "text": "ramble once more" }),
    );
    assert_eq!(next_frame(&mut socket)["text"], "once more");
    let (status, body) = served.as_caller(ADMIN, "POST", &interrupt, None);
    assert_eq!((status, &body), (202, &json!({ "interrupted": id })));
    assert_eq!(next_frame(&mut socket)["kind"], "interrupted");
    // An interrupt with no turn running answers on the socket too.
    send(&mut socket, json!({ "type": "interrupt" }));
    assert_eq!(next_frame(&mut socket)["kind"], "idle");

    // While a turn runs, 16 frames wait their turn and a 17th is refused.
    send(
        &mut socket,
        json!({ "type": "message", "text": "ramble wait" }),
    );
    assert_eq!(next_frame(&mut socket)["text"], "wait");
    for _ in 0..17 {
        send(&mut socket, json!({ "type": "message", "text": "note" }));
    }
    let refused = next_frame(&mut socket);
    assert_eq!(refused["kind"], "too-many-frames", "{refused}");
    send(&mut socket, json!({ "type": "interrupt" }));
    assert_eq!(next_frame(&mut socket)["kind"], "interrupted");
    let mut said = Vec::new();
    while said.len() < 16 {
        let frame = next_frame(&mut socket);
        if frame["event"] == "say" {
            said.push(frame["text"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(said.first().map(String::as_str), Some("entry 1"));
    assert_eq!(said.last().map(String::as_str), Some("entry 16"));

    let (status, body) =
        served.as_caller(ADMIN, "GET", &format!("/v1/sessions/{id}/history"), None);
    assert_eq!(status, 200, "{body}");
    let messages = body.as_array().unwrap();
    assert!(
        messages
            .contains(&json!({ "role": "assistant", "content": "once more", "interrupted": true })),
        "{body}"
    );
}

/// A keys file or `[jwt]` setting with a mistake is refused, naming it.
#[test]
fn a_bad_keys_file_or_jwt_setting_is_refused_saying_what_is_wrong() {
    let entry = |name: &str, fields: &str| format!("[keys.{name}]\n{fields}\n");
    let digest = format!("sha256 = \"{}\"", "ab".repeat(32));
    for (text, reason) in [
        (
            entry(
                "Backend",
                &format!("{digest}\nprincipal = \"shop\"\nplugins = [\"shop\"]"),
            ),
            "key `Backend`: key name `Backend` is not a valid name",
        ),
        (
            entry(
                "backend",
                "sha256 = \"abc\"\nprincipal = \"shop\"\nplugins = [\"shop\"]",
            ),
            "key `backend`: `sha256` must be 64 lowercase hex digits",
        ),
        (
            entry(
                "backend",
                &format!("{digest}\nprincipal = \"shop:1\"\nplugins = [\"shop\"]"),
            ),
            "key `backend`: principal `shop:1` is not a valid name",
        ),
        (
            entry(
                "backend",
                &format!("{digest}\nprincipal = \"shop\"\nplugins = []"),
            ),
            "key `backend`: `plugins` is empty: name the plugins it may use, or `*`",
        ),
        (
            entry(
                "backend",
                &format!("{digest}\nprincipal = \"shop\"\nplugins = [\"shop\"]\nadmin = true"),
            ),
            "unknown field `admin`",
        ),
    ] {
        let err = KeyFile::parse(&text).unwrap_err();
        assert!(err.starts_with(reason), "{text}: {err}");
    }

    let mut file = KeyFile::default();
    let grant = Grant {
        plugins: vec!["*".into()],
        act_for_users: false,
        choose_ids: false,
    };
    file.create("app", "app", grant.clone()).unwrap();
    assert_eq!(
        file.create("app", "app", grant.clone()).unwrap_err(),
        "a key named `app` exists; revoke it first or choose another name"
    );
    assert!(
        file.create("App", "app", grant)
            .unwrap_err()
            .starts_with("key name `App`")
    );
    assert!(!file.revoke("nobody"));

    let with = |change: fn(&mut JwtSettings)| {
        let mut settings = es256_settings();
        change(&mut settings);
        JwtVerifier::new(&settings).unwrap_err()
    };
    assert_eq!(
        with(|settings| settings.jwks = Some(fixture("jwt-es256-public.pem"))),
        "ES256 needs one of `public_key` and `jwks`, and no `secret_env`"
    );
    assert_eq!(
        with(|settings| settings.algorithm = Algorithm::HS256),
        "HS256 needs `secret_env` and neither `public_key` nor `jwks`"
    );
    assert!(
        with(|settings| settings.public_key = Some(fixture("missing.pem")))
            .starts_with("cannot read "),
    );
    let rsa = with(|settings| settings.algorithm = Algorithm::RS256);
    assert!(
        rsa.contains("jwt-es256-public.pem is not a RS256 public key in PEM"),
        "{rsa}"
    );
    assert_eq!(
        with(|settings| settings.plugins = vec!["Shop".into()]),
        "`Shop` is not a valid name: use 1 to 64 characters of a-z, 0-9 and `-`, starting with a letter and not ending with `-`"
    );
}

/// With a JWKS, the token's `kid` picks the key; a token naming no key, or
/// one the set lacks, is refused.
#[test]
fn a_jwks_picks_the_key_by_the_tokens_kid() {
    let dir = tempfile::tempdir().unwrap();
    let private =
        EncodingKey::from_ec_pem(&std::fs::read(fixture("jwt-es256-private.pem")).unwrap())
            .unwrap();
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&private, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("k1".into());
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({ "keys": [jwk] }).to_string()).unwrap();
    let settings = JwtSettings {
        public_key: None,
        jwks: Some(jwks),
        ..es256_settings()
    };
    let verifier = JwtVerifier::new(&settings).unwrap();
    let served = serve(Callers::new(None, Some(verifier)));
    let claims = json!({ "sub": "ada", "iss": "https://auth.example.com", "aud": "agentbox", "exp": NOW_S + 60 });
    let signed = |kid: Option<&str>| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, &private).unwrap()
    };
    let (status, body) = served.as_caller(&signed(Some("k1")), "GET", "/v1/tools", None);
    assert_eq!(status, 200, "{body}");
    for (token, reason) in [
        (
            signed(Some("k2")),
            "the token is refused: it names key `k2`, which the JWKS lacks",
        ),
        (
            signed(None),
            "the token is refused: it names no `kid` to pick a key by",
        ),
    ] {
        let (status, body) = served.as_caller(&token, "GET", "/v1/tools", None);
        assert_eq!((status, &body["message"]), (401, &json!(reason)));
    }
}

/// What `token` gets for `method` on `path` (a `/ws` path as a WebSocket
/// upgrade): the status, and the JSON body if it has one.
fn walked(
    served: &Served,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    use tungstenite::client::IntoClientRequest as _;

    if path.contains("/ws") {
        let url = format!("{}{path}", served.base.replace("http://", "ws://"));
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        return match tungstenite::connect(request) {
            Ok(_) => (101, Value::Null),
            Err(tungstenite::Error::Http(response)) => {
                let body = response.body().as_deref().unwrap_or_default();
                let body = serde_json::from_slice(body).unwrap_or(Value::Null);
                (response.status().as_u16(), body)
            }
            Err(err) => panic!("{err}"),
        };
    }
    served.as_caller(token, method, path, body)
}

#[test]
fn every_route_refuses_a_key_the_sessions_plugin_is_not_granted_to() {
    let mut file = KeyFile::default();
    let grant = |plugin: &str| Grant {
        plugins: vec![plugin.to_owned()],
        act_for_users: false,
        choose_ids: false,
    };
    // Two keys of one principal: one for the concierge, one for intake.
    let concierge = file
        .create("concierge", "team", grant("concierge"))
        .unwrap();
    let intake = file.create("intake", "team", grant("intake")).unwrap();
    let served = serve(Callers::new(Some(&file), None));
    let (status, body) = served.as_caller(
        &concierge,
        "POST",
        "/v1/sessions",
        Some(json!({ "plugin": "concierge" })),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["session"].as_str().unwrap().to_owned();
    // A relayed call makes the team's shop session, a child of the concierge's.
    let (status, body) = served.as_caller(
        &concierge,
        "POST",
        &format!("/v1/sessions/{id}/messages"),
        Some(json!({ "text": "login ada lovelace" })),
    );
    assert_eq!(status, 200, "{body}");
    let child = agentbox_host::child_session_id(&id, "shop");

    let (status, document) = served.as_caller(&intake, "GET", "/v1/openapi.json", None);
    assert_eq!(status, 200);
    let mut walked_routes = 0;
    for (path, operations) in document["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            if method == "parameters" {
                continue;
            }
            let method = method.to_uppercase();
            let route = format!("{method} {path}");
            let concrete = path
                .replace("{tool}", "relay")
                .replace("{name}", "concierge")
                .replace("{bucket}", "user")
                .replace("{key}", "k")
                .replace("{user}", "ada");
            // A body each route takes, so that it is the gate that answers.
            let body = match path.rsplit('/').next().unwrap() {
                "sessions" => json!({ "plugin": "concierge" }),
                "messages" => json!({ "text": "hi" }),
                "fork" | "rewind" => json!({ "turn": 0 }),
                _ => json!({}),
            };
            let expect = |token: &str, path: &str, statuses: &[u16], kind: &str| {
                let (status, answer) = walked(&served, token, &method, path, Some(body.clone()));
                assert!(
                    statuses.contains(&status),
                    "{route} as {path}: {status} {answer}"
                );
                if !kind.is_empty() {
                    assert_eq!(answer["kind"], kind, "{route}: {answer}");
                }
            };
            match path.as_str() {
                // Whoever may reach the server reads these.
                "/healthz" | "/v1/openapi.json" => {
                    expect(&intake, &concrete, &[200], "");
                }
                // Every plugin's numbers and origins: the admin's alone.
                "/metrics" => {
                    expect(&intake, &concrete, &[401], "unauthorized");
                    expect(ADMIN, &concrete, &[200], "");
                }
                // Each lists or opens only what the key is granted.
                "/v1/tools" => {
                    let (_, tools) = served.as_caller(&intake, "GET", path, None);
                    let tools = tools.as_array().unwrap();
                    assert!(!tools.is_empty());
                    assert!(
                        tools
                            .iter()
                            .all(|tool| tool["address"].as_str().unwrap().starts_with("intake/")),
                        "{tools:?}"
                    );
                }
                "/mcp" => {} // walked below, method by method
                "/v1/sessions" => expect(&intake, &concrete, &[403], "forbidden"),
                "/v1/events" => expect(
                    &intake,
                    "/v1/events?plugin=concierge&follow=true",
                    &[403],
                    "forbidden",
                ),
                "/v1/ws" => expect(&intake, "/v1/ws?plugin=concierge", &[403], "forbidden"),
                admin if admin.starts_with("/v1/admin/") => {
                    expect(&intake, &concrete, &[401, 403], "");
                }
                // Every route of one session: the principal's own session of
                // a plugin the key is not granted is refused; its child
                // session is no session of the caller's, whichever key.
                session if session.starts_with("/v1/sessions/{id}") => {
                    expect(&intake, &concrete.replace("{id}", &id), &[403], "forbidden");
                    expect(
                        &concierge,
                        &concrete.replace("{id}", &child),
                        &[404],
                        "not-found",
                    );
                }
                other => panic!("the route walk does not know {method} {other}: add it"),
            }
            walked_routes += 1;
        }
    }
    assert!(walked_routes >= 25, "{walked_routes} routes walked");

    // Over MCP, each method: the key lists and calls its grant's tools only.
    let (status, mcp_session, _) = mcp_initialize(&served, &intake);
    assert_eq!(status, 200);
    let mcp_session = mcp_session.unwrap();
    let rpc = |body: Value| mcp_rpc(&served, &intake, &mcp_session, &body);
    rpc(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
    let listed = rpc(json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" }));
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["name"].as_str().unwrap())
        .collect();
    assert!(
        names.iter().all(|name| name.starts_with("intake_")),
        "{names:?}"
    );
    for name in ["concierge_relay", "concierge__chat"] {
        let called = rpc(json!({
            "jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": { "name": name, "arguments": { "text": "hi" } }
        }));
        assert_eq!(called["result"]["isError"], true, "{called}");
        assert_eq!(
            called["result"]["structuredContent"]["kind"], "forbidden",
            "{called}"
        );
    }

    // The session the walk touched is as the concierge left it, and the
    // key granted the concierge still drives it.
    let (status, body) = served.as_caller(
        &concierge,
        "POST",
        &format!("/v1/sessions/{id}/messages"),
        Some(json!({ "text": "total" })),
    );
    assert_eq!(status, 200, "{body}");
}

/// The status of `method` on `path` sent with `Host: host`, over a raw
/// connection (an HTTP client sets `Host` from the URL itself).
fn status_with_host(served: &Served, method: &str, path: &str, host: &str) -> u16 {
    use std::io::{BufRead as _, Write as _};

    let address = served.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let body = r#"{"plugin":"intake"}"#;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut answer)
        .unwrap();
    answer
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

#[test]
fn an_open_server_answers_only_requests_for_a_loopback_name() {
    let open = serve(Callers::default());
    let port = open.base.rsplit(':').next().unwrap().to_owned();
    let routes = [
        ("POST", "/v1/sessions"),
        ("GET", "/v1/tools"),
        ("GET", "/v1/sessions/some-id/history"),
        ("POST", "/mcp"),
        ("GET", "/healthz"),
        ("GET", "/v1/admin/plugins"),
    ];
    for (method, path) in routes {
        for rebound in [
            format!("evil.example.com:{port}"),
            "evil.example.com".into(),
        ] {
            assert_eq!(
                status_with_host(&open, method, path, &rebound),
                403,
                "{method} {path} for {rebound}"
            );
        }
        for loopback in [
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ] {
            assert_ne!(
                status_with_host(&open, method, path, &loopback),
                403,
                "{method} {path} for {loopback}"
            );
        }
    }
    // A server whose callers prove who they are answers any name.
    let (file, [backend, ..]) = keys();
    let keyed = serve(Callers::new(Some(&file), None));
    assert_eq!(
        status_with_host(&keyed, "GET", "/healthz", "api.example.com"),
        200
    );
    let (status, _) = keyed.as_caller(&backend, "GET", "/v1/tools", None);
    assert_eq!(status, 200);
}

#[test]
fn a_forks_id_follows_the_rule_of_a_starts_and_an_ended_session_is_not_forked() {
    let (file, [backend, _, chooser]) = keys();
    let served = serve(Callers::new(Some(&file), None));
    let fork = |token: &str, id: &str, body: Value| {
        served.as_caller(
            token,
            "POST",
            &format!("/v1/sessions/{id}/fork"),
            Some(body),
        )
    };
    let start = |token: &str| served.start(token, "shop");

    // A key that may not choose ids may not choose a fork's either.
    let own = start(&backend);
    let (status, body) = fork(&backend, &own, json!({ "turn": 0, "id": "chooser:1" }));
    assert_eq!(
        (status, &body["kind"]),
        (403, &json!("forbidden")),
        "{body}"
    );
    let (status, body) = fork(&backend, &own, json!({ "turn": 0 }));
    assert_eq!(status, 201, "{body}");
    assert_ne!(body["session"], json!("chooser:1"));

    // One that may keeps it under its name, so it squats no one's.
    let theirs = start(&chooser);
    let (status, body) = fork(&chooser, &theirs, json!({ "turn": 0, "id": "child-0f" }));
    assert_eq!(
        (status, &body["session"]),
        (201, &json!("chooser:child-0f")),
        "{body}"
    );

    // On an open server, the prefix of child sessions is the host's.
    let open = serve(Callers::default());
    let (status, body) = open.as_caller(
        ADMIN,
        "POST",
        "/v1/sessions",
        Some(json!({ "plugin": "shop", "id": "parent" })),
    );
    assert_eq!(status, 201, "{body}");
    let child = agentbox_host::child_session_id("parent", "shop");
    for (path, body) in [
        (
            "/v1/sessions".to_owned(),
            json!({ "plugin": "shop", "id": child }),
        ),
        (
            "/v1/sessions/parent/fork".to_owned(),
            json!({ "turn": 0, "id": child }),
        ),
    ] {
        let (status, answer) = open.as_caller(ADMIN, "POST", &path, Some(body));
        assert_eq!(
            (status, &answer["kind"]),
            (403, &json!("forbidden")),
            "{path}: {answer}"
        );
        assert!(
            answer["message"].as_str().unwrap().contains("`child-`"),
            "{answer}"
        );
    }

    // An ended session stays ended: no fork makes it active again.
    let (status, body) = served.as_caller(&backend, "DELETE", &format!("/v1/sessions/{own}"), None);
    assert_eq!(status, 200, "{body}");
    let (status, body) = fork(&backend, &own, json!({ "turn": 0 }));
    assert_eq!((status, &body["kind"]), (409, &json!("ended")), "{body}");
}
