//! The upstream connection pool (`src/upstream.rs`) against a plain HTTP/1.1 server on
//! 127.0.0.1 that counts its connections and can close idle ones the way servers with a
//! short keep-alive timeout do (uvicorn: 5 s).

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
    let text = shadowgate::proxy::error_chain(&err);
    assert!(text.contains(&addr.to_string()), "{text}");
    assert!(text.to_lowercase().contains("refused"), "{text}");
}
