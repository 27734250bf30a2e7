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
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_rustls::rustls;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
};

use crate::metrics::Metrics;
use crate::policy::Outbound;
use crate::policy::origin::{Host, Origin, Target, is_internal};
use crate::store::OutboundUse;
use crate::tls::CLIENT_CONFIG;

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

/// Where the call's requests are counted and logged.
#[derive(Clone)]
struct Meter {
    plugin: Arc<str>,
    session: Arc<str>,
    metrics: Arc<Metrics>,
    usage: Arc<Usage>,
}

/// What the call sent, for its tool execution record, and whether its
/// deadline ended a wait.
#[derive(Default)]
struct Usage {
    requests: AtomicU64,
    refused: AtomicU64,
    response_bytes: AtomicU64,
    cut_by_deadline: AtomicBool,
}

/// Why the host refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Its origin is not on the plugin's allow-list.
    AllowList,
    /// Its host resolves only to internal addresses the allow entry does
    /// not name.
    Address,
    /// Its method is one the host never sends (TRACE, CONNECT).
    Method,
    /// The call sent as many requests as the grant allows.
    RequestsPerTurn,
    /// Its response body is larger than the grant allows.
    ResponseBytes,
}

impl Rule {
    /// Its name in logs and metrics.
    fn as_str(self) -> &'static str {
        match self {
            Rule::AllowList => "allow_list",
            Rule::Address => "address",
            Rule::Method => "method",
            Rule::RequestsPerTurn => "max_requests_per_turn",
            Rule::ResponseBytes => "max_response_bytes",
        }
    }
}

impl Meter {
    fn refuse(&self, target: &str, rule: Rule, detail: &str) {
        tracing::warn!(
            plugin = %self.plugin,
            session = %self.session,
            target,
            rule = rule.as_str(),
            "outbound request refused: {detail}"
        );
        self.metrics.outbound_refused(&self.plugin, rule.as_str());
        self.usage.refused.fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self, bytes: u64, origin: &str) {
        self.metrics.outbound_bytes(&self.plugin, origin, bytes);
        self.usage
            .response_bytes
            .fetch_add(bytes, Ordering::Relaxed);
    }
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

/// How long a request may wait and how much it may read.
#[derive(Clone)]
struct Waits {
    timeout: Duration,
    deadline: tokio::time::Instant,
    max_response_bytes: u64,
    usage: Arc<Usage>,
    /// An interrupt ends every wait at once.
    stop: CancellationToken,
}

impl Waits {
    /// When the next wait ends: after the timeout, never past the deadline;
    /// and whether the deadline is what ends it.
    fn next(&self) -> (tokio::time::Instant, bool) {
        let timeout = tokio::time::Instant::now() + self.timeout;
        if self.deadline <= timeout {
            (self.deadline, true)
        } else {
            (timeout, false)
        }
    }

    /// Waits for `future` until the next wait ends, then fails with
    /// `timed_out`; or until an interrupt, which fails the same way.
    async fn wait<F: Future>(&self, future: F, timed_out: Error) -> Result<F::Output, Error> {
        let (until, deadline) = self.next();
        tokio::select! {
            waited = tokio::time::timeout_at(until, future) => waited.map_err(|_| {
                self.timed_out(deadline);
                timed_out
            }),
            () = self.stop.cancelled() => Err(timed_out),
        }
    }

