//! What a plugin may reach outside the host, from WIT 0.2.0: the
//! `[plugins.NAME.http]` and `[plugins.NAME.config]` sections of the
//! policy, checked and resolved when the policy is read. Secrets are read
//! from the environment or from files then, and never printed after.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::names::check_state_key;
use crate::policy::origin::{Origin, Target};

/// How long one wait of a request may last unless the policy says.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest response body unless the policy says: 8 MiB.
const DEFAULT_MAX_RESPONSE_BYTES: u64 = 8 << 20;
/// Requests per call of an export unless the policy says.
const DEFAULT_MAX_REQUESTS_PER_TURN: u32 = 16;

/// The `[plugins.NAME.http]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpSection {
    #[serde(default)]
    allow: Vec<String>,
    timeout_ms: Option<u64>,
    max_response_bytes: Option<u64>,
    max_requests_per_turn: Option<u32>,
    #[serde(default)]
    inject: Vec<InjectSection>,
}

/// One `[[plugins.NAME.http.inject]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InjectSection {
    url: String,
    header: String,
    value: String,
}

/// One value of `[plugins.NAME.config]` as written: text, or where to read
/// a secret from.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum ConfigEntry {
    Text(String),
    Secret(SecretSource),
}

/// `{ env = "NAME" }` or `{ file = "/path" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SecretSource {
    env: Option<String>,
    file: Option<PathBuf>,
}

/// The most values an operator may set for one plugin through the admin API.
pub const MAX_OPERATOR_VALUES: usize = 256;
/// The longest value an operator may set, in bytes.
pub const MAX_OPERATOR_VALUE_BYTES: usize = 64 << 10;

/// How a secret is shown wherever the host lists what a plugin may reach.
pub const SECRET_SHOWN: &str = "[secret]";

/// What one plugin may reach: the hosts it may send requests to, the
/// headers the host adds to them, and the configuration it may read.
#[derive(Debug, Default)]
pub struct Outbound {
    /// Its outbound HTTP grant; nothing allowed by default.
    pub http: HttpGrant,
    /// Its configuration, as `wasi:config/store` serves it.
    pub config: Config,
}

impl Outbound {
    /// What an operator's listing shows: the grant, and the configuration
    /// with every secret and every value bound to a header as
    /// [`SECRET_SHOWN`].
    pub fn describe(&self) -> Value {
        let http = &self.http;
        json!({
            "http": {
                "allow": http.allow.iter().map(Origin::to_string).collect::<Vec<_>>(),
                "timeout_ms": u64::try_from(http.timeout.as_millis()).unwrap_or(u64::MAX),
                "max_response_bytes": http.max_response_bytes,
                "max_requests_per_turn": http.max_requests_per_turn,
                "inject": http.inject.iter().map(|injection| json!({
                    "url": injection.origin.to_string(),
                    "header": injection.header.as_str(),
                    "value": SECRET_SHOWN,
                })).collect::<Vec<_>>(),
            },
            "config": self.config.shown,
        })
    }
}

/// A plugin's outbound HTTP grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrant {
    /// The origins it may send requests to.
    pub allow: Vec<Origin>,
    /// Headers the host sets on requests to matching origins.
    pub inject: Vec<Injection>,
    /// The longest each wait may last: connecting, the first byte of the
    /// response, and between two reads of its body.
    pub timeout: Duration,
    /// The largest response body it may read.
    pub max_response_bytes: u64,
    /// How many requests one call of an export may send.
    pub max_requests_per_turn: u32,
}

impl Default for HttpGrant {
    fn default() -> Self {
        HttpGrant {
            allow: Vec::new(),
            inject: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_requests_per_turn: DEFAULT_MAX_REQUESTS_PER_TURN,
        }
    }
}

impl HttpGrant {
    /// The allow entry `target` matches, if any.
    pub fn allowed(&self, target: &Target) -> Option<&Origin> {
        self.allow.iter().find(|origin| origin.matches(target))
    }

    /// The headers to set on a request to `target`.
    pub fn injections<'a>(
        &'a self,
        target: &'a Target,
    ) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> + 'a {
        self.inject
            .iter()
            .filter(|injection| injection.origin.matches(target))
            .map(|injection| (&injection.header, &injection.value))
    }
}

/// A header the host sets on requests to an origin; its value is marked
/// sensitive and never printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    origin: Origin,
    header: HeaderName,
    value: HeaderValue,
}

/// What a plugin reads through `wasi:config/store`: every configured value
/// but those bound to an injected header.
#[derive(Default)]
pub struct Config {
    /// The values the plugin reads, by name.
    values: BTreeMap<String, String>,
    /// The same, as `wasi:config/store` serves them.
    visible: wasmtime_wasi_config::WasiConfigVariables,
    /// The names of the values read from the environment or a file.
    secrets: Vec<String>,
    /// The names of the values bound to an injected header, which the
    /// plugin cannot read.
    hidden: Vec<String>,
    /// Every value as a listing shows it: text as it is, secrets and
    /// values bound to a header as [`SECRET_SHOWN`].
    shown: BTreeMap<String, String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("shown", &self.shown)
            .field("hidden", &self.hidden)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The values as `wasi:config/store` serves them.
    pub fn variables(&self) -> &wasmtime_wasi_config::WasiConfigVariables {
        &self.visible
    }
}

