//! Upstreams that reset the connection mid-response: the status line and part of a
//! `Content-Length` body go out, then the socket is closed with RST (SO_LINGER 0).

use crate::support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use shadowgate::demo::model::{CosineSpec, ModelOptions, ModelServer};
use shadowgate::serve;
use support::reset_server::{read_request, ResetServer, ANSWER, DECLARED};
use support::{config, value, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Send one request straight to a reset server and read until the connection ends: the
/// error that ended it (`UnexpectedEof` would mean an orderly close).
async fn direct_read_error(addr: SocketAddr) -> std::io::ErrorKind {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match s.read(&mut chunk).await {
            Ok(0) => return std::io::ErrorKind::UnexpectedEof,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => {
                assert!(got.len() < DECLARED, "{} bytes before the reset", got.len());
                return e.kind();
            }
        }
    }
}

fn opts() -> ModelOptions {
    ModelOptions {
        dim: 64,
        cosine: CosineSpec::Identical,
        ..Default::default()
    }
}

fn count(m: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(m, name, labels).unwrap_or(0.0)
}

#[tokio::test]
async fn primary_reset_mid_response_cuts_the_client_body_and_is_counted() {
    let primary = ResetServer::spawn(2).await;
    assert_eq!(
        direct_read_error(primary.addr).await,
        std::io::ErrorKind::ConnectionReset,
        "the fault is a real RST, not an orderly close"
    );
    let shadow = ModelServer::spawn(opts()).await.unwrap();
    let cfg = config(
        &primary.url(),
        &shadow.url(),
        &shadow.url(),
        "sample_rate = 0.0",
        "",
    );
    let sidecar = serve::start(cfg).await.unwrap();
    let proxy = format!("http://{}/v1/embeddings", sidecar.proxy_addr);
    let raw = shadowgate::upstream::http_client::<Full<Bytes>>(4);
    let req = Request::post(&proxy)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"input":"cut me"}"#)))
        .unwrap();
    // Bounded: a hang fails here rather than stalling the run.
    let (status, declared, body) = tokio::time::timeout(Duration::from_secs(5), async {
        let resp = raw.request(req).await.expect("the head arrives");
        let status = resp.status();
        let declared = resp.headers().get("content-length").cloned();
        (status, declared, resp.into_body().collect().await)
    })
    .await
    .expect("the cut answer neither hangs nor waits for the primary timeout");
    assert_eq!(status, 200, "the head had already been relayed");
    assert_eq!(
        declared.as_ref().and_then(|v| v.to_str().ok()),
        Some(DECLARED.to_string().as_str()),
        "the primary's length is passed on, so the client can tell the body is short"
    );
    let err = body.expect_err("a cut body is an error, never a shorter complete body");
    let chain = shadowgate::upstream::error_chain(&err);
    assert!(
        chain.contains("end of file before message length reached"),
        "{chain}"
    );

    let client = Client::new();
    let metrics = format!("http://{}/metrics", sidecar.admin_addr);
    let m = client.get(&metrics).await.text();
    assert_eq!(count(&m, "model_inference_requests_total", &[]), 1.0);
    assert_eq!(count(&m, "model_inference_errors_total", &[]), 1.0, "{m}");

    // The sidecar keeps serving: the primary answers in full again.
    for i in 0..5 {
        let r = client
            .send(
                http::Method::POST,
                &proxy,
                &[],
                format!(r#"{{"input":"after {i}"}}"#),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.body, ANSWER.as_bytes());
    }
    let m = client.get(&metrics).await.text();
    assert_eq!(count(&m, "model_inference_requests_total", &[]), 6.0);
    assert_eq!(count(&m, "model_inference_errors_total", &[]), 1.0);
    assert_eq!(primary.requests.load(Ordering::SeqCst), 7);
    sidecar.shutdown().await;
}

#[tokio::test]
async fn a_primary_answering_broken_http_gets_502_naming_the_cause() {
    // Reads a request, answers with conflicting lengths, closes; for every connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = Vec::new();
            if read_request(&mut stream, &mut buf).await.is_some() {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
                    )
                    .await;
            }
        }
    });
    let shadow = ModelServer::spawn(opts()).await.unwrap();
    let cfg = config(
        &format!("http://{addr}"),
        &shadow.url(),
        &shadow.url(),
        "sample_rate = 0.0",
        "",
    );
    let sidecar = serve::start(cfg).await.unwrap();
    let client = Client::new();
    let proxy = format!("http://{}/v1/embeddings", sidecar.proxy_addr);
    for _ in 0..3 {
        let r = client
            .send(
                http::Method::POST,
                &proxy,
                &[],
                r#"{"input":"x"}"#.to_string(),
            )
            .await;
        assert_eq!(r.status, 502);
        let text = r.text();
        assert!(
            text.contains("unavailable") && text.contains("invalid content-length"),
            "{text}"
        );
    }
    let m = client
        .get(&format!("http://{}/metrics", sidecar.admin_addr))
        .await
        .text();
    assert_eq!(count(&m, "model_inference_errors_total", &[]), 3.0, "{m}");
    sidecar.shutdown().await;
    server.abort();
}

#[tokio::test]
async fn a_primary_answering_101_or_a_head_over_64_kib_gets_502() {
    // The proxy asks for no upgrade, so a 101 is a broken answer, not a switch; a head
    // over 64 KiB is refused even when it arrives in one piece.
    let mut huge = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n".to_vec();
    for i in 0..95 {
        huge.extend_from_slice(format!("x-{i}: {}\r\n", "v".repeat(1070)).as_bytes());
    }
    huge.extend_from_slice(b"\r\nok");
    assert!(huge.len() > 100 * 1024);
    let answers: Vec<(Vec<u8>, &str)> = vec![
        (
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
                .to_vec(),
            "101 Switching Protocols without an upgrade request",
        ),
        (huge, "response head over 65536 bytes"),
    ];
    for (answer, why) in answers {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = Vec::new();
                if read_request(&mut stream, &mut buf).await.is_some() {
                    let _ = stream.write_all(&answer).await;
                }
            }
        });
        let shadow = ModelServer::spawn(opts()).await.unwrap();
        let cfg = config(
            &format!("http://{addr}"),
            &shadow.url(),
            &shadow.url(),
            "sample_rate = 0.0",
            "",
        );
        let sidecar = serve::start(cfg).await.unwrap();
        let client = Client::new();
        let proxy = format!("http://{}/v1/embeddings", sidecar.proxy_addr);
        let r = client
            .send(
                http::Method::POST,
                &proxy,
                &[("upgrade", "websocket"), ("connection", "upgrade")],
                r#"{"input":"x"}"#.to_string(),
            )
            .await;
        assert_eq!(r.status, 502, "{why}");
        assert!(r.headers.get("upgrade").is_none());
        let text = r.text();
        assert!(text.contains("unavailable") && text.contains(why), "{text}");
        let m = client
            .get(&format!("http://{}/metrics", sidecar.admin_addr))
            .await
            .text();
        assert_eq!(count(&m, "model_inference_errors_total", &[]), 1.0, "{m}");
        sidecar.shutdown().await;
        server.abort();
    }
}
