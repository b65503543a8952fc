//! Connections to upstreams. The keep-alive HTTP/1.1 pools for the primary, the baseline
//! and the canary are [`h1::client::Client`]s (crates/h1), named here as the sidecar
//! uses them. hyper-util's general client ([`HttpClient`]) serves the sidecar's own
//! traffic that is not an upstream: the demo's clients, the Pushgateway, tests.

use std::sync::Arc;

use http_body::Body;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub mod gather;
pub mod h2;

pub use h1::client::{
    Client as Upstream, Error as UpstreamError, ResponseBody as PooledBody, CONNECT_TIMEOUT,
    IDLE_TIMEOUT,
};

/// hyper-util's general pooled HTTP/1 client, for the sidecar's own outgoing traffic
/// that is not an upstream (the demo's clients, the Pushgateway, tests). Upstreams use
/// [`Upstream`].
pub type HttpClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// Build a keep-alive client for plain-HTTP use (tests, the demo's traffic): it trusts no
/// root, so an `https://` URL fails certificate verification. [`tls_client`] takes the
/// roots.
pub fn http_client<B>(max_idle_per_host: usize) -> HttpClient<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    tls_client(max_idle_per_host, crate::tls::no_roots_config())
}

/// Build a keep-alive client for one kind of body that speaks `http://` as is and
/// `https://` with `tls`, connecting like the upstream pools do ([`connector`]).
pub fn tls_client<B>(max_idle_per_host: usize, tls: Arc<rustls::ClientConfig>) -> HttpClient<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector(tls))
}

/// Opens connections for [`HttpClient`]: TCP with TCP_NODELAY and a 5 s connect timeout;
/// for `https://`, HTTP/1.1 over TLS checked against `tls`' roots.
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

/// The error and its causes on one line, for logs.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
