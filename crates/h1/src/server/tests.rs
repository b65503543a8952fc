//! The server on a loopback socket, raw bytes in and exact bytes out (the `date` value,
//! the one thing that changes, checked for its format and replaced by `X`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// What the test handler answers: the request line it saw, its fields, and its body;
/// or, when the body fails, the status and text of [`Error`].
#[derive(Clone)]
struct Echo {
    calls: Arc<AtomicUsize>,
}

impl Echo {
    fn handler(&self) -> impl Fn(Request<RequestBody>) -> Answer + Clone + Send + Sync + 'static {
        let calls = self.calls.clone();
        move |req: Request<RequestBody>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let answer: Answer = Box::pin(async move {
                let (parts, body) = req.into_parts();
                if parts.uri.path() == "/switch" {
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    return resp;
                }
                match body.collect().await {
                    Ok(body) => {
                        let mut text = format!("{} {}\n", parts.method, parts.uri);
                        for (name, value) in &parts.headers {
                            text.push_str(&format!("{name}={}\n", value.to_str().unwrap()));
                        }
                        text.push_str(&String::from_utf8_lossy(&body.to_bytes()));
                        let mut resp = Response::new(Full::new(Bytes::from(text)));
                        resp.headers_mut()
                            .insert("x-echo", HeaderValue::from_static("1"));
                        resp
                    }
                    Err(e) => {
                        let mut resp = Response::new(Full::new(Bytes::from(e.to_string())));
                        *resp.status_mut() = e.status();
                        resp
                    }
                }
            });
            answer
        }
    }
}

type Answer = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

