//! HTTP/2 upstreams (prior knowledge, `h2c://`): one multiplexed connection per target
//! over hyper's HTTP/2 client (the h2 crate), for gRPC model servers.

use std::sync::atomic::{AtomicBool, Ordering};
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
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    #[error("the answer is over {0} bytes")]
    TooLarge(usize),
    #[error("request: {0}")]
    Request(#[from] http::Error),
}

/// Where an HTTP/2 upstream is and how to reach it: TCP with prior knowledge for
/// `h2c://` (and `http://`), TLS with ALPN `h2` for `https://`.
struct Dialer {
    authority: Authority,
    /// For `https://`: the connector (the sidecar's roots, ALPN `h2` only) and the name
    /// the certificate must carry.
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

/// A connection's byte stream, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

impl Dialer {
    /// `tls` is the sidecar's one client configuration (`[tls]`); an `https://` URL uses
    /// a copy of it that offers only `h2` in ALPN.
    fn new(url: &Uri, tls: &Arc<rustls::ClientConfig>) -> Self {
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
        Dialer { authority, tls }
    }

    /// The upstream's URI for a client's path (HTTP/2 sends scheme and authority as
    /// pseudo-headers).
    fn uri_for(&self, path: PathAndQuery) -> Uri {
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

    /// A new connection, TLS done and `h2` agreed when it is `https://`.
    async fn dial(&self) -> Result<Box<dyn Io>, H2Error> {
        let tcp =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.authority.as_str()))
                .await
                .map_err(|_| H2Error::ConnectTimeout(CONNECT_TIMEOUT))?
                .map_err(H2Error::Connect)?;
        let _ = tcp.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let stream = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(H2Error::Tls)?;
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(H2Error::NoH2Alpn);
        }
        Ok(Box::new(stream))
    }
}

/// One multiplexed HTTP/2 connection to an upstream over hyper's client, opened on first
/// use and again after it closes: the primary's calls, whose bodies stream through.
/// Streams beyond the server's concurrency limit wait for a slot (`SendRequest::ready`).
pub struct H2Upstream {
    dialer: Dialer,
    sender: tokio::sync::Mutex<Option<SendRequest<H2Body>>>,
}

impl H2Upstream {
    pub fn new(url: &Uri, tls: &Arc<rustls::ClientConfig>) -> Self {
        H2Upstream {
            dialer: Dialer::new(url, tls),
            sender: tokio::sync::Mutex::new(None),
        }
    }

    /// The upstream's URI for a client's path.
    pub fn uri_for(&self, path: PathAndQuery) -> Uri {
        self.dialer.uri_for(path)
    }

    /// `host:port` of the upstream.
    pub fn authority(&self) -> &Authority {
        &self.dialer.authority
    }

    async fn connection(&self) -> Result<SendRequest<H2Body>, H2Error> {
        let mut slot = self.sender.lock().await;
        if let Some(s) = slot.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        let sender = handshake(self.dialer.dial().await?, &self.dialer.authority).await?;
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

/// A whole answer to a unary call.
#[derive(Debug)]
pub struct UnaryAnswer {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    /// The DATA frames' bytes (the first frame's own buffer when there is one frame).
    pub body: Bytes,
    pub trailers: Option<http::HeaderMap>,
}

/// Unary calls (the whole message out, the whole answer back) on one multiplexed
/// connection, over the h2 crate's client directly: the mirror's gRPC shadow calls.
/// hyper's client hands each request to its connection task through a channel and
/// spawns a task per request body to stream it; a shadow call holds its whole message,
/// so it opens the stream, queues the message with END_STREAM and reads the answer in
/// the calling task. Dropping the call (its timeout) resets the stream (RST_STREAM
/// CANCEL); streams beyond the server's limit wait in `ready`.
pub struct UnaryUpstream {
    dialer: Dialer,
    /// The open connection's handle, and whether its connection task has ended.
    sender: tokio::sync::Mutex<Option<(h2::client::SendRequest<Bytes>, Arc<AtomicBool>)>>,
}

impl UnaryUpstream {
    pub fn new(url: &Uri, tls: &Arc<rustls::ClientConfig>) -> Self {
        UnaryUpstream {
            dialer: Dialer::new(url, tls),
            sender: tokio::sync::Mutex::new(None),
        }
    }

    async fn connection(&self) -> Result<h2::client::SendRequest<Bytes>, H2Error> {
        let mut slot = self.sender.lock().await;
        if let Some((s, closed)) = slot.as_ref() {
            if !closed.load(Ordering::Acquire) {
                return Ok(s.clone());
            }
        }
        let (sender, conn) = h2::client::handshake(self.dialer.dial().await?).await?;
        let closed = Arc::new(AtomicBool::new(false));
        let (authority, done) = (self.dialer.authority.clone(), Arc::clone(&closed));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%authority, error = %e, "HTTP/2 upstream connection ended");
            }
            done.store(true, Ordering::Release);
        });
        *slot = Some((sender.clone(), closed));
        Ok(sender)
    }

    /// One call: `method` on `path` with `headers` (connection-specific ones left out,
    /// as HTTP/2 forbids them) and `body`; the answer's DATA at most `max` bytes.
    pub async fn call(
        &self,
        method: http::Method,
        path: PathAndQuery,
        mut headers: http::HeaderMap,
        body: Bytes,
        max: usize,
    ) -> Result<UnaryAnswer, H2Error> {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
            "host",
        ] {
            headers.remove(name);
        }
        if headers
            .get(http::header::TE)
            .is_some_and(|v| v != "trailers")
        {
            headers.remove(http::header::TE);
        }
        let mut req = Request::builder()
            .method(method)
            .uri(self.dialer.uri_for(path))
            .body(())?;
        *req.headers_mut() = headers;
        let mut sender = self.connection().await?.ready().await?;
        let (answer, mut stream) = sender.send_request(req, body.is_empty())?;
        if !body.is_empty() {
            // Queued whole: h2 sends it as the stream's and the connection's windows allow.
            stream.send_data(body, true)?;
        }
        let (head, mut recv) = answer.await?.into_parts();
        let mut first: Option<Bytes> = None;
        let mut rest = bytes::BytesMut::new();
        let mut total = 0usize;
        while let Some(chunk) = recv.data().await {
            let chunk = chunk?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            total += chunk.len();
            if total > max {
                return Err(H2Error::TooLarge(max));
            }
            match &first {
                None => first = Some(chunk),
                Some(f) => {
                    if rest.is_empty() {
                        rest.extend_from_slice(f);
                    }
                    rest.extend_from_slice(&chunk);
                }
            }
        }
        let trailers = recv.trailers().await?;
        let body = if rest.is_empty() {
            first.unwrap_or_default()
        } else {
            rest.freeze()
        };
        Ok(UnaryAnswer {
            status: head.status,
            headers: head.headers,
            body,
            trailers,
        })
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
