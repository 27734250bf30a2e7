//! Outbound HTTP: a small blocking client over the world's
//! `wasi:http/outgoing-handler`.
//!
//! A plugin reaches only the origins the operator allows it in the policy
//! (`[plugins.NAME.http] allow`), nothing by default. The host may add
//! headers the plugin never sees, such as an API key bound to an origin, so
//! a plugin usually sends no credentials itself.
//!
//! ```no_run
//! use agentbox_sdk::http;
//! use agentbox_sdk::json;
//! use std::time::Duration;
//!
//! # fn example() -> Result<(), http::Error> {
//! // JSON in, JSON out.
//! let reply: agentbox_sdk::Value = http::post("https://api.example.com/v1/book")
//!     .json(&json!({"day": "monday"}))
//!     .timeout(Duration::from_secs(10))
//!     .send()?
//!     .error_for_status()?
//!     .json()?;
//!
//! // A stream of server-sent events, read as they arrive.
//! for event in http::get("https://api.example.com/v1/stream").send()?.events() {
//!     let event = event?;
//!     agentbox_sdk::say(&event.data);
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme,
};
use crate::bindings::wasi::io::streams::{InputStream, StreamError};

/// How much is read from a response body at a time.
const READ_CHUNK: u64 = 64 * 1024;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The URL is not `http://` or `https://` with a host.
    InvalidUrl(String),
    /// The host refused the request under the plugin's policy.
    Denied {
        /// The host (and port) the request named.
        host: String,
        /// Which rule refused it.
        reason: &'static str,
    },
    /// Connecting, the first byte or the next read took too long: the
    /// policy's timeout, the request's own, or the turn's deadline.
    Timeout {
        /// The host (and port) the request named.
        host: String,
    },
    /// The response body is larger than the policy allows.
    TooLarge {
        /// The host (and port) the request named.
        host: String,
        /// The most the policy allows, in bytes, if the host said.
        limit: Option<u64>,
    },
    /// The server answered with an error status
    /// ([`Response::error_for_status`]).
    Status {
        /// The host (and port) the request named.
        host: String,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The body is not what was asked for (JSON or UTF-8 text).
    Body(String),
    /// Anything else, with the WASI HTTP error code.
    Failed {
        /// The host (and port) the request named.
        host: String,
        /// The error code, as WASI HTTP names it.
        code: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidUrl(url) => {
                write!(f, "`{url}` is not an http:// or https:// URL with a host")
            }
            Error::Denied { host, reason } => {
                write!(f, "the host refused the request to {host}: {reason}")
            }
            Error::Timeout { host } => write!(
                f,
                "the request to {host} timed out (its timeout, the policy's, or the turn's deadline)"
            ),
            Error::TooLarge {
                host,
                limit: Some(limit),
            } => write!(
                f,
                "the response from {host} is larger than the policy's {limit} bytes"
            ),
            Error::TooLarge { host, limit: None } => {
                write!(
                    f,
                    "the response from {host} is larger than the policy allows"
                )
            }
            Error::Status { host, status, body } => {
                write!(f, "{host} answered {status}: {body}")
            }
            Error::Body(reason) => write!(f, "unexpected response body: {reason}"),
            Error::Failed { host, code } => write!(f, "the request to {host} failed: {code}"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    fn of(code: ErrorCode, host: &str) -> Error {
        let host = host.to_owned();
        match code {
            ErrorCode::HttpRequestDenied => Error::Denied {
                host,
                reason: "its origin is not on the plugin's allow-list, or the turn already sent as many requests as the policy allows",
            },
            ErrorCode::DestinationIpProhibited => Error::Denied {
                host,
                reason: "it resolves to a loopback, private or link-local address, which an allow entry must name literally",
            },
            ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::HttpResponseTimeout
            | ErrorCode::DnsTimeout => Error::Timeout { host },
            ErrorCode::HttpResponseBodySize(limit) => Error::TooLarge { host, limit },
            code => Error::Failed {
                host,
                code: format!("{code:?}"),
            },
        }
    }
}

/// A `GET` of `url`.
pub fn get(url: &str) -> Request {
    Request::new("GET", url)
}

/// A `POST` to `url`.
pub fn post(url: &str) -> Request {
    Request::new("POST", url)
}

/// A request being built.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

impl Request {
    /// A request with any method (`PUT`, `DELETE`, …).
    pub fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        self
    }

    /// Sends `body` as JSON.
    pub fn json<T: Serialize + ?Sized>(self, body: &T) -> Request {
        let body = serde_json::to_vec(body).expect("a Serialize value serializes to JSON");
        self.header("content-type", "application/json").body(body)
    }

    /// Sends `body` as it is.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Bounds each wait (connecting, the first byte, between reads) by
    /// `timeout`; the policy's timeout and the turn's deadline bound them too.
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request and waits for the response's status and headers.
    /// A redirect is returned as it is, for the plugin to follow or not.
    pub fn send(self) -> Result<Response, Error> {
        let url = Url::parse(&self.url).ok_or_else(|| Error::InvalidUrl(self.url.clone()))?;
        let host = url.authority.to_owned();
        let failed = |code| Error::of(code, &host);
        let invalid = |what: &str| Error::Failed {
            host: host.clone(),
            code: format!("invalid {what}"),
        };
        let mut headers = self.headers;
        // A body of known size is declared, as mainstream clients do: a
        // server that reads by `content-length` alone would see none.
        if sends_length(&self.method, &self.body)
            && !headers.iter().any(|(name, _)| name == "content-length")
        {
            headers.push((
                "content-length".to_owned(),
                self.body.len().to_string().into_bytes(),
            ));
        }
        let headers =
            Fields::from_list(&headers).map_err(|err| invalid(&format!("header ({err:?})")))?;
        let request = OutgoingRequest::new(headers);
        request
            .set_method(&method(&self.method))
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&if url.secure {
                Scheme::Https
            } else {
                Scheme::Http
            }))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(url.authority))
            .map_err(|()| invalid("authority"))?;
        request
            .set_path_with_query(Some(url.path))
            .map_err(|()| invalid("path"))?;
        let body = request.body().map_err(|()| invalid("body"))?;
        let options = self.timeout.map(|timeout| {
            let options = RequestOptions::new();
            let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
            // Each setter fails only if the host does not support it.
            let _ = options.set_connect_timeout(Some(nanos));
            let _ = options.set_first_byte_timeout(Some(nanos));
            let _ = options.set_between_bytes_timeout(Some(nanos));
            options
        });
        // The request goes first: the host reads the body while it is written.
        let pending = outgoing_handler::handle(request, options).map_err(failed)?;
        if !self.body.is_empty() {
            let stream = body.write().map_err(|()| invalid("body stream"))?;
            for chunk in self.body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|err| stream_error(err, &host))?;
            }
        }
        OutgoingBody::finish(body, None).map_err(failed)?;
        pending.subscribe().block();
        let response = pending
            .get()
            .expect("the response is ready once its pollable is")
            .expect("the response is taken once")
            .map_err(failed)?;
        Response::new(response, host)
    }
}

