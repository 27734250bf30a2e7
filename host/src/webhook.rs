//! Webhooks: each event this process commits, posted to its plugin's
//! webhook as the policy says ([`crate::policy::Webhook`]). Each post is
//! signed, a failed one is tried again after a pause that doubles, and an
//! event is dropped and counted once every try failed, or when too many
//! wait. Turns never wait for a webhook: an event joins a bounded queue of
//! its plugin, which one task drains in order.
//!
//! The target is held to the outbound rules: a name that resolves only to
//! internal addresses is refused unless the URL names the address
//! literally, no redirect is followed, and no proxy is used.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::policy::Webhook;
use crate::policy::origin::is_internal;
use crate::tls::CLIENT_CONFIG;

/// The header with the signature of the timestamp and body.
pub const SIGNATURE_HEADER: &str = "agentbox-signature";
/// The header with the time of the post, in milliseconds of the host clock.
pub const TIMESTAMP_HEADER: &str = "agentbox-timestamp";
/// The header naming the event, `SESSION/SEQ`: the same on every try.
pub const DELIVERY_HEADER: &str = "agentbox-delivery";

/// The webhooks of the plugins whose policy names one.
pub(crate) struct Webhooks {
    queues: HashMap<String, Queue>,
    metrics: Arc<Metrics>,
    clock: Clock,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("plugins", &self.queues.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// One plugin's webhook and the queue of its events, whose task starts
/// with its first event (within the runtime that commits it).
struct Queue {
    webhook: Arc<Webhook>,
    events: OnceLock<mpsc::Sender<Posted>>,
}

/// An event waiting to be posted.
struct Posted {
    delivery: String,
    body: String,
}

impl Webhooks {
    pub(crate) fn new(
        webhooks: impl IntoIterator<Item = (String, Webhook)>,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Webhooks {
        let queues = webhooks
            .into_iter()
            .map(|(plugin, webhook)| {
                let queue = Queue {
                    webhook: Arc::new(webhook),
                    events: OnceLock::new(),
                };
                (plugin, queue)
            })
            .collect();
        Webhooks {
            queues,
            metrics,
            clock,
        }
    }

    /// Queues event `seq` of `session` (its JSON, `body`) for `plugin`'s
    /// webhook, if it has one; drops and counts it if the queue is full.
    pub(crate) fn post(&self, plugin: &str, session: &str, seq: u64, body: &str) {
        let Some(queue) = self.queues.get(plugin) else {
            return;
        };
        let events = queue.events.get_or_init(|| {
            let (events, waiting) = mpsc::channel(queue.webhook.queue);
            tokio::spawn(deliver(
                plugin.to_owned(),
                queue.webhook.clone(),
                waiting,
                self.metrics.clone(),
                self.clock.clone(),
            ));
            events
        });
        let posted = Posted {
            delivery: format!("{session}/{seq}"),
            body: body.to_owned(),
        };
        if events.try_send(posted).is_err() {
            tracing::warn!(
                plugin,
                session,
                seq,
                "the webhook's queue is full; the event is dropped"
            );
            self.metrics.webhook_event(plugin, "dropped");
        }
    }
}

/// Posts each event of `waiting` to `webhook`, in order, trying each as
/// often as it says.
async fn deliver(
    plugin: String,
    webhook: Arc<Webhook>,
    mut waiting: mpsc::Receiver<Posted>,
    metrics: Arc<Metrics>,
    clock: Clock,
) {
    let client = match reqwest::Client::builder()
        .tls_backend_preconfigured((**CLIENT_CONFIG).clone())
        .dns_resolver(Arc::new(External))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(webhook.timeout)
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(plugin, error = %err, "cannot make the webhook's HTTP client; its events are dropped");
            while waiting.recv().await.is_some() {
                metrics.webhook_event(&plugin, "dropped");
            }
            return;
        }
    };
    while let Some(posted) = waiting.recv().await {
        let mut pause = webhook.backoff;
        for attempt in 1..=webhook.attempts {
            let failure = match post_once(&client, &webhook, &posted, clock.now_ms()).await {
                Ok(()) => {
                    metrics.webhook_event(&plugin, "delivered");
                    break;
                }
                Err(failure) => failure,
            };
            if attempt == webhook.attempts {
                tracing::warn!(
                    plugin,
                    delivery = posted.delivery,
                    origin = %webhook.target,
                    "the webhook failed {attempt} times; the event is dropped: {failure}"
                );
                metrics.webhook_event(&plugin, "dropped");
            } else {
                tracing::info!(
                    plugin,
                    delivery = posted.delivery,
                    origin = %webhook.target,
                    "the webhook failed; trying again in {} ms: {failure}",
                    pause.as_millis()
                );
                metrics.webhook_event(&plugin, "retried");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
}

/// One try: a 2xx answer delivers.
async fn post_once(
    client: &reqwest::Client,
    webhook: &Webhook,
    posted: &Posted,
    now_ms: u64,
) -> Result<(), String> {
    let response = client
        .post(&webhook.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(TIMESTAMP_HEADER, now_ms)
        .header(SIGNATURE_HEADER, webhook.sign(now_ms, &posted.body))
        .header(DELIVERY_HEADER, &posted.delivery)
        .body(posted.body.clone())
        .send()
        .await
        .map_err(failure_of)?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("it answered {}", response.status()))
    }
}

/// Why a try failed, with its causes, in words that name no URL: a
/// webhook's path or query may carry a token, and failures are logged.
fn failure_of(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(&err);
    while let Some(err) = cause {
        text = format!("{text}: {err}");
        cause = err.source();
    }
    text
}

/// Resolves names to their external addresses only: a webhook reaches an
/// internal address only by naming it literally.
struct External;

impl Resolve for External {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|address| !is_internal(address.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "`{host}` resolves to internal addresses only, which a webhook reaches only by naming them literally"
                )
                .into());
            }
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failure_says_why_and_names_no_url() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = listener.local_addr().unwrap();
        drop(listener);
        let err = reqwest::Client::builder()
            .tls_backend_preconfigured((**CLIENT_CONFIG).clone())
            .build()
            .unwrap()
            .post(format!("http://{closed}/hook?token=a-token-in-the-url"))
            .send()
            .await
            .unwrap_err();
        let failure = failure_of(err);
        assert!(failure.contains("Connection refused"), "{failure}");
        assert!(
            !failure.contains("a-token-in-the-url") && !failure.contains("/hook"),
            "{failure}"
        );
    }
}
