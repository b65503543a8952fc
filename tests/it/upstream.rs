//! The upstream client (`crates/h1`, its `client` module) against plain HTTP/1.1
//! servers on 127.0.0.1: one that counts its connections and can close idle ones the way
//! servers with a short keep-alive timeout do (uvicorn: 5 s), and one that answers with
//! scripted raw bytes (chunked, close-delimited, interim and broken answers).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use shadowgate::upstream::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BODY_LEN: usize = 64 * 1024;

/// Answers every request with `BODY_LEN` bytes; `close_idle_after` closes a connection
/// that has been idle that long after a response, without telling the client.
struct CountingServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    hosts: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingServer {
    async fn spawn(close_idle_after: Option<Duration>) -> CountingServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let hosts = Arc::new(Mutex::new(Vec::new()));
        let (c, r, h) = (connections.clone(), requests.clone(), hosts.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                conns.spawn(serve_conn(stream, r.clone(), h.clone(), close_idle_after));
            }
        });
        CountingServer {
            addr,
            connections,
            requests,
            hosts,
            task,
        }
    }

    fn origin(&self) -> Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }
}

impl Drop for CountingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_conn(
    mut stream: TcpStream,
    requests: Arc<AtomicUsize>,
    hosts: Arc<Mutex<Vec<String>>>,
    close_idle_after: Option<Duration>,
) {
    let body = vec![b'x'; BODY_LEN];
    let mut buf = Vec::new();
    loop {
        // Read one request head (the test requests carry no body).
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 4096];
            let read = match close_idle_after {
                Some(idle) if buf.is_empty() => {
                    match tokio::time::timeout(idle, stream.read(&mut chunk)).await {
                        Ok(r) => r,
                        Err(_) => return, // idle too long: close without a word
                    }
                }
                _ => stream.read(&mut chunk).await,
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end);
        if let Some(host) = head.lines().find_map(|l| {
            l.strip_prefix("host: ")
                .or_else(|| l.strip_prefix("Host: "))
        }) {
            hosts.lock().unwrap().push(host.to_string());
        }
        requests.fetch_add(1, Ordering::SeqCst);
        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {BODY_LEN}\r\n\r\n");
        if stream.write_all(answer.as_bytes()).await.is_err()
            || stream.write_all(&body).await.is_err()
        {
            return;
        }
    }
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).body(Full::new(Bytes::new())).unwrap()
}

fn upstream(server: &CountingServer, max_idle: usize) -> Upstream {
    Upstream::new(
        &server.origin(),
        max_idle,
        shadowgate::tls::no_roots_config(),
    )
}

#[tokio::test]
async fn sequential_requests_share_one_connection_and_carry_the_host() {
    let server = CountingServer::spawn(None).await;
    let up = upstream(&server, 8);
    for _ in 0..20 {
        let resp = up.send(get("/v1/embeddings")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), BODY_LEN);
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 20);
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    let hosts = server.hosts.lock().unwrap().clone();
    assert_eq!(hosts.len(), 20);
    assert!(
        hosts.iter().all(|h| *h == server.addr.to_string()),
        "{hosts:?}"
    );
}

#[tokio::test]
async fn concurrent_requests_open_at_most_one_connection_each_and_reuse_them() {
    let server = CountingServer::spawn(None).await;
    let up = Arc::new(upstream(&server, 8));
    for _round in 0..5 {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let up = up.clone();
            set.spawn(async move {
                let resp = up.send(get("/")).await.unwrap();
                resp.into_body().collect().await.unwrap().to_bytes().len()
            });
        }
        while let Some(n) = set.join_next().await {
            assert_eq!(n.unwrap(), BODY_LEN);
        }
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 40);
    let opened = server.connections.load(Ordering::SeqCst);
    assert!(
        (1..=8).contains(&opened),
        "40 requests, 8 at a time, opened {opened} connections"
    );
}

