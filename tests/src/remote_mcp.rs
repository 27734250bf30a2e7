//! Remote MCP servers as tool sources: a real MCP server (rmcp's, over
//! streamable HTTP on loopback) declared in the policy, whose tools the
//! concierge finds and calls through the registry as `mcp:weather/TOOL`.
//! Arguments are checked against the declared schema before anything is
//! sent; an error result, an unreachable server, a slow one and one that
//! changes its tools are each answered as the registry promises; each
//! calling session has its own MCP session.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentbox_host::Host;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};

use crate::concierge::relay;
use crate::harness::{host_with_policy, send, start_for};
use crate::plugins::{CONCIERGE, SHOP};

/// What the weather server has been through, shared by its sessions.
#[derive(Default)]
struct Seen {
    /// Calls of its tools that reached it.
    calls: AtomicUsize,
    /// Whether it offers `alerts` yet.
    alerts: Mutex<bool>,
    /// The sessions that listed its tools, told when they change.
    listeners: Mutex<Vec<Peer<RoleServer>>>,
    /// The MCP sessions each `whoami` call came from.
    sessions: Mutex<BTreeSet<String>>,
}

/// One MCP session of the weather server.
#[derive(Clone)]
struct Weather {
    seen: Arc<Seen>,
    /// This session's id, given by its first `whoami`.
    id: Arc<Mutex<Option<String>>>,
}

fn schema(value: Value) -> Arc<Map<String, Value>> {
    let Value::Object(object) = value else {
        panic!("a schema is an object")
    };
    Arc::new(object)
}

impl Weather {
    fn tools(&self) -> Vec<Tool> {
        let mut forecast = Tool::new(
            "forecast",
            "The weather in a city for some days",
            schema(json!({
                "type": "object",
                "properties": {
                    "city": { "type": "string", "minLength": 1 },
                    "days": { "type": "integer", "minimum": 1, "maximum": 7 }
                },
                "required": ["city", "days"],
                "additionalProperties": false
            })),
        );
        forecast.output_schema = Some(schema(json!({
            "type": "object",
            "properties": { "city": { "type": "string" }, "summary": { "type": "string" } },
            "required": ["city", "summary"]
        })));
        let mut tools = vec![
            forecast,
            Tool::new(
                "echo.text",
                "Says its text back, as text",
                schema(json!({ "type": "object", "properties": { "text": { "type": "string" } } })),
            ),
            Tool::new("storm", "Always fails", schema(json!({ "type": "object" }))),
            Tool::new(
                "slow",
                "Answers after `ms` milliseconds",
                schema(json!({ "type": "object", "properties": { "ms": { "type": "integer" } } })),
            ),
            Tool::new(
                "whoami",
                "Names the MCP session it was called in",
                schema(json!({ "type": "object" })),
            ),
            // Left out by the host, which counts five tools: a name MCP
            // does not allow, and a schema that refers outside itself.
            Tool::new(
                "two words",
                "Badly named",
                schema(json!({ "type": "object" })),
            ),
            Tool::new(
                "elsewhere",
                "Its schema is elsewhere",
                schema(json!({ "$ref": "https://schemas.example.com/args.json" })),
            ),
        ];
        if *self.seen.alerts.lock().unwrap() {
            tools.push(Tool::new(
                "alerts",
                "Weather alerts",
                schema(json!({ "type": "object" })),
            ));
        }
        tools
    }
}

impl ServerHandler for Weather {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.seen
            .listeners
            .lock()
            .unwrap()
            .push(context.peer.clone());
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.seen.calls.fetch_add(1, Ordering::SeqCst);
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        let result = match request.name.as_ref() {
            "forecast" => CallToolResult::structured(json!({
                "city": arguments["city"],
                "summary": format!("{} days of sun", arguments["days"]),
            })),
            "echo.text" => CallToolResult::success(vec![ContentBlock::text(
                arguments["text"].as_str().unwrap_or_default(),
            )]),
            "storm" => CallToolResult::error(vec![ContentBlock::text("the storm took the mast")]),
            "slow" => {
                let ms = arguments["ms"].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                CallToolResult::structured(json!({ "slept_ms": ms }))
            }
            "whoami" => {
                let id = self.id.lock().unwrap().get_or_insert_with(uuid).clone();
                self.seen.sessions.lock().unwrap().insert(id.clone());
                CallToolResult::structured(json!({ "session": id }))
            }
            "alerts" => CallToolResult::structured(json!({ "alerts": [] })),
            other => return Err(ErrorData::invalid_params(format!("no tool {other}"), None)),
        };
        Ok(CallToolResponse::Complete(result))
    }
}

