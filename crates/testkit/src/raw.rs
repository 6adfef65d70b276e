//! Clients that misbehave on purpose, over raw sockets, for any of our HTTPS services:
//! tricklers that send one byte at a time (of a TLS ClientHello, or of request headers,
//! possibly after a complete first request on a kept-alive connection), and raw h2
//! connections that can open streams and stall their bodies.

use hyper::body::Bytes;
use std::future::Future as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub use h2;

/// Where a raw client connects: a TLS server on localhost with a test CA.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's address.
    pub addr: SocketAddr,
    /// The name its certificate is for.
    pub server_name: String,
    /// The CA the certificate chains to.
    pub ca_pem: std::path::PathBuf,
}

impl Target {
    /// `127.0.0.1:<port>`, certificate name `localhost`.
    pub fn localhost(port: u16, ca_pem: &Path) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            server_name: "localhost".into(),
            ca_pem: ca_pem.to_owned(),
        }
    }

    /// A client TLS config trusting the target's CA and offering `alpn`.
    pub fn tls_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let pem = std::fs::read_to_string(&self.ca_pem).expect("read CA");
        let cfg = service_tls::client::client_config(
            &service_tls::client::RootCertificates::Pem(pem),
            None,
        )
        .expect("client TLS config");
        let mut cfg = (*cfg).clone();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }

    fn name(&self) -> rustls::pki_types::ServerName<'static> {
        rustls::pki_types::ServerName::try_from(self.server_name.clone()).expect("server name")
    }

    /// A complete TLS handshake offering `alpn`.
    pub async fn tls_connect(&self, alpn: &[&[u8]]) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        TlsConnector::from(self.tls_config(alpn))
            .connect(self.name(), tcp)
            .await
    }

    /// The bytes of a TLS ClientHello for this target (what a client sends first).
    pub fn client_hello(&self) -> Vec<u8> {
        let mut conn = rustls::ClientConnection::new(self.tls_config(&[b"h2"]), self.name())
            .expect("client connection");
        let mut hello = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut hello).expect("write ClientHello");
        }
        hello
    }
}

/// What a [`Trickler`] sends.
#[derive(Debug, Clone)]
pub enum TrickleKind {
    /// A TLS ClientHello, one byte at a time, over plain TCP.
    ClientHello,
    /// After a complete TLS handshake (ALPN http/1.1), an HTTP/1.1 request whose headers
    /// never end (a header value grows by one byte at a time).
    Headers,
    /// Like `Headers`, but first a complete request (`GET <path>`) and its whole response
    /// on the same connection, so the trickle is of the second request on a kept-alive
    /// connection.
    HeadersAfterRequest {
        /// Path of the first request (e.g. `/ping`).
        path: String,
    },
}

/// A connection that sends one byte per interval until the server closes it (or until
/// dropped: the task is aborted).
#[derive(Debug)]
pub struct Trickler {
    task: JoinHandle<()>,
    /// Set once the connection is established (TCP for `ClientHello`, TLS and the first
    /// request for the others).
    ready: Arc<Mutex<Option<Instant>>>,
    /// Set when the server closed the connection (read end or write error).
    closed: Arc<Mutex<Option<Instant>>>,
}