#[tokio::test]
async fn a_body_dropped_unread_closes_its_connection_instead_of_pooling_it() {
    let server = CountingServer::spawn(None).await;
    let up = upstream(&server, 8);
    let resp = up.send(get("/")).await.unwrap();
    drop(resp); // 64 KiB unread: the connection cannot carry another request
    let resp = tokio::time::timeout(Duration::from_secs(5), up.send(get("/")))
        .await
        .expect("no hang after a dropped body")
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), BODY_LEN);
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn connections_the_server_closed_while_idle_are_not_handed_out() {
    // The server drops a connection after 50 ms of idleness, as a short keep-alive
    // timeout does; every request after a 150 ms pause must still succeed.
    let server = CountingServer::spawn(Some(Duration::from_millis(50))).await;
    let up = upstream(&server, 8);
    for i in 0..6 {
        let resp = up
            .send(get("/"))
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), BODY_LEN, "request {i}");
        // Idle longer than the server's 50 ms keep-alive: the behaviour under test.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 6);
    assert_eq!(server.connections.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn connect_errors_name_the_origin_and_the_cause() {
    // A port nothing listens on: bind one, note it, close it.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let origin: Uri = format!("http://{addr}").parse().unwrap();
    let up: Upstream = Upstream::new(&origin, 8, shadowgate::tls::no_roots_config());
    let err = up.send(get("/")).await.unwrap_err();
    let text = shadowgate::upstream::error_chain(&err);
    assert!(text.contains(&addr.to_string()), "{text}");
    assert!(text.to_lowercase().contains("refused"), "{text}");
}

/// A request as the scripted server saw it: head text, decoded body.
type Seen = (String, Vec<u8>);

/// A server that answers the requests on each connection with the next scripted raw
/// responses (one list per connection, in order), records every request it read (head
/// and decoded body) and closes the connection after its last scripted answer. An empty
/// answer closes the connection after reading the request, without answering.
struct ScriptedServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedServer {
    async fn spawn(script: Vec<Vec<&'static [u8]>>) -> ScriptedServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (seen, count) = (requests.clone(), connections.clone());
        let task = tokio::spawn(async move {
            for answers in script {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let mut buf = Vec::new();
                for answer in answers {
                    let Some(request) = read_request(&mut stream, &mut buf).await else {
                        break;
                    };
                    seen.lock().unwrap().push(request);
                    if answer.is_empty() || stream.write_all(answer).await.is_err() {
                        break;
                    }
                }
            }
        });
        ScriptedServer {
            addr,
            requests,
            connections,
            task,
        }
    }

    fn upstream(&self) -> Upstream {
        let origin: Uri = format!("http://{}", self.addr).parse().unwrap();
        Upstream::new(&origin, 8, shadowgate::tls::no_roots_config())
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request off the connection: its head as text and its body, de-chunked.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Seen> {
    let head_len = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        read_more(stream, buf).await?;
    };
    let head = String::from_utf8(buf.drain(..head_len).collect()).unwrap();
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse::<usize>().unwrap());
    let mut body = Vec::new();
    if let Some(len) = length {
        while buf.len() < len {
            read_more(stream, buf).await?;
        }
        body.extend(buf.drain(..len));
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            let line_end = loop {
                match find(buf, b"\r\n") {
                    Some(i) => break i,
                    None => read_more(stream, buf).await?,
                }
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16).unwrap();
            let end = line_end + 2 + size + 2;
            while buf.len() < end {
                read_more(stream, buf).await?;
            }
            body.extend_from_slice(&buf[line_end + 2..end - 2]);
            buf.drain(..end);
            if size == 0 {
                break;
            }
        }
    }
    Some((head, body))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Append what the next read brings; `None` at EOF or on an error.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

async fn body_of(resp: http::Response<shadowgate::upstream::PooledBody>) -> Vec<u8> {
    resp.into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec()
}

#[tokio::test]
async fn chunked_length_and_close_delimited_answers_arrive_whole_and_reuse_only_what_can_be() {
    let server = ScriptedServer::spawn(vec![
        vec![
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
        ],
        vec![b"HTTP/1.1 204 No Content\r\n\r\n"],
    ])
    .await;
    let up = server.upstream();
    assert_eq!(
        body_of(up.send(get("/a")).await.unwrap()).await,
        b"hello, world"
    );
    assert_eq!(body_of(up.send(get("/b")).await.unwrap()).await, b"abc");
    assert_eq!(
        body_of(up.send(get("/c")).await.unwrap()).await,
        b"until the end"
    );
    // The answer read to EOF ended that connection: the next request opens another.
    let resp = up.send(get("/d")).await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(body_of(resp).await, b"");
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    let paths: Vec<String> = server
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|(head, _)| head.split(' ').nth(1).unwrap().to_string())
        .collect();
    assert_eq!(paths, ["/a", "/b", "/c", "/d"]);
}

