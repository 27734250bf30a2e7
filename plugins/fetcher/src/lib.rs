//! Reaches outbound HTTP, configuration and the clock through tools, so
//! tests and operators can see what a plugin's policy lets through and what
//! time the host tells it: a request to any URL, a stream of server-sent
//! events said as they arrive, any configuration value, and the time. A refused or failed request comes back as the
//! tool's error, as the SDK words it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agentbox_sdk::{Agent, http, say, tools};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Fetcher {}

impl Agent for Fetcher {
    const NAME: &'static str = "fetcher";
    const VERSION: &'static str = "0.1.0";
    const DESCRIPTION: &'static str =
        "Outbound HTTP and configuration as tools, for tests and operators";
}

/// What a response was.
#[derive(Serialize, schemars::JsonSchema)]
struct Fetched {
    status: u16,
    location: Option<String>,
    body: String,
}

/// How a run of requests went.
#[derive(Serialize, schemars::JsonSchema)]
struct Repeated {
    done: u32,
    error: Option<String>,
}

#[tools]
impl Fetcher {
    /// Sends `method` (GET if left out) to `url` with `body`, waiting at
    /// most `timeout_ms` for each step if given; answers the status, the
    /// redirect location and the body as text.
    #[tool]
    fn fetch(
        &mut self,
        url: String,
        method: Option<String>,
        body: Option<String>,
        timeout_ms: Option<u64>,
    ) -> Result<Fetched, String> {
        let mut request = http::Request::new(method.as_deref().unwrap_or("GET"), &url);
        if let Some(body) = body {
            request = request.header("content-type", "text/plain").body(body);
        }
        if let Some(ms) = timeout_ms {
            request = request.timeout(Duration::from_millis(ms));
        }
        let response = request.send().map_err(|err| err.to_string())?;
        let status = response.status();
        let location = response.header("location").map(str::to_owned);
        let body = response.text().map_err(|err| err.to_string())?;
        Ok(Fetched {
            status,
            location,
            body,
        })
    }

    /// Sends `times` GETs to `url` one after the other; answers how many
    /// succeeded before the first error, and that error.
    #[tool]
    fn fetch_repeatedly(&mut self, url: String, times: u32) -> Result<Repeated, String> {
        for done in 0..times {
            if let Err(err) = http::get(&url).send().and_then(|response| response.bytes()) {
                return Ok(Repeated {
                    done,
                    error: Some(err.to_string()),
                });
            }
        }
        Ok(Repeated {
            done: times,
            error: None,
        })
    }

    /// Reads `url` as server-sent events, saying each event's data as it
    /// arrives; answers how many there were.
    #[tool]
    fn stream(&mut self, url: String) -> Result<u32, String> {
        let response = http::get(&url).send().map_err(|err| err.to_string())?;
        let mut events = 0;
        for event in response.events() {
            say(event.map_err(|err| err.to_string())?.data);
            events += 1;
        }
        Ok(events)
    }

    /// The configuration value `key`, if the plugin may read one.
    #[tool]
    fn config(&mut self, key: String) -> Result<Option<String>, String> {
        Ok(agentbox_sdk::config::get(&key))
    }

    /// The time as the plugin reads it (`wasi:clocks/wall-clock`), in
    /// milliseconds since the Unix epoch.
    #[tool]
    fn now(&mut self) -> Result<u64, String> {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|err| format!("the clock is before 1970: {err}"))?;
        Ok(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    /// Every configuration key the plugin may read, sorted.
    #[tool]
    fn config_keys(&mut self) -> Result<Vec<String>, String> {
        let mut keys: Vec<String> = agentbox_sdk::config::all()
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        keys.sort();
        Ok(keys)
    }
}

agentbox_sdk::export_agent!(Fetcher);
