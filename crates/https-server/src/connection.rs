//! One accepted connection: TLS, HTTP, and the watchdog that enforces the connection-level
//! deadlines (accept → first request headers, idle between requests).

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::ConnectionLimits;
use crate::body::DeadlineBody;
use crate::io::ConnIo;

/// What the watchdog sees of a connection's requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Activity {
    /// Requests whose headers have arrived, ever.
    started: u64,
    /// Requests being handled now.
    in_flight: u32,
    /// When bytes first arrived after the last request started while none was in flight:
    /// the start of the next request's headers.
    next_request_since: Option<Instant>,
    /// Whether the connection speaks h2 (known from its first request).
    h2: bool,
}

impl Activity {
    /// Records bytes read from the client; returns whether that changed anything.
    pub(crate) fn bytes_arrived(&mut self) -> bool {
        // Before the first request the accept-to-headers deadline runs; during a request,
        // bytes are its body or pipelined requests.
        if self.started == 0 || self.in_flight > 0 || self.next_request_since.is_some() {
            return false;
        }
        self.next_request_since = Some(Instant::now());
        true
    }
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    /// No complete request headers within the header deadline of accept.
    FirstRequest,
    /// On HTTP/1.1, a later request's headers began but did not complete in time.
    NextRequest,
    /// No request in flight for the idle timeout.
    Idle,
}

/// An accepted connection, before its TLS handshake.
pub(crate) struct Connection {
    pub(crate) peer: SocketAddr,
    pub(crate) acceptor: Option<TlsAcceptor>,
    pub(crate) app: Router,
    pub(crate) builder: auto::Builder<TokioExecutor>,
    pub(crate) limits: ConnectionLimits,
    pub(crate) watcher: Watcher,
}

impl Connection {
    /// Serves the connection until it ends, a deadline passes, or a drain completes.
    pub(crate) async fn run(self, stream: TcpStream) {
        let accepted = Instant::now();
        let Self {
            peer,
            acceptor,
            app,
            builder,
            limits,
            watcher,
        } = self;
        let (activity, seen) = watch::channel(Activity::default());
        let activity = Arc::new(activity);
        let stream = ConnIo::new(stream, limits.idle_timeout, activity.clone());
        let service = Tracked {
            app,
            activity,
            limits,
            peer,
        };
        let work = async move {
            match acceptor {
                Some(acceptor) => match acceptor.accept(stream).into_fallible().await {
                    Ok(tls) => serve_http(&builder, watcher, tls, service, peer).await,
                    Err((e, stream)) => {
                        tracing::info!(%peer, error = %e, "TLS handshake failed");
                        linger_after_failed_handshake(stream).await;
                    }
                },
                None => serve_http(&builder, watcher, stream, service, peer).await,
            }
        };
        // Dropping the work future closes the socket; nothing is in flight when a watchdog
        // deadline passes, so no answer is lost.
        tokio::select! {
            () = work => {}
            expired = watchdog(seen, accepted, limits) => match expired {
                Expired::FirstRequest => tracing::info!(
                    %peer,
                    timeout_ms = limits.request_header_timeout.as_millis() as u64,
                    "closing a connection without complete request headers in time (TLS handshake, protocol preface and headers)"
                ),
                Expired::NextRequest => tracing::info!(
                    %peer,
                    timeout_ms = limits.request_header_timeout.as_millis() as u64,
                    "closing a connection whose next request headers did not complete in time"
                ),
                Expired::Idle => tracing::debug!(%peer, "closing an idle connection"),
            },
        }
    }
}

async fn serve_http<I>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    io: I,
    service: Tracked,
    peer: SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// How long a connection whose TLS handshake failed stays half-open (see
/// [`linger_after_failed_handshake`]).
const FAILED_HANDSHAKE_LINGER: Duration = Duration::from_secs(1);
/// At most this much is read, and discarded, from a client whose handshake failed.
const FAILED_HANDSHAKE_DRAIN_BYTES: usize = 64 * 1024;