/// Whether a request declares its body's length: any body, and an empty
/// one of a method that is meant to carry one.
fn sends_length(method: &str, body: &[u8]) -> bool {
    !body.is_empty() || ["POST", "PUT", "PATCH"].contains(&method.to_ascii_uppercase().as_str())
}

/// The `http` or `https` URL a request names.
struct Url<'a> {
    secure: bool,
    authority: &'a str,
    path: &'a str,
}

impl<'a> Url<'a> {
    fn parse(url: &'a str) -> Option<Url<'a>> {
        let (secure, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            (false, url.strip_prefix("http://")?)
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let path = path.split('#').next().unwrap_or_default();
        if authority.is_empty() || authority.contains('@') {
            return None;
        }
        Some(Url {
            secure,
            authority,
            path: if path.is_empty() { "/" } else { path },
        })
    }
}

fn method(name: &str) -> Method {
    match name {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    }
}

fn stream_error(err: StreamError, host: &str) -> Error {
    match err {
        StreamError::LastOperationFailed(err) => {
            match crate::bindings::wasi::http::types::http_error_code(&err) {
                Some(code) => Error::of(code, host),
                None => Error::Failed {
                    host: host.to_owned(),
                    code: err.to_debug_string(),
                },
            }
        }
        StreamError::Closed => Error::Failed {
            host: host.to_owned(),
            code: "the stream closed".to_owned(),
        },
    }
}

/// A response whose status and headers arrived; its body is read on demand.
#[derive(Debug)]
pub struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    host: String,
    // Dropped in this order: the stream, its body, then the response.
    stream: InputStream,
    _body: IncomingBody,
    _response: IncomingResponse,
}

impl Response {
    fn new(response: IncomingResponse, host: String) -> Result<Response, Error> {
        let status = response.status();
        let headers = response.headers().entries();
        let body = response.consume().map_err(|()| Error::Failed {
            host: host.clone(),
            code: "the body was taken already".to_owned(),
        })?;
        let stream = body.stream().map_err(|()| Error::Failed {
            host: host.clone(),
            code: "the body's stream was taken already".to_owned(),
        })?;
        Ok(Response {
            status,
            headers,
            host,
            stream,
            _body: body,
            _response: response,
        })
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of the header `name` (any case), if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    /// The response itself if its status is below 400; otherwise
    /// [`Error::Status`] with the start of its body.
    pub fn error_for_status(self) -> Result<Response, Error> {
        if self.status < 400 {
            return Ok(self);
        }
        let (host, status) = (self.host.clone(), self.status);
        let body = self.text().unwrap_or_default();
        let body: String = body.chars().take(512).collect();
        Err(Error::Status { host, status, body })
    }

    /// The next bytes of the body; `None` at its end.
    fn chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        match self.stream.blocking_read(READ_CHUNK) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StreamError::Closed) => Ok(None),
            Err(err) => Err(stream_error(err, &self.host)),
        }
    }

    /// The whole body.
    pub fn bytes(mut self) -> Result<Vec<u8>, Error> {
        let mut body = Vec::new();
        while let Some(chunk) = self.chunk()? {
            body.extend(chunk);
        }
        Ok(body)
    }

    /// The whole body as UTF-8 text.
    pub fn text(self) -> Result<String, Error> {
        String::from_utf8(self.bytes()?).map_err(|err| Error::Body(err.to_string()))
    }

    /// The whole body as JSON.
    pub fn json<T: DeserializeOwned>(self) -> Result<T, Error> {
        serde_json::from_slice(&self.bytes()?).map_err(|err| Error::Body(err.to_string()))
    }

    /// The body as server-sent events (`text/event-stream`), each returned
    /// as soon as its blank line arrives.
    pub fn events(self) -> Events {
        Events {
            response: self,
            buffer: Vec::new(),
            ended: false,
        }
    }
}

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// Its `event:` field, if it had one.
    pub event: Option<String>,
    /// Its `data:` lines, joined by line breaks.
    pub data: String,
}

