//! The proxy port's HTTP/1.1 server: connections are read and written by crates/h1
//! (strict framing, head and body timeouts, the connection cap), and every request is
//! handed to [`Proxy::handle`].

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;

use super::Proxy;
use crate::config::LimitsConfig;

/// When the server stopped and what it left.
#[derive(Debug, Clone, Copy)]
pub struct Stopped {
    /// Connections still open when the grace period ended.
    pub connections_cut: usize,
    /// The end of the grace period (`limits.shutdown_grace` after `stop`), for the work
    /// that drains after the connections.
    pub deadline: Instant,
}

/// Serve HTTP/1.1 on `listener` until `stop` resolves, then let open connections finish
/// for `limits.shutdown_grace`. Connections that open with the HTTP/2 preface go to `h2`
/// when given ([`super::h2`]), under the same connection cap and shutdown.
pub async fn serve(
    proxy: Arc<Proxy>,
    h2: Option<h1::server::H2Handler>,
    listener: TcpListener,
    limits: &LimitsConfig,
    stop: impl Future<Output = ()>,
) -> Stopped {
    let handler = move |req| {
        let proxy = proxy.clone();
        async move {
            match proxy.handle(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            }
        }
    };
    let server = h1::server::Server::new(
        h1::server::Config {
            header_read_timeout: limits.header_read_timeout,
            body_read_timeout: limits.body_read_timeout,
            max_connections: limits.max_connections,
            refusal_text,
        },
        handler,
    );
    let server = match h2 {
        Some(h2) => server.with_h2(h2),
        None => server,
    };
    server.accept(&listener, stop).await;
    drop(listener);
    let deadline = Instant::now() + limits.shutdown_grace;
    tracing::info!("shutting down: finishing client requests");
    let connections_cut = server.drain(deadline.into()).await;
    Stopped {
        connections_cut,
        deadline,
    }
}

/// The text of the answers the proxy port gives by itself (refused heads, `408` for a
/// slow head, `503` over the connection cap), naming the setting that applies.
fn refusal_text(e: &h1::server::Error) -> String {
    match e {
        h1::server::Error::HeadTimeout(_) => {
            "shadowgate: request head not received within limits.header_read_timeout\n".into()
        }
        h1::server::Error::Overloaded => {
            "shadowgate: too many open connections (limits.max_connections)\n".into()
        }
        e => format!("shadowgate: {e}\n"),
    }
}
