//! Bad client input on the proxy port: invalid HTTP, slow clients, connection floods,
//! and admin endpoints that must not exist there.

use crate::support;

use http::Method;
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
    let s = support::stack(opts(), opts(), opts(), "", "").await;
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
    let s = support::stack(
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
    assert!(out.1.starts_with("HTTP/1.1 408"), "{:?}", out.1);
    assert!(out.1.contains("limits.header_read_timeout"), "{:?}", out.1);

    // An idle keep-alive connection (nothing of a head sent) is closed without an
    // answer: a 408 there could be read as the answer to a request sent at that moment.
    let idle = tokio::task::spawn_blocking(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = Instant::now();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        (started.elapsed(), out)
    })
    .await
    .unwrap();
    assert!(idle.0 < Duration::from_secs(3), "closed after {:?}", idle.0);
    assert!(idle.1.is_empty(), "{:?}", String::from_utf8_lossy(&idle.1));
    assert_eq!(s.embed("ok").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_shed_with_503() {
    let s = support::stack(opts(), opts(), opts(), "", "[limits]\nmax_connections = 4").await;
    let addr = s.sidecar.proxy_addr;
    let shed = tokio::task::spawn_blocking(move || {
        // Hold four idle connections open, then a fifth must be answered 503 and closed.
        // Until the server has taken the four, a fifth is served like any other (and closes:
        // `connection: close`), so ask again until it is shed or 5 s pass.
        let held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut out = String::new();
        support::poll(Duration::from_secs(5), || {
            out = raw(
                addr,
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            );
            out.starts_with("HTTP/1.1 503").then_some(())
        });
        drop(held);
        out
    })
    .await
    .unwrap();
    assert!(shed.starts_with("HTTP/1.1 503"), "{shed:?}");
    // Once the held connections are gone, service resumes.
    support::wait_for_async(
        "a 200 once the held connections are closed",
        Duration::from_secs(5),
        // A request that meets a connection still being shed fails: ask again.
        async || {
            let url = format!("{}/v1/embeddings", s.proxy_url());
            let body = r#"{"input":"after"}"#.to_string();
            s.client.try_send(Method::POST, &url, body).await == Some(200)
        },
    )
    .await;
}

#[tokio::test]
async fn admin_endpoints_are_not_on_the_proxy_port() {
    let s = support::stack(opts(), opts(), opts(), "", "").await;
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

/// The answer's status line and body, the `date` line and lengths aside.
fn status_and_body(out: &str) -> (&str, &str) {
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((out, ""));
    (head.lines().next().unwrap_or(""), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_targets_and_hosts_are_refused_as_nginx_refuses_them() {
    let s = support::stack(opts(), opts(), opts(), "", "").await;
    let addr = s.sidecar.proxy_addr;
    let post = |te: &str| {
        format!("POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n{te}\r\n\r\n0\r\n\r\n").into_bytes()
    };
    let chunked = |body: &str| {
        format!(
            "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\n\r\n{body}"
        )
        .into_bytes()
    };
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (post("Transfer-Encoding: gzip, chunked"), "HTTP/1.1 501 Not Implemented", "shadowgate: transfer-encoding other than chunked is not supported\n"),
        (post("Transfer-Encoding: identity, chunked"), "HTTP/1.1 501 Not Implemented", "shadowgate: transfer-encoding other than chunked is not supported\n"),
        (post("Transfer-Encoding: chunked, chunked"), "HTTP/1.1 400 Bad Request", "shadowgate: invalid request: chunked listed twice in transfer-encoding\n"),
        (post("Transfer-Encoding: , chunked"), "HTTP/1.1 400 Bad Request", "shadowgate: invalid request: empty element in transfer-encoding\n"),
        (post("Transfer-Encoding: identity\r\nTransfer-Encoding: chunked"), "HTTP/1.1 400 Bad Request", "shadowgate: invalid request: transfer-encoding sent twice\n"),
        (b"CONNECT model:443 HTTP/1.1\r\nHost: model:443\r\n\r\n".to_vec(), "HTTP/1.1 405 Method Not Allowed", "shadowgate: method CONNECT is not allowed\n"),
        (b"GET model:443 HTTP/1.1\r\nHost: model:443\r\n\r\n".to_vec(), "HTTP/1.1 400 Bad Request", "shadowgate: invalid request: request target not in origin or absolute form\n"),
        (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "HTTP/1.1 400 Bad Request", "shadowgate: invalid request: * as the target of a method other than OPTIONS\n"),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), "HTTP/1.1 400 Bad Request", "shadowgate: invalid request: no host\n"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n".to_vec(), "HTTP/1.1 400 Bad Request", "shadowgate: invalid request: host sent twice\n"),
        (b"GET / HTTP/1.1\r\nHost: a b/c\r\n\r\n".to_vec(), "HTTP/1.1 400 Bad Request", "shadowgate: invalid request: invalid host\n"),
        (chunked(" 5\r\nhello\r\n0\r\n\r\n"), "HTTP/1.1 400 Bad Request", "shadowgate: request body: malformed chunked body: chunk size is not hex digits\n"),
        (chunked("5;a\rb\r\nhello\r\n0\r\n\r\n"), "HTTP/1.1 400 Bad Request", "shadowgate: request body: malformed chunked body: invalid character in chunk extension\n"),
        (chunked("5\r\nhello\r\n0\r\nnot a field\r\n\r\n"), "HTTP/1.1 400 Bad Request", "shadowgate: request body: malformed chunked body: trailer line is not a header field\n"),
    ];
    for (wire, status, body) in cases {
        let out = tokio::task::spawn_blocking(move || raw(addr, &wire))
            .await
            .unwrap();
        assert_eq!(status_and_body(&out), (status, body), "{out:?}");
        assert!(out.contains("\r\nconnection: close\r\n"), "{out:?}");
    }
    // The body errors reach the primary as a cut request at most, never as an answer:
    // nothing else got through, and nothing counts against the primary.
    let m = s.metrics().await;
    assert_eq!(
        support::value(&m, "model_inference_errors_total", &[]).unwrap_or(0.0),
        0.0
    );
    assert_eq!(s.primary.requests(), 0);
    assert_eq!(s.embed("still fine").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_requests_and_underscored_names_are_served_without_them() {
    let s = support::stack(opts(), opts(), opts(), "", "").await;
    let addr = s.sidecar.proxy_addr;
    let body = r#"{"input":"plain http"}"#;
    let wire = format!(
        "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\nX_Api_Key: secret\r\nx-api-key: kept\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let out = tokio::task::spawn_blocking(move || raw(addr, wire.as_bytes()))
        .await
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out:?}");
    let seen = s.primary.stats.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let h = &seen[0].headers;
    assert!(
        h.get("upgrade").is_none() && h.get("x_api_key").is_none(),
        "{h:?}"
    );
    assert_eq!(h["x-api-key"], "kept");
}

/// Send `head` (request line, headers and the start of the body) at once, then `trickle`
/// one byte every `gap`, then read until the server closes or 5 s pass. Returns the time
/// from the last byte sent to the end of the answer, and the answer.
fn send_slowly(
    addr: std::net::SocketAddr,
    head: &[u8],
    trickle: &[u8],
    gap: Duration,
) -> (Duration, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.set_nodelay(true).unwrap();
    c.write_all(head).unwrap();
    for b in trickle {
        // A slow client is the behaviour under test: one byte every `gap`.
        std::thread::sleep(gap);
        c.write_all(&[*b]).unwrap();
    }
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    (
        started.elapsed(),
        String::from_utf8_lossy(&out).into_owned(),
    )
}

/// Headers announcing 1000 bytes of body, then only 10 of them: a client that stalls.
const STALLED: &[u8] = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"input\":\"";

/// Every test here must end well within this, whatever the sidecar does.
const TEST_BOUND: Duration = Duration::from_secs(30);

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    support::value(text, name, labels).unwrap_or_else(|| panic!("{name}{labels:?} missing"))
}

/// Assert the answer is the sidecar's 408 naming the key, sent after the pause limit
/// (300 ms, timer granularity aside) and well before the 2 s primary timeout.
fn assert_body_timeout(waited: Duration, out: &str) {
    assert!(out.starts_with("HTTP/1.1 408"), "{out:?}");
    assert!(out.contains("limits.body_read_timeout"), "{out:?}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "408 after {waited:?}, expected ~300 ms"
    );
}

/// A sidecar with `body_read_timeout = 300ms` and `shadow` settings, after one request
/// whose body stalls: its 408 already checked.
async fn stalled_request(shadow: &str) -> support::Stack {
    let s = support::stack(
        opts(),
        opts(),
        opts(),
        shadow,
        "[limits]\nbody_read_timeout = \"300ms\"",
    )
    .await;
    let addr = s.sidecar.proxy_addr;
    let (waited, out) =
        tokio::task::spawn_blocking(move || send_slowly(addr, STALLED, b"", Duration::ZERO))
            .await
            .unwrap();
    assert_body_timeout(waited, &out);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_mirrored_bodies_get_408_and_release_the_shadow_permit() {
    tokio::time::timeout(TEST_BOUND, async {
        let s = stalled_request("sample_rate = 1.0\nmax_in_flight = 1").await;
        assert_eq!(
            s.primary.requests(),
            0,
            "a stalled mirrored body never reaches the primary"
        );
        assert_eq!(s.baseline.requests() + s.canary.requests(), 0);
        let m = s.metrics().await;
        let decision =
            |d: &str| metric(&m, "shadowgate_mirror_decisions_total", &[("decision", d)]);
        assert_eq!(decision("body_unavailable"), 1.0);
        assert_eq!(decision("mirrored"), 0.0);
        assert_eq!(metric(&m, "model_inference_errors_total", &[]), 0.0);
        assert_eq!(metric(&m, "shadowgate_shadow_in_flight", &[]), 0.0);

        // The only permit (max_in_flight = 1) was given back: the next request is mirrored.
        assert_eq!(s.embed("after the stall").await.status, 200);
        let m = s.wait_pairs(1).await;
        assert_eq!(
            metric(
                &m,
                "model_embedding_pairs_total",
                &[("outcome", "compared")]
            ),
            1.0
        );
        assert_eq!(
            metric(
                &m,
                "shadowgate_mirror_decisions_total",
                &[("decision", "mirrored")]
            ),
            1.0
        );
        assert_eq!(
            metric(
                &m,
                "shadowgate_mirror_decisions_total",
                &[("decision", "dropped")]
            ),
            0.0
        );
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streamed_bodies_get_408_and_are_not_primary_errors() {
    tokio::time::timeout(TEST_BOUND, async {
        let s = stalled_request("sample_rate = 0.0").await;
        assert_eq!(s.baseline.requests() + s.canary.requests(), 0);
        assert_eq!(s.embed("after the stall").await.status, 200);
        let m = s.metrics().await;
        assert_eq!(
            metric(&m, "model_inference_errors_total", &[]),
            0.0,
            "a client's stalled body is not the primary's error"
        );
        assert_eq!(
            metric(
                &m,
                "shadowgate_mirror_decisions_total",
                &[("decision", "body_unavailable")]
            ),
            0.0
        );
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_but_steady_bodies_arrive_whole() {
    tokio::time::timeout(TEST_BOUND, async {
        // Mirrored (the body is collected first) and streamed (sent on as it comes).
        for sample_rate in ["1.0", "0.0"] {
            let s = support::stack(
                opts(),
                opts(),
                opts(),
                &format!("sample_rate = {sample_rate}"),
                // primary.timeout also runs while a streamed body uploads: above the 2 s
                // trickle, so that only the body timeout is under test.
                "[limits]\nbody_read_timeout = \"300ms\"\n[primary]\ntimeout = \"10s\"",
            )
            .await;
            let addr = s.sidecar.proxy_addr;
            let text = "slow and steady wins";
            let body = format!(r#"{{"messages":[{{"content":"{text}"}}]}}"#);
            // The last 20 bytes trickle in a byte per 100 ms: 2 s in all, each pause
            // a third of the limit.
            let (start, tail) = body.as_bytes().split_at(body.len() - 20);
            let mut head = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            head.extend_from_slice(start);
            let tail = tail.to_vec();
            let (_, out) = tokio::task::spawn_blocking(move || {
                send_slowly(addr, &head, &tail, Duration::from_millis(100))
            })
            .await
            .unwrap();
            assert!(out.starts_with("HTTP/1.1 200"), "sample_rate {sample_rate}: {out:?}");
            // The model echoes the message it parsed: the primary got every byte.
            assert!(
                out.contains(&format!("\"echo: {text}\"")),
                "sample_rate {sample_rate}: {out:?}"
            );
            assert_eq!(s.primary.requests(), 1);
            let m = s.metrics().await;
            let mirrored = metric(
                &m,
                "shadowgate_mirror_decisions_total",
                &[("decision", "mirrored")],
            );
            assert_eq!(mirrored, if sample_rate == "1.0" { 1.0 } else { 0.0 });
            assert_eq!(metric(&m, "model_inference_errors_total", &[]), 0.0);
        }
    })
    .await
    .expect("test bound");
}
