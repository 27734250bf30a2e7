//! MCP clients (rmcp's, in Rust) against `agentbox serve`'s `/mcp` and
//! against `agentbox mcp` on stdio: every tool listed with its schema, a
//! login that holds for the next call of one MCP session, arguments the
//! host refuses as a tool error with each violation, a conversation
//! through a plugin's chat tool, and a version change announced.

mod common;

use std::time::Duration;

use common::{Server, agentbox, plugin_dir, request};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientRequest, ProgressNotificationParam, Request,
    ServerResult, Tool,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A client that passes on each `notifications/tools/list_changed`, and
/// the step and message of each progress notification (a client may
/// handle notifications out of order; the step orders them).
#[derive(Clone)]
struct Client {
    changed: mpsc::UnboundedSender<()>,
    progress: mpsc::UnboundedSender<(f64, String)>,
}

impl Client {
    fn new() -> (
        Client,
        mpsc::UnboundedReceiver<()>,
        mpsc::UnboundedReceiver<(f64, String)>,
    ) {
        // rmcp's HTTP client asks for the process's TLS provider; another
        // test may have installed it already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (changed, changes) = mpsc::unbounded_channel();
        let (progress, notes) = mpsc::unbounded_channel();
        (Client { changed, progress }, changes, notes)
    }
}

impl ClientHandler for Client {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.changed.send(());
    }

    async fn on_progress(
        &self,
        notification: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.progress.send((
            notification.progress,
            notification.message.unwrap_or_default(),
        ));
    }
}

type Connected = RunningService<RoleClient, Client>;

/// Calls `name` with `arguments` (a JSON object).
async fn call(client: &Connected, name: &str, arguments: Value) -> CallToolResult {
    let Value::Object(arguments) = arguments else {
        panic!("arguments are an object")
    };
    let request = CallToolRequestParams::new(name.to_owned()).with_arguments(arguments);
    client
        .call_tool(request)
        .await
        .unwrap_or_else(|err| panic!("calling {name} failed as a protocol error: {err}"))
}

/// What a call answered as text.
fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|block| block.as_text().map(|text| text.text.clone()))
        .collect()
}

/// The shop's basics, the same on every transport: its tools with their
/// schemas, a login that holds for the next call, and bad arguments
/// answered as a tool error naming each violation's pointer.
async fn the_shop_over(client: &Connected) -> Vec<Tool> {
    let tools = client.list_all_tools().await.unwrap();
    let login = tools
        .iter()
        .find(|tool| tool.name == "shop_login")
        .expect("shop_login is listed");
    assert_eq!(
        login.input_schema["required"],
        json!(["username", "password"])
    );
    assert!(
        tools.iter().any(|tool| tool.name == "shop__chat"),
        "the shop's conversation is a tool"
    );
    for tool in &tools {
        assert!(
            tool.name.len() <= 64
                && tool
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)),
            "`{}` is a name every client accepts",
            tool.name
        );
    }

    let before = call(
        client,
        "shop_add_to_cart",
        json!({ "product_id": "book", "quantity": 2 }),
    )
    .await;
    assert_eq!(before.is_error, Some(true));
    assert_eq!(
        before.structured_content.as_ref().unwrap()["kind"],
        "precondition"
    );
    let login = call(
        client,
        "shop_login",
        json!({ "username": "ada", "password": "lovelace" }),
    )
    .await;
    assert_eq!(login.is_error, Some(false), "{}", text(&login));
    assert_eq!(login.structured_content.unwrap()["user_id"], "u-1001");
    let added = call(
        client,
        "shop_add_to_cart",
        json!({ "product_id": "book", "quantity": 2 }),
    )
    .await;
    assert_eq!(added.is_error, Some(false), "{}", text(&added));
    assert_eq!(added.structured_content.unwrap()["line_total_cents"], 2598);

    let bad = call(
        client,
        "shop_add_to_cart",
        json!({ "product_id": "car", "quantity": 0 }),
    )
    .await;
    assert_eq!(bad.is_error, Some(true));
    let error = bad.structured_content.unwrap();
    assert_eq!(error["kind"], "invalid-arguments");
    let pointers: Vec<&str> = error["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|violation| violation["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/product_id", "/quantity"]);
    let unknown = call(client, "shop_refund", json!({})).await;
    assert_eq!(unknown.is_error, Some(true));
    assert!(
        text(&unknown).contains("has no tool `refund`"),
        "{}",
        text(&unknown)
    );
    tools
}

