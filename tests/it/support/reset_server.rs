//! An upstream that resets the connection mid-response: the status line and part of a
//! `Content-Length` body go out, then the socket is closed with RST (SO_LINGER 0). Used by
//! `resets` and by the descriptor count of `tests/fd_leaks.rs`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the reset server answers in full when it does not reset.
pub const ANSWER: &str = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.25,-0.5,0.75,1.0,0.125,-0.25,0.5,0.0625]}],"model":"reset","usage":{"prompt_tokens":1,"total_tokens":1}}"#;
/// Declared length of a reset answer, and how much of it is sent before the RST.
pub const DECLARED: usize = 4096;
pub const SENT: usize = 100;

/// An OpenAI-style embeddings server that resets the first `resets` answers mid-body and
/// answers the rest in full.
pub struct ResetServer {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ResetServer {
    pub async fn spawn(resets: usize) -> ResetServer {
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

    pub fn url(&self) -> String {
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
            // Let the head and the first bytes reach the peer before the reset. A sleep:
            // the server cannot see when the peer has read them, and the fault under test
            // is a reset that comes after part of the body.
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
pub async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
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
