//! Request bodies with a deadline.

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use zeroize::Zeroizing;

/// The request body did not arrive within the listener's body deadline.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request body did not arrive within {} ms", .0.as_millis())]
pub struct BodyTimeout(pub Duration);

/// The [`BodyTimeout`] that `err` is, or wraps (e.g. in `axum::Error` or a length limit's
/// error), if any.
pub fn find_body_timeout(err: &(dyn Error + 'static)) -> Option<BodyTimeout> {
    let mut e = Some(err);
    while let Some(cur) = e {
        if let Some(t) = cur.downcast_ref::<BodyTimeout>() {
            return Some(*t);
        }
        e = cur.source();
    }
    None
}

/// Why a request body could not be read whole (see [`read_capped`]).
#[derive(Debug, thiserror::Error)]
pub enum BodyReadError {
    /// Declared (`Content-Length`) or found to be longer than the cap.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The listener's body deadline passed first.
    #[error(transparent)]
    TimedOut(BodyTimeout),
    /// The client broke the stream.
    #[error("the request body could not be read")]
    Unreadable,
}

/// Reads a request body of at most `max` bytes into a buffer wiped when dropped (a body may
/// carry a plaintext). A declared length over the cap is refused before reading.
pub async fn read_capped(
    body: axum::body::Body,
    headers: &http::HeaderMap,
    max: usize,
) -> Result<Zeroizing<Vec<u8>>, BodyReadError> {
    if declared_length(headers).is_some_and(|n| n > max) {
        return Err(BodyReadError::TooLarge(max));
    }
    let collected = Limited::new(body, max).collect().await.map_err(|e| {
        if e.downcast_ref::<LengthLimitError>().is_some() {
            BodyReadError::TooLarge(max)
        } else if let Some(timeout) = find_body_timeout(e.as_ref()) {
            BodyReadError::TimedOut(timeout)
        } else {
            BodyReadError::Unreadable
        }
    })?;
    // Vec::from(Bytes) takes the buffer over when it is the only owner: no second copy.
    Ok(Zeroizing::new(Vec::from(collected.to_bytes())))
}

/// Reads and discards a body that will not be used, up to `max` bytes, so that an answer
/// decided before the body ends the request cleanly: over h2, an answer sent while the
/// client is still sending makes hyper reset the stream, and clients such as curl then fail
/// the transfer. A declared or actual body over the cap, a read error or the body deadline
/// ends it sooner; the answer is then sent anyway.
pub async fn drain_capped(mut body: axum::body::Body, headers: &http::HeaderMap, max: usize) {
    if declared_length(headers).is_some_and(|n| n > max) {
        return;
    }
    let mut read = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            read = read.saturating_add(data.len());
            if read > max {
                return;
            }
        }
    }
}

fn declared_length(headers: &http::HeaderMap) -> Option<usize> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// An incoming body that fails with [`BodyTimeout`] once its deadline has passed.
#[derive(Debug)]
pub(crate) struct DeadlineBody {
    inner: Incoming,
    timeout: Duration,
    // Created at the request's start but only registered with the timer when polled, so a
    // service that never reads the body costs nothing.
    deadline: Pin<Box<Sleep>>,
    expired: bool,
}

impl DeadlineBody {
    pub(crate) fn new(inner: Incoming, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep_until(Instant::now() + timeout)),
            expired: false,
        }
    }
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.expired {
            return Poll::Ready(Some(Err(BodyTimeout(self.timeout).into())));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(r) => Poll::Ready(r.map(|f| f.map_err(Into::into))),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.expired = true;
                    Poll::Ready(Some(Err(BodyTimeout(self.timeout).into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_timeouts_are_found_through_wrappers() {
        let wrapped = axum::Error::new(BodyTimeout(Duration::from_millis(5)));
        let boxed: Box<dyn Error + Send + Sync> = Box::new(wrapped);
        let found = find_body_timeout(boxed.as_ref()).map(|t| t.0);
        assert_eq!(found, Some(Duration::from_millis(5)));
        let other = std::io::Error::other("x");
        assert!(find_body_timeout(&other).is_none());
    }
}