struct Running<H> {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    server: Arc<Server<H>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn start(
    config: Config,
) -> Running<impl Fn(Request<RequestBody>) -> Answer + Clone + Send + Sync + 'static> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = Echo {
        calls: Arc::new(AtomicUsize::new(0)),
    };
    let server = Arc::new(Server::new(config, echo.handler()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let s = server.clone();
    tokio::spawn(async move {
        s.accept(&listener, async {
            let _ = stopped.await;
        })
        .await;
    });
    Running {
        addr,
        calls: echo.calls,
        server,
        stop: Some(stop),
    }
}

fn config() -> Config {
    Config {
        header_read_timeout: Duration::from_secs(5),
        body_read_timeout: Duration::from_secs(5),
        max_connections: 16,
        refusal_text: default_refusal_text,
    }
}

/// Send `wire`, then read until the server closes (or 5 s pass); the answer with its
/// `date` values replaced by `X`.
async fn exchange(addr: SocketAddr, wire: &[u8]) -> String {
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(wire).await.unwrap();
    read_to_close(&mut c).await
}

async fn read_to_close(c: &mut tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await;
    mask_date(&String::from_utf8_lossy(&out))
}

fn mask_date(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("\r\ndate: ") {
        let (before, after) = rest.split_at(at + 8);
        let end = after.find("\r\n").unwrap();
        httpdate::parse_http_date(&after[..end]).expect("an IMF-fixdate");
        out.push_str(before);
        out.push('X');
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The answer the server gives by itself to a refused head.
fn refusal(status: &str, text: &str) -> String {
    let text = format!("{text}\n");
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ndate: X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    )
}

/// An answer of the echo handler.
fn echoed(status: &str, body: &str, connection: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nx-echo: 1\r\ndate: X\r\ncontent-length: {}\r\n{connection}\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn refused_heads_get_nginxs_status_and_never_reach_the_handler() {
    let s = start(config()).await;
    let cases: &[(&str, &str, &str)] = &[
        (
            "POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "501 Not Implemented",
            "transfer-encoding other than chunked is not supported",
        ),
        (
            "POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: identity, chunked\r\n\r\n",
            "501 Not Implemented",
            "transfer-encoding other than chunked is not supported",
        ),
        (
            "POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            "400 Bad Request",
            "invalid request: chunked listed twice in transfer-encoding",
        ),
        (
            "POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: , chunked\r\n\r\n0\r\n\r\n",
            "400 Bad Request",
            "invalid request: empty element in transfer-encoding",
        ),
        (
            "POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "400 Bad Request",
            "invalid request: transfer-encoding sent twice",
        ),
        (
            "CONNECT host:443 HTTP/1.1\r\nHost: host:443\r\n\r\n",
            "405 Method Not Allowed",
            "method CONNECT is not allowed",
        ),
        (
            "GET host:443 HTTP/1.1\r\nHost: host:443\r\n\r\n",
            "400 Bad Request",
            "invalid request: request target not in origin or absolute form",
        ),
        (
            "GET * HTTP/1.1\r\nHost: m\r\n\r\n",
            "400 Bad Request",
            "invalid request: * as the target of a method other than OPTIONS",
        ),
        (
            "GET / HTTP/1.1\r\n\r\n",
            "400 Bad Request",
            "invalid request: no host",
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "400 Bad Request",
            "invalid request: host sent twice",
        ),
        (
            "GET / HTTP/1.1\r\nHost: a b/c\r\n\r\n",
            "400 Bad Request",
            "invalid request: invalid host",
        ),
        (
            "NOT HTTP AT ALL\r\n\r\n",
            "400 Bad Request",
            "malformed request head: invalid HTTP version",
        ),
    ];
    for (wire, status, text) in cases {
        assert_eq!(
            exchange(s.addr, wire.as_bytes()).await,
            refusal(status, text),
            "{wire:?}"
        );
    }
    let long = format!(
        "GET / HTTP/1.1\r\nHost: m\r\nx: {}\r\n\r\n",
        "a".repeat(MAX_HEAD_BYTES)
    );
    assert_eq!(
        exchange(s.addr, long.as_bytes()).await,
        refusal(
            "431 Request Header Fields Too Large",
            "request head over 65536 bytes or 100 fields"
        )
    );
    assert_eq!(s.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn malformed_chunked_bodies_fail_with_400() {
    let s = start(config()).await;
    for (body, why) in [
        (" 5\r\nhello\r\n0\r\n\r\n", "chunk size is not hex digits"),
        (
            "5;a\rb\r\nhello\r\n0\r\n\r\n",
            "invalid character in chunk extension",
        ),
        (
            "5\r\nhello\r\n0\r\nnot a field\r\n\r\n",
            "trailer line is not a header field",
        ),
    ] {
        let wire =
            format!("POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let text = format!("request body: malformed chunked body: {why}");
        assert_eq!(
            exchange(s.addr, wire.as_bytes()).await,
            format!(
                "HTTP/1.1 400 Bad Request\r\ndate: X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            ),
            "{body:?}"
        );
    }
}

#[tokio::test]
async fn underscored_names_and_upgrade_never_reach_the_handler() {
    let s = start(config()).await;
    let out = exchange(
        s.addr,
        b"GET /ws HTTP/1.1\r\nHost: m\r\nX_Forwarded_For: 1.2.3.4\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n\r\n",
    )
    .await;
    assert_eq!(
        out,
        echoed(
            "200 OK",
            "GET /ws\nhost=m\nconnection=Upgrade, close\n",
            "connection: close\r\n"
        )
    );
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_targets_keep_their_form() {
    let s = start(config()).await;
    let out = exchange(
        s.addr,
        b"POST /a HTTP/1.1\r\nHost: m\r\nContent-Length: 2\r\n\r\nhiOPTIONS * HTTP/1.1\r\nHost: m\r\n\r\nGET http://m/p?q HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
    )
    .await;
    let expected = [
        echoed("200 OK", "POST /a\nhost=m\ncontent-length=2\nhi", ""),
        echoed("200 OK", "OPTIONS *\nhost=m\n", ""),
        echoed(
            "200 OK",
            "GET http://m/p?q\nhost=m\nconnection=close\n",
            "connection: close\r\n",
        ),
    ]
    .concat();
    assert_eq!(out, expected);
}

#[tokio::test]
async fn http_1_0_and_expect_continue_get_their_framing() {
    let s = start(config()).await;
    let out = exchange(
        s.addr,
        b"POST /old HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nxGET /old HTTP/1.0\r\n\r\n",
    )
    .await;
    assert_eq!(
        out,
        [
            echoed(
                "200 OK",
                "POST /old\nconnection=keep-alive\ncontent-length=1\nx",
                "connection: keep-alive\r\n"
            ),
            echoed("200 OK", "GET /old\n", "connection: close\r\n"),
        ]
        .concat()
    );

    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"POST /c HTTP/1.1\r\nHost: m\r\nExpect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut interim = [0u8; 25];
    c.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.write_all(b"abc").await.unwrap();
    assert_eq!(
        read_to_close(&mut c).await,
        echoed(
            "200 OK",
            "POST /c\nhost=m\nexpect=100-continue\ncontent-length=3\nconnection=close\nabc",
            "connection: close\r\n"
        )
    );
}

#[tokio::test]
async fn a_partial_head_gets_408_and_an_idle_connection_closes_silently() {
    let s = start(Config {
        header_read_timeout: Duration::from_millis(200),
        ..config()
    })
    .await;
    let started = std::time::Instant::now();
    assert_eq!(
        exchange(s.addr, b"GET / HTTP/1.1\r\nHost: m\r\n").await,
        refusal(
            "408 Request Timeout",
            "request head not received within 200ms"
        )
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(exchange(s.addr, b"").await, "");
}

#[tokio::test]
async fn a_stalled_body_fails_with_body_timeout_and_a_steady_one_arrives() {
    let s = start(Config {
        body_read_timeout: Duration::from_millis(200),
        ..config()
    })
    .await;
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 10\r\n\r\n01234")
        .await
        .unwrap();
    let text = "no request body data for 200ms";
    assert_eq!(
        read_to_close(&mut c).await,
        format!(
            "HTTP/1.1 408 Request Timeout\r\ndate: X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
            text.len()
        )
    );

    // Pauses under the limit, five of them longer than the limit in total.
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for b in b"abcde" {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.write_all(&[*b]).await.unwrap();
    }
    assert_eq!(
        read_to_close(&mut c).await,
        echoed(
            "200 OK",
            "POST /\nhost=m\ncontent-length=5\nconnection=close\nabcde",
            "connection: close\r\n"
        )
    );
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_shutdown_waits_for_busy_ones() {
    let mut s = start(Config {
        max_connections: 1,
        ..config()
    })
    .await;
    // One connection in the middle of a request (its body not yet sent).
    let mut busy = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    busy.write_all(b"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 2\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.server.open_connections(), 1);
    assert_eq!(
        exchange(s.addr, b"GET / HTTP/1.1\r\nHost: m\r\n\r\n").await,
        refusal("503 Service Unavailable", "too many open connections")
    );

    // Shutdown: the busy request finishes, answered with `connection: close`.
    s.stop.take().unwrap().send(()).unwrap();
    let server = s.server.clone();
    let drained =
        tokio::spawn(async move { server.drain(Instant::now() + Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    busy.write_all(b"ok").await.unwrap();
    assert_eq!(
        read_to_close(&mut busy).await,
        echoed(
            "200 OK",
            "POST /\nhost=m\ncontent-length=2\nok",
            "connection: close\r\n"
        )
    );
    assert_eq!(drained.await.unwrap(), 0, "no connection left open");
}

#[tokio::test]
async fn idle_connections_close_at_shutdown_and_the_grace_period_is_kept() {
    let mut s = start(config()).await;
    let mut idle = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    // A connection that sent half a head and then nothing: it is cut at the deadline.
    let mut stuck = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    stuck.write_all(b"GET / HT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.stop.take().unwrap().send(()).unwrap();
    let started = std::time::Instant::now();
    let open = s
        .server
        .drain(Instant::now() + Duration::from_millis(300))
        .await;
    assert_eq!(open, 1, "the stuck connection");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(read_to_close(&mut idle).await, "", "closed without a word");
}

#[tokio::test]
async fn an_interim_status_from_the_handler_becomes_500() {
    let s = start(config()).await;
    assert_eq!(
        exchange(s.addr, b"GET /switch HTTP/1.1\r\nHost: m\r\n\r\n").await,
        "HTTP/1.1 500 Internal Server Error\r\ndate: X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
}

#[test]
fn every_error_has_nginxs_status() {
    use StatusCode as S;
    for (e, status) in [
        (Error::Head(httparse::Error::Token), S::BAD_REQUEST),
        (Error::HeadTooLarge, S::REQUEST_HEADER_FIELDS_TOO_LARGE),
        (Error::Invalid("x"), S::BAD_REQUEST),
        (Error::NotImplemented("x"), S::NOT_IMPLEMENTED),
        (Error::MethodNotAllowed("CONNECT"), S::METHOD_NOT_ALLOWED),
        (Error::HeadTimeout(Duration::ZERO), S::REQUEST_TIMEOUT),
        (Error::BodyTimeout(Duration::ZERO), S::REQUEST_TIMEOUT),
        (Error::Overloaded, S::SERVICE_UNAVAILABLE),
        (Error::Body(body::Error::Closed), S::BAD_REQUEST),
        (Error::Stale, S::INTERNAL_SERVER_ERROR),
    ] {
        assert_eq!(e.status(), status, "{e}");
    }
}
