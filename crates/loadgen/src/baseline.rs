//! A trivial HTTPS server for calibration: hyper (HTTP/1.1 and h2) over tokio-rustls with
//! the services' TLS settings, answering every POST with the same 200 JSON body and doing
//! no other work. Driving it with the same scenario and load as a proxy shows this machine's
//! ceiling for signed HTTPS requests (TLS, HTTP, the load generator's own cost), so a
//! proxy's numbers can be read against it.
//!
//! The body carries the fields every scenario's setup step reads (an XKS Encrypt response's
//! `ciphertext`, `initializationVector` and `authenticationTag`; a KMS `CiphertextBlob`),
//! so every scenario runs against it. Requests are not authenticated.
//!
//! For self-tests, a [`Stall`] makes the server pause: when request number `at_request`
//! arrives, every request being handled or arriving waits until `duration` has passed (a
//! stop-the-world pause, like a blocked event loop or a GC pause).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use service_tls::{CertificateAuthority, ServerTlsFiles, TlsError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

/// How long a client may take for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The fixed response body.
pub const BODY: &str = concat!(
    r#"{"ciphertext":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","#,
    r#""initializationVector":"AAAAAAAAAAAAAAAA","authenticationTag":"AAAAAAAAAAAAAAAAAAAAAA==","#,
    r#""plaintext":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","#,
    r#""CiphertextBlob":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","KeyId":"baseline"}"#
);

/// A stop-the-world pause injected at one request (self-tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// The request (1-based, in arrival order) that starts the pause.
    pub at_request: u64,
    /// How long the pause lasts.
    pub duration: Duration,
}

/// How to run the baseline server.
#[derive(Debug, Clone)]
pub struct BaselineOptions {
    /// Where to listen (use a loopback address; port 0 picks a free port).
    pub listen: SocketAddr,
    /// TLS configuration; `None` serves plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// An optional pause.
    pub stall: Option<Stall>,
}

/// The files written by [`write_tls_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsDir {
    /// The CA certificate clients trust (`ca.pem`).
    pub ca_pem: PathBuf,
    /// The server chain (`server.pem`).
    pub server_chain: PathBuf,
    /// The server key, mode 0600 (`server.key`).
    pub server_key: PathBuf,
}

/// Generates a private CA and a server certificate for `localhost` and `127.0.0.1` into
/// `dir` (created if needed), and returns the files.
pub fn write_tls_dir(dir: &Path) -> Result<TlsDir, TlsError> {
    std::fs::create_dir_all(dir).map_err(|error| TlsError::Write {
        path: dir.to_path_buf(),
        error,
    })?;
    let ca = CertificateAuthority::generate("xks-load baseline CA")?;
    let server = ca.issue_server(
        &["localhost"],
        &[std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
    )?;
    let files = TlsDir {
        ca_pem: dir.join("ca.pem"),
        server_chain: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    };
    service_tls::pki::write_public_pem(&files.ca_pem, ca.cert_pem())?;
    service_tls::pki::write_public_pem(&files.server_chain, &server.chain_pem(&ca))?;
    service_tls::pki::write_private_pem(&files.server_key, &server.key_pem)?;
    Ok(files)
}

/// The server TLS configuration for the files of [`write_tls_dir`].
pub fn server_config(files: &TlsDir) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    service_tls::load_server_config(&ServerTlsFiles {
        cert_chain: files.server_chain.clone(),
        private_key: files.server_key.clone(),
        client_auth: None,
    })
}

#[derive(Debug)]
struct State {
    requests: AtomicU64,
    connections: AtomicU64,
    stall: Option<Stall>,
    paused_until: Mutex<Option<Instant>>,
}

/// A running baseline server; stopped by [`shutdown`](Self::shutdown) or on drop.
#[derive(Debug)]
pub struct BaselineServer {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl BaselineServer {
    /// Binds and starts serving.
    pub async fn start(options: BaselineOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind(options.listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            stall: options.stall,
            paused_until: Mutex::new(None),
        });
        let (stop, stopped) = oneshot::channel();
        let acceptor = options.tls.map(TlsAcceptor::from);
        let task = tokio::spawn(accept_loop(listener, acceptor, Arc::clone(&state), stopped));
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Stops accepting and closes every connection.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Serves until `until` completes.
    pub async fn run_until(self, until: impl Future<Output = ()>) {
        until.await;
        self.shutdown().await;
    }
}

impl Drop for BaselineServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    state: Arc<State>,
    mut stopped: oneshot::Receiver<()>,
) {
    // Dropping the set at the end aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stopped => break,
        };
        while connections.try_join_next().is_some() {}
        let Ok((stream, _peer)) = accepted else {
            // e.g. out of file descriptors: back off briefly rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        state.connections.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = Arc::clone(&state);
        connections.spawn(async move {
            let service = service_fn(move |request| handle(request, Arc::clone(&state)));
            let builder = auto::Builder::new(TokioExecutor::new());
            match acceptor {
                Some(acceptor) => {
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                }
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            }
        });
    }
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let n = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let is_post = request.method() == Method::POST;
    let _ = request.into_body().collect().await;
    if let Some(stall) = state.stall {
        let until = {
            let mut paused = state
                .paused_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if n == stall.at_request {
                *paused = Some(Instant::now() + stall.duration);
            }
            *paused
        };
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }
    let mut response = if is_post {
        Response::new(Full::new(Bytes::from_static(BODY.as_bytes())))
    } else {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        r
    };
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
