//! Bad client input on the proxy port: invalid HTTP, slow clients, connection floods,
//! and admin endpoints that must not exist there.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use shadowgate::demo::model::{CosineSpec, ModelOptions};

fn opts() -> ModelOptions {
    ModelOptions {
        dim: 32,
        cosine: CosineSpec::Identical,
        ..Default::default()
    }
}

/// Send raw bytes, read whatever comes back until the server closes or 5 s pass.
fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_http_gets_400_and_the_proxy_keeps_serving() {
    let s = common::stack(opts(), opts(), opts(), "", "").await;
    let addr = s.sidecar.proxy_addr;
    let out = tokio::task::spawn_blocking(move || raw(addr, b"NOT HTTP AT ALL\r\n\r\n"))
        .await
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out:?}");
    let out = tokio::task::spawn_blocking(move || {
        raw(addr, b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n")
    })
    .await
    .unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out:?}");
    assert_eq!(s.embed("still fine").await.status, 200);
    assert_eq!(
        s.primary.requests(),
        1,
        "nothing invalid reached the model server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_by_the_header_timeout() {
    let s = common::stack(
        opts(),
        opts(),
        opts(),
        "",
        "[limits]\nheader_read_timeout = \"300ms\"",
    )
    .await;
    let addr = s.sidecar.proxy_addr;
    let out = tokio::task::spawn_blocking(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let started = Instant::now();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        (
            started.elapsed(),
            String::from_utf8_lossy(&out).into_owned(),
        )
    })
    .await
    .unwrap();
    assert!(
        out.0 < Duration::from_secs(3),
        "connection closed after the header timeout, took {:?}",
        out.0
    );
    assert!(
        out.1.is_empty() || out.1.starts_with("HTTP/1.1 408"),
        "{:?}",
        out.1
    );
    assert_eq!(s.embed("ok").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_shed_with_503() {
    let s = common::stack(opts(), opts(), opts(), "", "[limits]\nmax_connections = 4").await;
    let addr = s.sidecar.proxy_addr;
    let shed = tokio::task::spawn_blocking(move || {
        // Hold four idle connections open, then a fifth must be answered 503 and closed.
        let held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(100));
        let out = raw(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        drop(held);
        out
    })
    .await
    .unwrap();
    assert!(shed.starts_with("HTTP/1.1 503"), "{shed:?}");
    // Once the held connections are gone, service resumes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.embed("after").await.status, 200);
}

#[tokio::test]
async fn admin_endpoints_are_not_on_the_proxy_port() {
    let s = common::stack(opts(), opts(), opts(), "", "").await;
    for path in ["/metrics", "/labels", "/feedback", "/healthz"] {
        let r = s.client.get(&format!("{}{path}", s.proxy_url())).await;
        // Whatever the model server says about the path: never the sidecar's own metrics.
        assert!(
            !r.text().contains("model_inference_requests_total"),
            "{path} leaked metrics"
        );
    }
    let m = s.metrics().await;
    assert!(m.contains("model_inference_requests_total"));
    // The proxied GETs went to the primary, as any other request would.
    assert_eq!(s.primary.requests(), 4);
}
