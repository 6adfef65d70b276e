//! The HTTPS listener both services run: a TCP accept loop with a connection limit, TLS
//! (rustls, with a configuration that can be swapped at run time) or explicit plain HTTP,
//! HTTP/1.1 and h2 on every connection, deadlines that slow clients cannot stretch, and a
//! graceful drain.
//!
//! Deadlines ([`ConnectionLimits`]), so that clients that send slowly (a byte a second of a
//! TLS ClientHello, of request headers or of a body) cannot hold the connection slots:
//! - **accept → first request headers** (`request_header_timeout`): one deadline covering the
//!   TLS handshake, the HTTP/1.1-or-h2 sniff and the complete headers of the first request;
//! - **later request headers on HTTP/1.1** (the same value): from the first byte of the
//!   next request on a kept-alive connection to its complete headers;
//! - **request body** (`body_timeout`, from the request's headers): the body is handed to the
//!   service with this deadline; reading past it fails with [`BodyTimeout`];
//! - **idle** (`idle_timeout`): a connection with no request in flight for this long is
//!   closed. Idleness is measured in requests, not bytes, so a trickle of bytes (or of h2
//!   PINGs and SETTINGS) does not keep a connection open;
//! - **stalled writes** (`idle_timeout` too): a client that stops reading cannot hold a
//!   connection by leaving our writes pending;
//! - **h2 streams** (`max_concurrent_streams`): how many requests one h2 connection may have
//!   open at once (advertised in SETTINGS; further streams are refused by the protocol).
//!
//! Architecture invariant: knows nothing of XKS or KMS; services plug in an axum `Router` and
//! observe connections through [`ConnectionObserver`].

mod body;
mod connection;
mod io;
mod settings;

pub use body::{BodyReadError, BodyTimeout, drain_capped, find_body_timeout, read_capped};
pub use settings::{ServerLimitSettings, ServerLimits, defaults};

use arc_swap::ArcSwap;
use axum::Router;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Told about every connection (for metrics).
pub trait ConnectionObserver: Send + Sync + 'static {
    /// A connection was accepted.
    fn connection_accepted(&self);
    /// A connection ended.
    fn connection_closed(&self);
}

/// How long draining connections may take at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Transport security of a listener.
#[derive(Clone)]
pub enum Transport {
    /// TLS; the configuration may be replaced at run time (certificate reload). New
    /// connections use the current one; open connections keep theirs.
    Tls(Arc<ArcSwap<rustls::ServerConfig>>),
    /// Plain HTTP (explicit opt-in; a warning is logged at start).
    PlainHttp,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tls(_) => f.write_str("Tls"),
            Self::PlainHttp => f.write_str("PlainHttp"),
        }
    }
}

/// Connection limits and deadlines of a listener (see the crate documentation for what
/// each deadline covers). Every duration must be non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed; a write that cannot
    /// progress for this long fails.
    pub idle_timeout: Duration,
    /// From accept to the complete headers of the first request (TLS handshake, protocol
    /// sniff and headers); on HTTP/1.1 also the deadline for each later request's headers,
    /// counted from their first byte.
    pub request_header_timeout: Duration,
    /// From a request's headers to the end of its body, for a service that reads the body.
    pub body_timeout: Duration,
    /// Most concurrent streams (requests) on one h2 connection.
    pub max_concurrent_streams: u32,
}

impl ConnectionLimits {
    /// Default [`Self::max_connections`].
    pub const DEFAULT_MAX_CONNECTIONS: usize = defaults::MAX_CONNECTIONS;
    /// Default [`Self::idle_timeout`].
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(defaults::IDLE_TIMEOUT_SECONDS);
    /// Default [`Self::request_header_timeout`] (what the TLS handshake alone had before).
    pub const DEFAULT_REQUEST_HEADER_TIMEOUT: Duration =
        Duration::from_millis(defaults::REQUEST_HEADER_TIMEOUT_MS);
    /// Default [`Self::body_timeout`].
    pub const DEFAULT_BODY_TIMEOUT: Duration =
        Duration::from_millis(defaults::REQUEST_BODY_TIMEOUT_MS);
    /// Default [`Self::max_concurrent_streams`] (hyper's own default).
    pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = defaults::MAX_CONCURRENT_STREAMS;
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            request_header_timeout: Self::DEFAULT_REQUEST_HEADER_TIMEOUT,
            body_timeout: Self::DEFAULT_BODY_TIMEOUT,
            max_concurrent_streams: Self::DEFAULT_MAX_CONCURRENT_STREAMS,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and lets
/// in-flight requests finish (up to a drain timeout).
pub async fn serve(
    listener: TcpListener,
    transport: Transport,
    app: Router,
    limits: ConnectionLimits,
    observer: Arc<dyn ConnectionObserver>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let builder = http_builder(&limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        // At the connection limit, stop accepting: new clients wait in the listen backlog.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        observer.connection_accepted();
        let conn = connection::Connection {
            peer,
            acceptor: match &transport {
                Transport::Tls(cfg) => Some(TlsAcceptor::from(cfg.load_full())),
                Transport::PlainHttp => None,
            },
            app: app.clone(),
            builder: builder.clone(),
            limits,
            watcher: graceful.watcher(),
        };
        let observer = observer.clone();
        tokio::spawn(async move {
            let _permit = permit;
            conn.run(stream).await;
            observer.connection_closed();
        });
    }
    drop(listener);
    tracing::info!("no longer accepting connections; draining");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("drain timed out; closing remaining connections"),
    }
}

/// The HTTP/1.1 + h2 connection builder with the limits' h2 stream limit.
///
/// No hyper timer is set, which leaves hyper's own HTTP/1.1 header read timeout and h2
/// keep-alive PINGs off, deliberately: hyper starts that header timeout when the connection
/// starts waiting for the next request, so it would close every HTTP/1.1 connection kept
/// alive without a request for `request_header_timeout` (10 s, not the 60 s idle timeout;
/// clients reusing connections, KMS or a load balancer, would then race the close). The
/// connection watchdog runs the header deadline from the next request's first byte instead,
/// and closes connections idle (in requests) for `idle_timeout`, which also covers h2
/// clients gone silent, without PINGs.
fn http_builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(limits.max_concurrent_streams);
    builder
}

/// Binds a listener.
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
