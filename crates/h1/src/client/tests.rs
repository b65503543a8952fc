//! The client against a scripted server on a loopback socket: the exact bytes it writes,
//! and what it makes of the bytes it reads.

use std::net::SocketAddr;
use std::sync::Mutex as StdMutex;

use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// Answers the requests on each connection with the next scripted raw answers (one list
/// per connection, in order) and records each request's raw bytes. An empty answer
/// closes the connection after reading the request, without answering.
struct Scripted {
    addr: SocketAddr,
    seen: Arc<StdMutex<Vec<(usize, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    async fn spawn(script: Vec<Vec<Vec<u8>>>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            for (conn, answers) in script.into_iter().enumerate() {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                for answer in answers {
                    let Some(request) = read_request(&mut stream, &mut buf).await else {
                        break;
                    };
                    record.lock().unwrap().push((conn, request));
                    if answer.is_empty() || stream.write_all(&answer).await.is_err() {
                        break;
                    }
                }
            }
        });
        Scripted { addr, seen, task }
    }

    fn client(&self) -> Client {
        let origin: Uri = format!("http://{}", self.addr).parse().unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        Client::new(&origin, 8, Arc::new(tls))
    }

    fn seen(&self) -> Vec<(usize, String)> {
        self.seen.lock().unwrap().clone()
    }
}

