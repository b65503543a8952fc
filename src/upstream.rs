//! Keep-alive HTTP/1.1 connections to one upstream (the primary, the baseline or the
//! canary), on hyper's connection API.
//!
//! The sidecar talks to exactly three fixed origins, so the pool is a stack of idle
//! connections per origin, nothing more: no per-request pool key or hashing, no boxed
//! future, and a connection goes back on the stack when its response body has been read
//! to the end ([`PooledBody`]) instead of through a task spawned per request to watch for
//! it. That is what hyper-util's general-purpose pooled client does per request, and it
//! was ~2 µs of the ~10 µs of user time the sidecar spent per proxied request
//! (BENCHMARKS.md, "Where the time goes").
//!
//! Behaviour kept from that client: TCP_NODELAY, a 5 s connect timeout, TLS through
//! hyper-rustls for `https://` origins, the `Host` header set from the origin, idle
//! connections dropped after [`IDLE_TIMEOUT`], and a request that a reused connection
//! could not even start (the server closed it while it sat idle) retried on another
//! connection: hyper hands such a request back unsent.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::header::{HeaderValue, HOST};
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;

type BoxError = Box<dyn StdError + Send + Sync>;

/// How long an idle connection is kept: shorter than common server keep-alive timeouts
/// (uvicorn's 5 s is the outlier; most are ≥ 60 s), so the pool rarely hands out a
/// connection the server is closing; when it does, the request is retried.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connect timeout for new upstream connections.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an upstream request failed. The causes are kept, so `error_chain` prints e.g.
/// "connect to https://...: invalid peer certificate: UnknownIssuer".
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {0}")]
    Connect(Uri, #[source] BoxError),
    #[error("HTTP/1 handshake with {0}")]
    Handshake(Uri, #[source] hyper::Error),
    #[error("request to {0}")]
    Request(Uri, #[source] hyper::Error),
}

/// Opens upstream connections: TCP with TCP_NODELAY and a 5 s connect timeout; for
/// `https://`, HTTP/1.1 over TLS with certificates checked against `tls`' roots.
pub fn connector(tls: Arc<rustls::ClientConfig>) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    // The TLS layer, not the TCP connector, decides which schemes are allowed.
    http.enforce_http(false);
    HttpsConnectorBuilder::new()
        .with_tls_config(Arc::unwrap_or_clone(tls))
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// Keep-alive connections to one origin (`scheme://authority`), shared by all requests.
pub struct Upstream<B> {
    origin: Uri,
    host: HeaderValue,
    connector: HttpsConnector<HttpConnector>,
    pool: Arc<Pool<B>>,
}

struct Pool<B> {
    idle: Mutex<VecDeque<Idle<B>>>,
    max_idle: usize,
}

struct Idle<B> {
    conn: SendRequest<B>,
    since: Instant,
}

impl<B> Upstream<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A pool for `origin` (only its scheme and authority are used) keeping at most
    /// `max_idle` idle connections; `https://` origins are verified against `tls`.
    pub fn new(origin: &Uri, max_idle: usize, tls: Arc<rustls::ClientConfig>) -> Self {
        let connector = connector(tls);
        let mut parts = http::uri::Parts::default();
        parts.scheme = origin.scheme().cloned();
        parts.authority = origin.authority().cloned();
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        let origin = Uri::from_parts(parts).unwrap_or_else(|_| origin.clone());
        let host = origin
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .unwrap_or_else(|| HeaderValue::from_static("localhost"));
        Upstream {
            origin,
            host,
            connector,
            pool: Arc::new(Pool {
                idle: Mutex::new(VecDeque::new()),
                max_idle,
            }),
        }
    }

    /// The origin requests go to, `scheme://authority/`.
    pub fn origin(&self) -> &Uri {
        &self.origin
    }

    /// Send `req` (its URI in origin form: path and query) and return the response head;
    /// the connection goes back to the pool once the body has been read to the end.
    /// The `Host` header is set to the origin's unless the request has one.
    pub async fn send(
        &self,
        mut req: Request<B>,
    ) -> Result<Response<PooledBody<B>>, UpstreamError> {
        req.headers_mut()
            .entry(HOST)
            .or_insert_with(|| self.host.clone());
        loop {
            let (mut conn, reused) = match self.pool.checkout() {
                Some(conn) => (conn, true),
                // Boxed: the connect and TLS handshake state is large and rarely needed;
                // inline it would be part of every request's future and copied with it.
                None => (Box::pin(self.connect()).await?, false),
            };
            match conn.try_send_request(req).await {
                Ok(resp) => {
                    let pool = self.pool.clone();
                    return Ok(resp.map(|body| PooledBody {
                        inner: body,
                        conn: Some((conn, pool)),
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // Not sent at all: the connection closed while idle. Another one.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(UpstreamError::Request(self.origin.clone(), e.into_error())),
                },
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<B>, UpstreamError> {
        let io = self
            .connector
            .clone()
            .call(self.origin.clone())
            .await
            .map_err(|e| UpstreamError::Connect(self.origin.clone(), e))?;
        let (conn, driver) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| UpstreamError::Handshake(self.origin.clone(), e))?;
        tokio::spawn(async move {
            if let Err(e) = driver.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(conn)
    }
}

impl<B> Pool<B> {
    /// The most recently used live connection that can take a request now, if any
    /// (warm in every cache). Never waits.
    fn checkout(&self) -> Option<SendRequest<B>> {
        let mut idle = self.idle.lock().ok()?;
        let mut busy = Vec::new();
        let found = loop {
            let Some(Idle { conn, since }) = idle.pop_back() else {
                break None;
            };
            if conn.is_closed() || since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            if conn.is_ready() {
                break Some(conn);
            }
            // Its response has been read but the connection is still busy, e.g. still
            // sending a request body the server answered before reading. Waiting for
            // it could take as long as that upload: leave it for later and look on.
            busy.push(Idle { conn, since });
        };
        // Back where they were, the most recent on top.
        for i in busy.into_iter().rev() {
            idle.push_back(i);
        }
        found
    }

    fn put(&self, conn: SendRequest<B>) {
        if conn.is_closed() {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let now = Instant::now();
        // The oldest are at the front: drop those idle too long, so a pool that saw a
        // burst does not keep its connections open for ever.
        while idle
            .front()
            .is_some_and(|i| now.duration_since(i.since) > IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        if idle.len() < self.max_idle {
            idle.push_back(Idle { conn, since: now });
        }
    }
}

/// A response body from an [`Upstream`]. When it has been read to the end, its
/// connection goes back to the pool; dropped earlier, the connection is closed.
pub struct PooledBody<B> {
    inner: Incoming,
    conn: Option<(SendRequest<B>, Arc<Pool<B>>)>,
}

impl<B> std::fmt::Debug for PooledBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("pooled", &self.conn.is_some())
            .finish()
    }
}

impl<B> PooledBody<B> {
    fn release(&mut self) {
        if let Some((conn, pool)) = self.conn.take() {
            pool.put(conn);
        }
    }
}

impl<B> Body for PooledBody<B> {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
