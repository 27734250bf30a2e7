//! A request on its way: the address checked and connected to, the waits
//! bounded by the grant's timeout and the call's deadline, and the response
//! body bounded and metered.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_rustls::rustls;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, WasiBody};

use crate::policy::origin::{Host, Origin, Target, is_internal};
use crate::tls::CLIENT_CONFIG;

use super::meter::{Meter, Rule, Usage};

/// How long a request may wait and how much it may read.
#[derive(Clone)]
pub(super) struct Waits {
    pub(super) timeout: Duration,
    pub(super) deadline: tokio::time::Instant,
    pub(super) max_response_bytes: u64,
    pub(super) usage: Arc<Usage>,
    /// An interrupt ends every wait at once.
    pub(super) stop: CancellationToken,
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
pub(super) async fn send(
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