/// One request's raw bytes: its head and a `content-length` body (the tests send no
/// chunked bodies).
async fn read_request(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                let raw: Vec<u8> = buf.drain(..end + 4 + len).collect();
                return Some(String::from_utf8_lossy(&raw).into_owned());
            }
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn request(method: Method, path: &str, body: &'static str) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::from_static(body.as_bytes())));
    *req.method_mut() = method;
    *req.uri_mut() = path.parse().unwrap();
    req
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn text(resp: Response<ResponseBody>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[tokio::test]
async fn requests_go_out_byte_exact_without_connection_fields() {
    let server = Scripted::spawn(vec![vec![ok("a"), ok("b")]]).await;
    let client = server.client();
    let mut req = request(Method::POST, "/v1/embeddings?x=1", "hello");
    for (name, value) in [
        ("x-request-id", "r1"),
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("content-length", "999"),
    ] {
        req.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    assert_eq!(text(client.send(req).await.unwrap()).await, "a");
    assert_eq!(
        text(client.send(request(Method::GET, "/", "")).await.unwrap()).await,
        "b"
    );
    let host = server.addr.to_string();
    assert_eq!(
        server.seen(),
        [
            (
                0,
                format!("POST /v1/embeddings?x=1 HTTP/1.1\r\nhost: {host}\r\nx-request-id: r1\r\ncontent-length: 5\r\n\r\nhello")
            ),
            (0, format!("GET / HTTP/1.1\r\nhost: {host}\r\n\r\n")),
        ]
    );
    assert_eq!(client.idle_connections(), 1);
}

#[tokio::test]
async fn a_post_on_a_kept_connection_closed_unanswered_is_not_sent_again() {
    let server = Scripted::spawn(vec![vec![ok("first"), Vec::new()], vec![ok("unused")]]).await;
    let client = server.client();
    assert_eq!(
        text(client.send(request(Method::GET, "/", "")).await.unwrap()).await,
        "first"
    );
    let err = client
        .send(request(Method::POST, "/infer", "payload"))
        .await
        .unwrap_err();
    assert_eq!(
        chain(&err),
        format!("request to http://{}/: the kept-alive connection closed before the response head; POST is not idempotent, so it was not sent again", server.addr)
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "sent once: {seen:?}");
    assert!(seen[1].1.ends_with("\r\n\r\npayload"));
}

#[tokio::test]
async fn idempotent_requests_on_a_kept_connection_closed_unanswered_are_sent_again() {
    for method in [
        Method::GET,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ] {
        let server = Scripted::spawn(vec![vec![ok("first"), Vec::new()], vec![ok("second")]]).await;
        let client = server.client();
        assert_eq!(
            text(client.send(request(Method::GET, "/", "")).await.unwrap()).await,
            "first"
        );
        let resp = client
            .send(request(method.clone(), "/again", ""))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{method}");
        let seen = server.seen();
        assert_eq!(seen.len(), 3, "{method}: {seen:?}");
        assert_eq!(seen[1].1, seen[2].1, "{method}: the same bytes again");
        assert_eq!(
            (seen[1].0, seen[2].0),
            (0, 1),
            "{method}: on a new connection"
        );
    }
}

#[tokio::test]
async fn a_post_on_a_new_connection_closed_unanswered_is_an_error() {
    let server = Scripted::spawn(vec![vec![Vec::new()]]).await;
    let err = server
        .client()
        .send(request(Method::POST, "/", "x"))
        .await
        .unwrap_err();
    assert_eq!(
        chain(&err),
        format!(
            "request to http://{}/: connection closed before the response head",
            server.addr
        )
    );
}

#[tokio::test]
async fn answers_the_client_cannot_frame_are_errors_and_close_their_connection() {
    let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..96 {
        huge.extend_from_slice(format!("x-{i}: {}\r\n", "v".repeat(1060)).as_bytes());
    }
    huge.extend_from_slice(b"content-length: 2\r\n\r\nok");
    assert!(huge.len() > 100 * 1024);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec(),
            "invalid response: 101 Switching Protocols without an upgrade request",
        ),
        (huge, "response head over 65536 bytes"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n".to_vec(),
            "invalid response: transfer-encoding other than chunked",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: nine\r\n\r\n".to_vec(),
            "invalid response: invalid content-length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nHTTP/1.1 200 OK\r\n\r\n".to_vec(),
            "",
        ),
    ];
    let last = cases.len() - 1;
    let script = cases
        .iter()
        .map(|(answer, _)| vec![answer.clone()])
        .collect();
    let server = Scripted::spawn(script).await;
    let client = server.client();
    for (i, (_, why)) in cases.iter().enumerate() {
        let result = client.send(request(Method::GET, "/", "")).await;
        if i == last {
            // Bytes beyond the answer: the connection is not reused.
            assert_eq!(text(result.unwrap()).await, "HT");
            assert_eq!(client.idle_connections(), 0);
            continue;
        }
        let err = result.unwrap_err();
        assert_eq!(
            chain(&err),
            format!("request to http://{}/: {why}", server.addr),
            "case {i}"
        );
    }
    let conns: Vec<usize> = server.seen().iter().map(|(c, _)| *c).collect();
    assert_eq!(
        conns,
        (0..cases.len()).collect::<Vec<_>>(),
        "one connection each"
    );
}

#[tokio::test]
async fn interim_answers_are_skipped_and_bodies_end_where_their_framing_says() {
    let server = Scripted::spawn(vec![
        vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nx-t: 1\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec(),
        ],
        vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n".to_vec()],
    ])
    .await;
    let client = server.client();
    let get = || request(Method::GET, "/", "");
    assert_eq!(text(client.send(get()).await.unwrap()).await, "ok");
    assert_eq!(text(client.send(get()).await.unwrap()).await, "hello");
    assert_eq!(
        text(client.send(get()).await.unwrap()).await,
        "until the end"
    );
    let resp = client.send(get()).await.unwrap();
    let err = resp.into_body().collect().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "response body: malformed chunked body: chunk size is not hex digits"
    );
    let conns: Vec<usize> = server.seen().iter().map(|(c, _)| *c).collect();
    assert_eq!(conns, [0, 0, 0, 1]);
}

#[tokio::test]
async fn connect_errors_name_the_origin() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let server = Scripted {
        addr,
        seen: Arc::default(),
        task: tokio::spawn(async {}),
    };
    let err = server
        .client()
        .send(request(Method::GET, "/", ""))
        .await
        .unwrap_err();
    let text = chain(&err);
    assert!(
        text.starts_with(&format!("connect to http://{addr}/: ")),
        "{text}"
    );
    assert!(text.to_lowercase().contains("refused"), "{text}");
}