/// A fresh name for an MCP session of the weather server.
fn uuid() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    format!("weather-session-{}", NEXT.fetch_add(1, Ordering::SeqCst))
}

/// The weather server, on a runtime of its own so that stopping it closes
/// every connection at once.
struct WeatherServer {
    runtime: Option<tokio::runtime::Runtime>,
    address: std::net::SocketAddr,
    seen: Arc<Seen>,
}

impl WeatherServer {
    /// Serves at `address` (a free port if `None`).
    fn start(address: Option<std::net::SocketAddr>, seen: Arc<Seen>) -> WeatherServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind(address.unwrap_or(([127, 0, 0, 1], 0).into()))
            .expect("cannot bind the weather server");
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let mut config = StreamableHttpServerConfig::default();
        config.legacy_session_mode = true;
        let shared = seen.clone();
        let service: StreamableHttpService<Weather, LocalSessionManager> =
            StreamableHttpService::new(
                move || {
                    Ok(Weather {
                        seen: shared.clone(),
                        id: Arc::default(),
                    })
                },
                Arc::default(),
                config,
            );
        let router = axum::Router::new().nest_service("/mcp", service);
        {
            let _inside = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            runtime.spawn(async move { axum::serve(listener, router).await });
        }
        WeatherServer {
            runtime: Some(runtime),
            address,
            seen,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/mcp", self.address)
    }

    /// Stops serving and closes every connection.
    fn stop(mut self) -> (std::net::SocketAddr, Arc<Seen>) {
        self.runtime.take().unwrap().shutdown_background();
        (self.address, self.seen.clone())
    }
}

impl Drop for WeatherServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A host whose concierge may call `grants` of the weather server at
/// `url`, whose calls may wait `timeout_ms`.
fn host_for(url: &str, grants: &str, extra: &str) -> Host {
    let policy = format!(
        r#"
        [mcp.weather]
        url = "{url}"
        timeout_ms = 2000
        [plugins.concierge]
        may_call = [{grants}]
        {extra}
        "#
    );
    host_with_policy(&policy, &[CONCIERGE, SHOP])
}

