//! A test-only intercepting relay in front of an XKS proxy: it terminates TLS for the
//! proxy's host name (with a certificate from a CA the test chooses), records every request
//! body, and forwards to the real proxy, or misbehaves on demand (delays, malformed answers,
//! altered responses). It is the fault injector the end-to-end suites put between the front
//! end and the proxy; success paths go straight to the real proxy.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the relay answers.
#[derive(Debug, Clone)]
pub enum RelayMode {
    /// Forward to the proxy and return its answer.
    Forward,
    /// Forward, but wait this long before answering.
    Delay(Duration),
    /// Answer with this status and body without asking the proxy.
    Respond(u16, String),
    /// Forward, then replace the JSON member `field` of a 200 answer with `value`.
    AlterField(String, serde_json::Value),
}

/// One request the relay saw.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The request path.
    pub path: String,
    /// The request body.
    pub body: Vec<u8>,
}

/// A running relay (stops when dropped).
#[derive(Debug)]
pub struct XksRelay {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Every request seen.
    pub recorded: Arc<Mutex<Vec<Recorded>>>,
    /// The current mode.
    pub mode: Arc<Mutex<RelayMode>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for XksRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl XksRelay {
    /// Starts a relay presenting a certificate for `host` issued by `ca`, forwarding to
    /// `https://<host>:<upstream_port>` (trusting `upstream_ca_pem`) with `Host: <host>`.
    pub async fn start(
        host: &str,
        ca: &service_tls::pki::CertificateAuthority,
        upstream_port: u16,
        upstream_ca_pem: &Path,
    ) -> Self {
        let leaf = ca.issue_server(&[host], &[]).expect("relay certificate");
        let dir = tempfile::tempdir().expect("tempdir");
        let (chain, key) = crate::pki::write_leaf(dir.path(), "relay", &leaf, ca);
        let tls = service_tls::server::load_server_config(&service_tls::server::ServerTlsFiles {
            cert_chain: chain,
            private_key: key,
            client_auth: None,
        })
        .expect("relay TLS");
        let mut tls = (*tls).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let upstream = reqwest::Client::builder()
            .tls_backend_preconfigured({
                let pem = std::fs::read_to_string(upstream_ca_pem).expect("CA");
                let mut c = (*service_tls::client::client_config(
                    &service_tls::client::RootCertificates::Pem(pem),
                    None,
                )
                .expect("client TLS"))
                .clone();
                c.alpn_protocols = vec![b"http/1.1".to_vec()];
                c
            })
            .http1_only()
            .resolve(
                host,
                std::net::SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            )
            .build()
            .expect("upstream client");
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let mode = Arc::new(Mutex::new(RelayMode::Forward));
        let (rec, md, host_owned) = (recorded.clone(), mode.clone(), host.to_owned());
        let task = tokio::spawn(async move {
            let _keep = dir;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, upstream, rec, md, host) = (
                    acceptor.clone(),
                    upstream.clone(),
                    rec.clone(),
                    md.clone(),
                    host_owned.clone(),
                );
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (upstream, rec, md, host) =
                            (upstream.clone(), rec.clone(), md.clone(), host.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                relay(req, &upstream, &rec, &md, &host, upstream_port).await,
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            port,
            recorded,
            mode,
            task,
        }
    }

    /// Sets how the relay answers from now on.
    pub fn set_mode(&self, mode: RelayMode) {
        *self.mode.lock().expect("mode") = mode;
    }

    /// Bodies of the requests seen so far.
    pub fn bodies(&self) -> Vec<Recorded> {
        self.recorded.lock().expect("recorded").clone()
    }
}

async fn relay(
    req: Request<Incoming>,
    upstream: &reqwest::Client,
    rec: &Mutex<Vec<Recorded>>,
    md: &Mutex<RelayMode>,
    host: &str,
    upstream_port: u16,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    rec.lock().expect("recorded").push(Recorded {
        path: path.clone(),
        body: body.to_vec(),
    });
    let mode = md.lock().expect("mode").clone();
    if let RelayMode::Respond(status, text) = &mode {
        return answer(*status, text.clone().into_bytes());
    }
    let mut r = upstream.post(format!("https://{host}:{upstream_port}{path}"));
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            r = r.header(k, v);
        }
    }
    // The proxy verifies the signature over `host` as the front end sent it.
    r = r.header("host", host);
    let (status, bytes) = match r.body(body).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (
                status,
                resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
            )
        }
        Err(e) => (502, format!("relay: {e}").into_bytes()),
    };
    match mode {
        RelayMode::Delay(d) => {
            tokio::time::sleep(d).await;
            answer(status, bytes)
        }
        RelayMode::AlterField(field, value) if status == 200 => {
            let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            v[field.as_str()] = value;
            answer(200, v.to_string().into_bytes())
        }
        _ => answer(status, bytes),
    }
}

