//! The operator's policy file: limits for every plugin, for one plugin, and
//! the mistakes it refuses by name.

use std::time::Duration;

use agentbox_host::Limits;
use agentbox_host::policy::PolicyFile;

fn apply(text: &str) -> Result<agentbox_host::policy::Policy, String> {
    PolicyFile::parse(text).and_then(|policy| policy.apply(Limits::default()))
}

#[test]
fn a_policy_sets_limits_for_every_plugin_and_for_the_plugins_it_names() {
    let policy = apply(
        r#"
        [turns]
        deadline_ms = 1500
        host_calls = 5000
        concurrent = 32
        concurrent_total = 128

        [sessions]
        max_live = 100
        retain_ended_ms = 3600000
        history_messages = 50

        [kv]
        max_keys_per_user = 500
        max_bytes_per_user = 65536

        [plugins.rogue]
        deadline_ms = 100
        memory_mib = 8
        output_bytes = 4096
        state_bytes = 2048
        value_bytes = 1024
        max_live = 3
        concurrent = 2
        fuel = 5000000
        max_keys = 10
        max_bytes = 4096
        max_keys_per_user = 3
        buckets = ["crm"]
        "#,
    )
    .unwrap();
    let defaults = Limits::default();
    assert_eq!(policy.limits.deadline, Duration::from_millis(1500));
    assert_eq!(policy.limits.host_calls, 5000);
    assert_eq!(policy.limits.live_sessions, Some(100));
    assert_eq!(policy.limits.plugin_turns, Some(32));
    assert_eq!(policy.limits.concurrent_turns, 128);
    assert_eq!(policy.limits.memory_bytes, defaults.memory_bytes);
    let rogue = &policy.plugins["rogue"];
    assert_eq!(
        (
            rogue.deadline,
            rogue.memory_bytes,
            rogue.output_bytes,
            rogue.state_bytes
        ),
        (Duration::from_millis(100), 8 << 20, 4096, 2048)
    );
    assert_eq!(
        (rogue.value_bytes, policy.limits.value_bytes),
        (1024, defaults.value_bytes)
    );
    assert_eq!(rogue.live_sessions, Some(3));
    assert_eq!(rogue.plugin_turns, Some(2));
    assert_eq!((rogue.fuel, policy.limits.fuel), (Some(5_000_000), None));
    assert_eq!((rogue.kv_keys, rogue.kv_bytes), (10, 4096));
    assert_eq!(policy.limits.kv_keys, defaults.kv_keys);
    assert_eq!(
        (policy.limits.kv_user_keys, policy.limits.kv_user_bytes),
        (500, 65536)
    );
    assert_eq!((rogue.kv_user_keys, rogue.kv_user_bytes), (3, 65536));
    assert_eq!(policy.limits.retain_ended, Duration::from_secs(3600));
    assert_eq!(policy.limits.history_messages, 50);
    // What the plugin's section leaves out follows [turns].
    assert_eq!(rogue.host_calls, 5000);
    assert!(policy.grants.allows("rogue", "crm"));
    assert!(!policy.grants.allows("counter", "crm"));
}