/// Waits until the host has connected to the weather server and listed
/// `tools` tools.
async fn connected(host: &Host, tools: usize) {
    host.mcp().connect();
    for _ in 0..300 {
        let status = host.mcp().servers();
        if status[0].connected && status[0].tools.len() == tools {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not connected: {:?}", host.mcp().servers());
}

fn error_kind(answer: &Value) -> &str {
    answer["error"]["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error: {answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_mcp_tool_is_listed_checked_and_called_through_the_registry() {
    let server = WeatherServer::start(None, Arc::default());
    let host = host_for(
        &server.url(),
        r#""shop/*", "mcp:weather/forecast", "mcp:weather/echo.text", "mcp:weather/storm""#,
        "output_bytes = 4096",
    );
    connected(&host, 5).await;
    let id = start_for(&host, "concierge", Some("ada")).await.session;

    let found = host
        .call_tool(&id, "discover", json!({ "prefix": "mcp:" }), None)
        .await
        .unwrap()
        .result;
    assert_eq!(
        found,
        json!([
            "mcp:weather/echo.text",
            "mcp:weather/forecast",
            "mcp:weather/storm"
        ]),
        "only the granted tools are listed"
    );

    let forecast = relay(
        &host,
        &id,
        "mcp:weather/forecast",
        json!({ "city": "Oslo", "days": 3 }),
    )
    .await;
    assert_eq!(
        forecast,
        json!({ "ok": { "city": "Oslo", "summary": "3 days of sun" } })
    );
    let echoed = relay(&host, &id, "mcp:weather/echo.text", json!({ "text": "hi" })).await;
    assert_eq!(echoed, json!({ "ok": "hi" }), "a text result is a string");

    // Bad arguments never leave the host: the guest gets each pointer.
    let sent = server.seen.calls.load(Ordering::SeqCst);
    let bad = relay(
        &host,
        &id,
        "mcp:weather/forecast",
        json!({ "city": "", "days": 9 }),
    )
    .await;
    assert_eq!(error_kind(&bad), "invalid-arguments", "{bad}");
    let pointers: Vec<&str> = bad["error"]["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|violation| violation["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/city", "/days"]);
    let not_object = relay(&host, &id, "mcp:weather/echo.text", json!("hi")).await;
    assert_eq!(error_kind(&not_object), "invalid-arguments", "{not_object}");
    assert_eq!(
        server.seen.calls.load(Ordering::SeqCst),
        sent,
        "nothing was sent"
    );

    let storm = relay(&host, &id, "mcp:weather/storm", json!({})).await;
    assert_eq!(error_kind(&storm), "failed");
    assert!(
        storm["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("the storm took the mast"),
        "{storm}"
    );
    let denied = relay(&host, &id, "mcp:weather/slow", json!({ "ms": 1 })).await;
    assert_eq!(error_kind(&denied), "denied", "{denied}");
    let elsewhere = relay(&host, &id, "mcp:files/read", json!({})).await;
    assert_eq!(error_kind(&elsewhere), "denied", "{elsewhere}");

    // A result larger than the caller may say is refused as a limit.
    let long = "x".repeat(5000);
    let large = relay(&host, &id, "mcp:weather/echo.text", json!({ "text": long })).await;
    assert_eq!(error_kind(&large), "limit", "{large}");
    assert!(
        large["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("over the 4096 the caller may take"),
        "{large}"
    );

    // Each call is in the concierge's records, as the address it called.
    let outcomes: Vec<&str> = host
        .executions()
        .await
        .unwrap()
        .iter()
        .filter(|record| record.tool == "mcp:weather/forecast")
        .map(|record| record.outcome.as_str())
        .collect();
    assert_eq!(outcomes, ["ok", "invalid-args"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_calling_session_has_its_own_mcp_session_closed_when_it_ends() {
    let server = WeatherServer::start(None, Arc::default());
    let host = host_for(&server.url(), r#""mcp:weather/*""#, "");
    connected(&host, 5).await;
    let first = start_for(&host, "concierge", Some("ada")).await.session;
    let second = start_for(&host, "concierge", Some("bob")).await.session;
    let whoami = |id: &str| {
        let (host, id) = (host.clone(), id.to_owned());
        async move { relay(&host, &id, "mcp:weather/whoami", json!({})).await["ok"]["session"].clone() }
    };
    let (a, b) = (whoami(&first).await, whoami(&second).await);
    assert_ne!(a, b, "two conversations, two MCP sessions");
    assert_eq!(
        whoami(&first).await,
        a,
        "a conversation keeps its MCP session"
    );
    // Once the session ends, its next life would need a new one.
    host.end_session(&first).await.unwrap();
    let third = start_for(&host, "concierge", Some("ada")).await.session;
    let c = whoami(&third).await;
    assert!(c != a && c != b, "{c}");
    assert_eq!(server.seen.sessions.lock().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_answers_unavailable_and_heals_when_it_returns() {
    let server = WeatherServer::start(None, Arc::default());
    let host = host_for(&server.url(), r#""mcp:weather/*""#, "");
    connected(&host, 5).await;
    let id = start_for(&host, "concierge", Some("ada")).await.session;
    let args = json!({ "city": "Oslo", "days": 1 });
    let ok = relay(&host, &id, "mcp:weather/forecast", args.clone()).await;
    assert!(ok.get("ok").is_some(), "{ok}");

    let before = host.session(&id).await.unwrap().unwrap().turn;
    let (address, seen) = server.stop();
    for _ in 0..2 {
        let down = relay(&host, &id, "mcp:weather/forecast", args.clone()).await;
        assert_eq!(error_kind(&down), "unavailable", "{down}");
    }
    // The host goes on serving: the concierge's own turns commit.
    let turn = send(&host, &id, "hello").await;
    assert_eq!(turn.turn, before + 3);
    assert!(
        !host.mcp().servers()[0].tools.is_empty(),
        "the tools stay listed as they were last"
    );

    let server = WeatherServer::start(Some(address), seen);
    let mut healed = Value::Null;
    for _ in 0..300 {
        healed = relay(&host, &id, "mcp:weather/forecast", args.clone()).await;
        if healed.get("ok").is_some() {
            break;
        }
        assert_eq!(error_kind(&healed), "unavailable", "{healed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(healed["ok"]["city"], "Oslo", "{healed}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_announces_new_tools_is_listed_again() {
    let server = WeatherServer::start(None, Arc::default());
    let host = host_for(&server.url(), r#""mcp:weather/*""#, "");
    connected(&host, 5).await;
    let id = start_for(&host, "concierge", Some("ada")).await.session;
    let missing = relay(&host, &id, "mcp:weather/alerts", json!({})).await;
    assert_eq!(error_kind(&missing), "not-found", "{missing}");

    *server.seen.alerts.lock().unwrap() = true;
    let listeners: Vec<Peer<RoleServer>> = server.seen.listeners.lock().unwrap().clone();
    for listener in listeners {
        let _ = listener.notify_tool_list_changed().await;
    }
    connected(&host, 6).await;
    let alerts = relay(&host, &id, "mcp:weather/alerts", json!({})).await;
    assert_eq!(alerts, json!({ "ok": { "alerts": [] } }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_is_cut_by_its_timeout_or_by_the_callers_deadline() {
    let server = WeatherServer::start(None, Arc::default());
    // The server's timeout (2 s) comes before the concierge's deadline.
    let host = host_for(&server.url(), r#""mcp:weather/*""#, "deadline_ms = 5000");
    connected(&host, 5).await;
    let id = start_for(&host, "concierge", Some("ada")).await.session;
    let slow = relay(&host, &id, "mcp:weather/slow", json!({ "ms": 3000 })).await;
    assert_eq!(error_kind(&slow), "unavailable", "{slow}");
    assert!(
        slow["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("did not answer within"),
        "{slow}"
    );

    // The concierge's deadline (300 ms) comes first: its turn is over.
    let host = host_for(&server.url(), r#""mcp:weather/*""#, "deadline_ms = 300");
    connected(&host, 5).await;
    let id = start_for(&host, "concierge", Some("ada")).await.session;
    let err = host
        .call_tool(
            &id,
            "relay",
            json!({ "name": "mcp:weather/slow", "args": { "ms": 3000 } }),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.cause.kind(), "deadline", "{err}");
    // Nothing of the failed turn was committed.
    assert_eq!(host.session(&id).await.unwrap().unwrap().turn, 0);
}

/// Serves `router` on a free loopback port: its address.
async fn serve_router(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed_and_what_the_server_answered_is_shown_nowhere() {
    // An internal page that records whoever reaches it, and a server that
    // sends the host there.
    let reached: Arc<Mutex<Vec<axum::http::HeaderMap>>> = Arc::default();
    let record = {
        let reached = reached.clone();
        move |headers: axum::http::HeaderMap| {
            reached.lock().unwrap().push(headers);
            async { "internal page" }
        }
    };
    let internal = serve_router(axum::Router::new().fallback(record)).await;
    let redirector = serve_router(axum::Router::new().fallback(move || async move {
        (
            axum::http::StatusCode::TEMPORARY_REDIRECT,
            [(
                axum::http::header::LOCATION,
                format!("http://{internal}/mcp"),
            )],
            "redirect-body k-5ecret",
        )
    }))
    .await;
    let host = host_for(
        &format!("http://{redirector}/mcp"),
        r#""mcp:weather/*""#,
        "[mcp.weather.headers]\nx-api-key = \"k-5ecret\"",
    );
    host.mcp().connect();
    let mut reason = None;
    for _ in 0..300 {
        reason = host.mcp().servers()[0].reason.clone();
        if reason.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reason = reason.expect("the server never connects");
    assert!(reason.contains("HTTP 307"), "{reason}");
    assert!(!reason.contains("k-5ecret"), "{reason}");
    assert!(!reason.contains("redirect-body"), "{reason}");
    assert!(
        reached.lock().unwrap().is_empty(),
        "the redirect was followed"
    );

    // A call of its tools says it is unavailable, and no more.
    let id = start_for(&host, "concierge", Some("ada")).await.session;
    let answer = relay(
        &host,
        &id,
        "mcp:weather/forecast",
        json!({ "city": "Oslo" }),
    )
    .await;
    assert!(!answer.to_string().contains("k-5ecret"), "{answer}");
    assert!(
        reached.lock().unwrap().is_empty(),
        "the redirect was followed"
    );
}
