//! HTTP/2 upstreams (prior knowledge, `h2c://`): one multiplexed connection per target
//! over hyper's HTTP/2 client (the h2 crate), for gRPC model servers.

use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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
}

/// One multiplexed HTTP/2 connection to an upstream (prior knowledge), opened on first
/// use and again after it closes. Streams beyond the server's concurrency limit wait for
/// a slot (`SendRequest::ready`).
pub struct H2Upstream {
    pub authority: Authority,
    sender: tokio::sync::Mutex<Option<SendRequest<H2Body>>>,
}

impl H2Upstream {
    pub fn new(url: &Uri) -> Self {
        H2Upstream {
            authority: url
                .authority()
                .cloned()
                .unwrap_or_else(|| Authority::from_static("localhost")),
            sender: tokio::sync::Mutex::new(None),
        }
    }

    /// The upstream's URI for a client's path (HTTP/2 sends scheme and authority as
    /// pseudo-headers).
    pub fn uri_for(&self, path: PathAndQuery) -> Uri {
        Uri::builder()
            .scheme(Scheme::HTTP)
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
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(tcp))
            .await?;
        let authority = self.authority.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%authority, error = %e, "HTTP/2 upstream connection ended");
            }
        });
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

/// Ask `url` for `/` over HTTP/2 with prior knowledge, within `within`.
pub async fn probe(url: &Uri, within: Duration) -> Probe {
    let upstream = H2Upstream::new(url);
    let tcp =
        match tokio::time::timeout(within, TcpStream::connect(upstream.authority.as_str())).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Probe::Unreachable(e.to_string()),
            Err(_) => return Probe::Unreachable(format!("no connection within {within:?}")),
        };
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake::<_, H2Body>(TokioIo::new(tcp))
            .await?;
        let conn = tokio::spawn(conn);
        let mut req = Request::new(Either::Right(Full::new(Bytes::new())));
        *req.uri_mut() = upstream.uri_for(PathAndQuery::from_static("/"));
        let resp = sender.send_request(req).await;
        conn.abort();
        resp.map(drop)
    };
    match tokio::time::timeout(within, exchange).await {
        Ok(Ok(())) => Probe::Http2,
        Ok(Err(e)) => Probe::NotHttp2(e.to_string()),
        Err(_) => Probe::NotHttp2(format!("no HTTP/2 answer within {within:?}")),
    }
}
