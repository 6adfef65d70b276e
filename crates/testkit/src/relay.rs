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
