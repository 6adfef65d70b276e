//! Request bodies with a deadline.

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

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
