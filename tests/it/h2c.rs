//! HTTP/2 with prior knowledge (h2c) on the proxy port, passed through to the primary's
//! HTTP/2 endpoint: messages, headers and trailers unchanged, unary and streaming, a
//! client's reset reaching the primary, gRPC statuses for an unreachable primary, and
//! HTTP/1.1 clients on the same port at the same time. The primary is hyper's HTTP/2
//! server on loopback; the client is hyper's HTTP/2 client.

use crate::support as common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use shadowgate::demo::model::{ModelOptions, ModelServer};

/// What the test primary saw, for assertions.
#[derive(Default)]
struct Seen {
    streams: AtomicUsize,
    /// Streams whose answer could not be sent because the stream was reset.
    reset: AtomicUsize,
}

/// A gRPC-shaped HTTP/2 primary: `/test.Echo/Unary` answers the request's bytes back with
/// trailers `grpc-status: 0`, `grpc-message`, a `-bin` field and the request id it got;
/// `/test.Echo/Stream` sends 5 messages 20 ms apart, then trailers; `/test.Echo/Forever`
/// sends a message every 10 ms until the stream is reset.
async fn primary(seen: Arc<Seen>) -> std::net::SocketAddr {
    common::h2::server(move |req| answer(req, seen.clone())).await
}

type TestBody = http_body_util::channel::Channel<Bytes, Infallible>;

async fn answer(req: Request<Incoming>, seen: Arc<Seen>) -> Response<TestBody> {
    seen.streams.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    if path == "/test.Echo/Slow" {
        // No head for 2 s: longer than the test's grpc-timeout.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if path == "/test.Echo/Bidi" {
        return bidi(req);
    }
    let id = req.headers().get("x-request-id").cloned();
    let te = req.headers().get("te").cloned();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let (mut tx, rx) = http_body_util::channel::Channel::<Bytes, Infallible>::new(4);
    let mut resp = Response::new(rx);
    let h = resp.headers_mut();
    h.insert("content-type", "application/grpc".parse().unwrap());
    if let Some(id) = id {
        h.insert("x-seen-request-id", id);
    }
    if let Some(te) = te {
        h.insert("x-seen-te", te);
    }
    tokio::spawn(async move {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers.insert("grpc-message", "all%20good".parse().unwrap());
        trailers.insert("trace-bin", "AAECAw==".parse().unwrap());
        match path.as_str() {
            "/test.Echo/Unary" => {
                let _ = tx.send_data(body).await;
            }
            "/test.Echo/Crash" => {
                trailers.insert("grpc-status", "13".parse().unwrap());
                trailers.insert("grpc-message", "boom".parse().unwrap());
            }
            "/test.Echo/Stream" => {
                for i in 0..5u8 {
                    let _ = tx.send_data(Bytes::from(vec![0, 0, 0, 0, 1, i])).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            _ => loop {
                if tx
                    .send_data(Bytes::from_static(b"\0\0\0\0\x01x"))
                    .await
                    .is_err()
                {
                    seen.reset.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            },
        }
        let _ = tx.send_trailers(trailers).await;
    });
    resp
}

/// `/test.Echo/Bidi`: every message the client sends is answered at once with the same
/// bytes, before the client's stream ends; trailers after it ends.
fn bidi(req: Request<Incoming>) -> Response<TestBody> {
    let (mut tx, rx) = http_body_util::channel::Channel::<Bytes, Infallible>::new(4);
    let mut body = req.into_body();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                if tx.send_data(data).await.is_err() {
                    return;
                }
            }
        }
        send_ok_trailers(&mut tx).await;
    });
    grpc_response(rx)
}

/// Ends an answer with `grpc-status: 0`.
async fn send_ok_trailers(tx: &mut http_body_util::channel::Sender<Bytes, Infallible>) {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    let _ = tx.send_trailers(trailers).await;
}

/// A gRPC answer (`content-type: application/grpc`) whose body is `rx`.
fn grpc_response(rx: TestBody) -> Response<TestBody> {
    let mut resp = Response::new(rx);
    resp.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    resp
}