#[test]
fn mcp_over_http_serves_every_tool_holds_a_conversation_and_announces_a_new_version() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let (ok, key, stderr) = agentbox(
        &[
            "keys",
            "create",
            "assistant",
            "--plugin",
            "shop",
            "--plugin",
            "intake",
            "--plugin",
            "counter",
            "--data-dir",
            dir,
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    let key = key.trim().to_owned();
    let (shop, intake, counter, counter_v2) = (
        plugin_dir("shop"),
        plugin_dir("intake"),
        plugin_dir("counter"),
        plugin_dir("counter-v2"),
    );
    let server = Server::start_with_env(
        data.path(),
        &[
            "--plugin",
            shop.to_str().unwrap(),
            "--plugin",
            intake.to_str().unwrap(),
            "--plugin",
            counter_v2.to_str().unwrap(),
            "--plugin",
            counter.to_str().unwrap(),
        ],
        &[("AGENTBOX_ADMIN_TOKEN", "the-admin-token-of-the-mcp-tests")],
    );
    // No MCP without the caller's credentials.
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": { "name": "stranger", "version": "1" } }
    });
    let (status, body) = request(
        "POST",
        &server.url("/mcp"),
        Some(&initialize.to_string()),
        None,
    );
    assert_eq!(status, 401, "{body}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (client, mut changes, mut notes) = Client::new();
        let transport = StreamableHttpClientTransport::from_config(
            rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
                server.url("/mcp"),
            )
            .auth_header(key.clone()),
        );
        let client = client
            .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
            .await
            .unwrap();

        let tools = the_shop_over(&client).await;
        for name in ["intake_record_information", "intake__chat", "counter__chat"] {
            assert!(
                tools.iter().any(|tool| tool.name == name),
                "{name} is listed"
            );
        }

        // A conversation of three messages with intake, remembered between
        // calls of the MCP session.
        let first = call(
            &client,
            "intake__chat",
            json!({ "text": "my name is Ada Lovelace" }),
        )
        .await;
        assert!(text(&first).contains("Noted your name"), "{}", text(&first));
        let second = call(
            &client,
            "intake__chat",
            json!({ "text": "ada@example.com" }),
        )
        .await;
        assert!(
            text(&second).contains("Noted your email"),
            "{}",
            text(&second)
        );
        let third = call(
            &client,
            "intake__chat",
            json!({ "text": "I need a new laptop" }),
        )
        .await;
        assert!(
            text(&third).contains("I have everything I need"),
            "{}",
            text(&third)
        );
        let wrong = call(&client, "intake__chat", json!({ "words": "hello" })).await;
        assert_eq!(wrong.is_error, Some(true));
        // Asked with a progress token (rmcp's client sends one with every
        // request), each `say` arrives as it is said, before the answer.
        while notes.try_recv().is_ok() {}
        let chat = ClientRequest::CallToolRequest(Request::new(
            CallToolRequestParams::new("intake__chat")
                .with_arguments(json!({ "text": "hello" }).as_object().unwrap().clone()),
        ));
        let handle = client
            .send_cancellable_request(chat, PeerRequestOptions::no_options())
            .await
            .unwrap();
        let ServerResult::CallToolResult(answer) = handle.await_response().await.unwrap() else {
            panic!("a tool call answers a tool result")
        };
        let mut said = Vec::new();
        while let Ok(note) = notes.try_recv() {
            said.push(note);
        }
        assert_eq!(said.len(), 2, "{said:?}");
        said.sort_by(|a, b| a.0.total_cmp(&b.0));
        let said: Vec<String> = said.into_iter().map(|(_, text)| text).collect();
        assert_eq!(said.concat(), text(&answer));

        // An operator rolls the counter back: the client hears of it.
        let (status, body) = request(
            "POST",
            &server.url("/v1/admin/plugins/counter/rollback"),
            None,
            Some("the-admin-token-of-the-mcp-tests"),
        );
        assert_eq!(status, 200, "{body}");
        tokio::time::timeout(Duration::from_secs(30), changes.recv())
            .await
            .expect("no tools/list_changed after a version change")
            .unwrap();
        client.cancel().await.unwrap();
    });
    let (status, stderr) = server.terminate();
    assert!(status.success(), "{stderr:?}");
}

/// An MCP client of `agentbox mcp` on stdio, serving the plugin in `plugin`
/// with its data in `data`, and `args` besides.
async fn over_stdio(data: &std::path::Path, plugin: &str, args: &[&str]) -> Connected {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentbox"));
    command
        .args(["mcp", "--store", "memory", "--data-dir"])
        .arg(data)
        .arg("--plugin")
        .arg(plugin_dir(plugin))
        .args(args)
        .env("RUST_LOG", "warn");
    let (client, _, _) = Client::new();
    client
        .serve_with_lifecycle(
            TokioChildProcess::new(command).unwrap(),
            ClientLifecycleMode::Initialize,
        )
        .await
        .unwrap()
}

