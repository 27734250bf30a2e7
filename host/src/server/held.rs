//! A client's socket as the server holds it: it keeps its place under the
//! connection cap for as long as it is open, WebSocket included once the
//! request upgrades, and it answers in JSON where hyper answers by itself.
//! A response's body as the server holds it, with what its request took.
//!
//! hyper answers a request whose head it cannot read (400), whose URI is
//! too long (414) or whose header fields are too large (431) itself, with
//! an empty body, before any handler sees the request, and offers no hook
//! to shape that answer. The socket recognizes that answer as hyper writes
//! it (one of those statuses, no `content-type`: every answer of the
//! server's own handlers has one) and writes the same status with a JSON
//! body and its `kind` instead. hyper closes the connection after it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::server::bounds::Place;

/// A connection's socket and its place under the cap.
pub(super) struct Held {
    stream: TcpStream,
    _place: OwnedSemaphorePermit,
    /// An answer written in place of hyper's own, and how much of it went.
    answer: Option<(Vec<u8>, usize)>,
}

impl Held {
    pub(super) fn new(stream: TcpStream, place: OwnedSemaphorePermit) -> Held {
        Held {
            stream,
            _place: place,
            answer: None,
        }
    }

    /// Writes what is left of an answer written in place of hyper's own.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((answer, sent)) = &mut self.answer {
            if *sent == answer.len() {
                self.answer = None;
                break;
            }
            let wrote = ready!(Pin::new(&mut self.stream).poll_write(cx, &answer[*sent..]))?;
            if wrote == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += wrote;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `bytes` (all hyper is writing) in place of hyper's own answer,
    /// if that is what they are; returns whether it did.
    fn replaces(&mut self, bytes: &[u8]) -> bool {
        match json_answer(bytes) {
            Some(answer) => {
                self.answer = Some((answer, 0));
                true
            }
            None => false,
        }
    }
}

impl AsyncRead for Held {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_answer(cx))?;
        if this.replaces(buf) {
            ready!(this.poll_answer(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_answer(cx))?;
        // hyper's own answer has no body: its head is the one slice.
        if let [head] = bufs
            && this.replaces(head)
        {
            ready!(this.poll_answer(cx))?;
            return Poll::Ready(Ok(head.len()));
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_answer(cx))?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_answer(cx))?;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The JSON answer to write instead of `bytes`, when they are hyper's own
/// answer to a request it could not read: a whole head with status 400,
/// 414 or 431 and no `content-type`.
fn json_answer(bytes: &[u8]) -> Option<Vec<u8>> {
    let status = bytes.strip_prefix(b"HTTP/1.1 ")?.get(..4)?;
    let (status, kind, message) = match status {
        b"400 " => (
            "400 Bad Request",
            "bad-request",
            "the request is not well-formed HTTP/1.1",
        ),
        b"414 " => (
            "414 URI Too Long",
            "too-large",
            "the request's URI is too long",
        ),
        b"431 " => (
            "431 Request Header Fields Too Large",
            "too-large",
            "the request's header fields are too many or too large",
        ),
        _ => return None,
    };
    let end = bytes.windows(4).position(|window| window == b"\r\n\r\n")?;
    let typed = bytes[..end]
        .split(|&byte| byte == b'\n')
        .any(|line| line.to_ascii_lowercase().starts_with(b"content-type:"));
    if typed || end + 4 != bytes.len() {
        return None;
    }
    let body = serde_json::json!({ "kind": kind, "message": message }).to_string();
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

/// A response's body as the server holds it: with the request's place
/// among its principal's until its last byte is sent (a follow's stream
/// holds it for its life), or ending early once its caller lapses.
pub(crate) struct HeldBody {
    body: Body,
    _place: Option<Place>,
    until: Option<Pin<Box<dyn Future<Output = String> + Send>>>,
}

impl HeldBody {
    /// `response`, its body holding `place`.
    pub(crate) fn holding(response: Response, place: Place) -> Response {
        response.map(|body| {
            Body::new(HeldBody {
                body,
                _place: Some(place),
                until: None,
            })
        })
    }

    /// `response`, its body ending once `until` resolves; a body of a
    /// known length ends by itself, and is left as it is.
    pub(crate) fn ending_on(
        response: Response,
        until: impl Future<Output = String> + Send + 'static,
    ) -> Response {
        if response.body().size_hint().exact().is_some() {
            return response;
        }
        response.map(|body| {
            Body::new(HeldBody {
                body,
                _place: None,
                until: Some(Box::pin(until)),
            })
        })
    }
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Some(until) = &mut this.until
            && until.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(None);
        }
        Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_own_bodiless_answers_are_replaced() {
        let own = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 23:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(json_answer(own).unwrap()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["kind"], "too-large");

        for other in [
            // A handler's answer: it has a content type.
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\r\n",
            // Another status, a head cut short, a head with more after it.
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nmore",
            // A body or WebSocket frame.
            b"{\"kind\": \"HTTP/1.1 400 \"}",
        ] {
            assert_eq!(json_answer(other), None, "{}", String::from_utf8_lossy(other));
        }
    }
}