impl Outbound {
    /// This with the values an operator set through the admin API over the
    /// policy's text values. A secret of the policy, or a value bound to a
    /// header, is not the operator's to replace there.
    pub fn with_operator_config(&self, set: &BTreeMap<String, String>) -> Result<Outbound, String> {
        if set.len() > MAX_OPERATOR_VALUES {
            return Err(format!(
                "{} values are more than the {MAX_OPERATOR_VALUES} a plugin's configuration may have",
                set.len()
            ));
        }
        for (name, value) in set {
            check_state_key(name).map_err(|reason| format!("config {reason}"))?;
            if value.len() > MAX_OPERATOR_VALUE_BYTES {
                return Err(format!(
                    "config `{name}` is {} bytes, over the {MAX_OPERATOR_VALUE_BYTES} a value may have",
                    value.len()
                ));
            }
            let config = &self.config;
            if config.secrets.contains(name) || config.hidden.contains(name) {
                return Err(format!(
                    "config `{name}` is a secret the policy file sets; it is changed there"
                ));
            }
        }
        let mut values = self.config.values.clone();
        values.extend(
            set.iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        let mut shown = self.config.shown.clone();
        shown.extend(
            set.iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        Ok(Outbound {
            http: self.http.clone(),
            config: Config {
                visible: values.iter().collect(),
                values,
                secrets: self.config.secrets.clone(),
                hidden: self.config.hidden.clone(),
                shown,
            },
        })
    }
}

impl HttpSection {
    /// The grant this section describes, with `{secret:NAME}` in injected
    /// values replaced by the configuration's values. Returns the grant and
    /// the names of the values bound to headers.
    fn grant(&self, values: &BTreeMap<String, String>) -> Result<(HttpGrant, Vec<String>), String> {
        let allow = self
            .allow
            .iter()
            .map(|text| Origin::parse(text).map_err(|reason| format!("http.allow: {reason}")))
            .collect::<Result<Vec<_>, _>>()?;
        for (name, value) in [
            ("timeout_ms", self.timeout_ms),
            ("max_response_bytes", self.max_response_bytes),
            (
                "max_requests_per_turn",
                self.max_requests_per_turn.map(u64::from),
            ),
        ] {
            if value == Some(0) {
                return Err(format!("http.{name} must be at least 1"));
            }
        }
        let mut bound = Vec::new();
        let mut inject = Vec::new();
        for entry in &self.inject {
            let origin =
                Origin::parse(&entry.url).map_err(|reason| format!("http.inject url: {reason}"))?;
            if !allow.iter().any(|allowed| allowed == &origin) {
                return Err(format!(
                    "http.inject url `{}` is not in http.allow: a header is injected only into requests the plugin may send",
                    entry.url
                ));
            }
            let header = HeaderName::try_from(entry.header.as_str()).map_err(|_| {
                format!("http.inject header `{}` is not a header name", entry.header)
            })?;
            let text = substitute(&entry.value, values, &mut bound)?;
            let mut value = HeaderValue::try_from(text).map_err(|_| {
                format!(
                    "http.inject value for `{header}` is not a header value once its secrets are in place (a line break or control character?)"
                )
            })?;
            value.set_sensitive(true);
            inject.push(Injection {
                origin,
                header,
                value,
            });
        }
        let defaults = HttpGrant::default();
        Ok((
            HttpGrant {
                allow,
                inject,
                timeout: self
                    .timeout_ms
                    .map_or(defaults.timeout, Duration::from_millis),
                max_response_bytes: self
                    .max_response_bytes
                    .unwrap_or(defaults.max_response_bytes),
                max_requests_per_turn: self
                    .max_requests_per_turn
                    .unwrap_or(defaults.max_requests_per_turn),
            },
            bound,
        ))
    }
}

/// `template` with each `{secret:NAME}` replaced by the value of `NAME`,
/// whose name is added to `bound`.
fn substitute(
    template: &str,
    values: &BTreeMap<String, String>,
    bound: &mut Vec<String>,
) -> Result<String, String> {
    const OPEN: &str = "{secret:";
    let mut text = String::new();
    let mut rest = template;
    while let Some(start) = rest.find(OPEN) {
        text.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let end = after.find('}').ok_or_else(|| {
            format!("http.inject value `{template}` opens `{{secret:` without closing it")
        })?;
        let name = &after[..end];
        let value = values.get(name).ok_or_else(|| {
            format!("http.inject value refers to `{{secret:{name}}}`, which is not in this plugin's config")
        })?;
        text.push_str(value);
        bound.push(name.to_owned());
        rest = &after[end + 1..];
    }
    text.push_str(rest);
    Ok(text)
}

impl ConfigEntry {
    /// The value: the text, or the secret read where it says.
    pub(super) fn value(&self, name: &str) -> Result<String, String> {
        match self {
            ConfigEntry::Text(text) => Ok(text.clone()),
            ConfigEntry::Secret(source) => source.read(name),
        }
    }
}

impl SecretSource {
    /// The secret, read from the environment or a file (through cap-std,
    /// opening only the file's folder); a file's final line break is not
    /// part of it.
    pub(super) fn read(&self, name: &str) -> Result<String, String> {
        match (&self.env, &self.file) {
            (Some(variable), None) => std::env::var(variable)
                .map_err(|_| format!("`{name}`: the environment variable `{variable}` is not set")),
            (None, Some(path)) => read_secret_file(path)
                .map(|text| text.strip_suffix('\n').unwrap_or(&text).to_owned())
                .map_err(|err| format!("`{name}`: {}: {err}", path.display())),
            _ => Err(format!(
                "`{name}` must be text, {{ env = \"VARIABLE\" }} or {{ file = \"/path\" }}"
            )),
        }
    }
}

fn read_secret_file(path: &Path) -> std::io::Result<String> {
    let folder = path.parent().unwrap_or(Path::new("."));
    let file = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("it names no file"))?;
    cap_std::fs::Dir::open_ambient_dir(folder, cap_std::ambient_authority())?.read_to_string(file)
}

/// What `http` and `config` give one plugin.
pub(super) fn outbound(
    http: Option<&HttpSection>,
    config: &BTreeMap<String, ConfigEntry>,
) -> Result<Outbound, String> {
    let mut values = BTreeMap::new();
    let mut secrets = Vec::new();
    for (name, entry) in config {
        check_state_key(name).map_err(|reason| format!("config {reason}"))?;
        if matches!(entry, ConfigEntry::Secret(_)) {
            secrets.push(name.clone());
        }
        let value = entry
            .value(name)
            .map_err(|reason| format!("config {reason}"))?;
        values.insert(name.clone(), value);
    }
    let (http, bound) = match http {
        Some(section) => section.grant(&values)?,
        None => (HttpGrant::default(), Vec::new()),
    };
    let mut hidden: Vec<String> = values
        .keys()
        .filter(|name| bound.contains(name))
        .cloned()
        .collect();
    hidden.dedup();
    let shown = values
        .iter()
        .map(|(name, value)| {
            let secret = secrets.contains(name) || hidden.contains(name);
            let shown = if secret { SECRET_SHOWN } else { value.as_str() };
            (name.clone(), shown.to_owned())
        })
        .collect();
    let values: BTreeMap<String, String> = values
        .into_iter()
        .filter(|(name, _)| !hidden.contains(name))
        .collect();
    Ok(Outbound {
        http,
        config: Config {
            visible: values.iter().collect(),
            values,
            secrets,
            hidden,
            shown,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_secrets_come_from_config_and_are_hidden_from_the_guest() {
        let section: HttpSection = toml::from_str(
            r#"
            allow = ["https://api.example.com"]
            [[inject]]
            url = "https://api.example.com"
            header = "authorization"
            value = "Bearer {secret:key}"
            "#,
        )
        .unwrap();
        let config: BTreeMap<String, ConfigEntry> =
            toml::from_str("key = \"sk-1\"\nmodel = \"m\"").unwrap();
        let outbound = outbound(Some(&section), &config).unwrap();
        let api = Target::of(&"https://api.example.com/v1".parse().unwrap()).unwrap();
        let injected: Vec<_> = outbound.http.injections(&api).collect();
        assert_eq!(injected.len(), 1);
        assert_eq!(injected[0].1, "Bearer sk-1");
        assert!(injected[0].1.is_sensitive());
        assert!(!format!("{outbound:?}").contains("sk-1"));
        assert_eq!(outbound.config.hidden, ["key"]);
        let listed = outbound.describe();
        assert_eq!(listed["config"], json!({ "key": "[secret]", "model": "m" }));
        assert_eq!(listed["http"]["inject"][0]["value"], "[secret]");
        assert!(!listed.to_string().contains("sk-1"));

        // An operator's value goes over the policy's text, never its secret.
        let set = |name: &str, value: &str| BTreeMap::from([(name.to_owned(), value.to_owned())]);
        let changed = outbound
            .with_operator_config(&set("model", "large"))
            .unwrap();
        assert_eq!(changed.config.values, set("model", "large"));
        assert_eq!(
            changed.describe()["config"],
            json!({ "key": "[secret]", "model": "large" })
        );
        let err = outbound
            .with_operator_config(&set("key", "mine"))
            .unwrap_err();
        assert_eq!(
            err,
            "config `key` is a secret the policy file sets; it is changed there"
        );
        let err = outbound
            .with_operator_config(&set("bad key", "x"))
            .unwrap_err();
        assert!(
            err.starts_with("config key `bad key` contains ' '"),
            "{err}"
        );

        let config: BTreeMap<String, ConfigEntry> = toml::from_str("model = \"m\"").unwrap();
        let err = super::outbound(Some(&section), &config).unwrap_err();
        assert!(err.contains("`{secret:key}`"), "{err}");
    }
}