#[tokio::test]
async fn bodies_of_unknown_length_go_out_chunked_and_known_ones_with_their_length() {
    let server = ScriptedServer::spawn(vec![vec![
        &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
    ]])
    .await;
    let up = server.upstream();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let streamed = ChannelBody(rx);
    let sender = tokio::spawn(async move {
        for piece in [&b"{\"input\":"[..], b"\"a streamed ", b"body\"}"] {
            tx.send(Bytes::from_static(piece)).await.unwrap();
            // A body that arrives in pieces over time, as a streamed one does.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let req = Request::post("/v1/embeddings").body(streamed).unwrap();
    assert_eq!(up.send(req).await.unwrap().status(), 200);
    sender.await.unwrap();
    let req = Request::post("/v1/embeddings")
        .body(Full::new(Bytes::from_static(b"0123456789")))
        .unwrap();
    assert_eq!(up.send(req).await.unwrap().status(), 200);

    let seen = server.requests.lock().unwrap().clone();
    assert!(
        seen[0]
            .0
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{}",
        seen[0].0
    );
    assert_eq!(seen[0].1, b"{\"input\":\"a streamed body\"}");
    assert!(
        seen[1].0.contains("content-length: 10\r\n"),
        "{}",
        seen[1].0
    );
    assert_eq!(seen[1].1, b"0123456789");
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

/// A request body of unknown length, fed through a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|piece| piece.map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[tokio::test]
async fn interim_answers_are_skipped_and_head_requests_have_no_body() {
    let server = ScriptedServer::spawn(vec![vec![
        &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nnext",
    ]])
    .await;
    let up = server.upstream();
    assert_eq!(body_of(up.send(get("/")).await.unwrap()).await, b"ok");
    let head = Request::head("/").body(Full::new(Bytes::new())).unwrap();
    let resp = up.send(head).await.unwrap();
    assert_eq!(resp.headers()["content-length"], "9");
    assert_eq!(body_of(resp).await, b"");
    assert_eq!(body_of(up.send(get("/")).await.unwrap()).await, b"next");
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn broken_answers_are_errors_and_their_connections_are_not_reused() {
    let server = ScriptedServer::spawn(vec![
        vec![&b"HTTP/1.1 200 OK\r\ncontent-length: nine\r\n\r\n"[..]],
        vec![b"this is not http\r\n\r\n"],
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"],
        vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"],
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"],
    ])
    .await;
    let up = server.upstream();
    let origin = server.addr.to_string();
    for what in ["content-length", "malformed"] {
        let err = up.send(get("/")).await.unwrap_err();
        let text = shadowgate::upstream::error_chain(&err);
        assert!(text.contains(&origin) && text.contains(what), "{text}");
    }
    for what in ["before the end", "chunk"] {
        let resp = up.send(get("/")).await.unwrap();
        let err = resp.into_body().collect().await.unwrap_err();
        assert!(err.to_string().contains(what), "{err}");
    }
    assert_eq!(body_of(up.send(get("/")).await.unwrap()).await, b"ok");
    assert_eq!(server.connections.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_request_on_a_kept_connection_the_server_closes_unanswered_is_sent_again() {
    // What a server closing an idle connection just as the request arrives looks like.
    let server = ScriptedServer::spawn(vec![
        vec![
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst"[..],
            b"",
        ],
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond"],
    ])
    .await;
    let up = server.upstream();
    assert_eq!(body_of(up.send(get("/")).await.unwrap()).await, b"first");
    // PUT is idempotent (RFC 9110 section 9.2.2): sending it twice is harmless.
    let req = Request::put("/again")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    assert_eq!(body_of(up.send(req).await.unwrap()).await, b"second");
    let seen = server.requests.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[1], seen[2],
        "the same request, head and body, on the new connection"
    );
    assert_eq!(seen[2].1, b"payload");
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_post_on_a_kept_connection_the_server_closes_unanswered_is_not_sent_again() {
    let server = ScriptedServer::spawn(vec![
        vec![
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst"[..],
            b"",
        ],
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond"],
    ])
    .await;
    let up = server.upstream();
    assert_eq!(body_of(up.send(get("/")).await.unwrap()).await, b"first");
    // The server may have run it: a POST is not idempotent, so it is not sent twice.
    let req = Request::post("/infer")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let err = up.send(req).await.unwrap_err();
    let text = shadowgate::upstream::error_chain(&err);
    assert!(text.contains("POST is not idempotent"), "{text}");
    assert_eq!(server.requests.lock().unwrap().len(), 2, "sent once");
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_large_answer_arrives_whole_and_its_connection_is_reused() {
    // A batch of embeddings: a few MiB with a known length, then a small answer.
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    let mut first =
        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", big.len()).into_bytes();
    first.extend_from_slice(&big);
    let first: &'static [u8] = Box::leak(first.into_boxed_slice());
    let server = ScriptedServer::spawn(vec![vec![
        first,
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nsmall",
    ]])
    .await;
    let up = server.upstream();
    let resp = up.send(get("/batch")).await.unwrap();
    assert_eq!(
        http_body::Body::size_hint(resp.body()).exact(),
        Some(big.len() as u64)
    );
    assert!(body_of(resp).await == big, "the large body differs");
    assert_eq!(body_of(up.send(get("/")).await.unwrap()).await, b"small");
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}
