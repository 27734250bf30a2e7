//! Outbound HTTP for one call of an export (`wasi:http/outgoing-handler`,
//! from WIT 0.2.0).
//!
//! Every request a guest sends is checked before a socket opens: its count
//! in the call, then the plugin's allow-list, then the addresses its host
//! name resolves to (loopback, private and link-local ones only through an
//! allow entry that names the address). The host connects to the address it
//! checked, sets the grant's injected headers after the guest built the
//! request, never follows a redirect, bounds every wait by the grant's
//! timeout and the call's deadline, and the response body by the grant's
//! size. Requests, bytes and refusals are counted per plugin.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
};

use crate::metrics::Metrics;
use crate::policy::origin::Target;
use crate::policy::{Outbound, Reach};
use crate::store::OutboundUse;

mod meter;
mod send;

use meter::{Meter, Rule};
use send::{Waits, send};

/// Outbound HTTP as the host holds it: what each plugin may reach now, and
/// what is counted. A call's [`HttpCtx`] is made from it.
pub(crate) struct HttpService {
    /// What each plugin may reach, the policy's with the operators'
    /// configuration over it.
    pub(crate) reach: Reach,
    metrics: Arc<Metrics>,
}

impl HttpService {
    pub(crate) fn new(reach: Reach, metrics: Arc<Metrics>) -> HttpService {
        HttpService { reach, metrics }
    }

    /// The outbound HTTP of a call of `plugin` in `session`, under what the
    /// plugin reaches now, ending at `deadline` or when `stop` is cancelled.
    pub(crate) fn for_call(
        &self,
        plugin: &str,
        session: &str,
        deadline: Instant,
        stop: CancellationToken,
    ) -> HttpCtx {
        let reach = self.reach.of(plugin);
        HttpCtx::new(reach, plugin, session, self.metrics.clone(), deadline, stop)
    }
}

/// What a call may send, and what it sent so far.
pub(crate) struct HttpCtx {
    wasi: WasiHttpCtx,
    hooks: Outgoing,
}

/// The hooks through which every request of the call passes.
struct Outgoing {
    outbound: Arc<Outbound>,
    meter: Meter,
    deadline: Instant,
    stop: CancellationToken,
}

impl HttpCtx {
    /// The outbound HTTP of a call of `plugin` in `session`, under
    /// `outbound`, ending at `deadline` or when `stop` is cancelled.
    pub(crate) fn new(
        outbound: Arc<Outbound>,
        plugin: &str,
        session: &str,
        metrics: Arc<Metrics>,
        deadline: Instant,
        stop: CancellationToken,
    ) -> HttpCtx {
        HttpCtx {
            wasi: WasiHttpCtx::new(),
            hooks: Outgoing {
                outbound,
                meter: Meter {
                    plugin: plugin.into(),
                    session: session.into(),
                    metrics,
                    usage: Arc::default(),
                },
                deadline,
                stop,
            },
        }
    }

    /// What stops the call early: the caller's interrupt.
    pub(crate) fn stop(&self) -> &CancellationToken {
        &self.hooks.stop
    }

    /// Whether the call's deadline ended one of its requests' waits: the
    /// call is then past its deadline, whatever the guest did after.
    pub(crate) fn cut_by_deadline(&self) -> bool {
        self.hooks
            .meter
            .usage
            .cut_by_deadline
            .load(Ordering::Relaxed)
    }

    /// What the call sent so far.
    pub(crate) fn usage(&self) -> OutboundUse {
        let usage = &self.hooks.meter.usage;
        OutboundUse {
            requests: usage.requests.load(Ordering::Relaxed),
            refused: usage.refused.load(Ordering::Relaxed),
            response_bytes: usage.response_bytes.load(Ordering::Relaxed),
        }
    }

    /// The configuration the plugin reads through `wasi:config/store`.
    pub(crate) fn config(&self) -> &wasmtime_wasi_config::WasiConfigVariables {
        self.hooks.outbound.config.variables()
    }

    /// The view `wasi:http`'s host functions take, over `table`.
    pub(crate) fn view<'a>(&'a mut self, table: &'a mut ResourceTable) -> WasiHttpCtxView<'a> {
        WasiHttpCtxView {
            ctx: &mut self.wasi,
            table,
            hooks: &mut self.hooks,
        }
    }
}

/// What the host's `send_request` hook returns.
type Sending = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for Outgoing {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _body_errors: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sending {
        let grant = &self.outbound.http;
        let Some(target) = Target::of(request.uri()) else {
            return Box::new(async { Err(Error::HttpRequestUriInvalid) });
        };
        let shown = target.to_string();
        // A TRACE answer reflects the request, the headers the host
        // injects among them; a CONNECT would tunnel past every check.
        let method = request.method().clone();
        if method == http::Method::TRACE || method == http::Method::CONNECT {
            self.meter.refuse(
                &shown,
                Rule::Method,
                &format!("{method} requests are not sent"),
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let sent = self.meter.usage.requests.load(Ordering::Relaxed);
        if sent >= u64::from(grant.max_requests_per_turn) {
            self.meter.refuse(
                &shown,
                Rule::RequestsPerTurn,
                &format!("the call already sent {sent} requests"),
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let Some(origin) = grant.allowed(&target).cloned() else {
            self.meter.refuse(
                &shown,
                Rule::AllowList,
                "its origin is not on the plugin's allow-list",
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        };
        self.meter.usage.requests.fetch_add(1, Ordering::Relaxed);
        for (header, value) in grant.injections(&target) {
            request.headers_mut().insert(header.clone(), value.clone());
        }
        let waits = Waits {
            timeout: grant.timeout,
            deadline: tokio::time::Instant::from_std(self.deadline),
            max_response_bytes: grant.max_response_bytes,
            usage: self.meter.usage.clone(),
            stop: self.stop.clone(),
        };
        Box::new(send(request, target, origin, waits, self.meter.clone()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};

    use super::*;

    fn request(method: http::Method, uri: &str) -> http::Request<WasiBody> {
        let body = Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(body)
            .unwrap()
    }

    #[tokio::test]
    async fn a_request_past_the_plugins_reach_is_refused_before_it_leaves_and_counted() {
        let metrics = Arc::new(Metrics::default());
        // The policy names no plugin: none reaches anything.
        let service = HttpService::new(Reach::new(BTreeMap::new()), metrics.clone());
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut http = service.for_call("shop", "s1", deadline, CancellationToken::new());
        for (method, uri) in [
            (http::Method::GET, "https://example.com/orders"),
            (http::Method::TRACE, "https://example.com/"),
        ] {
            let sending = http.hooks.send_request(
                request(method.clone(), uri),
                None,
                Box::new(async { Ok(()) }),
            );
            let refused = Box::into_pin(sending).await;
            assert!(
                matches!(refused, Err(Error::HttpRequestDenied)),
                "{method} {uri} was not refused"
            );
        }
        assert_eq!(
            http.usage(),
            OutboundUse {
                requests: 0,
                refused: 2,
                response_bytes: 0,
            }
        );
        let counted = metrics.encode();
        for rule in ["allow_list", "method"] {
            assert!(
                counted.contains(&format!("plugin=\"shop\",rule=\"{rule}\"}} 1")),
                "{rule} not counted in:\n{counted}"
            );
        }
    }
}