/// Keeps a connection whose TLS handshake failed half-open for a moment, so the client reads
/// the alert rustls sent (e.g. `handshake_failure` for a refused client certificate).
///
/// With TLS 1.3 the client certificate is checked after the client has finished its side of
/// the handshake, and the client is already sending its request. Closing at once makes the
/// kernel answer that request with a reset, and the client reports a broken pipe instead of
/// the alert. So: FIN after the alert, then read and discard what the client still sends
/// until it closes, for at most [`FAILED_HANDSHAKE_LINGER`] and
/// [`FAILED_HANDSHAKE_DRAIN_BYTES`] (the connection's permit is held meanwhile).
async fn linger_after_failed_handshake<S>(mut stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let drain = async {
        if stream.shutdown().await.is_err() {
            return;
        }
        let mut buf = [0u8; 4096];
        let mut drained = 0;
        while drained < FAILED_HANDSHAKE_DRAIN_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    // Whichever ends first; the socket closes when `stream` is dropped.
    let _ = tokio::time::timeout(FAILED_HANDSHAKE_LINGER, drain).await;
}

/// Enforces the deadlines that bytes must not be able to extend: the first request's
/// headers within `min(request_header_timeout, idle_timeout)` of accept; on HTTP/1.1, a
/// later request's headers within `request_header_timeout` of its first byte; and no more
/// than `idle_timeout` without a request in flight. Returns when one passes; never returns
/// once the connection has ended (its sender is gone).
async fn watchdog(
    mut seen: watch::Receiver<Activity>,
    accepted: Instant,
    limits: ConnectionLimits,
) -> Expired {
    let first = accepted + limits.request_header_timeout.min(limits.idle_timeout);
    let mut idle_since = accepted;
    let mut last = Activity::default();
    loop {
        let current = *seen.borrow_and_update();
        // Idle time counts from the last request's start or end, never from bytes.
        if current.started != last.started || (last.in_flight > 0 && current.in_flight == 0) {
            idle_since = Instant::now();
        }
        last = current;
        let deadline = if current.in_flight > 0 {
            None
        } else if current.started == 0 {
            Some((first, Expired::FirstRequest))
        } else {
            let idle = (idle_since + limits.idle_timeout, Expired::Idle);
            // h2 clients send frames between requests (PING, SETTINGS, WINDOW_UPDATE), so
            // bytes there do not mean a request began; its streams have the idle deadline.
            Some(match current.next_request_since {
                Some(t) if !current.h2 && t + limits.request_header_timeout < idle.0 => {
                    (t + limits.request_header_timeout, Expired::NextRequest)
                }
                _ => idle,
            })
        };
        let changed = match deadline {
            None => seen.changed().await,
            Some((at, why)) => match tokio::time::timeout_at(at, seen.changed()).await {
                Err(_) => return why,
                Ok(changed) => changed,
            },
        };
        if changed.is_err() {
            return std::future::pending().await;
        }
    }
}

/// The service hyper calls: counts requests for the watchdog and gives each request body
/// its deadline.
#[derive(Clone)]
struct Tracked {
    app: Router,
    activity: Arc<watch::Sender<Activity>>,
    limits: ConnectionLimits,
    /// The client's address, given to the application as axum's `ConnectInfo` (policies
    /// condition on it: `aws:SourceIp`).
    peer: SocketAddr,
}

/// Counts one request in flight until dropped (also when hyper drops the request's future
/// because the client reset the stream).
struct InFlight(Arc<watch::Sender<Activity>>);

impl InFlight {
    fn start(activity: &Arc<watch::Sender<Activity>>, h2: bool) -> Self {
        activity.send_modify(|a| {
            a.started += 1;
            a.in_flight += 1;
            a.next_request_since = None;
            a.h2 = h2;
        });
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .send_modify(|a| a.in_flight = a.in_flight.saturating_sub(1));
    }
}

impl hyper::service::Service<http::Request<Incoming>> for Tracked {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let guard = InFlight::start(&self.activity, req.version() == http::Version::HTTP_2);
        let timeout = self.limits.body_timeout;
        let mut req = req.map(|b| Body::new(DeadlineBody::new(b, timeout)));
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        let app = self.app.clone();
        Box::pin(async move {
            let response = app.oneshot(req).await;
            drop(guard);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            idle_timeout: Duration::from_secs(3),
            request_header_timeout: Duration::from_secs(1),
            ..ConnectionLimits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_first_request_within_the_header_deadline() {
        let (_tx, rx) = watch::channel(Activity::default());
        let accepted = Instant::now();
        let why = watchdog(rx, accepted, limits()).await;
        assert_eq!(why, Expired::FirstRequest);
        assert_eq!(accepted.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_is_counted_from_the_last_request_and_not_during_one() {
        let (tx, rx) = watch::channel(Activity::default());
        let tx = Arc::new(tx);
        let accepted = Instant::now();
        let dog = tokio::spawn(watchdog(rx, accepted, limits()));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let guard = InFlight::start(&tx, false);
        // A request in flight for longer than the idle timeout keeps the connection.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!dog.is_finished());
        drop(guard);
        let ended = Instant::now();
        let why = dog.await.expect("watchdog");
        assert_eq!(why, Expired::Idle);
        assert_eq!(ended.elapsed(), Duration::from_secs(3));
    }

    /// After a request on HTTP/1.1, the next request's headers have the header deadline
    /// from their first byte; on h2, bytes between requests are frames, not a request.
    #[tokio::test(start_paused = true)]
    async fn a_later_request_has_the_header_deadline_from_its_first_byte_on_http1() {
        for (h2, expected, after) in [
            (false, Expired::NextRequest, Duration::from_millis(1500)),
            (true, Expired::Idle, Duration::from_secs(3)),
        ] {
            let (tx, rx) = watch::channel(Activity::default());
            let tx = Arc::new(tx);
            let dog = tokio::spawn(watchdog(rx, Instant::now(), limits()));
            drop(InFlight::start(&tx, h2));
            let idle = Instant::now();
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(tx.send_if_modified(Activity::bytes_arrived));
            // More bytes (a trickle) move nothing.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!tx.send_if_modified(Activity::bytes_arrived));
            let why = dog.await.expect("watchdog");
            assert_eq!((why, idle.elapsed()), (expected, after), "h2: {h2}");
        }
    }
}