/// The server-sent events of a response, read as they arrive.
#[derive(Debug)]
pub struct Events {
    response: Response,
    buffer: Vec<u8>,
    ended: bool,
}

impl Events {
    /// The next complete line of the body, without its line break.
    fn line(&mut self) -> Result<Option<String>, Error> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return String::from_utf8(line)
                    .map(Some)
                    .map_err(|err| Error::Body(err.to_string()));
            }
            match self.response.chunk()? {
                Some(chunk) => self.buffer.extend(chunk),
                None if self.buffer.is_empty() => return Ok(None),
                // A last line without a line break.
                None => self.buffer.push(b'\n'),
            }
        }
    }
}

impl Iterator for Events {
    type Item = Result<Event, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let mut event = Event::default();
        let (mut fields, mut data_lines) = (0, 0);
        loop {
            let line = match self.line() {
                Ok(Some(line)) => line,
                Ok(None) => {
                    self.ended = true;
                    return (fields > 0).then_some(Ok(event));
                }
                Err(err) => {
                    self.ended = true;
                    return Some(Err(err));
                }
            };
            if line.is_empty() {
                if fields > 0 {
                    return Some(Ok(event));
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "data" => {
                    if data_lines > 0 {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                    data_lines += 1;
                    fields += 1;
                }
                "event" => {
                    event.event = Some(value.to_owned());
                    fields += 1;
                }
                // Comments, `id:` and `retry:` carry nothing a plugin needs.
                _ => {}
            }
        }
    }
}