fn answer(status: u16, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// What a [`TcpRelay`] does with its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpRelayMode {
    /// Forward bytes both ways.
    Forward,
    /// The server is gone: open connections are reset, new ones closed at once.
    Cut,
    /// The server hangs: connections stay open (new ones are accepted), nothing is
    /// forwarded until the mode changes.
    Stall,
}

/// A plain TCP relay on 127.0.0.1 in front of a server (a database), which a test cuts or
/// stalls to play a server that stopped or hangs, without touching the real one. Runs on
/// its own threads, so it works with any test runtime; stops when dropped.
#[derive(Debug)]
pub struct TcpRelay {
    /// The port it listens on.
    pub port: u16,
    shared: Arc<TcpRelayShared>,
}

#[derive(Debug)]
struct TcpRelayShared {
    mode: Mutex<TcpRelayMode>,
    changed: std::sync::Condvar,
    /// Both ends of every open connection, so a cut can reset them.
    open: Mutex<Vec<(std::net::TcpStream, std::net::TcpStream)>>,
    stopped: std::sync::atomic::AtomicBool,
}

impl TcpRelayShared {
    fn mode(&self) -> TcpRelayMode {
        *self
            .mode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits while stalled; whether bytes may be forwarded (false: cut or stopped).
    fn may_forward(&self) -> bool {
        let mut mode = self
            .mode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
                return false;
            }
            match *mode {
                TcpRelayMode::Forward => return true,
                TcpRelayMode::Cut => return false,
                TcpRelayMode::Stall => {
                    mode = self
                        .changed
                        .wait_timeout(mode, Duration::from_millis(100))
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
            }
        }
    }

    fn reset_all(&self) {
        let open = std::mem::take(
            &mut *self
                .open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for (a, b) in open {
            let _ = a.shutdown(std::net::Shutdown::Both);
            let _ = b.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl TcpRelay {
    /// Starts a relay forwarding to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("relay address").port();
        let shared = Arc::new(TcpRelayShared {
            mode: Mutex::new(TcpRelayMode::Forward),
            changed: std::sync::Condvar::new(),
            open: Mutex::new(Vec::new()),
            stopped: std::sync::atomic::AtomicBool::new(false),
        });
        let upstream = upstream.to_owned();
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stopped.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if s.mode() == TcpRelayMode::Cut {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
                    client.try_clone(),
                    server.try_clone(),
                    client.try_clone(),
                    server.try_clone(),
                ) else {
                    continue;
                };
                s.open
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((c3, s3));
                let (a, b) = (s.clone(), s.clone());
                std::thread::spawn(move || pump(client, server, &a));
                std::thread::spawn(move || pump(s2, c2, &b));
            }
        });
        Self { port, shared }
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Changes the mode. [`TcpRelayMode::Cut`] resets every open connection, and so does
    /// leaving [`TcpRelayMode::Stall`] (a hung server that comes back is a restarted one:
    /// nothing held during the stall reaches it late).
    pub fn set_mode(&self, mode: TcpRelayMode) {
        let previous = self.shared.mode();
        if previous == TcpRelayMode::Stall && mode != TcpRelayMode::Stall {
            // Reset while still stalled, so no held bytes are forwarded first.
            self.shared.reset_all();
        }
        *self
            .shared
            .mode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = mode;
        if mode == TcpRelayMode::Cut {
            self.shared.reset_all();
        }
        self.shared.changed.notify_all();
    }
}

/// Copies `from` → `to` while the relay allows it; closes both ends when done.
fn pump(mut from: std::net::TcpStream, mut to: std::net::TcpStream, shared: &TcpRelayShared) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !shared.may_forward() || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.shared
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared.changed.notify_all();
        self.shared.reset_all();
        // Wakes the accept loop so it sees `stopped`.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}
