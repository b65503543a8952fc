//! Upstreams that reset the connection mid-response: the status line and part of a
//! `Content-Length` body go out, then the socket is closed with RST (SO_LINGER 0).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{config, value, Client};
use http::Request;
use http_body_util::{BodyExt, Full};
use shadowgate::demo::model::{CosineSpec, ModelOptions, ModelServer};
use shadowgate::serve;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the reset server answers in full when it does not reset.
const ANSWER: &str = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.25,-0.5,0.75,1.0,0.125,-0.25,0.5,0.0625]}],"model":"reset","usage":{"prompt_tokens":1,"total_tokens":1}}"#;
/// Declared length of a reset answer, and how much of it is sent before the RST.
const DECLARED: usize = 4096;
const SENT: usize = 100;

/// An OpenAI-style embeddings server that resets the first `resets` answers mid-body and
/// answers the rest in full.
struct ResetServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ResetServer {
    async fn spawn(resets: usize) -> ResetServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                conns.spawn(serve_conn(stream, seen.clone(), resets));
            }
        });
        ResetServer {
            addr,
            requests,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ResetServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keep-alive request loop: read a request (head + Content-Length body), answer.
async fn serve_conn(mut stream: TcpStream, requests: Arc<AtomicUsize>, resets: usize) {
    let mut buf = Vec::new();
    loop {
        let Some(consumed) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        buf.drain(..consumed);
        let n = requests.fetch_add(1, Ordering::SeqCst);
        if n < resets {
            let mut body = ANSWER.as_bytes().to_vec();
            body.resize(DECLARED, b' ');
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {DECLARED}\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body[..SENT]).await;
            let _ = stream.flush().await;
            // Let the head and the first bytes reach the peer before the reset.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = stream.set_zero_linger();
            drop(stream);
            return;
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            ANSWER.len()
        );
        if stream.write_all(head.as_bytes()).await.is_err()
            || stream.write_all(ANSWER.as_bytes()).await.is_err()
        {
            return;
        }
    }
}

/// Read one request into `buf`; the number of bytes it took, or None at end of stream.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let total = end + 4 + len;
            if buf.len() >= total {
                return Some(total);
            }
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

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

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
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
async fn shadow_resets_mid_response_never_reach_the_client_and_leak_nothing() {
    let n: usize = 40;
    for (target, pair_outcome) in [("canary", "canary_error"), ("baseline", "baseline_error")] {
        let primary = ModelServer::spawn(opts()).await.unwrap();
        let healthy = ModelServer::spawn(opts()).await.unwrap();
        // Resets every answer (warm-up included).
        let resetting = ResetServer::spawn(usize::MAX).await;
        let (b, c) = if target == "canary" {
            (healthy.url(), resetting.url())
        } else {
            (resetting.url(), healthy.url())
        };
        let cfg = config(&primary.url(), &b, &c, "", "");
        let fds_start = open_fds();
        let sidecar = serve::start(cfg).await.unwrap();
        let stack = Stack {
            sidecar,
            client: Client::new(),
        };
        let warm = 5;
        for i in 0..warm {
            assert_eq!(stack.embed(&format!("warm {i}")).await.status, 200);
        }
        stack.wait_pairs(warm).await;

        for i in 0..n {
            let r = stack.embed(&format!("input {i}")).await;
            assert_eq!(r.status, 200, "{target} {i}: {}", r.text());
            assert!(r.text().contains("\"embedding\""), "{target} {i}");
        }
        let total = (warm + n) as f64;
        let m = stack.wait_pairs(warm + n).await;
        let shadow = |t: &str, outcome: &str| {
            count(
                &m,
                "shadowgate_shadow_requests_total",
                &[("target", t), ("outcome", outcome)],
            )
        };
        let healthy_side = if target == "canary" {
            "baseline"
        } else {
            "canary"
        };
        // A cut body is a transport error of that side, not a timeout nor an invalid
        // embedding (the partial JSON is never parsed).
        assert_eq!(shadow(target, "error"), total, "{target}: {m}");
        for other in ["ok", "timeout", "invalid_embedding"] {
            assert_eq!(shadow(target, other), 0.0, "{target} {other}");
        }
        assert_eq!(shadow(healthy_side, "ok"), total, "{target}");
        assert_eq!(
            count(
                &m,
                "model_embedding_pairs_total",
                &[("outcome", pair_outcome)]
            ),
            total,
            "{target}"
        );
        assert_eq!(
            count(
                &m,
                "model_embedding_pairs_total",
                &[("outcome", "compared")]
            ),
            0.0
        );
        assert_eq!(count(&m, "model_inference_errors_total", &[]), 0.0);
        assert_eq!(resetting.requests.load(Ordering::SeqCst), warm + n);

        // Each reset connection is closed, and the rest (pooled shadow connections, the
        // shadow thread's runtime) go with the sidecar: afterwards the process holds as
        // many descriptors as before it started.
        stack.sidecar.shutdown().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut fds_end = open_fds();
        while fds_end > fds_start + 2 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            fds_end = open_fds();
        }
        assert!(
            fds_end <= fds_start + 2,
            "{target}: descriptors leaked over {n} resets: {fds_start} before the sidecar, {fds_end} after it"
        );
    }
}

/// The sidecar and a client; the upstreams are whatever the test built.
struct Stack {
    sidecar: serve::Running,
    client: Client,
}

impl Stack {
    async fn embed(&self, text: &str) -> common::Reply {
        self.client
            .send(
                http::Method::POST,
                &format!("http://{}/v1/embeddings", self.sidecar.proxy_addr),
                &[],
                format!(r#"{{"input":"{text}"}}"#),
            )
            .await
    }

    async fn wait_pairs(&self, n: usize) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let m = self
                .client
                .get(&format!("http://{}/metrics", self.sidecar.admin_addr))
                .await
                .text();
            let total = common::pairs_total(&m);
            if total as usize >= n || std::time::Instant::now() > deadline {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
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