#[test]
fn mcp_over_stdio_serves_the_same_tools_to_a_desktop_client() {
    let data = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = over_stdio(data.path(), "shop", &[]).await;
        let info = client.peer_info().unwrap();
        assert_eq!(info.server_info.as_ref().unwrap().name, "agentbox");
        the_shop_over(&client).await;
        client.cancel().await.unwrap();
    });
}

#[test]
fn mcp_over_stdio_serves_the_user_it_is_told_and_no_one_without() {
    let data = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let put_as = |args: &[&str]| {
        runtime.block_on(async {
            let client = over_stdio(data.path(), "kv-probe", args).await;
            let put = call(
                &client,
                "kv-probe_put",
                json!({ "bucket": "user", "key": "last_order", "value": "book" }),
            )
            .await;
            client.cancel().await.unwrap();
            put
        })
    };
    let put = put_as(&["--user", "ada@example.com"]);
    assert_eq!(put.is_error, Some(false), "{}", text(&put));
    let put = put_as(&[]);
    assert_eq!(put.is_error, Some(true));
    assert!(text(&put).contains("denied"), "{}", text(&put));
}

/// A tool call over B's session API: the concierge's `relay` of `name`.
fn relay(server: &Server, session: &str, name: &str, args: Value) -> Value {
    let (status, body) = request(
        "POST",
        &server.url(&format!("/v1/sessions/{session}/tools/relay")),
        Some(&json!({ "name": name, "args": args }).to_string()),
        None,
    );
    assert_eq!(status, 200, "B failed a turn it was not asked to: {body}");
    common::json_of(&body)["result"].clone()
}

