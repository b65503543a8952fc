//! The proxy port's HTTP/1.1 (`crates/h1`, its `server` module) as raw clients speak
//! it: pipelining, `100 Continue` with a chunked body, HTTP/1.0, bodies cut short, early
//! answers.

use crate::support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use shadowgate::demo::model::{CosineSpec, ModelOptions};

fn opts() -> ModelOptions {
    ModelOptions {
        dim: 16,
        cosine: CosineSpec::Identical,
        ..Default::default()
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

/// Read until the server closes the connection (or 5 s pass).
fn read_all(c: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn post(id: &str, body: &str, extra: &str) -> String {
    format!(
        "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nx-request-id: {id}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let s = support::stack(opts(), opts(), opts(), "", "").await;
    let addr = s.sidecar.proxy_addr;
    let out = tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        let wire = [
            post("first", r#"{"input":"a"}"#, ""),
            post("second", r#"{"input":"b"}"#, ""),
            post("third", r#"{"input":"c"}"#, "connection: close\r\n"),
        ]
        .concat();
        c.write_all(wire.as_bytes()).unwrap();
        read_all(&mut c)
    })
    .await
    .unwrap();
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 3, "{out}");
    let at = |id: &str| out.find(&format!("x-request-id: {id}")).expect(id);
    assert!(
        at("first") < at("second") && at("second") < at("third"),
        "{out}"
    );
    assert!(out.ends_with('}'), "the last answer is whole: {out}");
    assert_eq!(s.primary.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_gets_100_and_a_chunked_body_reaches_the_primary_whole() {
    let s = support::stack(opts(), opts(), opts(), "", "").await;
    let addr = s.sidecar.proxy_addr;
    let (interim, out) = tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        c.write_all(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
              expect: 100-continue\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
        let mut interim = [0u8; 25];
        c.read_exact(&mut interim).unwrap();
        // The body in three chunks, the last one split across writes.
        for piece in [
            "6\r\n{\"inpu\r\n",
            "7\r\nt\":\"hel\r\n",
            "4\r\nlo\"}\r\n0\r",
            "\n\r\n",
        ] {
            c.write_all(piece.as_bytes()).unwrap();
            // Pauses between the pieces, so that they arrive as separate reads.
            std::thread::sleep(Duration::from_millis(20));
        }
        (
            String::from_utf8_lossy(&interim).into_owned(),
            read_all(&mut c),
        )
    })
    .await
    .unwrap();
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("\"embedding\""), "{out}");
    let seen = s.primary.stats.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_clients_get_a_framed_answer_and_the_connection_closes() {
    let s = support::stack(opts(), opts(), opts(), "", "").await;
    let addr = s.sidecar.proxy_addr;
    let out = tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        let body = r#"{"input":"old client"}"#;
        let req = format!(
            "POST /v1/embeddings HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        c.write_all(req.as_bytes()).unwrap();
        read_all(&mut c)
    })
    .await
    .unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("content-length")
        .parse()
        .unwrap();
    assert_eq!(len, body.len(), "{out}");
    assert!(head.contains("connection: close"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_by_the_client_is_its_fault_not_the_primarys() {
    let s = support::stack(opts(), opts(), opts(), "", "").await;
    let addr = s.sidecar.proxy_addr;
    let out = tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        c.write_all(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\ncontent-length: 100\r\n\r\n{\"input\":",
        )
        .unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        read_all(&mut c)
    })
    .await
    .unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("request body ended early"), "{out}");
    let m = s.metrics().await;
    let errors = support::value(&m, "model_inference_errors_total", &[]).unwrap_or(0.0);
    assert_eq!(errors, 0.0, "not counted against the primary");
    assert_eq!(s.embed("still fine").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_given_before_the_body_was_read_closes_the_connection() {
    let s = support::stack(opts(), opts(), opts(), "", "[limits]\nmax_body_bytes = 64").await;
    let addr = s.sidecar.proxy_addr;
    let out = tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        // Announces 1000 bytes, sends 10, and keeps the connection open: the 413 must
        // come with `connection: close` and the close itself, not a wait for the rest.
        c.write_all(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\ncontent-length: 1000\r\n\r\n0123456789",
        )
        .unwrap();
        read_all(&mut c)
    })
    .await
    .unwrap();
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("connection: close\r\n"), "{out}");
    assert_eq!(s.primary.requests(), 0);
}