impl Trickler {
    /// Starts trickling to `target`, one byte per `interval`.
    pub fn start(target: &Target, kind: TrickleKind, interval: Duration) -> Self {
        let ready = Arc::new(Mutex::new(None));
        let closed = Arc::new(Mutex::new(None));
        let (r, c, target) = (ready.clone(), closed.clone(), target.clone());
        let task = tokio::spawn(async move {
            let result = match kind {
                TrickleKind::ClientHello => match TcpStream::connect(target.addr).await {
                    Ok(tcp) => {
                        let hello = target.client_hello();
                        set_now(&r);
                        trickle(tcp, hello.into_iter(), interval).await
                    }
                    Err(e) => Err(e),
                },
                TrickleKind::Headers => match target.tls_connect(&[b"http/1.1"]).await {
                    Ok(tls) => {
                        set_now(&r);
                        trickle(tls, endless_headers(&target), interval).await
                    }
                    Err(e) => Err(e),
                },
                TrickleKind::HeadersAfterRequest { path } => {
                    match target.tls_connect(&[b"http/1.1"]).await {
                        Ok(mut tls) => match first_exchange(&mut tls, &target, &path).await {
                            Ok(()) => {
                                set_now(&r);
                                trickle(tls, endless_headers(&target), interval).await
                            }
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    }
                }
            };
            let _ = result;
            set_now(&c);
        });
        Self {
            task,
            ready,
            closed,
        }
    }

    /// Waits (at most `limit`) until the connection is established; panics otherwise.
    pub async fn wait_ready(&self, limit: Duration) {
        let start = Instant::now();
        while self.ready.lock().expect("lock").is_none() {
            assert!(
                self.closed.lock().expect("lock").is_none(),
                "the trickler's connection failed before it was established"
            );
            assert!(
                start.elapsed() < limit,
                "the trickler did not connect within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// How long after being established the server closed the connection, if it has.
    pub fn closed_after(&self) -> Option<Duration> {
        let ready = *self.ready.lock().expect("lock");
        let closed = *self.closed.lock().expect("lock");
        closed.map(|c| ready.map_or(Duration::ZERO, |r| c.saturating_duration_since(r)))
    }
}

impl Drop for Trickler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn set_now(slot: &Mutex<Option<Instant>>) {
    *slot.lock().expect("lock") = Some(Instant::now());
}

/// An HTTP/1.1 request whose headers never end.
fn endless_headers(target: &Target) -> impl Iterator<Item = u8> + Send + 'static {
    let start = format!(
        "POST /kms/xks/v1/health HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\nx-padding: ",
        target.server_name
    )
    .into_bytes();
    start.into_iter().chain(std::iter::repeat(b'a'))
}

/// Sends `bytes` one per `interval` while watching for the server closing the connection;
/// returns when it did (or the bytes ran out).
async fn trickle<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    bytes: impl Iterator<Item = u8>,
    interval: Duration,
) -> std::io::Result<()> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let closed = async move {
        let mut buf = [0u8; 1024];
        // Anything the server sends (an alert, an error page) is read; the end or an error
        // is the close.
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let send = async move {
        for b in bytes {
            wr.write_all(&[b]).await?;
            wr.flush().await?;
            tokio::time::sleep(interval).await;
        }
        Ok::<(), std::io::Error>(())
    };
    tokio::select! {
        () = closed => Ok(()),
        r = send => r,
    }
}

/// `GET <path>` and its whole response (headers and `content-length` bytes of body).
async fn first_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    target: &Target,
    path: &str,
) -> std::io::Result<()> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: {}\r\n\r\n",
        target.server_name
    );
    stream.write_all(req.as_bytes()).await?;
    stream.flush().await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return Ok(());
            }
        }
    }
}

/// A raw h2 client connection (TLS, ALPN h2) whose connection task runs in the background.
#[derive(Debug)]
pub struct H2Connection {
    /// Opens streams.
    pub send: h2::client::SendRequest<Bytes>,
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS as last seen (`usize::MAX` until its
    /// SETTINGS arrived, as h2 assumes).
    max_streams: Arc<AtomicUsize>,
    driver: JoinHandle<()>,
}

impl H2Connection {
    /// Connects and completes the h2 handshake.
    pub async fn connect(target: &Target) -> Self {
        let tls = target
            .tls_connect(&[b"h2"])
            .await
            .expect("TLS with ALPN h2");
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "the server did not choose h2"
        );
        let (send, mut conn) = h2::client::handshake(tls).await.expect("h2 handshake");
        let max_streams = Arc::new(AtomicUsize::new(usize::MAX));
        let seen = max_streams.clone();
        let driver = tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| {
                let r = std::pin::Pin::new(&mut conn).poll(cx);
                seen.store(conn.max_concurrent_send_streams(), Ordering::Relaxed);
                r
            })
            .await;
        });
        Self {
            send,
            max_streams,
            driver,
        }
    }

    /// The server's stream limit, once its SETTINGS have arrived (waits at most `limit`).
    pub async fn server_max_concurrent_streams(&self, limit: Duration) -> usize {
        let start = Instant::now();
        loop {
            let v = self.max_streams.load(Ordering::Relaxed);
            if v != usize::MAX || start.elapsed() > limit {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Opens a stream with `head` (no end of stream: the body is for the caller to send, or
    /// not). Waits for the server's stream limit to allow it.
    pub async fn open(
        &mut self,
        head: http::Request<()>,
    ) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
        let ready = self.send.clone().ready().await.expect("h2 ready");
        self.send = ready;
        self.send.send_request(head, false).expect("send headers")
    }
}

impl Drop for H2Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Reads an h2 response body to its end (releasing flow-control capacity as it goes).
pub async fn read_h2_body(body: &mut h2::RecvStream) -> Result<Vec<u8>, h2::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
