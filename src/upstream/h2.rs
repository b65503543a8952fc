//! HTTP/2 upstreams (prior knowledge, `h2c://`): one multiplexed connection per target
//! over hyper's HTTP/2 client (the h2 crate), for gRPC model servers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::CONNECT_TIMEOUT;

/// Body of a request to an HTTP/2 upstream: a client's stream passed through, or bytes
/// the sidecar holds (a mirrored call's message).
pub type H2Body = Either<Incoming, Full<Bytes>>;

/// Why an HTTP/2 upstream call failed.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("HTTP/2: {0}")]
    Http(#[from] hyper::Error),
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    #[error("the server did not agree to HTTP/2 in the TLS handshake (ALPN h2); it offers only HTTP/1.1 there")]
    NoH2Alpn,
}

/// One multiplexed HTTP/2 connection to an upstream, opened on first use and again
/// after it closes: with prior knowledge for `h2c://` (and `http://`), over TLS with ALPN
/// `h2` for `https://`. Streams beyond the server's concurrency limit wait for a slot
/// (`SendRequest::ready`).
pub struct H2Upstream {
    pub authority: Authority,
    /// For `https://`: the connector (the sidecar's roots, ALPN `h2` only) and the name
    /// the certificate must carry.
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    sender: tokio::sync::Mutex<Option<SendRequest<H2Body>>>,
}

impl H2Upstream {
    /// `tls` is the sidecar's one client configuration (`[tls]`); an `https://` URL uses
    /// a copy of it that offers only `h2` in ALPN.
    pub fn new(url: &Uri, tls: &Arc<rustls::ClientConfig>) -> Self {
        let authority = url
            .authority()
            .cloned()
            .unwrap_or_else(|| Authority::from_static("localhost"));
        let tls = (url.scheme() == Some(&Scheme::HTTPS)).then(|| {
            let mut config = rustls::ClientConfig::clone(tls);
            config.alpn_protocols = vec![b"h2".to_vec()];
            let name = ServerName::try_from(authority.host().to_string())
                .unwrap_or_else(|_| ServerName::try_from("invalid").expect("a valid DNS name"));
            (tokio_rustls::TlsConnector::from(Arc::new(config)), name)
        });
        H2Upstream {
            authority,
            tls,
            sender: tokio::sync::Mutex::new(None),
        }
    }

    /// The upstream's URI for a client's path (HTTP/2 sends scheme and authority as
    /// pseudo-headers).
    pub fn uri_for(&self, path: PathAndQuery) -> Uri {
        let scheme = if self.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        Uri::builder()
            .scheme(scheme)
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .unwrap_or_default()
    }

    async fn connection(&self) -> Result<SendRequest<H2Body>, H2Error> {
        let mut slot = self.sender.lock().await;
        if let Some(s) = slot.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        let tcp =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.authority.as_str()))
                .await
                .map_err(|_| H2Error::ConnectTimeout(CONNECT_TIMEOUT))?
                .map_err(H2Error::Connect)?;
        let _ = tcp.set_nodelay(true);
        let sender = match &self.tls {
            None => handshake(tcp, &self.authority).await?,
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(H2Error::Tls)?;
                if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(H2Error::NoH2Alpn);
                }
                handshake(stream, &self.authority).await?
            }
        };
        *slot = Some(sender.clone());
        Ok(sender)
    }

    /// Send one request on the shared connection.
    pub async fn send(&self, req: Request<H2Body>) -> Result<Response<Incoming>, H2Error> {
        let mut sender = self.connection().await?;
        sender.ready().await?;
        Ok(sender.send_request(req).await?)
    }
}

/// The HTTP/2 handshake over `io`; the connection is driven by a task of its own.
async fn handshake<I>(io: I, authority: &Authority) -> Result<SendRequest<H2Body>, H2Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await?;
    let authority = authority.clone();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%authority, error = %e, "HTTP/2 upstream connection ended");
        }
    });
    Ok(sender)
}

/// What a probe of an HTTP/2 endpoint found.
#[derive(Debug)]
pub enum Probe {
    /// It answered a request over HTTP/2 with prior knowledge (any status).
    Http2,
    /// Nothing listens there now (it may start later than the sidecar).
    Unreachable(String),
    /// Something listens but does not speak HTTP/2 with prior knowledge (an HTTP/1.1-only
    /// server answers the HTTP/2 preface with an HTTP/1.1 error, which is no frame).
    NotHttp2(String),
}

/// Ask `url` for `/` over HTTP/2 (prior knowledge, or TLS with ALPN `h2`), within
/// `within`.
pub async fn probe(url: &Uri, tls: &Arc<rustls::ClientConfig>, within: Duration) -> Probe {
    let upstream = H2Upstream::new(url, tls);
    let mut req = Request::new(Either::Right(Full::new(Bytes::new())));
    *req.uri_mut() = upstream.uri_for(PathAndQuery::from_static("/"));
    match tokio::time::timeout(within, upstream.send(req)).await {
        Ok(Ok(_)) => Probe::Http2,
        Ok(Err(e @ (H2Error::Connect(_) | H2Error::ConnectTimeout(_)))) => {
            Probe::Unreachable(e.to_string())
        }
        Ok(Err(e)) => Probe::NotHttp2(crate::upstream::error_chain(&e)),
        Err(_) => Probe::NotHttp2(format!("no HTTP/2 answer within {within:?}")),
    }
}