#[test]
fn mistakes_in_a_policy_are_refused_by_name() {
    for (text, expected) in [
        ("[turns]\ndeadline = 5\n", "unknown field `deadline`"),
        (
            "[plugins.rogue]\ndeadline = 5\n",
            "unknown field `deadline`",
        ),
        (
            "[plugins.rogue]\ndeadline_ms = 0\n",
            "[plugins.rogue] deadline_ms must be at least 1",
        ),
        (
            "[turns]\nmemory_mib = 0\n",
            "[turns] memory_mib must be at least 1",
        ),
        (
            "[plugins.\"Rogue\"]\nmax_live = 1\n",
            "[plugins.Rogue]: the plugin name `Rogue` is not a valid name",
        ),
        (
            "[plugins.rogue]\nmax_live = -1\n",
            "invalid value: integer `-1`",
        ),
        (
            "[plugins.rogue]\nconcurrent = 0\n",
            "[plugins.rogue] concurrent must be at least 1",
        ),
        ("[turns]\nfuel = 0\n", "[turns] fuel must be at least 1"),
        (
            "[plugins.rogue]\nvalue_bytes = 0\n",
            "[plugins.rogue] value_bytes must be at least 1",
        ),
        (
            "[turns]\ncall_depth = 0\n",
            "[turns] call_depth must be at least 1",
        ),
        (
            "[plugins.concierge]\ncall_depth = 2\n",
            "unknown field `call_depth`",
        ),
        (
            "[plugins.concierge]\nmay_call = [\"shop\"]\n",
            "[plugins.concierge] may_call `shop`: an entry is `plugin/tool`, `plugin/*`, `mcp:server/tool` or `mcp:server/*`",
        ),
        (
            "[plugins.concierge]\nmay_call = [\"shop/Login\"]\n",
            "[plugins.concierge] may_call `shop/Login`: the tool `Login` is not a valid name",
        ),
        (
            "[plugins.concierge]\nmay_call = [\"mcp:weather/*\"]\n",
            "[plugins.concierge] may_call `mcp:weather/*`: no [mcp.weather] declares the MCP server `weather`; the policy declares none",
        ),
        (
            "[plugins.concierge]\nmay_hand_off = [\"Shop\"]\n",
            "[plugins.concierge] may_hand_off `Shop`: the plugin",
        ),
        (
            "[mcp.weather]\nurl = \"weather.example.com\"\n",
            "[mcp.weather] url `weather.example.com` is not an http:// or https:// URL with a host",
        ),
        (
            "[sessions]\nhistory_messages = 0\n",
            "[sessions] history_messages must be at least 1",
        ),
        (
            "[sessions]\nlog_text_bytes = 0\n",
            "[sessions] log_text_bytes must be at least 1",
        ),
        (
            "[sessions]\nlog_bytes = 0\n",
            "[sessions] log_bytes must be at least 1",
        ),
        (
            "[sessions]\nsnapshot_bytes = 0\n",
            "[sessions] snapshot_bytes must be at least 1",
        ),
        (
            "[plugins.rogue]\nmax_keys_per_usr = 3\n",
            "unknown field `max_keys_per_usr`",
        ),
        (
            "[turns]\nconcurrent_total = 5000\n",
            "[turns] concurrent_total must be from 1 to 960",
        ),
        (
            "[plugins.rogue]\nconcurrent_total = 4\n",
            "unknown field `concurrent_total`",
        ),
        (
            "[plugins.fetcher.http]\nallow = [\"api.example.com\"]\n",
            "[plugins.fetcher] http.allow: `api.example.com` is not an origin (no scheme)",
        ),
        (
            "[plugins.fetcher.http]\nallow = [\"https://example.com/v1\"]\n",
            "`https://example.com/v1` is not an origin (an origin has no path, query or user)",
        ),
        (
            "[plugins.fetcher.http]\nalow = []\n",
            "unknown field `alow`",
        ),
        (
            "[plugins.fetcher.http]\nmax_requests_per_turn = 0\n",
            "[plugins.fetcher] http.max_requests_per_turn must be at least 1",
        ),
        (
            "[plugins.fetcher.http]\nallow = [\"https://a.example\"]\n\
             [[plugins.fetcher.http.inject]]\nurl = \"https://a.example\"\n\
             header = \"authorization\"\nvalue = \"Bearer {secret:api_key}\"\n",
            "[plugins.fetcher] http.inject value refers to `{secret:api_key}`, which is not in this plugin's config",
        ),
        (
            "[plugins.fetcher.http]\nallow = [\"https://a.example\"]\n\
             [[plugins.fetcher.http.inject]]\nurl = \"https://b.example\"\n\
             header = \"authorization\"\nvalue = \"x\"\n",
            "http.inject url `https://b.example` is not in http.allow",
        ),
        (
            "[plugins.fetcher.config]\nkey = { env = \"AGENTBOX_TEST_NEVER_SET\" }\n",
            "[plugins.fetcher] config `key`: the environment variable `AGENTBOX_TEST_NEVER_SET` is not set",
        ),
        (
            "[plugins.fetcher.config]\nkey = { file = \"/nonexistent/agentbox/secret\" }\n",
            "[plugins.fetcher] config `key`: /nonexistent/agentbox/secret:",
        ),
        (
            "[plugins.fetcher.config]\n\"api key\" = \"x\"\n",
            "[plugins.fetcher] config key `api key` contains ' '",
        ),
        (
            "[plugins.fetcher.http]\nallow = [\"https://a.example\"]\n\
             [[plugins.fetcher.http.inject]]\nurl = \"https://a.example\"\n\
             header = \"bad header\"\nvalue = \"x\"\n",
            "http.inject header `bad header` is not a header name",
        ),
        (
            "[plugins.fetcher.http]\nallow = [\"https://a.example\"]\n\
             [[plugins.fetcher.http.inject]]\nurl = \"https://a.example\"\n\
             header = \"authorization\"\nvalue = \"Bearer {secret:key}\"\n\
             [plugins.fetcher.config]\nkey = \"line\\nbreak\"\n",
            "http.inject value for `authorization` is not a header value once its secrets are in place",
        ),
        (
            "[plugins.fetcher.http]\nallow = [\"https://a.example\"]\n\
             [[plugins.fetcher.http.inject]]\nurl = \"https://a.example\"\n\
             header = \"authorization\"\nvalue = \"Bearer {secret:key\"\n",
            "opens `{secret:` without closing it",
        ),
        (
            "[plugins.fetcher.config]\nkey = {}\n",
            "config `key` must be text, { env = \"VARIABLE\" } or { file = \"/path\" }",
        ),
        (
            "[plugins.intake.webhook]\nurl = \"ftp://hooks.example\"\nsecret = { env = \"X\" }\n",
            "[plugins.intake.webhook] url `ftp://hooks.example` must be an http:// or https:// address",
        ),
        (
            "[plugins.intake.webhook]\nurl = \"https://me:pw@hooks.example/in\"\nsecret = { env = \"X\" }\n",
            "carries credentials",
        ),
        (
            "[plugins.intake.webhook]\nurl = \"https://hooks.example/in\"\nsecret = { env = \"AGENTBOX_NO_SUCH_VARIABLE\" }\n",
            "[plugins.intake.webhook] `secret`: the environment variable `AGENTBOX_NO_SUCH_VARIABLE` is not set",
        ),
        (
            "[plugins.intake.webhook]\nurl = \"https://hooks.example/in\"\n",
            "missing field `secret`",
        ),
    ] {
        let err = apply(text).unwrap_err();
        assert!(err.contains(expected), "{text}: {err}");
    }
    // With a secret read from a file: its length, and each bound.
    let dir = tempfile::tempdir().unwrap();
    let (short, long) = (dir.path().join("short"), dir.path().join("long"));
    std::fs::write(&short, "too short").unwrap();
    std::fs::write(&long, "sixteen bytes or more").unwrap();
    let webhook = |secret: &std::path::Path, settings: &str| {
        apply(&format!(
            "[plugins.intake.webhook]\nurl = \"https://hooks.example/in\"\nsecret = {{ file = \"{}\" }}\n{settings}",
            secret.display()
        ))
    };
    for (secret, settings, expected) in [
        (&short, "", "secret is 9 bytes; it must be at least 16"),
        (&long, "attempts = 0", "attempts is 0; it must be 1 to 20"),
        (
            &long,
            "backoff_ms = 60001",
            "backoff_ms is 60001; it must be 1 to 60000",
        ),
        (
            &long,
            "timeout_ms = 0",
            "timeout_ms is 0; it must be 1 to 60000",
        ),
        (&long, "queue = 0", "queue is 0; it must be 1 to 100000"),
    ] {
        let err = webhook(secret, settings).unwrap_err();
        assert!(err.contains(expected), "{settings}: {err}");
    }
    let policy = webhook(&long, "attempts = 3").unwrap();
    let shown = format!("{:?}", policy.webhooks["intake"]);
    assert!(
        !shown.contains("sixteen"),
        "the secret is never shown: {shown}"
    );
}

#[test]
fn a_host_refuses_a_bound_on_turns_at_once_its_pool_cannot_hold() {
    for turns in [0, 961] {
        let limits = Limits {
            concurrent_turns: turns,
            ..Limits::default()
        };
        let err = agentbox_host::Host::builder()
            .limits(limits)
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "concurrent turns must be from 1 to 960, the instances this host can hold at once, not {turns}"
            )
        );
    }
}
