//! Connections to upstreams. The keep-alive HTTP/1.1 pools for the primary, the baseline
//! and the canary are [`h1::client::Client`]s (crates/h1), named here as the sidecar
//! uses them; this adds the connector for hyper-util's general client, used by the
//! sidecar's own traffic that is not an upstream (the demo, the Pushgateway, tests).

use std::sync::Arc;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;

pub use h1::client::{
    Client as Upstream, Error as UpstreamError, ResponseBody as PooledBody, CONNECT_TIMEOUT,
    IDLE_TIMEOUT,
};

/// Opens connections for hyper-util's general client (the sidecar's own traffic that is
/// not an upstream: the demo, the Pushgateway, tests): TCP with TCP_NODELAY and a 5 s
/// connect timeout; for `https://`, HTTP/1.1 over TLS checked against `tls`' roots.
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
