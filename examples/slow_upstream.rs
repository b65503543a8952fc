//! A slow model server for `benches/proxy_vs_nginx.sh`: answers every HTTP/1.1 request
//! with a fixed body after sleeping DELAY_MS milliseconds. Keep-alive, Content-Length
//! bodies only (what shadowgate and nginx send). Counts requests and connections;
//! `GET /__count` answers "REQUESTS CONNECTIONS" at once.
//!
//! nginx-light has no `echo_sleep`, and `limit_rate` works in whole seconds, so this is
//! the one upstream that is not nginx. It replaced a Python asyncio server that spent
//! ~60 µs of CPU per request: the 50 ms row pins it to the proxy's core, and there every
//! microsecond it spends is charged to the proxy's client latency.
//!
//! ```sh
//! cargo build --release --example slow_upstream
//! target/release/examples/slow_upstream PORT DELAY_MS BODY_FILE
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    connections: AtomicU64,
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, port, delay_ms, body_file] = args.as_slice() else {
        eprintln!("usage: slow_upstream PORT DELAY_MS BODY_FILE");
        std::process::exit(64);
    };
    let port: u16 = port.parse().expect("PORT is a number");
    let delay = Duration::from_millis(delay_ms.parse().expect("DELAY_MS is a number"));
    let body = std::fs::read(body_file)?;
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    let response: Arc<[u8]> = response.into();
    let counts = Arc::new(Counts::default());

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(("127.0.0.1", port)).await?;
            loop {
                let (stream, _) = listener.accept().await?;
                counts.connections.fetch_add(1, Ordering::Relaxed);
                let (counts, response) = (counts.clone(), response.clone());
                tokio::spawn(async move {
                    // A reset or a malformed request ends this connection only.
                    let _ = serve(stream, delay, &response, &counts).await;
                });
            }
        })
}

async fn serve(
    stream: TcpStream,
    delay: Duration,
    response: &[u8],
    counts: &Counts,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    let mut body = Vec::new();
    loop {
        // Request line, then headers up to the empty line.
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let count_request = line.starts_with("GET /__count ");
        let (mut length, mut close) = (0usize, false);
        loop {
            line.clear();
            if stream.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                }
            }
        }
        body.resize(length, 0);
        stream.read_exact(&mut body).await?;
        if count_request {
            let text = format!(
                "{} {}",
                counts.requests.load(Ordering::Relaxed),
                counts.connections.load(Ordering::Relaxed)
            );
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", text.len());
            stream.write_all(format!("{head}{text}").as_bytes()).await?;
            continue;
        }
        counts.requests.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(delay).await;
        stream.write_all(response).await?;
        if close {
            return Ok(());
        }
    }
}
