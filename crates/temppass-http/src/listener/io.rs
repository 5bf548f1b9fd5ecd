//! The socket under hyper: notes every byte moved for the watchdog, and
//! gives hyper's own error answers the §5 JSON body.
//!
//! hyper answers a request it cannot parse (a bad header byte or
//! `Content-Length`, a URI or head over its limits) by itself, with an empty
//! 400, 414 or 431 that no hook can change. Those are the only error answers
//! with `content-length: 0`: every answer temppass makes with a 4xx or 5xx
//! status has a JSON body (`edge.rs` sees to it). So an answer head of that
//! shape is written as the same status with the §5 body instead, and
//! `connection: close`, as hyper closes after it anyway.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::Progress;
use crate::error::{ErrorBody, ErrorCode, JSON_CONTENT_TYPE};

pin_project_lite::pin_project! {
    pub(crate) struct GuardedIo {
        #[pin]
        inner: TcpStream,
        progress: Arc<Progress>,
        // A rewritten answer still to be written, and how much of it was.
        rewritten: Option<(Vec<u8>, usize)>,
    }
}

impl GuardedIo {
    pub(crate) fn new(inner: TcpStream, progress: Arc<Progress>) -> Self {
        Self { inner, progress, rewritten: None }
    }
}

/// Writes what is left of a rewritten answer; `Ready(Ok)` once all of it is out.
fn drain(
    mut inner: Pin<&mut TcpStream>,
    rewritten: &mut Option<(Vec<u8>, usize)>,
    progress: &Progress,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while let Some((bytes, written)) = rewritten {
        if *written == bytes.len() {
            *rewritten = None;
            break;
        }
        let n = ready!(inner.as_mut().poll_write(cx, &bytes[*written..]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        progress.touch();
        *written += n;
    }
    Poll::Ready(Ok(()))
}

impl AsyncRead for GuardedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        ready!(this.inner.poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.progress.touch();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut this = self.project();
        ready!(drain(this.inner.as_mut(), this.rewritten, this.progress, cx))?;
        if let Some(answer) = rewrite_bodiless_error(buf) {
            *this.rewritten = Some((answer, 0));
            // hyper's bytes count as written: what goes out instead is drained
            // here and by flush and shutdown, before anything else.
            let _ = drain(this.inner.as_mut(), this.rewritten, this.progress, cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        let n = ready!(this.inner.poll_write(cx, buf))?;
        if n > 0 {
            this.progress.touch();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        ready!(drain(this.inner.as_mut(), this.rewritten, this.progress, cx))?;
        this.inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        ready!(drain(this.inner.as_mut(), this.rewritten, this.progress, cx))?;
        this.inner.poll_shutdown(cx)
    }

    // Not vectored: hyper then writes each answer head in one contiguous
    // buffer, which is what `rewrite_bodiless_error` reads.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// The §5 answer for one of hyper's own bodiless error heads, or `None` for
/// anything else (checked on the first bytes: no cost for a 2xx answer).
pub(crate) fn rewrite_bodiless_error(buf: &[u8]) -> Option<Vec<u8>> {
    let rest = buf.strip_prefix(b"HTTP/1.1 ").or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
    if !matches!(rest.first(), Some(b'4' | b'5')) {
        return None;
    }
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = &buf[..head_end + 4];
    if !head.windows(21).any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n")) || buf.len() != head.len() {
        return None;
    }
    let status = std::str::from_utf8(rest.get(..3)?).ok()?.parse::<u16>().ok()?;
    let status = StatusCode::from_u16(status).ok()?;
    Some(error_answer(status, "hyper refused the request before temppass saw it"))
}

/// A whole HTTP/1.1 answer with the §5 body of `status`, closing the connection.
fn error_answer(status: StatusCode, log_reason: &str) -> Vec<u8> {
    let body = ErrorBody::new(ErrorCode::for_status(status));
    tracing::debug!(trace = %body.trace, status = status.as_u16(), "{log_reason}");
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("Error");
    let content_type = JSON_CONTENT_TYPE;
    let content_type = content_type.to_str().unwrap_or("application/json");
    let mut answer = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}

/// Answers a connection over `server.max_connections` with a 503 and closes
/// it, without reading its request: as much as the socket takes at once.
pub(super) fn refuse_busy(stream: &TcpStream) {
    let (status, _) = ErrorCode::ServiceUnavailable.status_and_action();
    let _ = stream.try_write(&error_answer(status, "refused a connection at the cap"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_empty_400_becomes_the_json_error_body() {
        let hyper = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Fri, 04 Dec 2026 03:00:00 GMT\r\n\r\n";
        let answer = rewrite_bodiless_error(hyper).expect("hyper's empty 400 is rewritten");
        let text = String::from_utf8(answer).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(body["code"], "bad_request");
        assert_eq!(body["status"], 400);
    }

    #[test]
    fn hypers_431_and_414_keep_their_status() {
        for (status, code) in [
            ("431 Request Header Fields Too Large", "request_header_fields_too_large"),
            ("414 URI Too Long", "uri_too_long"),
        ] {
            let hyper = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            let answer =
                String::from_utf8(rewrite_bodiless_error(hyper.as_bytes()).unwrap_or_default()).unwrap_or_default();
            assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{answer}");
            assert!(answer.contains(code), "{answer}");
        }
    }

    #[test]
    fn answers_with_a_body_or_a_success_status_are_left_alone() {
        assert!(rewrite_bodiless_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(rewrite_bodiless_error(b"HTTP/1.1 204 No Content\r\n\r\n").is_none());
        assert!(
            rewrite_bodiless_error(b"HTTP/1.1 404 Not Found\r\ncontent-length: 20\r\n\r\n{\"code\":\"not_found\"}")
                .is_none()
        );
        assert!(rewrite_bodiless_error(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0").is_none());
        assert!(rewrite_bodiless_error(b"{\"code\":\"x\"}").is_none());
    }
}