/// A sidecar whose proxy port forwards HTTP/2 to `h2` and HTTP/1.1 to a plain model.
async fn sidecar(h2: &str) -> (shadowgate::serve::Running, ModelServer) {
    let model = ModelServer::spawn(ModelOptions::default()).await.unwrap();
    let url = format!("http://{}", model.addr);
    let cfg = common::config(
        &url,
        &url,
        &url,
        "sample_rate = 0.0",
        &format!("[primary]\nhttp2_url = \"{h2}\""),
    );
    (shadowgate::serve::start(cfg).await.unwrap(), model)
}

fn grpc_request(
    addr: std::net::SocketAddr,
    method: &str,
    body: &'static [u8],
) -> Request<Full<Bytes>> {
    Request::post(format!("http://{addr}/test.Echo/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-request-id", "req-h2-1")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

/// Every frame of an answer: data concatenated, trailers.
async fn frames(
    resp: Response<Incoming>,
) -> (http::response::Parts, Vec<Bytes>, Option<HeaderMap>) {
    let (parts, mut body) = resp.into_parts();
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame: Frame<Bytes> = frame.unwrap();
        match frame.into_data() {
            Ok(d) => data.push(d),
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    (parts, data, trailers)
}

#[tokio::test]
async fn unary_and_streaming_calls_pass_through_with_trailers() {
    let seen = Arc::new(Seen::default());
    let p = primary(seen.clone()).await;
    let (sg, _model) = sidecar(&format!("h2c://{p}")).await;
    let mut client = common::h2::client(sg.proxy_addr).await;

    let msg: &'static [u8] = b"\0\0\0\0\x05hello";
    let resp = client
        .send_request(grpc_request(sg.proxy_addr, "Unary", msg))
        .await
        .unwrap();
    let (parts, data, trailers) = frames(resp).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["content-type"], "application/grpc");
    assert_eq!(
        parts.headers["x-seen-request-id"], "req-h2-1",
        "the client's id reaches the primary"
    );
    assert_eq!(parts.headers["x-request-id"], "req-h2-1", "and comes back");
    assert_eq!(
        parts.headers["x-seen-te"], "trailers",
        "gRPC's te: trailers reaches the primary"
    );
    assert_eq!(data.concat(), msg);
    let t = trailers.expect("trailers reach the client");
    assert_eq!(t["grpc-status"], "0");
    assert_eq!(t["grpc-message"], "all%20good");
    assert_eq!(t["trace-bin"], "AAECAw==");

    // Server streaming: five messages, each as its own frame, then the trailers.
    let resp = client
        .send_request(grpc_request(sg.proxy_addr, "Stream", b""))
        .await
        .unwrap();
    let (_, data, trailers) = frames(resp).await;
    assert_eq!(
        data.concat(),
        (0..5u8)
            .flat_map(|i| [0, 0, 0, 0, 1, i])
            .collect::<Vec<u8>>()
    );
    assert!(
        data.len() >= 2,
        "streamed in several frames, not buffered into one: {}",
        data.len()
    );
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    assert_eq!(seen.streams.load(Ordering::SeqCst), 2);
    sg.shutdown().await;
}

#[tokio::test]
async fn a_client_reset_cancels_the_primary_stream() {
    let seen = Arc::new(Seen::default());
    let p = primary(seen.clone()).await;
    let (sg, _model) = sidecar(&format!("h2c://{p}")).await;
    let mut client = common::h2::client(sg.proxy_addr).await;
    let resp = client
        .send_request(grpc_request(sg.proxy_addr, "Forever", b""))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body); // RST_STREAM(CANCEL)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen.reset.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the primary's stream was never reset"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sg.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_primary_gives_grpc_unavailable() {
    let closed = common::free_port();
    let (sg, _model) = sidecar(&format!("h2c://127.0.0.1:{closed}")).await;
    let mut client = common::h2::client(sg.proxy_addr).await;
    let resp = client
        .send_request(grpc_request(sg.proxy_addr, "Unary", b"\0\0\0\0\0"))
        .await
        .unwrap();
    let (parts, data, _) = frames(resp).await;
    assert_eq!(
        parts.status, 200,
        "gRPC answers errors in a trailers-only answer"
    );
    assert_eq!(parts.headers["grpc-status"], "14");
    let message = parts.headers["grpc-message"].to_str().unwrap();
    assert!(message.contains("unavailable"), "{message}");
    assert!(data.is_empty());
    let metrics = reqwest_metrics(&sg).await;
    assert_eq!(
        common::value(&metrics, "model_inference_errors_total", &[]),
        Some(1.0)
    );
    sg.shutdown().await;
}

async fn reqwest_metrics(sg: &shadowgate::serve::Running) -> String {
    let reply = common::Client::new()
        .get(&format!("http://{}/metrics", sg.admin_addr))
        .await;
    String::from_utf8_lossy(&reply.body).into_owned()
}

#[tokio::test]
async fn http1_and_h2c_clients_share_the_port() {
    let seen = Arc::new(Seen::default());
    let p = primary(seen.clone()).await;
    let (sg, _model) = sidecar(&format!("h2c://{p}")).await;
    let h1 = common::Client::new();
    let addr = sg.proxy_addr;
    let h1_calls = async {
        for i in 0..20 {
            let r = h1
                .send(
                    http::Method::POST,
                    &format!("http://{addr}/v1/embeddings"),
                    &[],
                    format!(r#"{{"input":"text {i}","model":"m"}}"#),
                )
                .await;
            assert_eq!(r.status, 200);
        }
    };
    let h2_calls = async {
        let mut client = common::h2::client(addr).await;
        for _ in 0..20 {
            let resp = client
                .send_request(grpc_request(addr, "Unary", b"\0\0\0\0\x01z"))
                .await
                .unwrap();
            let (_, data, trailers) = frames(resp).await;
            assert_eq!(data.concat(), b"\0\0\0\0\x01z");
            assert_eq!(trailers.unwrap()["grpc-status"], "0");
        }
    };
    tokio::join!(h1_calls, h2_calls);
    assert_eq!(seen.streams.load(Ordering::SeqCst), 20);
    sg.shutdown().await;
}

#[tokio::test]
async fn grpc_timeout_is_a_deadline_for_the_primary() {
    let seen = Arc::new(Seen::default());
    let p = primary(seen.clone()).await;
    let (sg, _model) = sidecar(&format!("h2c://{p}")).await;
    let mut client = common::h2::client(sg.proxy_addr).await;
    let mut req = grpc_request(sg.proxy_addr, "Slow", b"\0\0\0\0\0");
    req.headers_mut()
        .insert("grpc-timeout", "150m".parse().unwrap());
    let started = std::time::Instant::now();
    let resp = client.send_request(req).await.unwrap();
    let (parts, _, _) = frames(resp).await;
    let waited = started.elapsed();
    assert_eq!(parts.headers["grpc-status"], "4", "DEADLINE_EXCEEDED");
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_millis(1500),
        "answered after {waited:?}, not at the call's 150 ms deadline"
    );
    sg.shutdown().await;
}

#[tokio::test]
async fn shutdown_sends_goaway_and_finishes_streams_in_flight() {
    let seen = Arc::new(Seen::default());
    let p = primary(seen.clone()).await;
    let (sg, _model) = sidecar(&format!("h2c://{p}")).await;
    let addr = sg.proxy_addr;
    let mut client = common::h2::client(addr).await;
    // A stream of 5 messages over ~100 ms, with a shutdown asked for after its first one.
    let resp = client
        .send_request(grpc_request(addr, "Stream", b""))
        .await
        .unwrap();
    let (parts, mut body) = resp.into_parts();
    assert_eq!(parts.status, 200);
    let first = body.frame().await.unwrap().unwrap();
    let shutdown = tokio::spawn(sg.shutdown());
    let mut data = first.into_data().unwrap().to_vec();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        match frame.unwrap().into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    assert_eq!(
        data,
        (0..5u8)
            .flat_map(|i| [0, 0, 0, 0, 1, i])
            .collect::<Vec<u8>>(),
        "the stream in flight finished"
    );
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    let summary = shutdown.await.unwrap();
    assert_eq!(summary.connections_cut, 0);
    // GOAWAY: the connection takes no new stream.
    let again = client.send_request(grpc_request(addr, "Unary", b"")).await;
    assert!(again.is_err(), "a new stream after GOAWAY was accepted");
}

#[tokio::test]
async fn a_primary_grpc_failure_reaches_the_client_and_counts_as_an_error() {
    let seen = Arc::new(Seen::default());
    let p = primary(seen.clone()).await;
    let (sg, _model) = sidecar(&format!("h2c://{p}")).await;
    let mut client = common::h2::client(sg.proxy_addr).await;
    for method in ["Crash", "Unary"] {
        let resp = client
            .send_request(grpc_request(sg.proxy_addr, method, b"\0\0\0\0\0"))
            .await
            .unwrap();
        frames(resp).await;
    }
    let resp = client
        .send_request(grpc_request(sg.proxy_addr, "Crash", b"\0\0\0\0\0"))
        .await
        .unwrap();
    let (parts, _, trailers) = frames(resp).await;
    assert_eq!(parts.status, 200);
    let t = trailers.unwrap();
    assert_eq!(
        (&t["grpc-status"], &t["grpc-message"]),
        (&"13".parse().unwrap(), &"boom".parse().unwrap())
    );
    let metrics = reqwest_metrics(&sg).await;
    assert_eq!(
        common::value(&metrics, "model_inference_requests_total", &[]),
        Some(3.0)
    );
    assert_eq!(
        common::value(&metrics, "model_inference_errors_total", &[]),
        Some(2.0),
        "INTERNAL counts, OK does not"
    );
    sg.shutdown().await;
}

#[tokio::test]
async fn bidi_streams_are_full_duplex_through_the_sidecar() {
    let seen = Arc::new(Seen::default());
    let p = primary(seen.clone()).await;
    let (sg, _model) = sidecar(&format!("h2c://{p}")).await;
    let mut client = common::h2::client_with::<TestBody>(sg.proxy_addr).await;
    let (mut up, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(1);
    let req = Request::post(format!("http://{}/test.Echo/Bidi", sg.proxy_addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    let mut down = resp.into_body();
    // Each message comes back while the client's stream is still open: nothing on the
    // way (sidecar or primary) waits for the whole request.
    for i in 0..5u8 {
        let msg = Bytes::from(vec![0, 0, 0, 0, 1, i]);
        up.send_data(msg.clone()).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(5), down.frame())
            .await
            .expect("echo while the request stream is open")
            .unwrap()
            .unwrap();
        assert_eq!(echo.into_data().unwrap(), msg);
    }
    drop(up);
    let mut trailers = None;
    while let Some(frame) = down.frame().await {
        if let Ok(t) = frame.unwrap().into_trailers() {
            trailers = Some(t);
        }
    }
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    sg.shutdown().await;
}

/// Bytes in flight that HTTP/2 flow control allows between a reader that stopped and a
/// writer, through the sidecar: each hop's stream window (2 MiB at most here) and send
/// buffer (1 MiB at most), with room to spare. The streams below are 48 MiB, so a hop
/// that buffered a whole stream would show as the writer running ahead of this.
const IN_FLIGHT_BOUND: usize = 16 << 20;
const STREAM_BYTES: usize = 48 << 20;
const CHUNK: usize = 64 << 10;

/// A primary for the flow-control test: `/test.Flow/Down` answers STREAM_BYTES in
/// CHUNK-sized messages, counting what hyper took from it (it takes a chunk only when
/// the stream has window); `/test.Flow/Up` reads nothing for `hold`, then counts the
/// request's bytes and answers the count.
async fn flow_primary(sent: Arc<AtomicUsize>, hold: Duration) -> std::net::SocketAddr {
    common::h2::server(move |req: Request<Incoming>| {
        let sent = sent.clone();
        async move {
            let (mut tx, rx) = http_body_util::channel::Channel::<Bytes, Infallible>::new(1);
            let path = req.uri().path().to_string();
            let mut body = req.into_body();
            tokio::spawn(async move {
                if path == "/test.Flow/Down" {
                    for i in 0..STREAM_BYTES / CHUNK {
                        if tx
                            .send_data(Bytes::from(vec![i as u8; CHUNK]))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        sent.fetch_add(CHUNK, Ordering::SeqCst);
                    }
                } else {
                    tokio::time::sleep(hold).await;
                    let mut n = 0usize;
                    while let Some(Ok(frame)) = body.frame().await {
                        n += frame.data_ref().map_or(0, |d| d.len());
                    }
                    let _ = tx.send_data(Bytes::from(n.to_string())).await;
                }
                send_ok_trailers(&mut tx).await;
            });
            grpc_response(rx)
        }
    })
    .await
}

#[tokio::test]
async fn flow_control_never_buffers_a_whole_stream() {
    let hold = Duration::from_millis(800);
    let sent = Arc::new(AtomicUsize::new(0));
    let p = flow_primary(sent.clone(), hold).await;
    let (sg, _model) = sidecar(&format!("h2c://{p}")).await;
    let mut client = common::h2::client_with::<TestBody>(sg.proxy_addr).await;
    let request = |path: &str, body| {
        Request::post(format!("http://{}{path}", sg.proxy_addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(body)
            .unwrap()
    };

    // Down: the client reads the head, then nothing for a while: the primary gets to
    // send only what the windows on the way hold.
    let (_up, empty) = http_body_util::channel::Channel::<Bytes, Infallible>::new(1);
    drop(_up);
    let resp = client
        .send_request(request("/test.Flow/Down", empty))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ahead = sent.load(Ordering::SeqCst);
    assert!(
        ahead > 0 && ahead <= IN_FLIGHT_BOUND,
        "the primary sent {ahead} bytes to a client that read none (bound {IN_FLIGHT_BOUND})"
    );
    // Then the whole stream arrives, in order.
    let (_, data, trailers) = frames(resp).await;
    let data: Vec<u8> = data.iter().flat_map(|d| d.iter().copied()).collect();
    assert_eq!(data.len(), STREAM_BYTES);
    for (i, chunk) in data.chunks(CHUNK).enumerate() {
        assert!(
            chunk.iter().all(|&b| b == i as u8),
            "chunk {i} out of order"
        );
    }
    assert_eq!(trailers.unwrap()["grpc-status"], "0");

    // Up: the primary reads nothing for `hold`; the client gets to send only what the
    // windows on the way hold, then the whole stream reaches the primary.
    let (mut up, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(1);
    let pushed = Arc::new(AtomicUsize::new(0));
    let pushing = {
        let pushed = pushed.clone();
        tokio::spawn(async move {
            for _ in 0..STREAM_BYTES / CHUNK {
                if up.send_data(Bytes::from(vec![7u8; CHUNK])).await.is_err() {
                    return;
                }
                pushed.fetch_add(CHUNK, Ordering::SeqCst);
            }
        })
    };
    let resp = client
        .send_request(request("/test.Flow/Up", body))
        .await
        .unwrap();
    tokio::time::sleep(hold / 2).await;
    let ahead = pushed.load(Ordering::SeqCst);
    assert!(
        ahead > 0 && ahead <= IN_FLIGHT_BOUND,
        "the client sent {ahead} bytes to a primary that read none (bound {IN_FLIGHT_BOUND})"
    );
    pushing.await.unwrap();
    let (_, data, trailers) = frames(resp).await;
    assert_eq!(data.concat(), STREAM_BYTES.to_string().as_bytes());
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    sg.shutdown().await;
}