#[test]
fn a_plugin_on_one_server_calls_a_plugin_on_another_over_mcp_and_outlives_its_absence() {
    // A serves the shop to callers with a key; B knows the key as a secret.
    let a_data = tempfile::tempdir().unwrap();
    let a_dir = a_data.path().to_str().unwrap();
    let (ok, key, stderr) = agentbox(
        &[
            "keys",
            "create",
            "server-b",
            "--plugin",
            "shop",
            "--data-dir",
            a_dir,
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    let key = key.trim().to_owned();
    let shop = plugin_dir("shop");
    let program = std::path::Path::new(env!("CARGO_BIN_EXE_agentbox"));
    let a_args = ["--plugin", shop.to_str().unwrap()];
    let a = Server::start_program(program, a_data.path(), &a_args, &[]);
    let a_listen = a.base.trim_start_matches("http://").to_owned();

    // B declares A's /mcp, and a stdio server: `agentbox mcp` with the shop.
    let b_data = tempfile::tempdir().unwrap();
    let local_data = tempfile::tempdir().unwrap();
    let policy = b_data.path().join("policy.toml");
    let command = json!([
        program,
        "mcp",
        "--store",
        "memory",
        "--data-dir",
        local_data.path(),
        "--plugin",
        shop
    ]);
    std::fs::write(
        &policy,
        format!(
            r#"
            [mcp.a]
            url = "{}"
            headers = {{ authorization = {{ env = "AGENTBOX_TEST_A_TOKEN" }} }}
            reexport = true
            [mcp.local]
            command = {command}
            [plugins.concierge]
            may_call = ["mcp:a/*", "mcp:local/shop_get_product"]
            "#,
            a.url("/mcp")
        ),
    )
    .unwrap();
    let concierge = plugin_dir("concierge");
    let b = Server::start_with_env(
        b_data.path(),
        &[
            "--plugin",
            concierge.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
        ],
        &[
            ("AGENTBOX_TEST_A_TOKEN", &format!("Bearer {key}")),
            ("AGENTBOX_ADMIN_TOKEN", "admin-token-of-the-second-server"),
        ],
    );
    let first = b.start_session("concierge");
    let second = b.start_session("concierge");
    let login = json!({ "username": "ada", "password": "lovelace" });
    let cart = json!({ "product_id": "book", "quantity": 2 });
    // The first calls may come before B has listed A's tools.
    let mut logged_in = Value::Null;
    for _ in 0..200 {
        logged_in = relay(&b, &first, "mcp:a/shop_login", login.clone());
        if logged_in.get("ok").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(logged_in["ok"]["user_id"], "u-1001", "{logged_in}");
    let added = relay(&b, &first, "mcp:a/shop_add_to_cart", cart.clone());
    assert_eq!(added["ok"]["line_total_cents"], 2598, "{added}");
    // B's other conversation has its own session at A: not logged in.
    let other = relay(&b, &second, "mcp:a/shop_add_to_cart", cart.clone());
    assert_eq!(other["error"]["kind"], "failed", "{other}");
    // Arguments are checked at B against A's schema.
    let bad = relay(
        &b,
        &first,
        "mcp:a/shop_add_to_cart",
        json!({ "quantity": 0 }),
    );
    assert_eq!(bad["error"]["kind"], "invalid-arguments", "{bad}");
    // The stdio server answers too, and only what is granted of it.
    let product = relay(
        &b,
        &first,
        "mcp:local/shop_get_product",
        json!({ "product_id": "book" }),
    );
    assert_eq!(product["ok"]["price_cents"], 1299, "{product}");
    let denied = relay(&b, &first, "mcp:local/shop_login", login.clone());
    assert_eq!(denied["error"]["kind"], "denied", "{denied}");

    // B passes A's tools on to its own MCP clients; the stdio server's,
    // which it does not re-export, stay B's plugins' alone.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (client, mut listings) = runtime.block_on(async {
        let (client, listings, _) = Client::new();
        let transport = StreamableHttpClientTransport::from_uri(b.url("/mcp"));
        let client = client
            .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
            .await
            .unwrap();
        let names: Vec<String> = client
            .list_all_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|tool| tool.name.to_string())
            .collect();
        assert!(
            names.iter().any(|name| name == "a__mcp_shop_login"),
            "{names:?}"
        );
        assert!(
            !names.iter().any(|name| name.starts_with("local__")),
            "{names:?}"
        );
        let product = call(
            &client,
            "a__mcp_shop_get_product",
            json!({ "product_id": "book" }),
        )
        .await;
        assert_eq!(product.is_error, Some(false), "{}", text(&product));
        assert_eq!(product.structured_content.unwrap()["price_cents"], 1299);
        let bad = call(
            &client,
            "a__mcp_shop_get_product",
            json!({ "product_id": 7 }),
        )
        .await;
        assert_eq!(bad.is_error, Some(true));
        assert_eq!(bad.structured_content.unwrap()["kind"], "invalid-arguments");
        let hidden = call(
            &client,
            "local__mcp_shop_get_product",
            json!({ "product_id": "book" }),
        )
        .await;
        assert_eq!(hidden.is_error, Some(true));
        assert_eq!(hidden.structured_content.unwrap()["kind"], "not-found");
        (client, listings)
    });

    // B's operator sees both servers, and never A's key.
    let servers = || {
        let (status, body) = request(
            "GET",
            &b.url("/v1/admin/mcp"),
            None,
            Some("admin-token-of-the-second-server"),
        );
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains(&key), "{body}");
        common::json_of(&body)
    };
    let listed = servers();
    assert_eq!(listed[0]["name"], "a");
    assert_eq!(listed[0]["connected"], true, "{listed}");
    assert!(
        listed[0]["reached"]
            .as_str()
            .unwrap()
            .ends_with("(authorization: [secret])"),
        "{listed}"
    );
    assert!(
        listed[0]["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("shop_login")),
        "{listed}"
    );
    assert_eq!(listed[1]["name"], "local");

    // A stops: its tools answer unavailable, and B goes on serving.
    while listings.try_recv().is_ok() {}
    let (status, stderr) = a.terminate();
    assert!(status.success(), "{stderr:?}");
    // B's connections to A never end on their own: A stops all the same,
    // after its bound on draining.
    assert!(
        stderr
            .iter()
            .any(|line| line.contains("connections still open 5 s after")),
        "{stderr:?}"
    );
    let down = relay(&b, &first, "mcp:a/shop_login", login.clone());
    assert_eq!(down["error"]["kind"], "unavailable", "{down}");
    let (status, body) = request(
        "POST",
        &b.url(&format!("/v1/sessions/{first}/messages")),
        Some(&json!({ "text": "hello" }).to_string()),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let mut listed = servers();
    for _ in 0..200 {
        if listed[0]["connected"] == false {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        listed = servers();
    }
    assert_eq!(listed[0]["connected"], false, "{listed}");
    assert!(listed[0]["reason"].is_string(), "{listed}");

    // A comes back where it was: B heals without being told.
    let a = Server::start_at(program, &a_listen, a_data.path(), &a_args, &[]);
    let mut healed = Value::Null;
    for _ in 0..300 {
        healed = relay(&b, &first, "mcp:a/shop_login", login.clone());
        if healed.get("ok").is_some() {
            break;
        }
        assert_eq!(healed["error"]["kind"], "unavailable", "{healed}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(healed["ok"]["user_id"], "u-1001", "{healed}");
    // B listed A's tools again once it was back, and told its own client.
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), listings.recv())
            .await
            .expect("no tools/list_changed after A's tools were listed again")
            .unwrap();
        client.cancel().await.unwrap();
    });
    let (status, stderr) = b.terminate();
    assert!(status.success(), "{stderr:?}");
    drop(a);
}
