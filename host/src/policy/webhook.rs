//! `[plugins.NAME.webhook]`: where the host posts each event of a plugin's
//! sessions, signed with a secret the plugin never sees, and how hard it
//! tries.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::hex::hex;
use crate::policy::origin::Target;
use crate::policy::outbound::SecretSource;

/// The section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebhookSection {
    url: String,
    secret: SecretSource,
    attempts: Option<u32>,
    backoff_ms: Option<u64>,
    timeout_ms: Option<u64>,
    queue: Option<usize>,
}

/// The shortest secret taken, in bytes.
const MIN_SECRET_BYTES: usize = 16;

/// Where a plugin's events are posted, and how.
#[derive(Clone)]
pub struct Webhook {
    /// The URL each event is posted to.
    pub url: String,
    /// Its scheme, host and port.
    pub target: Target,
    secret: String,
    /// Tries of each event, the first included.
    pub attempts: u32,
    /// The pause after the first failed try; it doubles after each.
    pub backoff: Duration,
    /// How long one try may take.
    pub timeout: Duration,
    /// Events that may wait their turn; more are dropped and counted.
    pub queue: usize,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL's path and query may carry a token: its origin only.
        f.debug_struct("Webhook")
            .field("target", &format_args!("{}", self.target))
            .field("secret", &super::outbound::SECRET_SHOWN)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// The signature of `body` sent at `timestamp` (milliseconds):
    /// `sha256=` and the hex HMAC-SHA256, keyed by the secret, of
    /// `TIMESTAMP.BODY`.
    pub fn sign(&self, timestamp: u64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        format!("sha256={}", hex(&mac.finalize().into_bytes()))
    }
}

impl WebhookSection {
    /// The webhook, checked, with its secret read.
    pub(super) fn webhook(&self) -> Result<Webhook, String> {
        let uri: http::Uri = self
            .url
            .parse()
            .map_err(|err| format!("url `{}` is not a URL: {err}", self.url))?;
        let target = Target::of(&uri)
            .ok_or_else(|| format!("url `{}` must be an http:// or https:// address", self.url))?;
        if uri
            .authority()
            .is_some_and(|authority| authority.as_str().contains('@'))
        {
            return Err(format!(
                "url `{}` carries credentials; the signature authenticates the host",
                self.url
            ));
        }
        let secret = self.secret.read("secret")?;
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "secret is {} bytes; it must be at least {MIN_SECRET_BYTES}",
                secret.len()
            ));
        }
        let within = |name: &str, value: u64, most: u64| {
            if (1..=most).contains(&value) {
                Ok(value)
            } else {
                Err(format!("{name} is {value}; it must be 1 to {most}"))
            }
        };
        Ok(Webhook {
            url: self.url.clone(),
            target,
            secret,
            attempts: within("attempts", self.attempts.unwrap_or(5).into(), 20)? as u32,
            backoff: Duration::from_millis(within(
                "backoff_ms",
                self.backoff_ms.unwrap_or(500),
                60_000,
            )?),
            timeout: Duration::from_millis(within(
                "timeout_ms",
                self.timeout_ms.unwrap_or(10_000),
                60_000,
            )?),
            queue: within("queue", self.queue.unwrap_or(1024) as u64, 100_000)? as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_shows_its_origin_and_neither_its_url_nor_its_secret() {
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "a secret of sixteen bytes or more").unwrap();
        let section: WebhookSection = toml::from_str(&format!(
            "url = \"https://hooks.example.com:8443/in?token=a-token-in-the-url\"\nsecret = {{ file = {:?} }}",
            secret.path()
        ))
        .unwrap();
        let shown = format!("{:?}", section.webhook().unwrap());
        assert!(shown.contains("https://hooks.example.com:8443"), "{shown}");
        assert!(
            !shown.contains("token") && !shown.contains("/in") && !shown.contains("secret of"),
            "{shown}"
        );
    }
}