    /// Notes that a wait ended, by the deadline or not.
    fn timed_out(&self, by_deadline: bool) {
        if by_deadline {
            self.usage.cut_by_deadline.store(true, Ordering::Relaxed);
        }
    }
}

/// Resolves, checks and connects to `target`, then sends `request`.
async fn send(
    mut request: http::Request<WasiBody>,
    target: Target,
    origin: Origin,
    waits: Waits,
    meter: Meter,
) -> Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
> {
    let shown = target.to_string();
    let address = address(&target, &origin, &waits, &meter, &shown).await?;
    let tcp = waits
        .wait(TcpStream::connect(address), Error::ConnectionTimeout)
        .await?
        .map_err(Error::Connect)?;
    let stream: Box<dyn Stream> = if target.secure {
        let name = match &target.host {
            Host::Name(name) => rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|_| Error::HttpRequestUriInvalid)?,
            Host::Address(address) => rustls::pki_types::ServerName::IpAddress((*address).into()),
        };
        let tls = waits
            .wait(TLS.connect(name, tcp), Error::ConnectionTimeout)
            .await?
            .map_err(Error::Tls)?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut sender, connection) = waits
        .wait(
            hyper::client::conn::http1::handshake(TokioIo::new(stream)),
            Error::ConnectionTimeout,
        )
        .await?
        .map_err(Error::from)?;
    // The connection is driven by its own task, which ends when the
    // response (or the call's resources) are dropped.
    let connection = wasmtime_wasi::runtime::spawn(connection);
    // The request line names the path only; the host header names the host.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_owned();
    *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;
    let response = waits
        .wait(sender.send_request(request), Error::ConnectionReadTimeout)
        .await?
        .map_err(Error::from)?;
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > waits.max_response_bytes) {
        meter.refuse(
            &shown,
            Rule::ResponseBytes,
            &format!(
                "the response declares more than {} bytes",
                waits.max_response_bytes
            ),
        );
        return Err(Error::HttpResponseBodySize(Some(waits.max_response_bytes)));
    }
    let label = origin.to_string();
    meter.metrics.outbound_request(&meter.plugin, &label);
    let body_meter = BodyMeter {
        meter,
        label,
        shown,
    };
    let (until, by_deadline) = waits.next();
    let response = response.map(|incoming| {
        Bounded {
            incoming,
            read: 0,
            stopped: Box::pin(waits.stop.clone().cancelled_owned()),
            waits,
            idle: Box::pin(tokio::time::sleep_until(until)),
            idle_is_deadline: by_deadline,
            meter: body_meter,
        }
        .boxed_unsync()
    });
    let io: Box<dyn Future<Output = Result<(), Error>> + Send> =
        Box::new(async move { connection.await.map_err(Error::from) });
    Ok((response, io))
}

/// The address to connect to: the one the request names, or the first its
/// name resolves to that the allow entry lets it reach.
async fn address(
    target: &Target,
    origin: &Origin,
    waits: &Waits,
    meter: &Meter,
    shown: &str,
) -> Result<SocketAddr, Error> {
    let candidates: Vec<SocketAddr> = match &target.host {
        Host::Address(address) => vec![SocketAddr::new(*address, target.port)],
        Host::Name(name) => waits
            .wait(
                tokio::net::lookup_host((name.as_str(), target.port)),
                Error::DnsTimeout,
            )
            .await?
            .map_err(|_| Error::DestinationNotFound)?
            .collect(),
    };
    if let Some(address) = candidates
        .iter()
        .find(|address| origin.names_address() || !is_internal(address.ip()))
    {
        return Ok(*address);
    }
    let resolved: Vec<String> = candidates
        .iter()
        .map(|address| address.ip().to_string())
        .collect();
    meter.refuse(
        shown,
        Rule::Address,
        &format!(
            "it resolves to internal addresses only ({}), which an allow entry must name literally",
            resolved.join(", ")
        ),
    );
    Err(Error::DestinationIpProhibited)
}

/// A connection: TCP, or TLS over it.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for T {}

static TLS: LazyLock<tokio_rustls::TlsConnector> =
    LazyLock::new(|| tokio_rustls::TlsConnector::from(CLIENT_CONFIG.clone()));

/// Where a response body's bytes are counted.
struct BodyMeter {
    meter: Meter,
    label: String,
    shown: String,
}

/// A response body bounded in size, in the time between two reads and by
/// the call's deadline, and metered.
struct Bounded {
    incoming: hyper::body::Incoming,
    read: u64,
    waits: Waits,
    idle: Pin<Box<Sleep>>,
    /// Whether `idle` ends at the call's deadline.
    idle_is_deadline: bool,
    /// Ends the body at an interrupt.
    stopped: Pin<Box<WaitForCancellationFutureOwned>>,
    meter: BodyMeter,
}

impl Body for Bounded {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let length = data.len() as u64;
                    this.read += length;
                    let meter = &this.meter;
                    meter.meter.read(length, &meter.label);
                    if this.read > this.waits.max_response_bytes {
                        meter.meter.refuse(
                            &meter.shown,
                            Rule::ResponseBytes,
                            &format!(
                                "the response body passed {} bytes",
                                this.waits.max_response_bytes
                            ),
                        );
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(
                            this.waits.max_response_bytes,
                        )))));
                    }
                }
                let (until, by_deadline) = this.waits.next();
                this.idle.as_mut().reset(until);
                this.idle_is_deadline = by_deadline;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(Error::from(err)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending if this.stopped.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.waits.timed_out(this.idle_is_deadline);
                    Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }
}
